package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/nut/upsdtest"
	"github.com/edgeops/shutdownd/sitesim"
	"github.com/edgeops/shutdownd/store"
)

// TestE2EPowerCutEndsInShutdown is the power source end to end: the real
// service reads the real upsd; the UPS goes on battery with low battery;
// after the grace the watcher starts the shutdown, the runner takes the
// simulated site down, and GET /power, /metrics and the audit say so.
func TestE2EPowerCutEndsInShutdown(t *testing.T) {
	ups := upsdtest.Start(t, upsdtest.Options{User: "shutdownd", Password: "nut-e2e"})
	ctx := context.Background()
	d, err := startDemo(ctx, "127.0.0.1:0", "", e2eFast)
	if err != nil {
		t.Fatalf("start demo site: %v", err)
	}
	t.Cleanup(d.Close)
	d.Config.PowerSource = &config.PowerSource{
		NUT:          config.NUT{Address: ups.Addr, UPS: ups.UPS, User: "shutdownd", Password: "nut-e2e", Timeout: 2 * time.Second},
		PollInterval: 200 * time.Millisecond, OnBatteryGrace: 2 * time.Second,
		ShutdownWhen: config.ShutdownWhen{RuntimeMargin: time.Minute, LowBattery: true},
	}
	m := &Main{Config: d.Config, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := m.Run(ctx); err != nil {
		t.Fatalf("run service: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	tok, err := createDemoToken(ctx, m.Store)
	if err != nil {
		t.Fatal(err)
	}
	s := &e2eService{t: t, main: m, demo: d, token: tok, url: m.URL()}

	power := func() map[string]any {
		t.Helper()
		code, _, body := s.do("GET", "/power", "", nil)
		var env struct{ Data map[string]any }
		if code != 200 || json.Unmarshal([]byte(body), &env) != nil {
			t.Fatalf("GET /power = %d %s", code, body)
		}
		return env.Data
	}
	waitUntil(t, 20*time.Second, "the first reading", func() bool { return power()["reading"] != nil })
	if p := power(); p["connected"] != true || p["on_battery"] != false || p["next"] != "nothing: on mains" {
		t.Fatalf("GET /power on mains: %v", p)
	}

	ups.Set(map[string]string{"ups.status": "OB DISCHRG LB", "battery.charge": "20", "battery.runtime": "3600"})
	var job *store.Job
	waitUntil(t, 30*time.Second, "the watcher's shutdown job", func() bool {
		j, err := m.Store.LatestJob(ctx, store.KindShutdown)
		job = j
		return err == nil && j != nil
	})
	if job.TokenName != "power-source:nut/"+ups.UPS || !strings.Contains(job.Reason, "the UPS flags LB") {
		t.Fatalf("job = %+v", job)
	}
	if j := s.waitJob(job.ID, 90*time.Second); j.State != store.StateSucceeded {
		t.Fatalf("the power source's shutdown %s: %s", j.State, j.Error)
	}
	for _, h := range d.Site.Hosts {
		if h.Machine.State() != sitesim.PowerOff {
			t.Errorf("host %s is %s after the shutdown", h.Spec.Name, h.Machine.State())
		}
	}
	p := power()
	if id, _ := p["shutdown_job_id"].(float64); int64(id) != job.ID || !strings.Contains(p["next"].(string), "handles this outage") {
		t.Errorf("GET /power after the shutdown: %v", p)
	}
	code, _, body := s.do("GET", "/metrics", "", nil)
	if code != 200 || !strings.Contains(body, `shutdownd_ups_on_battery{source="nut/`+ups.UPS+`"} 1`) {
		t.Errorf("metrics on battery: %d\n%s", code, body)
	}
	evs, err := m.Store.PowerEvents(ctx, store.PowerEventFilter{})
	if err != nil || len(evs) != 2 || evs[0].Kind != store.PowerShutdown || evs[1].Kind != store.PowerOnBattery {
		t.Errorf("power events = %+v, %v", evs, err)
	}
}

func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
