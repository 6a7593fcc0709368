package nut_test

import (
	"context"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/nut"
	"github.com/edgeops/shutdownd/nut/upsdtest"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// TestReadRealUpsd logs in to the real upsd, reads the UPS with LIST VAR and
// GET VAR, follows a change of the driver's data, and logs out.
func TestReadRealUpsd(t *testing.T) {
	t.Parallel()
	srv := upsdtest.Start(t, upsdtest.Options{User: "shutdownd", Password: `pa"ss\word`,
		Vars: map[string]string{"ups.status": "OL CHRG", "battery.charge": "97", "battery.runtime": "1800"}})
	c, err := nut.Dial(ctx(t), nut.Options{Address: srv.Addr, UPS: srv.UPS, User: "shutdownd", Password: `pa"ss\word`})
	if err != nil {
		t.Fatalf("dial: %v\n%s", err, srv.Log())
	}
	defer c.Close()
	if !c.LoggedIn() {
		t.Error("LOGIN did not succeed")
	}
	vars, err := c.Vars(ctx(t), srv.UPS)
	if err != nil {
		t.Fatal(err)
	}
	r, err := nut.ParseReading(vars, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if r.OnBattery() || !r.Has(nut.StatusOnline) || !r.Has(nut.StatusCharging) || r.Charge != 97 || r.Runtime != 30*time.Minute {
		t.Errorf("reading = %+v, want OL CHRG, 97 %%, 30m", r)
	}
	if v, err := c.Var(ctx(t), srv.UPS, "device.model"); err != nil || v != "Dummy UPS" {
		t.Errorf("GET VAR device.model = %q, %v; want the dummy driver's model", v, err)
	}
	if _, err := c.Var(ctx(t), srv.UPS, "no.such.var"); !nut.IsCode(err, "VAR-NOT-SUPPORTED") {
		t.Errorf("GET VAR of an unknown variable: %v, want ERR VAR-NOT-SUPPORTED", err)
	}
	if _, err := c.Vars(ctx(t), "nosuchups"); !nut.IsCode(err, "UNKNOWN-UPS") {
		t.Errorf("LIST VAR of an unknown UPS: %v, want ERR UNKNOWN-UPS", err)
	}

	srv.Set(map[string]string{"ups.status": "OB DISCHRG LB", "battery.charge": "12", "battery.runtime": "95.5"})
	vars, err = c.Vars(ctx(t), srv.UPS)
	if err != nil {
		t.Fatal(err)
	}
	r, _ = nut.ParseReading(vars, time.Now())
	if !r.OnBattery() || !r.Has(nut.StatusLowBattery) || r.Charge != 12 || r.Runtime != 95500*time.Millisecond {
		t.Errorf("after the change: %+v, want OB LB, 12 %%, 95.5s", r)
	}
}

// TestWrongPassword: upsd refuses the login, and Dial says so.
func TestWrongPassword(t *testing.T) {
	t.Parallel()
	srv := upsdtest.Start(t, upsdtest.Options{User: "shutdownd", Password: "right"})
	_, err := nut.Dial(ctx(t), nut.Options{Address: srv.Addr, UPS: srv.UPS, User: "shutdownd", Password: "wrong"})
	if !nut.IsCode(err, "ACCESS-DENIED") {
		t.Fatalf("dial with a wrong password: %v, want ERR ACCESS-DENIED", err)
	}
}

// TestSessionReconnects: the session notices upsd gone, backs off, and
// reads again once a new upsd answers on the same address.
func TestSessionReconnects(t *testing.T) {
	t.Parallel()
	srv := upsdtest.Start(t, upsdtest.Options{})
	s := nut.NewSession(nut.Options{Address: srv.Addr, UPS: srv.UPS, Timeout: 2 * time.Second}, 50*time.Millisecond, 200*time.Millisecond)
	defer s.Close()
	if _, err := s.Read(ctx(t)); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	if _, err := s.Read(ctx(t)); err == nil {
		t.Fatal("read after upsd was killed succeeded")
	}
	start := time.Now()
	_, err := s.Read(ctx(t))
	if err == nil || time.Since(start) > time.Second {
		t.Fatalf("read during the backoff: %v after %s, want an error at once", err, time.Since(start))
	}
	srv.Restart()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err := s.Read(ctx(t))
		if err == nil {
			if r.StatusText() != "OL" {
				t.Errorf("status after reconnect = %q", r.StatusText())
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no reconnect: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestReadTimesOut: a peer that accepts and never answers costs one
// timeout, not a hung watcher.
func TestReadTimesOut(t *testing.T) {
	t.Parallel()
	l := nut.ListenSilent(t)
	start := time.Now()
	_, err := nut.Dial(ctx(t), nut.Options{Address: l, UPS: "ups1", User: "u", Password: "p", Timeout: 300 * time.Millisecond})
	if err == nil {
		t.Fatal("dial to a silent peer succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s with a 300ms timeout", d)
	}
}
