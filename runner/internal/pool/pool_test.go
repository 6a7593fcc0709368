package pool_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/runner/bmc"
	"github.com/edgeops/shutdownd/runner/hostctl"
	"github.com/edgeops/shutdownd/runner/internal/pool"
	"github.com/edgeops/shutdownd/sitesim"
)

// The pool's peers are the simulated site's: sshd hosts with a ForceCommand
// recorder and Redfish BMCs, all on 127.0.0.1. The pool only logs in; no
// test here sends a command.

type testPool = pool.Pool[*hostctl.Conn, *bmc.Client]

// peers is a simulated site, its configuration, and the opens the pool
// made through it.
type peers struct {
	t    *testing.T
	site *sitesim.Site
	cfg  *config.Config

	mu    sync.Mutex
	opens []open
}

type open struct {
	bmc  bool
	host string
	at   time.Time
}

func newPeers(t *testing.T) *peers {
	t.Helper()
	dir := t.TempDir()
	site, err := sitesim.Start(context.Background(), sitesim.Options{
		Dir: dir, Projects: []string{"a"}, VMsPerProject: 1, Seed: 7,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(site.Close)
	path, err := site.WriteConfig("127.0.0.1:0", filepath.Join(dir, "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return &peers{t: t, site: site, cfg: cfg}
}

// options are the pool's options over the real SSH and Redfish clients,
// configured as the runner configures them.
func (p *peers) options(stops *pool.StopCounter) pool.Options[*hostctl.Conn, *bmc.Client] {
	return pool.Options[*hostctl.Conn, *bmc.Client]{
		Config: p.cfg,
		DialHost: func(ctx context.Context, h config.Host) (*hostctl.Conn, error) {
			p.record(false, h.Name)
			return hostctl.Dial(ctx, hostctl.Target{Name: h.Name, Address: h.Address, User: h.SSH.User,
				KeyFile: h.SSH.KeyFile, KnownHosts: h.SSH.KnownHosts,
				ConnectTimeout: h.SSH.ConnectTimeout, CommandTimeout: h.SSH.CommandTimeout})
		},
		OpenBMC: func(ctx context.Context, h config.Host) (*bmc.Client, error) {
			p.record(true, h.Name)
			b := h.BMC
			return bmc.Open(ctx, bmc.Target{Name: h.Name, Address: b.Address, Port: b.Port,
				Protocol: b.Protocol, User: b.User, Password: b.Password.Reveal(),
				InsecureTLS: b.InsecureTLS, CAFile: b.CAFile, Timeout: b.Timeout})
		},
		Live:   func(c *hostctl.Conn) pool.Live { return c },
		Stops:  stops,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

func (p *peers) record(isBMC bool, host string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.opens = append(p.opens, open{isBMC, host, time.Now()})
}

func (p *peers) recorded() []open {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]open(nil), p.opens...)
}

func (p *peers) host(name string) config.Host {
	h, ok := p.cfg.Host(name)
	if !ok {
		p.t.Fatalf("no host %s", name)
	}
	return h
}

// waitFor waits for cond, generously for a loaded 2-core machine.
func (p *peers) waitFor(what string, cond func() bool) {
	p.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			p.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// allWarm reports whether every host except those in skip has one SSH
// login and one BMC session.
func (p *peers) allWarm(skip ...string) func() bool {
	return func() bool {
		for _, h := range p.site.Hosts {
			if slicesContains(skip, h.Spec.Name) {
				continue
			}
			if h.SSH.Logins() != 1 || h.BMC.ActiveSessions() != 1 {
				return false
			}
		}
		return true
	}
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Nothing is opened while the VM step's os-stops go out; once they have
// been quiet for pool.Quiet, every host and BMC of the plan is opened
// once, in the plan's order, and each is handed out without a second login.
// Close logs every session out that was not handed over.
func TestOpensWaitForTheStopsThenOpenThePlanOnce(t *testing.T) {
	p := newPeers(t)
	var stops pool.StopCounter
	pl := pool.Start(context.Background(), p.options(&stops))
	end := stops.Begin()
	stopped := time.Now()
	end()
	p.waitFor("every host and BMC opened", p.allWarm())

	opens := p.recorded()
	plan := pool.Plan(p.cfg, nil)
	if len(opens) != len(plan) {
		t.Fatalf("%d opens, want the plan's %d", len(opens), len(plan))
	}
	for _, o := range opens {
		if o.at.Sub(stopped) < pool.Quiet {
			t.Errorf("%s (bmc %v) opened %s after the last os-stop, before pool.Quiet", o.host, o.bmc, o.at.Sub(stopped))
		}
	}
	want := map[open]bool{}
	for _, task := range plan {
		want[open{bmc: task.BMC, host: task.Host.Name}] = true
	}
	for _, o := range opens {
		k := open{bmc: o.bmc, host: o.host}
		if !want[k] {
			t.Errorf("%s (bmc %v) opened twice or not in the plan", o.host, o.bmc)
		}
		delete(want, k)
	}

	h := p.host("compute-01")
	a, err := pl.SSHConn(h)
	if err != nil {
		t.Fatal(err)
	}
	b, err := pl.SSHConn(h)
	if err != nil || a != b {
		t.Fatalf("second SSHConn = %p, %v; want the shared %p", b, err, a)
	}
	ctl, warm, err := pl.TakeBMC(h)
	if err != nil || !warm {
		t.Fatalf("TakeBMC = warm %v, %v; want the warm session", warm, err)
	}
	if st, err := ctl.PowerState(context.Background()); err != nil || st != bmc.On {
		t.Errorf("power state over the warm session: %s, %v", st, err)
	}
	pl.Close()
	for _, sh := range p.site.Hosts {
		if n := sh.SSH.Logins(); n != 1 {
			t.Errorf("%s: %d logins, want 1", sh.Spec.Name, n)
		}
		want := 0
		if sh.Spec.Name == "compute-01" {
			want = 1 // handed over: the taker's to close
		}
		if n := sh.BMC.ActiveSessions(); n != want {
			t.Errorf("%s: %d BMC sessions after Close, want %d", sh.Spec.Name, n, want)
		}
	}
	if err := ctl.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := pl.SSHConn(h); !errors.Is(err, pool.ErrClosed) {
		t.Errorf("SSHConn after Close: %v, want ErrClosed", err)
	}
}

// A resumed job's hosts already confirmed Off are never opened in advance;
// Release starts the warm-up without any os-stop.
func TestSkippedHostIsNeverOpenedAndReleaseStartsTheWarmUp(t *testing.T) {
	p := newPeers(t)
	o := p.options(nil)
	o.Skip = map[string]bool{"compute-02": true}
	pl := pool.Start(context.Background(), o)
	defer pl.Close()
	pl.Release()
	p.waitFor("every other host opened", p.allWarm("compute-02"))
	pl.Close()
	skipped := p.site.Host("compute-02")
	if skipped.SSH.Logins() != 0 || skipped.BMC.ActiveSessions() != 0 {
		t.Errorf("compute-02 (confirmed Off) opened: %d logins, %d sessions", skipped.SSH.Logins(), skipped.BMC.ActiveSessions())
	}
	for _, op := range p.recorded() {
		if op.host == "compute-02" {
			t.Errorf("compute-02 opened (bmc %v)", op.bmc)
		}
	}
}

// A host whose key does not match known_hosts is dialled once by the
// warm-up, and never again when a step asks for it.
func TestRefusedHostKeyIsNeverDialledTwice(t *testing.T) {
	p := newPeers(t)
	var lines []string
	for _, h := range p.site.Hosts {
		key := h.SSH.HostKey()
		if h.Spec.Name == "compute-02" {
			key = p.site.Host("compute-01").SSH.HostKey()
		}
		lines = append(lines, sitesim.KnownHostsLine(h.SSH.Addr(), key))
	}
	if err := os.WriteFile(p.site.KnownHostsFile, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pl := pool.Start(context.Background(), p.options(nil))
	defer pl.Close()
	pl.Release()
	p.waitFor("the warm dial refused", func() bool { return pl.SSHWarmFailed("compute-02") })
	for range 2 {
		if _, err := pl.SSHConn(p.host("compute-02")); !errors.Is(err, hostctl.ErrHostKeyMismatch) {
			t.Fatalf("SSHConn = %v, want the host key mismatch", err)
		}
	}
	n := 0
	for _, o := range p.recorded() {
		if o.host == "compute-02" && !o.bmc {
			n++
		}
	}
	if n != 1 || p.site.Host("compute-02").SSH.Logins() != 0 {
		t.Errorf("compute-02: %d dials, %d logins; want 1 dial and no login", n, p.site.Host("compute-02").SSH.Logins())
	}
}

// A warm connection that died is replaced: in the background by the
// keepalive while no step has used it, or by one fresh dial when a step
// asks for it first.
func TestDeadWarmConnectionIsReplaced(t *testing.T) {
	p := newPeers(t)
	o := p.options(nil)
	o.Keepalive = 50 * time.Millisecond
	pl := pool.Start(context.Background(), o)
	defer pl.Close()
	pl.Release()
	p.waitFor("every host and BMC opened", p.allWarm())

	bg := p.site.Host("compute-01").SSH
	bg.SetReachable(false)
	bg.SetReachable(true)
	p.waitFor("compute-01 dialled again by the keepalive", func() bool { return bg.Logins() == 2 })
	s, err := pl.SSHConn(p.host("compute-01"))
	if err != nil || !s.Conn().Alive() || bg.Logins() != 2 {
		t.Fatalf("compute-01 after the background redial: %v, %d logins; want the replacement", err, bg.Logins())
	}

	// A connection a step has used is that step's to replace: drop it and
	// ask again.
	pl.DropSSH("compute-01", s)
	if _, err := pl.SSHConn(p.host("compute-01")); err != nil || bg.Logins() != 3 {
		t.Fatalf("compute-01 after DropSSH: %v, %d logins; want a fresh dial (3)", err, bg.Logins())
	}
}

// A warm dial that failed for a reason that may pass (sshd down for a
// moment) is tried once more when a step asks, and that dial is used.
func TestFailedWarmDialIsTriedAgainOnce(t *testing.T) {
	p := newPeers(t)
	down := p.site.Host("compute-03").SSH
	down.SetReachable(false)
	pl := pool.Start(context.Background(), p.options(nil))
	defer pl.Close()
	pl.Release()
	p.waitFor("the warm dial failed", func() bool { return pl.SSHWarmFailed("compute-03") })
	down.SetReachable(true)
	s, err := pl.SSHConn(p.host("compute-03"))
	if err != nil || !s.Conn().Alive() {
		t.Fatalf("SSHConn after the host came back: %v", err)
	}
	n := 0
	for _, o := range p.recorded() {
		if o.host == "compute-03" && !o.bmc {
			n++
		}
	}
	if n != 2 || down.Logins() != 1 {
		t.Errorf("compute-03: %d dials, %d logins; want 2 dials (warm, then the step's) and 1 login", n, down.Logins())
	}
}

// A step waiting for a BMC session still opening returns when the job is
// cancelled; the session stays the pool's, and Close logs it out once its
// open ends.
func TestCancelledWaitLeavesTheSessionToClose(t *testing.T) {
	p := newPeers(t)
	slow := p.site.Host("compute-03").BMC
	slow.SetLatency(time.Second)
	job, cancel := context.WithCancel(context.Background())
	defer cancel()
	o := p.options(nil)
	o.Config = onlyHost(t, p.cfg, "compute-03")
	pl := pool.Start(job, o)
	pl.Release()
	p.waitFor("the BMC open started", func() bool {
		for _, op := range p.recorded() {
			if op.bmc {
				return true
			}
		}
		return false
	})
	done := make(chan error, 1)
	go func() {
		_, _, err := pl.TakeBMC(p.host("compute-03"))
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("TakeBMC after cancel: %v, want context.Canceled", err)
	}
	slow.SetLatency(0)
	pl.Close()
	if n := slow.ActiveSessions(); n != 0 {
		t.Errorf("compute-03: %d BMC sessions after Close, want 0", n)
	}
}

// onlyHost is cfg with one host group holding only name, so the plan has
// one SSH and one BMC task.
func onlyHost(t *testing.T, cfg *config.Config, name string) *config.Config {
	t.Helper()
	c := *cfg
	c.Storage.Type = "none"
	var hosts []config.Host
	for _, h := range cfg.Hosts {
		if h.Name == name {
			hosts = append(hosts, h)
		}
	}
	c.Hosts = hosts
	if n := len(pool.Plan(&c, nil)); n != 2 {
		t.Fatalf("plan for %s alone has %d tasks, want 2", name, n)
	}
	return &c
}
