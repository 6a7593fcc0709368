package hostctl_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/edgeops/shutdownd/runner/hostctl"
	"github.com/edgeops/shutdownd/sitesim"
)

// newHost starts a simulated host and returns it with a Target whose key
// file and known_hosts (written in a temp dir) let us in.
func newHost(t *testing.T, opts sitesim.SSHHostOptions) (*sitesim.SSHHost, hostctl.Target) {
	t.Helper()
	dir := t.TempDir()
	signer, pemBytes, err := sitesim.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(keyFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	if opts.Name == "" {
		opts.Name = "compute-01"
	}
	opts.AuthorizedKeys = append(opts.AuthorizedKeys, signer.PublicKey())
	h, err := sitesim.NewSSHHost(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	knownHosts := filepath.Join(dir, "known_hosts")
	writeKnownHosts(t, knownHosts, sitesim.KnownHostsLine(h.Addr(), h.HostKey()))
	return h, hostctl.Target{
		Name:           opts.Name,
		Address:        h.Addr(),
		User:           "root",
		KeyFile:        keyFile,
		KnownHosts:     knownHosts,
		ConnectTimeout: 2 * time.Second,
		CommandTimeout: 5 * time.Second,
	}
}

func writeKnownHosts(t *testing.T, path string, lines ...string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func dial(t *testing.T, target hostctl.Target) *hostctl.Conn {
	t.Helper()
	c, err := hostctl.Dial(context.Background(), target)
	if err != nil {
		t.Fatalf("dial %s: %v", target.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitFor polls cond until it holds or the deadline passes.
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

func newKey(t *testing.T) ssh.Signer {
	t.Helper()
	s, _, err := sitesim.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRun(t *testing.T) {
	t.Parallel()
	h, target := newHost(t, sitesim.SSHHostOptions{Name: "storage-01"})
	c := dial(t, target)
	ctx := context.Background()

	res, err := c.Run(ctx, "hostname")
	if err != nil || res.Stdout != "storage-01\n" || res.ExitStatus != 0 {
		t.Fatalf("hostname = %+v, %v", res, err)
	}
	res, err = c.Run(ctx, "ceph osd set noout")
	if err != nil || res.Stdout != "noout is set\n" {
		t.Fatalf("ceph osd set noout = %+v, %v", res, err)
	}
	if got := h.CephFlags(); !slices.Equal(got, []string{"noout"}) {
		t.Errorf("server flags = %v, want [noout]", got)
	}
	res, err = c.Run(ctx, "ceph health")
	if err != nil || res.Stdout != "HEALTH_WARN noout flag(s) set\n" {
		t.Errorf("ceph health = %+v, %v", res, err)
	}

	res, err = c.Run(ctx, "frobnicate --all")
	var ee *ssh.ExitError
	if !errors.As(err, &ee) || res.ExitStatus != 127 {
		t.Fatalf("unknown command = %+v, %v; want exit 127 wrapping *ssh.ExitError", res, err)
	}
	if !strings.Contains(err.Error(), "command not found") {
		t.Errorf("error %q does not quote stderr", err)
	}
	got := h.Commands()
	if len(got) != 4 || got[1].Line != "ceph osd set noout" || got[1].User != "root" {
		t.Errorf("server saw %+v", got)
	}
}

func TestPowerOff(t *testing.T) {
	t.Parallel()
	h, target := newHost(t, sitesim.SSHHostOptions{PowerOffDelay: 10 * time.Millisecond})
	c := dial(t, target)
	if err := c.PowerOff(context.Background(), "sudo systemctl poweroff"); err != nil {
		t.Fatalf("PowerOff = %v, want nil (dropped connection means sent)", err)
	}
	if h.PowerCommands() != 1 {
		t.Errorf("server saw %d power-off commands, want 1", h.PowerCommands())
	}
	waitFor(t, "machine off", func() bool { return h.Machine().State() == sitesim.PowerOff })
	waitFor(t, "port refused", func() bool {
		_, err := hostctl.Dial(context.Background(), target)
		return errors.Is(err, hostctl.ErrUnreachable)
	})
}

func TestPowerOffOutcomes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		opts    sitesim.SSHHostOptions
		user    string // root when empty
		cmd     string
		timeout time.Duration
		wantErr string // "" means nil
		wantOff bool
	}{
		{name: "clean exit", opts: sitesim.SSHHostOptions{ExitOnPowerOff: true}, cmd: "poweroff", wantOff: true},
		{name: "ignored by host", opts: sitesim.SSHHostOptions{IgnorePowerOff: true}, cmd: "systemctl poweroff"},
		{name: "sudo refused", opts: sitesim.SSHHostOptions{SudoDenied: true}, user: "ops", cmd: "sudo -n systemctl poweroff",
			wantErr: "power-off command exited 1: sudo: a password is required"},
		{name: "no such command", cmd: "shutdown -r now", wantErr: "power-off command exited 127"},
		// Accepted, then the session hangs past the timeout: counted as
		// sent, the BMC confirms.
		{name: "session hangs", opts: sitesim.SSHHostOptions{Latency: time.Minute}, cmd: "systemctl poweroff",
			timeout: 200 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, target := newHost(t, tt.opts)
			if tt.timeout > 0 {
				target.CommandTimeout = tt.timeout
			}
			if tt.user != "" {
				target.User = tt.user
			}
			c := dial(t, target)
			err := c.PowerOff(context.Background(), tt.cmd)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("PowerOff = %v, want %q", err, tt.wantErr)
			}
			if len(h.Commands()) != 1 {
				t.Errorf("server saw %d commands, want 1", len(h.Commands()))
			}
			if tt.wantOff {
				waitFor(t, "machine off", func() bool { return h.Machine().State() == sitesim.PowerOff })
			} else if h.Machine().State() != sitesim.PowerOn {
				t.Error("machine went off")
			}
		})
	}
}

func TestRunTimeoutAndCancel(t *testing.T) {
	t.Parallel()
	h, target := newHost(t, sitesim.SSHHostOptions{Latency: time.Minute})

	t.Run("timeout", func(t *testing.T) {
		tt := target
		tt.CommandTimeout = 100 * time.Millisecond
		c := dial(t, tt)
		start := time.Now()
		res, err := c.Run(context.Background(), "ceph health")
		if !errors.Is(err, hostctl.ErrCommandTimeout) || res.ExitStatus != -1 {
			t.Fatalf("Run = %+v, %v; want ErrCommandTimeout", res, err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("timeout took %s", d)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		c := dial(t, target)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		errc := make(chan error, 1)
		n := len(h.Commands())
		go func() {
			_, err := c.Run(ctx, "ceph -s")
			errc <- err
		}()
		waitFor(t, "command received", func() bool { return len(h.Commands()) > n })
		cancel()
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Run after cancel = %v, want context.Canceled", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
		// The connection stays usable: a new session reaches the server.
		short, cancelShort := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancelShort()
		if _, err := c.Run(short, "true"); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("follow-up Run = %v, want DeadlineExceeded (host latency)", err)
		}
		if got := len(h.Commands()); got != n+2 {
			t.Errorf("server saw %d commands, want %d", got, n+2)
		}
	})
}

func TestDialErrors(t *testing.T) {
	t.Parallel()
	h, target := newHost(t, sitesim.SSHHostOptions{})
	dir := t.TempDir()

	// A port nobody listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := ln.Addr().String()
	ln.Close()

	// A server that accepts TCP and never speaks SSH.
	mute, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mute.Close() })
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := mute.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()

	mismatch := filepath.Join(dir, "mismatch")
	writeKnownHosts(t, mismatch, sitesim.KnownHostsLine(h.Addr(), newKey(t).PublicKey()))
	unknown := filepath.Join(dir, "unknown")
	writeKnownHosts(t, unknown, sitesim.KnownHostsLine("127.0.0.1:1", h.HostKey()))
	wrongKey := filepath.Join(dir, "wrong_key")
	_, pemBytes, err := sitesim.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(wrongKey, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		modify func(*hostctl.Target)
		want   error
	}{
		{"connection refused", func(t *hostctl.Target) { t.Address = closedAddr }, hostctl.ErrUnreachable},
		{"handshake timeout", func(t *hostctl.Target) {
			t.Address = mute.Addr().String()
			t.ConnectTimeout = 200 * time.Millisecond
		}, hostctl.ErrUnreachable},
		{"host key mismatch", func(t *hostctl.Target) { t.KnownHosts = mismatch }, hostctl.ErrHostKeyMismatch},
		{"host key unknown", func(t *hostctl.Target) { t.KnownHosts = unknown }, hostctl.ErrHostKeyUnknown},
		{"wrong client key", func(t *hostctl.Target) { t.KeyFile = wrongKey }, hostctl.ErrAuth},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg := target
			tt.modify(&tg)
			start := time.Now()
			c, err := hostctl.Dial(context.Background(), tg)
			if err == nil {
				c.Close()
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Dial = %v, want %v", err, tt.want)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("Dial took %s", d)
			}
		})
	}
	// None of the refused dials got as far as a login or a command; the
	// host key checks in particular failed before authentication.
	if h.Logins() != 0 || len(h.Commands()) != 0 {
		t.Errorf("server saw %d logins, %d commands; want 0, 0", h.Logins(), len(h.Commands()))
	}
	dial(t, target) // the same host with the right files still works
	waitFor(t, "control login", func() bool { return h.Logins() == 1 })
}

func TestDialUnreachableHost(t *testing.T) {
	t.Parallel()
	h, target := newHost(t, sitesim.SSHHostOptions{})
	h.SetReachable(false)
	start := time.Now()
	if _, err := hostctl.Dial(context.Background(), target); !errors.Is(err, hostctl.ErrUnreachable) {
		t.Fatalf("Dial = %v, want ErrUnreachable", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("refused dial took %s", d)
	}
	h.SetReachable(true)
	dial(t, target)
}

func TestDialCancelled(t *testing.T) {
	t.Parallel()
	// A server that accepts TCP and never speaks: only ctx can end Dial
	// before the (long) connect timeout.
	mute, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mute.Close() })
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := mute.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	_, target := newHost(t, sitesim.SSHHostOptions{})
	target.Address = mute.Addr().String()
	target.ConnectTimeout = time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := hostctl.Dial(ctx, target)
		errc <- err
	}()
	c := <-accepted
	defer c.Close()
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Dial = %v, want context.Canceled", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Dial did not return after cancel")
	}
}

// A host that presents one of this machine's own keys is refused during the
// handshake: no login, no command, whatever known_hosts says.
func TestDialRefusesThisMachinesKey(t *testing.T) {
	t.Parallel()
	h, target := newHost(t, sitesim.SSHHostOptions{})
	target.RefuseKeys = []hostctl.OwnKey{{File: "/etc/ssh/ssh_host_ed25519_key.pub", Key: h.HostKey()}}
	c, err := hostctl.Dial(context.Background(), target)
	if err == nil {
		c.Close()
		t.Fatal("Dial accepted a host presenting this machine's key")
	}
	if !errors.Is(err, hostctl.ErrThisMachine) || errors.Is(err, hostctl.ErrUnreachable) {
		t.Errorf("Dial = %v; want ErrThisMachine only", err)
	}
	if !strings.Contains(err.Error(), ssh.FingerprintSHA256(h.HostKey())) {
		t.Errorf("error %q does not name the key", err)
	}
	if h.Logins() != 0 || len(h.Commands()) != 0 {
		t.Errorf("host saw %d logins, %d commands; want none", h.Logins(), len(h.Commands()))
	}
}
