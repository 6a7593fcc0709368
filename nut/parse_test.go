package nut

import (
	"net"
	"slices"
	"testing"
	"time"
)

func TestFields(t *testing.T) {
	for _, tc := range []struct {
		line string
		want []string
	}{
		{`VAR ups1 ups.status "OB LB"`, []string{"VAR", "ups1", "ups.status", "OB LB"}},
		{`VAR ups1 x "a \"q\" \\ b"`, []string{"VAR", "ups1", "x", `a "q" \ b`}},
		{`VAR ups1 x ""`, []string{"VAR", "ups1", "x", ""}},
		{`OK`, []string{"OK"}},
	} {
		got, err := fields(tc.line)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("fields(%q) = %q, %v; want %q", tc.line, got, err, tc.want)
		}
	}
	if _, err := fields(`VAR ups1 x "open`); err == nil {
		t.Error("unterminated string accepted")
	}
	if got := quote(`a"b\c`); got != `"a\"b\\c"` {
		t.Errorf("quote = %s", got)
	}
}

func TestParseReading(t *testing.T) {
	r, err := ParseReading(map[string]string{"ups.status": "OB DISCHRG", "battery.charge": "55", "battery.runtime": "oops"}, time.Unix(0, 0))
	if err != nil || !r.OnBattery() || !r.HasCharge || r.HasRuntime {
		t.Errorf("got %+v, %v", r, err)
	}
	if _, err := ParseReading(map[string]string{"battery.charge": "5"}, time.Now()); err == nil {
		t.Error("a UPS without ups.status was accepted")
	}
}

// listenSilentT accepts connections and never answers.
func listenSilentT(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	return l.Addr().String()
}
