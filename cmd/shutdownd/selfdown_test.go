package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/sitesim"
	"github.com/edgeops/shutdownd/store"
)

// Through the API: while the self power-off is under way, a new POST
// /shutdown is answered with that job and POST /simulate with 503. When it
// fails for good (SSH power-off ignored, BMC soft and hard off ignored), the
// service goes back to normal: POST /simulate starts a simulation and POST
// /shutdown a new shutdown.
func TestE2EFailedSelfPowerOffGivesTheServiceBack(t *testing.T) {
	s := startE2E(t, func(o *sitesim.Options) {
		o.Hosts = []sitesim.HostSpec{
			{Name: "compute-01", Role: "compute"},
			{Name: "mgmt-01", Role: "control", Self: true, IgnorePowerOff: true, IgnoreSoftOff: true, IgnoreHardOff: true},
		}
		o.Storage = "none"
	})
	mgmt := s.demo.Site.Host("mgmt-01")
	first := s.post("/shutdown", `{"reason":"mains lost"}`)

	// While this machine is (supposedly) going down.
	deadline := time.Now().Add(60 * time.Second)
	for mgmt.SSH.PowerCommands() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("self power-off not sent in 60s")
		}
		time.Sleep(10 * time.Millisecond) // polling cadence
	}
	// The BMC escalation that follows takes host_off + bmc_soft_off +
	// bmc_hard_off (6 s here): these requests come well within it.
	if _, down := s.main.Runner.PoweringOffSelf(); !down {
		t.Fatal("the power-off of this machine was sent, and the runner does not say so")
	}
	if again := s.post("/shutdown", `{"reason":"retry"}`); again != first {
		t.Errorf("POST /shutdown during the self power-off started job %d, want job %d back", again, first)
	}
	if code, _, body := s.do("POST", "/simulate", "", nil); code != http.StatusServiceUnavailable {
		t.Errorf("POST /simulate during the self power-off = %d %s, want 503", code, body)
	}

	j := s.waitJob(first, 60*time.Second)
	if j.State != store.StateSucceeded {
		t.Fatalf("job %d %s: %s", first, j.State, j.Error)
	}
	for deadline := time.Now().Add(60 * time.Second); ; {
		if _, down := s.main.Runner.PoweringOffSelf(); !down {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the service still powering off itself after 60s")
		}
		time.Sleep(20 * time.Millisecond) // polling cadence
	}
	as, err := s.main.Store.Actions(context.Background(), first)
	if err != nil {
		t.Fatal(err)
	}
	var self store.Action
	for _, a := range as {
		if a.Operation == "self-poweroff" {
			self = a
		}
	}
	if self.State != store.ActionFailed || !strings.Contains(self.Error, "still running") {
		t.Errorf("self power-off %s %q; want failed, still running", self.State, self.Error)
	}
	if n := len(mgmt.BMC.Resets()); n != 2 {
		t.Errorf("mgmt-01 BMC got %d resets (%v), want soft then hard", n, mgmt.BMC.Resets())
	}

	sim := s.post("/simulate", `{"reason":"after the failed power-off"}`)
	if sim == first {
		t.Fatal("POST /simulate answered with the old job")
	}
	if j := s.waitJob(sim, 60*time.Second); j.Kind != store.KindSimulation || j.State == store.StateCancelled {
		t.Errorf("simulation %d %s %s %q; want it run", sim, j.Kind, j.State, j.Error)
	}
	second := s.post("/shutdown", `{"reason":"mains lost again"}`)
	if second == first || second == sim {
		t.Fatalf("POST /shutdown answered with job %d, want a new one", second)
	}
	if j := s.waitJob(second, 60*time.Second); j.Kind != store.KindShutdown || j.State != store.StateSucceeded {
		t.Errorf("second shutdown %d %s %s %q", second, j.Kind, j.State, j.Error)
	}
}
