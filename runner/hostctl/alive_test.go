package hostctl_test

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/runner/hostctl"
	"github.com/edgeops/shutdownd/sitesim"
)

// A connection the server dropped is seen dead, fails its keepalive, and a
// command on it fails with ErrNoSession without reaching the host: the
// caller may send it again on a new connection.
func TestDroppedConnectionIsDeadAndSendsNothing(t *testing.T) {
	t.Parallel()
	h, target := newHost(t, sitesim.SSHHostOptions{Name: "storage-01"})
	c := dial(t, target)
	if !c.Alive() {
		t.Fatal("fresh connection not alive")
	}
	if err := c.Keepalive(context.Background()); err != nil {
		t.Fatalf("keepalive on a live connection: %v", err)
	}

	h.SetReachable(false) // sshd goes away: its connections are dropped
	waitFor(t, "connection seen dead", func() bool { return !c.Alive() })
	if err := c.Keepalive(context.Background()); !errors.Is(err, hostctl.ErrUnreachable) {
		t.Errorf("keepalive on a dropped connection = %v, want ErrUnreachable", err)
	}
	_, err := c.Run(context.Background(), "systemctl stop ceph.target")
	if !errors.Is(err, hostctl.ErrNoSession) {
		t.Errorf("Run on a dropped connection = %v, want ErrNoSession", err)
	}
	err = c.PowerOff(context.Background(), "systemctl poweroff")
	if !errors.Is(err, hostctl.ErrNoSession) {
		t.Errorf("PowerOff on a dropped connection = %v, want an error wrapping ErrNoSession (not sent)", err)
	}
	if n := len(h.Commands()); n != 0 {
		t.Errorf("host received %d commands over a dead connection", n)
	}

	// A new connection to the host, once it is back, works.
	h.SetReachable(true)
	c2 := dial(t, target)
	if _, err := c2.Run(context.Background(), "systemctl stop ceph.target"); err != nil {
		t.Fatalf("Run on a new connection: %v", err)
	}
	if !h.CephStopped() {
		t.Error("ceph not stopped through the new connection")
	}
}

// A connection that dies without a reset (the network drops everything)
// must not hold a command for the whole command timeout: opening the
// session is bounded by the connect timeout, and the failure says nothing
// was sent.
func TestSilentlyDeadConnectionFailsWithinConnectTimeout(t *testing.T) {
	t.Parallel()
	h, target := newHost(t, sitesim.SSHHostOptions{Name: "compute-07"})
	px := newFreezingProxy(t, h.Addr())
	target.Address = px.addr()
	target.KnownHosts = filepath.Join(t.TempDir(), "known_hosts")
	writeKnownHosts(t, target.KnownHosts, sitesim.KnownHostsLine(px.addr(), h.HostKey()))
	target.ConnectTimeout = 300 * time.Millisecond
	target.CommandTimeout = time.Hour // if this bounded it, the test would hang
	c := dial(t, target)
	if _, err := c.Run(context.Background(), "true"); err != nil {
		t.Fatalf("Run through the proxy: %v", err)
	}

	px.freeze()
	err := c.PowerOff(context.Background(), "systemctl poweroff")
	if !errors.Is(err, hostctl.ErrNoSession) {
		t.Fatalf("PowerOff on a frozen connection = %v, want ErrNoSession", err)
	}
	if h.PowerCommands() != 0 {
		t.Error("the power-off reached the host although reported as not sent")
	}
	// The connection was given up: whoever holds it sees it dead.
	waitFor(t, "connection closed", func() bool { return !c.Alive() })
}

// freezingProxy relays TCP to a server until freeze, after which it keeps
// the connections open and forwards nothing: a network path that died
// without a reset.
type freezingProxy struct {
	ln     net.Listener
	frozen chan struct{}
}

func newFreezingProxy(t *testing.T, upstream string) *freezingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezingProxy{ln: ln, frozen: make(chan struct{})}
	var conns []net.Conn
	var mu sync.Mutex
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	go func() {
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				down.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, down, up)
			mu.Unlock()
			go p.pipe(up, down)
			go p.pipe(down, up)
		}
	}()
	return p
}

func (p *freezingProxy) addr() string { return p.ln.Addr().String() }

func (p *freezingProxy) freeze() { close(p.frozen) }

func (p *freezingProxy) pipe(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-p.frozen:
			// Swallow everything from now on; the reader side is closed
			// by the test's cleanup.
			if err != nil {
				return
			}
			continue
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
