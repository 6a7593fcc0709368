package bmc

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/sitesim"
)

const testPassword = "Sup3r-Secret-BMC-pw"

// startBMC starts a simulated Redfish BMC and returns it with a Target that
// verifies its certificate through a CA file, as production would.
func startBMC(t *testing.T, opts sitesim.RedfishOptions) (*sitesim.RedfishBMC, *sitesim.Machine, Target) {
	t.Helper()
	if opts.Machine == nil {
		opts.Machine = sitesim.NewMachine("compute-01")
	}
	opts.User, opts.Password = "admin", testPassword
	b, err := sitesim.NewRedfishBMC(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	ca := filepath.Join(t.TempDir(), "bmc-ca.pem")
	if err := os.WriteFile(ca, b.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	return b, opts.Machine, Target{
		Name: "compute-01", Address: b.Host(), Port: b.Port(), Protocol: ProtocolRedfish,
		User: "admin", Password: testPassword, CAFile: ca, Timeout: 5 * time.Second,
	}
}

func open(t *testing.T, tg Target) *Client {
	t.Helper()
	c, err := Open(context.Background(), tg)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRedfishPowerStateOnAndClose(t *testing.T) {
	t.Parallel()
	b, m, tg := startBMC(t, sitesim.RedfishOptions{})
	c, err := Open(context.Background(), tg)
	if err != nil {
		t.Fatal(err)
	}
	// Only the pinned provider was tried: bmclib's default registry would
	// also have run ipmitool, asrockrack, dell, supermicro, ... against it.
	if got := c.cl.GetMetadata().ProvidersAttempted; !slices.Equal(got, []string{"gofish"}) {
		t.Fatalf("providers attempted by Open: %v, want [gofish]", got)
	}
	st, err := c.PowerState(context.Background())
	if err != nil || st != On {
		t.Fatalf("PowerState = %q, %v; want On", st, err)
	}
	m.SetState(sitesim.PowerOff, "test")
	if st, err := c.PowerState(context.Background()); err != nil || st != Off {
		t.Fatalf("PowerState after off = %q, %v; want Off", st, err)
	}
	if b.ActiveSessions() != 1 {
		t.Fatalf("sessions while open: %d, want 1", b.ActiveSessions())
	}
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b.ActiveSessions() != 0 {
		t.Fatalf("sessions after Close: %d, want 0 (no logout)", b.ActiveSessions())
	}
	if _, err := c.PowerState(context.Background()); err == nil {
		t.Fatal("PowerState on a closed client succeeded")
	}
	if len(b.Resets()) != 0 {
		t.Fatalf("reading state sent resets: %v", b.Resets())
	}
}

func TestRedfishSoftOffOneRequest(t *testing.T) {
	t.Parallel()
	b, m, tg := startBMC(t, sitesim.RedfishOptions{SoftOffDelay: 100 * time.Millisecond})
	c := open(t, tg)
	if err := c.SoftOff(context.Background()); err != nil {
		t.Fatalf("SoftOff: %v", err)
	}
	// Exactly one POST: with bmclib's default registry the gofish "not yet
	// off" answer would make the dell provider POST a second reset.
	if got := b.Resets(); !slices.Equal(got, []string{"GracefulShutdown"}) {
		t.Fatalf("Resets = %v, want exactly [GracefulShutdown]", got)
	}
	if m.State() != sitesim.PowerOn {
		t.Fatal("soft off was immediate; the OS should take SoftOffDelay")
	}
	waitFor(t, "machine off", func() bool { return m.State() == sitesim.PowerOff })
	if st, err := c.PowerState(context.Background()); err != nil || st != Off {
		t.Fatalf("PowerState = %q, %v; want Off", st, err)
	}
	if h := m.History(); len(h) != 1 || h[0].Cause != "bmc-soft" {
		t.Fatalf("history %+v, want one bmc-soft event", h)
	}
}

func TestRedfishHardOffAfterIgnoredSoftOff(t *testing.T) {
	t.Parallel()
	b, m, tg := startBMC(t, sitesim.RedfishOptions{IgnoreSoftOff: true})
	c := open(t, tg)
	if err := c.SoftOff(context.Background()); err != nil {
		t.Fatalf("SoftOff: %v", err)
	}
	if st, _ := c.PowerState(context.Background()); st != On {
		t.Fatalf("hung OS turned %q", st)
	}
	if err := c.HardOff(context.Background()); err != nil {
		t.Fatalf("HardOff: %v", err)
	}
	if m.State() != sitesim.PowerOff {
		t.Fatal("HardOff returned but the machine is still on")
	}
	if got := b.Resets(); !slices.Equal(got, []string{"GracefulShutdown", "ForceOff"}) {
		t.Fatalf("Resets = %v", got)
	}
	// Off already: bmclib does not send another ForceOff, and that is fine.
	if err := c.HardOff(context.Background()); err != nil {
		t.Fatalf("HardOff when off: %v", err)
	}
	if n := len(b.Resets()); n != 2 {
		t.Fatalf("HardOff of an off host sent a reset: %v", b.Resets())
	}
}

func TestRedfishTLS(t *testing.T) {
	t.Parallel()
	_, _, tg := startBMC(t, sitesim.RedfishOptions{})

	noCA := tg
	noCA.CAFile = ""
	_, err := Open(context.Background(), noCA)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("open without CA, secure by default: want certificate error, got %v", err)
	}

	insecure := noCA
	insecure.InsecureTLS = true
	c := open(t, insecure)
	if st, err := c.PowerState(context.Background()); err != nil || st != On {
		t.Fatalf("insecure PowerState = %q, %v", st, err)
	}

	badCA := tg
	badCA.CAFile = filepath.Join(t.TempDir(), "empty.pem")
	if err := os.WriteFile(badCA.CAFile, []byte("not a cert\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(context.Background(), badCA); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("bad CA file: %v", err)
	}
}

func TestRedfishWrongPasswordNotInError(t *testing.T) {
	t.Parallel()
	b, _, tg := startBMC(t, sitesim.RedfishOptions{})
	tg.Password = "Wr0ng-Password-Guess"
	_, err := Open(context.Background(), tg)
	if err == nil {
		t.Fatal("open with a wrong password succeeded")
	}
	msg := err.Error()
	if strings.Contains(msg, tg.Password) || strings.Contains(msg, testPassword) {
		t.Fatalf("error leaks the password: %s", msg)
	}
	for _, want := range []string{"compute-01", "redfish", "401"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if b.ActiveSessions() != 0 {
		t.Fatalf("failed login left %d sessions", b.ActiveSessions())
	}
}

func TestRedfishUnreachableFailsFast(t *testing.T) {
	t.Parallel()
	b, _, tg := startBMC(t, sitesim.RedfishOptions{Unreachable: true})
	start := time.Now()
	_, err := Open(context.Background(), tg)
	if err == nil {
		t.Fatal("open of an unreachable BMC succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("unreachable BMC took %v to fail", d)
	}
	if !strings.Contains(err.Error(), "compute-01") {
		t.Fatalf("error does not name the BMC: %v", err)
	}
	// The same target works once the BMC is back.
	if err := b.SetReachable(true); err != nil {
		t.Fatal(err)
	}
	open(t, tg)
}

func TestRedfishTimeout(t *testing.T) {
	t.Parallel()
	_, _, tg := startBMC(t, sitesim.RedfishOptions{Latency: 2 * time.Second})
	tg.Timeout = 200 * time.Millisecond
	start := time.Now()
	if _, err := Open(context.Background(), tg); err == nil {
		t.Fatal("open of a BMC slower than the timeout succeeded")
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Fatalf("timeout of 200ms took %v", d)
	}
}

func TestOpenRejectsBadTargets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		tg   Target
		want string
	}{
		{"unknown protocol", Target{Name: "h1", Address: "127.0.0.1", Protocol: "snmp"}, "unknown protocol"},
		{"no address", Target{Name: "h1", Protocol: ProtocolRedfish}, "no BMC address"},
		{"missing CA file", Target{Name: "h1", Address: "127.0.0.1", Protocol: ProtocolRedfish, CAFile: "/nonexistent/ca.pem"}, "read CA file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(context.Background(), tc.tg)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "h1") {
				t.Fatalf("err = %v, want it to name h1 and say %q", err, tc.want)
			}
		})
	}
}

func TestHostPort(t *testing.T) {
	t.Parallel()
	tests := []struct {
		tg   Target
		host string
		port int
	}{
		{Target{Address: "10.0.1.11", Protocol: ProtocolIPMI}, "10.0.1.11", 623},
		{Target{Address: "10.0.1.11", Protocol: ProtocolRedfish}, "10.0.1.11", 443},
		{Target{Address: "10.0.1.11", Port: 8443, Protocol: ProtocolRedfish}, "10.0.1.11", 8443},
		{Target{Address: "10.0.1.11:8443", Protocol: ProtocolRedfish}, "10.0.1.11", 8443},
		{Target{Address: "10.0.1.11:8443", Port: 9443, Protocol: ProtocolRedfish}, "10.0.1.11", 9443},
		{Target{Address: "fd00::11", Protocol: ProtocolIPMI}, "[fd00::11]", 623},
		{Target{Address: "[fd00::11]:1623", Protocol: ProtocolIPMI}, "[fd00::11]", 1623},
		{Target{Address: "bmc-01.example", Protocol: ProtocolRedfish}, "bmc-01.example", 443},
	}
	for _, tc := range tests {
		host, port, err := hostPort(tc.tg)
		if err != nil || host != tc.host || port != tc.port {
			t.Errorf("hostPort(%q, %d) = %q, %d, %v; want %q, %d", tc.tg.Address, tc.tg.Port, host, port, err, tc.host, tc.port)
		}
	}
}

func TestNormalise(t *testing.T) {
	t.Parallel()
	tests := []struct {
		raw  string
		want PowerState
	}{
		{"On", On},
		{"on", On},
		{"Chassis Power is on\n", On},
		{"Off", Off},
		{"off", Off},
		{"Chassis Power is off", Off},
		{"Get HPM.x Capabilities request failed\nChassis Power is off\n", Off},
		{"PoweringOff", Unknown},
		{"PoweringOn", Unknown},
		{"", Unknown},
		{"Chassis Power Control: Up/On", Unknown},
	}
	for _, tc := range tests {
		if got := normalise(tc.raw); got != tc.want {
			t.Errorf("normalise(%q) = %q, want %q", tc.raw, got, tc.want)
		}
	}
}

func TestErrorScrubsSecret(t *testing.T) {
	t.Parallel()
	cause := errors.New("2 errors occurred:\n\t* provider: gofish, bad auth for admin:hunter22\n\t* failed")
	c := &Client{name: "bmc-7", protocol: ProtocolIPMI, addr: "127.0.0.1:623", secret: "hunter22"}
	err := c.wrap("open", cause)
	want := "open bmc bmc-7 (ipmi 127.0.0.1:623): 2 errors occurred: * provider: gofish, bad auth for admin:[redacted] * failed"
	if err.Error() != want {
		t.Fatalf("got  %q\nwant %q", err.Error(), want)
	}
	if !errors.Is(err, cause) {
		t.Fatal("wrapped error lost its cause")
	}
}

// TestRedfishCallEndsWithItsContext: a BMC that turns slow after the session
// was opened holds a call only as long as the caller's context allows
// (gofish itself ignores it), and the next call still works once the BMC
// answers again.
func TestRedfishCallEndsWithItsContext(t *testing.T) {
	t.Parallel()
	b, _, tg := startBMC(t, sitesim.RedfishOptions{})
	c := open(t, tg)
	b.SetLatency(3 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if ps, err := c.PowerState(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("power read on a slow BMC with a 300ms context: %s, %v; want the context's deadline", ps, err)
	}
	if err := c.HardOff(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hard off with an expired context: %v; want the context's deadline", err)
	}
	b.SetLatency(0)
	if ps, err := c.PowerState(context.Background()); err != nil || ps != On {
		t.Fatalf("power read once the BMC answers again: %s, %v", ps, err)
	}
}
