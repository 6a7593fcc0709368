package runner_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/nut/upsdtest"
	"github.com/edgeops/shutdownd/store"
)

// TestSimulationChecksThePowerSource: a simulation logs in to the real
// upsd, reads the UPS and reports the reading; with a wrong password it
// fails, naming the power source.
func TestSimulationChecksThePowerSource(t *testing.T) {
	t.Parallel()
	ups := upsdtest.Start(t, upsdtest.Options{User: "shutdownd", Password: "right",
		Vars: map[string]string{"ups.status": "OL CHRG", "battery.charge": "96", "battery.runtime": "2400"}})
	f := newFixture(t, nil)
	f.cfg.PowerSource = &config.PowerSource{NUT: config.NUT{Address: ups.Addr, UPS: ups.UPS, User: "shutdownd", Password: "right", Timeout: 2 * time.Second},
		PollInterval: time.Second, OnBatteryGrace: 30 * time.Second}
	r, stop := f.start()
	defer stop()
	<-r.Idle() // settled: a job created now is new, not left over

	simulate := func() store.Job {
		t.Helper()
		j, err := f.store.CreateSimulation(context.Background(), store.NewJob{TokenName: "test"})
		if err != nil {
			t.Fatal(err)
		}
		r.Kick()
		f.waitFor("the simulation to end", 60*time.Second, func() bool { return f.job(j.ID).State.Final() })
		return f.job(j.ID)
	}
	eventDetail := func(id int64, prefix string) string {
		evs, err := f.store.Events(context.Background(), id, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if strings.HasPrefix(e.Message, prefix) {
				return e.Message + ": " + e.Detail
			}
		}
		return ""
	}

	j := simulate()
	if j.State != store.StateSucceeded {
		t.Fatalf("simulation %s: %s", j.State, j.Error)
	}
	want := "check power source nut/ups1: ok: NUT server " + ups.Addr + ", logged in as shutdownd; ups.status OL CHRG, battery.charge 96%, battery.runtime 2400 s"
	if got := eventDetail(j.ID, "check power source"); got != want {
		t.Errorf("event\n  %s\nwant\n  %s", got, want)
	}

	f.cfg.PowerSource.NUT.Password = "wrong"
	j = simulate()
	if j.State != store.StateFailed || !strings.Contains(j.Error, "power source nut/ups1") || !strings.Contains(j.Error, "ACCESS-DENIED") {
		t.Fatalf("simulation with a wrong NUT password: %s %q", j.State, j.Error)
	}
	if got := eventDetail(j.ID, "check power source"); !strings.Contains(got, "failed") {
		t.Errorf("event %q", got)
	}
}
