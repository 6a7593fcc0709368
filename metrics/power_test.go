package metrics_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/nut/upsdtest"
	"github.com/edgeops/shutdownd/power"
)

// TestPowerMetrics scrapes the power source metrics of a watcher reading
// the real upsd: the UPS's state, charge and runtime, the connection; then
// upsd killed while on mains shows as a lost connection, counted.
func TestPowerMetrics(t *testing.T) {
	t.Parallel()
	ups := upsdtest.Start(t, upsdtest.Options{Vars: map[string]string{"ups.status": "OL CHRG", "battery.charge": "87", "battery.runtime": "1500"}})
	r := newRig(t, config.MetricsRead)
	cfg := &config.PowerSource{NUT: config.NUT{Address: ups.Addr, UPS: ups.UPS, Timeout: time.Second},
		PollInterval: 100 * time.Millisecond, OnBatteryGrace: time.Second, ShutdownWhen: config.ShutdownWhen{RuntimeMargin: time.Minute}}
	w, err := power.New(power.Options{Config: cfg, Store: r.st})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	r.m.WatchPower(w)

	src := `{source="nut/` + ups.UPS + `"`
	waitMetrics := func(what string, want ...string) string {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			_, body := r.get(t, "/metrics", r.readTok)
			missing := ""
			for _, w := range want {
				if !strings.Contains(body, w) {
					missing = w
					break
				}
			}
			if missing == "" {
				return body
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: /metrics lacks %q:\n%s", what, missing, grep(body, "ups_|power_source"))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitMetrics("on mains",
		"shutdownd_power_source_connected"+src+"} 1",
		"shutdownd_ups_on_battery"+src+"} 0",
		`shutdownd_ups_status{flag="OL",source="nut/`+ups.UPS+`"} 1`,
		`shutdownd_ups_status{flag="CHRG",source="nut/`+ups.UPS+`"} 1`,
		`shutdownd_ups_status{flag="OB",source="nut/`+ups.UPS+`"} 0`,
		"shutdownd_ups_battery_charge_percent"+src+"} 87",
		"shutdownd_ups_battery_runtime_seconds"+src+"} 1500",
		"shutdownd_power_source_connection_losses_total"+src+"} 0")
	ups.Kill()
	waitMetrics("upsd killed",
		"shutdownd_power_source_connected"+src+"} 0",
		"shutdownd_ups_on_battery"+src+"} 0",
		"shutdownd_power_source_connection_losses_total"+src+"} 1")
}

func grep(body, words string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		for _, w := range strings.Split(words, "|") {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
