package config

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestWebSection(t *testing.T) {
	dir := site(t)
	cases := []struct {
		name string
		yml  string
		want time.Duration
		line int    // of the error, 0 when accepted
		err  string // "path: reason" substring
	}{
		{name: "absent: a week", yml: base, want: DefaultSimulationMaxAge},
		{name: "set", yml: base + "web: {simulation_max_age: 720h}\n", want: 720 * time.Hour},
		{name: "block style", yml: base + "web:\n  simulation_max_age: 36h\n", want: 36 * time.Hour},
		{name: "below an hour", yml: base + "web:\n  simulation_max_age: 720s\n", line: 5, err: "web.simulation_max_age: must be at least 1h, got 720s"},
		{name: "without unit", yml: base + "web: {simulation_max_age: 720}\n", line: 4, err: `web.simulation_max_age: "720" is not a duration`},
		{name: "negative", yml: base + "web: {simulation_max_age: -1h}\n", line: 4, err: "web.simulation_max_age: must be positive"},
		{name: "unknown key", yml: base + "web:\n  simulation_age: 24h\n", line: 5, err: "web.simulation_age: unknown key (known keys: simulation_max_age)"},
		{name: "not a mapping", yml: base + "web: 24h\n", line: 4, err: "web: must be a mapping"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseIn(t, dir, tc.yml)
			if tc.line == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if c.Web.SimulationMaxAge != tc.want {
					t.Errorf("simulation_max_age = %s, want %s", c.Web.SimulationMaxAge, tc.want)
				}
				var buf bytes.Buffer
				c.Describe(&buf)
				if want := "Overview: warns when the last successful simulation is older than " + dur(tc.want); !strings.Contains(buf.String(), want) {
					t.Errorf("check-config lacks %q:\n%s", want, buf.String())
				}
				return
			}
			if err == nil {
				t.Fatal("Parse accepted the config")
			}
			if want := fmt.Sprintf("%s/shutdownd.yaml:%d: %s", dir, tc.line, tc.err); !strings.Contains(err.Error(), want) {
				t.Errorf("error does not contain\n  %s\ngot:\n  %s", want, err)
			}
		})
	}
}
