package config

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestPowerSourceSection(t *testing.T) {
	dir := site(t)
	t.Setenv("SHUTDOWND_TEST_NUT", "nut-secret-Qe31")
	t.Run("absent: no watcher", func(t *testing.T) {
		c, err := parseIn(t, dir, base)
		if err != nil || c.PowerSource != nil {
			t.Fatalf("power source %+v, %v", c.PowerSource, err)
		}
		var buf bytes.Buffer
		c.Describe(&buf)
		if !strings.Contains(buf.String(), "Power source: none") {
			t.Errorf("check-config:\n%s", buf.String())
		}
	})
	t.Run("defaults and words", func(t *testing.T) {
		c, err := parseIn(t, dir, base+"power_source:\n  nut: {address: 127.0.0.1, ups: ups1, user: shutdownd, password_env: SHUTDOWND_TEST_NUT}\n")
		if err != nil {
			t.Fatal(err)
		}
		p := c.PowerSource
		want := PowerSource{NUT: NUT{Address: "127.0.0.1:3493", UPS: "ups1", User: "shutdownd", Password: "nut-secret-Qe31", Timeout: DefaultNUTTimeout},
			PollInterval: 5 * time.Second, OnBatteryGrace: 30 * time.Second, StartupMinCharge: 50,
			ShutdownWhen: ShutdownWhen{RuntimeMargin: 2 * time.Minute, ChargeBelow: 30, LowBattery: true}}
		if *p != want {
			t.Errorf("got %+v\nwant %+v", *p, want)
		}
		var buf bytes.Buffer
		c.Describe(&buf)
		out := buf.String()
		for _, w := range []string{"UPS ups1 on the NUT server 127.0.0.1:3493 (logs in as shutdownd, plain TCP), read every 5s",
			"on battery for less than 30s is a blip", "below the forecast duration of a shutdown now plus 2m",
			"battery.charge is below 30%", "low battery (LB)", "(FSD) starts a shutdown at once", "startup: never by itself",
			"power-source:nut/ups1"} {
			if !strings.Contains(out, w) {
				t.Errorf("check-config lacks %q:\n%s", w, out)
			}
		}
		if strings.Contains(out, "nut-secret-Qe31") {
			t.Error("check-config printed the NUT password")
		}
	})
	t.Run("all keys", func(t *testing.T) {
		c, err := parseIn(t, dir, base+`power_source:
  nut: {address: "ups.example:4000", ups: rack, timeout: 2s}
  poll_interval: 1s
  on_battery_grace: 10s
  shutdown_when: {runtime_margin: 0m, charge_below: 0, low_battery: false}
  startup_after: 5m
  startup_min_charge: 80.5
`)
		if err != nil {
			t.Fatal(err)
		}
		p := c.PowerSource
		if p.NUT.Address != "ups.example:4000" || p.NUT.Timeout != 2*time.Second || p.PollInterval != time.Second ||
			p.OnBatteryGrace != 10*time.Second || p.ShutdownWhen != (ShutdownWhen{}) || p.StartupAfter != 5*time.Minute || p.StartupMinCharge != 80.5 {
			t.Errorf("got %+v", *p)
		}
	})
	bad := []struct {
		name, yml string
		line      int
		err       string
	}{
		{"no nut", "power_source: {poll_interval: 5s}\n", 4, "power_source: nut is required"},
		{"no ups", "power_source:\n  nut: {address: 127.0.0.1}\n", 5, "power_source.nut: ups is required"},
		{"user without password", "power_source:\n  nut: {address: a, ups: u, user: x}\n", 5, "power_source.nut.user: needs password_file or password_env"},
		{"open password file", "power_source:\n  nut: {address: a, ups: u, user: x, password_file: open-password}\n", 5, "power_source.nut.password_file: " + dir + "/open-password is readable by every user"},
		{"grace under two polls", "power_source:\n  nut: {address: a, ups: u}\n  poll_interval: 10s\n  on_battery_grace: 15s\n", 4,
			"power_source.on_battery_grace: must be at least 2 poll intervals (20s), got 15s"},
		{"charge over 100", "power_source:\n  nut: {address: a, ups: u}\n  shutdown_when: {charge_below: 130}\n", 6,
			"power_source.shutdown_when.charge_below: must be a number from 0 to 100 (percent), got 130"},
		{"unknown key", "power_source:\n  nut: {address: a, ups: u}\n  grace: 30s\n", 6, "power_source.grace: unknown key"},
		{"negative margin", "power_source:\n  nut: {address: a, ups: u}\n  shutdown_when: {runtime_margin: -1m}\n", 6, "power_source.shutdown_when.runtime_margin: must be positive"},
		{"slow poll", "power_source:\n  nut: {address: a, ups: u}\n  poll_interval: 5m\n  on_battery_grace: 20m\n", 6, "power_source.poll_interval: must be at most 1m"},
		{"ca without tls", "power_source:\n  nut: {address: a, ups: u, ca_file: ca.pem}\n", 5, "power_source.nut.ca_file: only used with starttls: true"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseIn(t, dir, base+tc.yml)
			if err == nil {
				t.Fatal("accepted")
			}
			if want := fmt.Sprintf("%s/shutdownd.yaml:%d: %s", dir, tc.line, tc.err); !strings.Contains(err.Error(), want) {
				t.Errorf("error does not contain\n  %s\ngot:\n  %s", want, err)
			}
		})
	}
}
