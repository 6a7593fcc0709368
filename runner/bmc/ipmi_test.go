package bmc

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/sitesim"
)

// startIPMISim starts the shared sitesim ipmi_sim launcher. Under CI=true a
// missing ipmi_sim or ipmitool is a failure, elsewhere a skip.
func startIPMISim(t *testing.T, user, pass string) *sitesim.IPMISim {
	t.Helper()
	s, err := sitesim.StartIPMISim(context.Background(), sitesim.IPMISimOptions{Dir: t.TempDir(), User: user, Password: pass})
	if errors.Is(err, sitesim.ErrToolMissing) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v (install openipmi and ipmitool)", err)
		}
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		if t.Failed() {
			t.Logf("ipmi_sim output:\n%s", s.Output())
		}
	})
	return s
}

func simOps(t *testing.T, s *sitesim.IPMISim) []string {
	t.Helper()
	ops, err := s.Ops()
	if err != nil {
		t.Fatal(err)
	}
	return ops
}

func simPowerOn(t *testing.T, s *sitesim.IPMISim) bool {
	t.Helper()
	on, err := s.PowerOn()
	if err != nil {
		t.Fatal(err)
	}
	return on
}

// openIPMI opens through our package, retrying while ipmi_sim starts up.
func openIPMI(t *testing.T, s *sitesim.IPMISim, user, pass string) *Client {
	t.Helper()
	tg := Target{Name: "storage-01", Address: "127.0.0.1", Port: s.Port(), Protocol: ProtocolIPMI,
		User: user, Password: pass, Timeout: 10 * time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := Open(context.Background(), tg)
		if err == nil {
			t.Cleanup(func() { _ = c.Close(context.Background()) })
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("open ipmi: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestIPMIPowerThroughIpmitool(t *testing.T) {
	t.Parallel()
	const pass = "Ipmi-Secret-9"
	s := startIPMISim(t, "admin", pass)
	c := openIPMI(t, s, "admin", pass)
	ctx := context.Background()

	if st, err := c.PowerState(ctx); err != nil || st != On {
		t.Fatalf("PowerState = %q, %v; want On", st, err)
	}
	if err := c.SoftOff(ctx); err != nil {
		t.Fatalf("SoftOff: %v", err)
	}
	if ops := simOps(t, s); len(ops) != 1 || ops[0] != "shutdown 1" {
		t.Fatalf("chassis operations after SoftOff: %q, want [shutdown 1]", ops)
	}
	if st, err := c.PowerState(ctx); err != nil || st != Off {
		t.Fatalf("PowerState after soft off = %q, %v; want Off", st, err)
	}

	if err := s.SetPower(true); err != nil { // the host came back on by itself
		t.Fatal(err)
	}
	if err := c.HardOff(ctx); err != nil {
		t.Fatalf("HardOff: %v", err)
	}
	if ops := simOps(t, s); len(ops) != 2 || ops[1] != "power 0" {
		t.Fatalf("chassis operations after HardOff: %q, want [... power 0]", ops)
	}
	if simPowerOn(t, s) {
		t.Fatal("HardOff returned but the chassis is on")
	}
	if st, err := c.PowerState(ctx); err != nil || st != Off {
		t.Fatalf("PowerState after hard off = %q, %v; want Off", st, err)
	}

	// Wrong password: refused, and the error keeps it secret.
	bad := Target{Name: "storage-01", Address: "127.0.0.1", Port: s.Port(), Protocol: ProtocolIPMI,
		User: "admin", Password: "Wr0ng-Ipmi-Pass", Timeout: 10 * time.Second}
	_, err := Open(ctx, bad)
	if err == nil {
		t.Fatal("ipmi open with a wrong password succeeded")
	}
	if msg := err.Error(); strings.Contains(msg, bad.Password) || strings.Contains(msg, pass) ||
		!strings.Contains(msg, "storage-01") || !strings.Contains(msg, "ipmi") {
		t.Fatalf("wrong-password error: %s", msg)
	}
}

// TestIPMISoftOffIsAnErrorWhenTheBMCStopsAnswering: bmclib's ipmitool soft
// off answers "done" without sending anything when its own power read
// fails; ours reads first and reports the failure, so the runner goes on
// to the hard off instead of waiting out bmc_soft_off for nothing.
func TestIPMISoftOffIsAnErrorWhenTheBMCStopsAnswering(t *testing.T) {
	t.Parallel()
	s := startIPMISim(t, "admin", "ipmi-secret")
	c := openIPMI(t, s, "admin", "ipmi-secret")
	s.Close() // the BMC stops answering
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.SoftOff(ctx); err == nil {
		t.Fatal("soft off through a BMC that no longer answers reported success")
	}
}
