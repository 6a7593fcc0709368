package integration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/runner"
	"github.com/edgeops/shutdownd/sitesim"
	"github.com/edgeops/shutdownd/store"
)

// BMC kinds of a test host.
const (
	bmcNone    = ""
	bmcIPMI    = "ipmi"
	bmcRedfish = "redfish"
)

// bmcUser and bmcPassword are what every simulated BMC accepts; the config
// reads the password from a file, as an operator's would.
const (
	bmcUser     = "admin"
	bmcPassword = "Int-Bmc-Secret41" // IPMI passwords are at most 16 bytes (20 with lanplus)
)

// hostSpec is one test host: a real sshd with a recorder, and a BMC.
type hostSpec struct {
	name, role string
	bmc        string // bmcIPMI, bmcRedfish or bmcNone
	// faults
	sshDown        bool // sshd stopped before the job; the machine stays on
	ignorePowerOff bool // recorder accepts the power-off and nothing happens
	ignoreSoftOff  bool // the BMC accepts a soft off and nothing happens
	bmcDown        bool // the BMC's port refuses (Redfish) or nothing listens (IPMI)
	wrongHostKey   bool // known_hosts holds another key for this host
}

// siteSpec is one test site and the shutdownd configuration written for it.
type siteSpec struct {
	hosts []hostSpec
	vms   []sitesim.VM
	nova  sitesim.NovaOptions
	// cloudsPassword replaces the password in clouds.yaml (wrong password).
	cloudsPassword string
	// openrc leaves the cloud out of the openstack section and sets the
	// openrc variables instead (the application credential's when
	// nova.AppCredentialSecret is set). Such a test cannot be parallel.
	openrc  bool
	exclude []string
	// storageAdmin names the Ceph admin host; empty means storage type none.
	storageAdmin string
	stopTimeout  time.Duration
	hostOff      time.Duration
	bmcSoftOff   time.Duration
	bmcHardOff   time.Duration
}

// testHost is a running test host.
type testHost struct {
	spec    hostSpec
	sshd    *sitesim.SSHD
	ipmi    *sitesim.IPMISim
	redfish *sitesim.RedfishBMC
}

// site is a running test site with shutdownd's config, store and runner.
type site struct {
	t     *testing.T
	dir   string
	spec  siteSpec
	nova  *sitesim.Nova
	hosts map[string]*testHost
	order []string

	cfgPath string
	cfg     *config.Config
	st      *store.Store
	run     *runner.Runner
	logs    *syncBuffer
}

// hostOffDelay is how long a host takes to go Off after a power-off
// command or a soft off: long enough to see, short enough to stay fast.
const hostOffDelay = 200 * time.Millisecond

// requireTool skips the test when an external tool is missing, or fails it
// under CI=true, where a missing tool must not hide a broken build.
func requireTool(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if errors.Is(err, sitesim.ErrToolMissing) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v (CI must provide openssh-server, openipmi and ipmitool, and run as root)", err)
		}
		t.Skip(err)
	}
	t.Fatal(err)
}

func startSite(t *testing.T, spec siteSpec) *site {
	t.Helper()
	ctx := context.Background()
	s := &site{t: t, dir: t.TempDir(), spec: spec, hosts: map[string]*testHost{}, logs: &syncBuffer{}}

	spec.nova.VMs = spec.vms
	if spec.nova.RetryAfter == "" {
		spec.nova.RetryAfter = "1"
	}
	s.nova = sitesim.NewNova(spec.nova)
	if err := s.nova.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.nova.Close)
	clouds := s.nova.CloudsYAML("edge")
	if spec.cloudsPassword != "" {
		clouds = strings.Replace(clouds, "password: sim-secret", "password: "+spec.cloudsPassword, 1)
	}
	s.write("clouds.yaml", clouds, 0o600)
	if spec.openrc {
		t.Setenv("OS_CLOUD", "")
		for k, v := range s.nova.OpenrcEnv(spec.nova.AppCredentialSecret != "") {
			t.Setenv(k, v)
		}
	}

	signer, keyPEM, err := sitesim.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	s.write("id_ed25519", string(keyPEM), 0o600)
	s.write("bmc-password", bmcPassword+"\n", 0o600)

	var known strings.Builder
	for _, hs := range spec.hosts {
		h := &testHost{spec: hs}
		s.hosts[hs.name] = h
		s.order = append(s.order, hs.name)
		h.sshd, err = sitesim.StartSSHD(ctx, sitesim.SSHDOptions{
			Name: hs.name, Dir: filepath.Join(s.dir, "host-"+hs.name),
			AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()},
			PowerOffDelay:  hostOffDelay, IgnorePowerOff: hs.ignorePowerOff,
		})
		requireTool(t, err)
		t.Cleanup(func() {
			h.sshd.Close()
			if t.Failed() {
				t.Logf("sshd %s output:\n%s", hs.name, h.sshd.Output())
			}
		})
		key := h.sshd.HostKey()
		if hs.wrongHostKey {
			other, _, err := sitesim.GenerateKey()
			if err != nil {
				t.Fatal(err)
			}
			key = other.PublicKey()
		}
		known.WriteString(sitesim.KnownHostsLine(h.sshd.Addr(), key) + "\n")

		switch hs.bmc {
		case bmcIPMI:
			h.ipmi, err = sitesim.StartIPMISim(ctx, sitesim.IPMISimOptions{
				Dir: filepath.Join(s.dir, "ipmi-"+hs.name), User: bmcUser, Password: bmcPassword,
				PowerFile: h.sshd.PowerFile(), IgnoreSoftOff: hs.ignoreSoftOff,
			})
			requireTool(t, err)
			t.Cleanup(h.ipmi.Close)
			if hs.bmcDown {
				h.ipmi.Close() // nothing answers on its UDP port any more
			}
		case bmcRedfish:
			h.redfish, err = sitesim.NewRedfishBMC(sitesim.RedfishOptions{
				Machine: h.sshd.Machine(), User: bmcUser, Password: bmcPassword,
				SoftOffDelay: hostOffDelay, IgnoreSoftOff: hs.ignoreSoftOff, Unreachable: hs.bmcDown,
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(h.redfish.Close)
			s.write("bmc-ca-"+hs.name+".pem", string(h.redfish.CertPEM()), 0o644)
		}
		if hs.sshDown {
			h.sshd.Close() // port refuses; the machine stays on
		}
	}
	s.write("known_hosts", known.String(), 0o644)
	s.cfgPath = s.write("shutdownd.yaml", s.configYAML(), 0o600)

	s.cfg, err = config.Load(s.cfgPath)
	if err != nil {
		t.Fatalf("load config: %v\n%s", err, s.configYAML())
	}
	s.st, err = store.Open(ctx, s.cfg.Database)
	if err != nil {
		t.Fatal(err)
	}
	s.run = runner.New(s.cfg, s.st, runner.Options{Logger: slog.New(slog.NewTextHandler(s.logs, nil))})
	rctx, cancel := context.WithCancel(ctx)
	// The runner fails simulations left from a previous process before it
	// looks for work; a job created before that would be failed too.
	settled := s.run.Idle()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.run.Run(rctx); err != nil {
			t.Errorf("runner: %v", err)
		}
	}()
	select {
	case <-settled:
	case <-time.After(scaled(10 * time.Second)):
		t.Fatal("runner did not settle")
	}
	t.Cleanup(func() {
		cancel()
		<-done
		s.st.Close()
		if t.Failed() {
			t.Logf("shutdownd log:\n%s", s.logs.String())
		}
	})
	return s
}

func (s *site) write(name, body string, mode os.FileMode) string {
	s.t.Helper()
	p := filepath.Join(s.dir, name)
	if err := os.WriteFile(p, []byte(body), mode); err != nil {
		s.t.Fatal(err)
	}
	return p
}

// durOr is a test's own timeout when it sets one (the budget it means to
// reach), else def scaled by timeScale (a budget it means never to reach).
func durOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return scaled(def)
	}
	return d
}

// scaled is a budget that a test expects never to reach, stretched by
// timeScale (see race_on.go).
func scaled(d time.Duration) time.Duration { return d * timeScale }

// configYAML is shutdownd.yaml as an operator writes it: relative paths next
// to the file, defaults in ssh and bmc, per-host overrides.
func (s *site) configYAML() string {
	sp := s.spec
	var b strings.Builder
	b.WriteString("listen: 127.0.0.1:8080\ndatabase: shutdownd.db\n")
	b.WriteString("openstack:\n")
	if !sp.openrc {
		b.WriteString("  cloud: edge\n  clouds_file: clouds.yaml\n")
	}
	fmt.Fprintf(&b, `  concurrency: 4
  stop_timeout: %s
  poll_interval: 100ms
  request_timeout: %s
`, durOr(sp.stopTimeout, 10*time.Second), scaled(5*time.Second))
	if len(sp.exclude) > 0 {
		b.WriteString("  exclude:\n")
		for _, x := range sp.exclude {
			fmt.Fprintf(&b, "    - %q\n", x)
		}
	}
	if sp.storageAdmin != "" {
		var hosts []string
		for _, h := range sp.hosts {
			if h.role == "storage" {
				hosts = append(hosts, h.name)
			}
		}
		fmt.Fprintf(&b, "storage:\n  type: ceph\n  admin_host: %s\n  hosts: [%s]\n", sp.storageAdmin, strings.Join(hosts, ", "))
	} else {
		b.WriteString("storage:\n  type: none\n")
	}
	fmt.Fprintf(&b, `ssh:
  user: root
  key_file: id_ed25519
  known_hosts: known_hosts
  connect_timeout: %s
  command_timeout: %s
  poweroff_command: systemctl poweroff
bmc:
  protocol: redfish
  user: admin
  password_file: bmc-password
`, scaled(2*time.Second), scaled(5*time.Second))
	fmt.Fprintf(&b, "timeouts:\n  host_off: %s\n  bmc_soft_off: %s\n  bmc_hard_off: %s\n  bmc_poll_interval: 100ms\n",
		durOr(sp.hostOff, 3*time.Second), durOr(sp.bmcSoftOff, 2*time.Second), durOr(sp.bmcHardOff, 3*time.Second))
	b.WriteString("hosts:\n")
	for _, name := range s.order {
		h := s.hosts[name]
		fmt.Fprintf(&b, "  - name: %s\n    role: %s\n    address: %q\n", name, h.spec.role, h.sshd.Addr())
		switch {
		case h.ipmi != nil:
			fmt.Fprintf(&b, "    bmc: {address: 127.0.0.1, port: %d, protocol: ipmi}\n", h.ipmi.Port())
		case h.redfish != nil:
			fmt.Fprintf(&b, "    bmc: {address: 127.0.0.1, port: %d, ca_file: bmc-ca-%s.pem}\n", h.redfish.Port(), name)
		}
	}
	return b.String()
}

// jobTimeout bounds every job of the package: the slowest scenario needs a
// few seconds, so anything near this is a hang.
var jobTimeout = scaled(60 * time.Second)

// result is everything shutdownd recorded about one job.
type result struct {
	job     store.Job
	steps   []store.Step
	actions []store.Action
	events  []store.Event
}

// simulate runs a simulation job to its end.
func (s *site) simulate() result {
	s.t.Helper()
	j, err := s.st.CreateSimulation(context.Background(), store.NewJob{Kind: store.KindSimulation, TokenName: "integration", Reason: "integration test"})
	if err != nil {
		s.t.Fatal(err)
	}
	return s.wait(j.ID)
}

// shutdown runs a shutdown job to its end.
func (s *site) shutdown() result {
	s.t.Helper()
	j, created, err := s.st.CreateShutdown(context.Background(), store.NewJob{Kind: store.KindShutdown, TokenName: "integration", Reason: "power loss"})
	if err != nil || !created {
		s.t.Fatalf("create shutdown: created=%v err=%v", created, err)
	}
	return s.wait(j.ID)
}

// wait kicks the runner and waits on the store's change signal until job id
// is final.
func (s *site) wait(id int64) result {
	s.t.Helper()
	ctx := context.Background()
	ch, unsub := s.st.Subscribe()
	defer unsub()
	s.run.Kick()
	deadline := time.After(jobTimeout)
	for {
		j, err := s.st.Job(ctx, id)
		if err != nil {
			s.t.Fatal(err)
		}
		if j.State.Final() {
			var r result
			r.job = j
			if r.steps, err = s.st.Steps(ctx, id); err != nil {
				s.t.Fatal(err)
			}
			if r.actions, err = s.st.Actions(ctx, id); err != nil {
				s.t.Fatal(err)
			}
			if r.events, err = s.st.Events(ctx, id, 0); err != nil {
				s.t.Fatal(err)
			}
			return r
		}
		select {
		case <-ch:
		case <-time.After(500 * time.Millisecond):
		case <-deadline:
			s.t.Fatalf("job %d not final after %s: %+v", id, jobTimeout, j)
		}
	}
}

// action returns the one action of target and operation, failing the test
// when there is none.
func (r result) action(t *testing.T, kind store.TargetKind, target string, op store.Operation) store.Action {
	t.Helper()
	for _, a := range r.actions {
		if a.TargetKind == kind && a.Target == target && a.Operation == op {
			return a
		}
	}
	t.Fatalf("no %s action %q on %s; actions:\n%s", kind, op, target, r.dump())
	return store.Action{}
}

// has reports whether an action of target and operation exists.
func (r result) has(kind store.TargetKind, target string, op store.Operation) bool {
	for _, a := range r.actions {
		if a.TargetKind == kind && a.Target == target && a.Operation == op {
			return true
		}
	}
	return false
}

func (r result) step(t *testing.T, name string) store.Step {
	t.Helper()
	for _, s := range r.steps {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no step %s", name)
	return store.Step{}
}

// eventsMatching returns the events whose message contains sub.
func (r result) eventsMatching(sub string) []store.Event {
	var out []store.Event
	for _, e := range r.events {
		if strings.Contains(e.Message, sub) {
			out = append(out, e)
		}
	}
	return out
}

func (r result) failed() []store.Action {
	var out []store.Action
	for _, a := range r.actions {
		if a.State == store.ActionFailed {
			out = append(out, a)
		}
	}
	return out
}

// dump renders the job for failure messages.
func (r result) dump() string {
	var b strings.Builder
	fmt.Fprintf(&b, "job %d %s %s: %s\n", r.job.ID, r.job.Kind, r.job.State, r.job.Error)
	for _, s := range r.steps {
		fmt.Fprintf(&b, "  step %s %s %q %q\n", s.Name, s.State, s.Detail, s.Error)
	}
	for _, a := range r.actions {
		fmt.Fprintf(&b, "  action %s %s %s [%s] %s attempts=%d detail=%q error=%q\n",
			a.TargetKind, a.Target, a.Operation, a.TargetID, a.State, a.Attempts, a.Detail, a.Error)
	}
	for _, e := range r.events {
		fmt.Fprintf(&b, "  event %s %s %q\n", e.Level, e.Message, e.Detail)
	}
	return b.String()
}

// lines returns the command lines the host's recorder received.
func (h *testHost) lines(t *testing.T) []string {
	t.Helper()
	cmds, err := h.sshd.Commands()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(cmds))
	for i, c := range cmds {
		out[i] = c.Line
	}
	return out
}

// commandAt returns when the host's recorder received line first.
func (h *testHost) commandAt(t *testing.T, line string) time.Time {
	t.Helper()
	cmds, err := h.sshd.Commands()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cmds {
		if c.Line == line {
			return c.At
		}
	}
	t.Fatalf("%s never received %q; it received %q", h.spec.name, line, h.lines(t))
	return time.Time{}
}

// powerOn reads the host's power the way its BMC reports it.
func (h *testHost) powerOn(t *testing.T) bool {
	t.Helper()
	if h.ipmi != nil {
		on, err := h.ipmi.PowerOn()
		if err != nil {
			t.Fatal(err)
		}
		return on
	}
	return h.sshd.Machine().State() == sitesim.PowerOn
}

func (h *testHost) ipmiOps(t *testing.T) []string {
	t.Helper()
	if h.ipmi == nil {
		return nil
	}
	ops, err := h.ipmi.Ops()
	if err != nil {
		t.Fatal(err)
	}
	return ops
}

func (h *testHost) resets() []string {
	if h.redfish == nil {
		return nil
	}
	return h.redfish.Resets()
}

// assertNothingChanged checks, on every target, that no power or storage
// command arrived and every host is still on.
func (s *site) assertNothingChanged(t *testing.T) {
	t.Helper()
	if n := s.nova.StopRequests(); n != 0 {
		t.Errorf("Nova received %d os-stop requests", n)
	}
	for _, name := range s.order {
		h := s.hosts[name]
		if p, err := h.sshd.PowerCommands(); err != nil || len(p) != 0 {
			t.Errorf("%s received power commands %q (%v)", name, p, err)
		}
		for _, l := range h.lines(t) {
			// The privilege proof asks `id -u` and, for a user other than
			// root, `sudo -n -l CMD`, which lists and runs nothing.
			if l != "true" && l != "ceph health" && l != "id -u" && !strings.HasPrefix(l, "sudo -n -l ") {
				t.Errorf("%s received %q; a simulation only runs harmless commands", name, l)
			}
		}
		if f, _ := h.sshd.CephFlags(); len(f) != 0 || h.sshd.CephStopped() {
			t.Errorf("%s: ceph flags %q, stopped %v", name, f, h.sshd.CephStopped())
		}
		if ops := h.ipmiOps(t); len(ops) != 0 {
			t.Errorf("%s: ipmi chassis operations %q", name, ops)
		}
		if r := h.resets(); len(r) != 0 {
			t.Errorf("%s: redfish resets %q", name, r)
		}
		if !h.powerOn(t) {
			t.Errorf("%s is off", name)
		}
	}
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	d = scaled(d)
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
