package handlers

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/nut/upsdtest"
	"github.com/edgeops/shutdownd/power"
	"github.com/edgeops/shutdownd/runner"
)

// verifyPower drives GET /power without a power source (the simulated
// site has none): configured false and nothing else, 401 and 403.
func verifyPower(t *testing.T, c *conformance, e *env, read, noRead string) {
	t.Helper()
	resp, b := e.do(req{method: "GET", path: "/power", token: read})
	got := c.verify("GET", "/power", resp, b)
	if d, _ := got["data"].(map[string]any); len(d) != 1 || d["configured"] != false {
		t.Errorf("GET /power without a power source: %s", b)
	}
	for tok, code := range map[string]string{"": CodeMissingToken, noRead: CodeScopeNotGranted} {
		resp, b = e.do(req{method: "GET", path: "/power", token: tok})
		if got := c.verify("GET", "/power", resp, b); got == nil || got["code"] != code {
			t.Errorf("GET /power with token %q: %s, want code %s", tok, b, code)
		}
	}
}

// TestPowerOnBattery reads GET /power from a watcher of the real upsd with
// the UPS on battery: the reading, since when, the forecast, the margin
// left and the next step in words, all in the documented schema.
func TestPowerOnBattery(t *testing.T) {
	t.Parallel()
	ups := upsdtest.Start(t, upsdtest.Options{Vars: map[string]string{"ups.status": "OB DISCHRG", "battery.charge": "80", "battery.runtime": "400"}})
	e := newEnv(t, nil)
	cfg := &config.PowerSource{NUT: config.NUT{Address: ups.Addr, UPS: ups.UPS, Timeout: 2 * time.Second},
		PollInterval: 100 * time.Millisecond, OnBatteryGrace: time.Minute, ShutdownWhen: config.ShutdownWhen{RuntimeMargin: 2 * time.Minute}}
	// The runner's forecast of a one-host site never measured: the worst
	// case of its timeouts, 10 s + 20 s + 60 s = 90 s.
	site := &config.Config{Timeouts: config.Timeouts{HostOff: time.Minute}, Hosts: []config.Host{{Name: "c1", Role: config.RoleCompute,
		SSH: config.SSH{ConnectTimeout: 10 * time.Second, CommandTimeout: 20 * time.Second}}}}
	rn := runner.New(site, e.st, runner.Options{Logger: slog.New(slog.DiscardHandler)})
	w, err := power.New(power.Options{Config: cfg, Store: e.st, Forecaster: rn, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	e.api.MountPower(w)
	read, _, _ := e.tokens()
	c := &conformance{t: t, doc: loadAPIDoc(t), covered: map[string]bool{}, seen: map[string]bool{}}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, b := e.do(req{method: "GET", path: "/power", token: read})
		got := c.verify("GET", "/power", resp, b)
		d, _ := got["data"].(map[string]any)
		if d["on_battery"] == true {
			r, _ := d["reading"].(map[string]any)
			num := func(v any) string { return fmt.Sprint(v) }
			if d["configured"] != true || d["connected"] != true || r["status"] != "OB DISCHRG" || num(r["charge"]) != "80" ||
				num(r["runtime_seconds"]) != "400" || num(d["margin_seconds"]) != "120" || num(d["margin_left_seconds"]) != "190" ||
				d["on_battery_since"] == nil || d["source"] != "nut/"+ups.UPS {
				t.Errorf("GET /power on battery: %s", b)
			}
			if f, _ := d["forecast"].(map[string]any); fmt.Sprint(f["estimate_seconds"]) != "90" {
				t.Errorf("forecast %v", d["forecast"])
			}
			if n, _ := d["next"].(string); !strings.HasPrefix(n, "shutdown in about ") || !strings.Contains(n, "if still on battery") {
				t.Errorf("next = %q", n)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /power never showed the UPS on battery: %s", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
