package runner_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/notify"
	"github.com/edgeops/shutdownd/runner"
	"github.com/edgeops/shutdownd/sitesim"
	"github.com/edgeops/shutdownd/store"
)

// slowVM keeps the VM step running long enough to watch what happens
// meanwhile.
func slowVM(o *sitesim.Options) {
	o.VMs = []sitesim.VM{{ID: "vm-slow", Name: "slow", Project: "a", StopDelay: 5 * time.Second}}
}

func (f *fixture) shutdown(r *runner.Runner) store.Job {
	f.t.Helper()
	job, _, err := f.store.CreateShutdown(context.Background(), store.NewJob{Kind: store.KindShutdown})
	if err != nil {
		f.t.Fatal(err)
	}
	r.Kick()
	return job
}

func (f *fixture) actions(jobID int64) []store.Action {
	f.t.Helper()
	as, err := f.store.Actions(context.Background(), jobID)
	if err != nil {
		f.t.Fatal(err)
	}
	return as
}

func (f *fixture) action(jobID int64, target string, op store.Operation) store.Action {
	f.t.Helper()
	for _, a := range f.actions(jobID) {
		if a.Target == target && a.Operation == op {
			return a
		}
	}
	f.t.Fatalf("no %s action on %s", op, target)
	return store.Action{}
}

// While the VMs stop, the shutdown logs in to every host over SSH and to
// every BMC, and sends nothing; the later steps use those connections, so
// each host sees exactly one SSH login for the whole job (the storage hosts
// included: their Ceph stop and their power-off share it), and every BMC
// session is logged out at the end.
func TestConnectionsOpenWhileVMsStopAndAreUsedOnce(t *testing.T) {
	f := newFixture(t, slowVM)
	r, stop := f.start()
	defer stop()
	job := f.shutdown(r)

	f.waitFor("every host and BMC logged in", 20*time.Second, func() bool {
		for _, h := range f.site.Hosts {
			if h.SSH.Logins() != 1 || h.BMC.ActiveSessions() != 1 {
				return false
			}
		}
		return true
	})
	steps, err := f.store.Steps(context.Background(), job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 1 || steps[0].Name != runner.StepOpenStack || steps[0].State != store.StepRunning {
		t.Fatalf("steps when every connection was open: %+v; want the VM step still running", steps)
	}
	for _, h := range f.site.Hosts {
		if n := len(h.SSH.Commands()); n != 0 {
			t.Errorf("%s received %d commands during the VM step", h.Spec.Name, n)
		}
		if rs := h.BMC.Resets(); len(rs) != 0 {
			t.Errorf("%s BMC received %v during the VM step", h.Spec.Name, rs)
		}
	}

	f.waitFor("job final", 60*time.Second, func() bool { return f.job(job.ID).State.Final() })
	if j := f.job(job.ID); j.State != store.StateSucceeded {
		t.Fatalf("job %s: %s", j.State, j.Error)
	}
	for _, h := range f.site.Hosts {
		if n := h.SSH.Logins(); n != 1 {
			t.Errorf("%s: %d SSH logins, want 1 (the connection opened in advance)", h.Spec.Name, n)
		}
		if h.Machine.State() != sitesim.PowerOff || h.SSH.PowerCommands() != 1 {
			t.Errorf("%s: %s after %d power commands", h.Spec.Name, h.Machine.State(), h.SSH.PowerCommands())
		}
		if n := h.BMC.ActiveSessions(); n != 0 {
			t.Errorf("%s: %d BMC sessions left open", h.Spec.Name, n)
		}
		if rs := h.BMC.Resets(); len(rs) != 0 {
			t.Errorf("%s: BMC resets %v, want none (SSH did it)", h.Spec.Name, rs)
		}
	}
	if !f.site.Host("storage-02").SSH.CephStopped() {
		t.Error("ceph not stopped on storage-02")
	}
}

// A simulation changes nothing and opens nothing ahead: each host sees the
// SSH logins of its checks only, and no BMC session stays open.
func TestSimulationOpensNothingInAdvance(t *testing.T) {
	f := newFixture(t, nil)
	r, stop := f.start()
	defer stop()
	job := f.simulate(r)
	f.waitFor("simulation final", 30*time.Second, func() bool { return f.job(job.ID).State.Final() })
	if j := f.job(job.ID); j.State != store.StateSucceeded {
		t.Fatalf("simulation %s: %s", j.State, j.Error)
	}
	for _, h := range f.site.Hosts {
		want := 1 // the host check
		if h.Spec.Name == f.cfg.Storage.AdminHost {
			want = 2 // and the storage health check
		}
		if n := h.SSH.Logins(); n != want {
			t.Errorf("%s: %d SSH logins in a simulation, want %d (its checks)", h.Spec.Name, n, want)
		}
		if h.SSH.PowerCommands() != 0 || len(h.BMC.Resets()) != 0 || h.Machine.State() != sitesim.PowerOn {
			t.Errorf("%s changed by a simulation", h.Spec.Name)
		}
		if n := h.BMC.ActiveSessions(); n != 0 {
			t.Errorf("%s: %d BMC sessions left open", h.Spec.Name, n)
		}
	}
}

// A warm connection that died before it was used (sshd restarted, the
// network dropped it) is replaced by a fresh dial: the host is still
// powered off over SSH, once, and not pushed to the BMC.
func TestDeadWarmConnectionIsDialledAgain(t *testing.T) {
	f := newFixture(t, slowVM)
	r, stop := f.start()
	defer stop()
	job := f.shutdown(r)
	f.waitFor("every host logged in", 20*time.Second, func() bool {
		for _, h := range f.site.Hosts {
			if h.SSH.Logins() != 1 {
				return false
			}
		}
		return true
	})
	// Drop the warm connections of a compute host and of a storage host
	// (used first by the Ceph stop, then by the power-off).
	for _, name := range []string{"compute-02", "storage-02"} {
		h := f.site.Host(name).SSH
		h.SetReachable(false)
		h.SetReachable(true)
	}

	f.waitFor("job final", 60*time.Second, func() bool { return f.job(job.ID).State.Final() })
	if j := f.job(job.ID); j.State != store.StateSucceeded {
		t.Fatalf("job %s: %s", j.State, j.Error)
	}
	for _, h := range f.site.Hosts {
		want := 1
		if h.Spec.Name == "compute-02" || h.Spec.Name == "storage-02" {
			want = 2
		}
		if n := h.SSH.Logins(); n != want {
			t.Errorf("%s: %d SSH logins, want %d", h.Spec.Name, n, want)
		}
		if h.Machine.State() != sitesim.PowerOff || h.SSH.PowerCommands() != 1 || len(h.BMC.Resets()) != 0 {
			t.Errorf("%s: %s after %d power commands, BMC resets %v; want off over SSH once",
				h.Spec.Name, h.Machine.State(), h.SSH.PowerCommands(), h.BMC.Resets())
		}
	}
	if !f.site.Host("storage-02").SSH.CephStopped() {
		t.Error("ceph not stopped on storage-02 after its connection was dropped")
	}
	if a := f.action(job.ID, "compute-02", "power-off"); !strings.HasPrefix(a.Detail, "off via SSH") {
		t.Errorf("compute-02 power-off: %s %q, want off via SSH", a.State, a.Detail)
	}
}

// While the VMs stop, idle warm connections are checked; one found dead is
// dialled again in the background, and that new connection is the one the
// power-off uses.
func TestWarmConnectionFoundDeadIsReplacedInTheBackground(t *testing.T) {
	defer runner.SetWarmKeepalive(100 * time.Millisecond)()
	f := newFixture(t, slowVM)
	r, stop := f.start()
	defer stop()
	job := f.shutdown(r)
	loggedIn := func(n int) func() bool {
		return func() bool { return f.site.Host("compute-02").SSH.Logins() == n }
	}
	f.waitFor("compute-02 logged in", 20*time.Second, loggedIn(1))
	h := f.site.Host("compute-02").SSH
	h.SetReachable(false)
	h.SetReachable(true)
	f.waitFor("compute-02 logged in again", 20*time.Second, loggedIn(2))
	if steps, _ := f.store.Steps(context.Background(), job.ID); len(steps) != 1 || steps[0].State != store.StepRunning {
		t.Fatalf("steps %+v: want the new login while the VM step runs", steps)
	}

	f.waitFor("job final", 60*time.Second, func() bool { return f.job(job.ID).State.Final() })
	if j := f.job(job.ID); j.State != store.StateSucceeded {
		t.Fatalf("job %s: %s", j.State, j.Error)
	}
	if n := h.Logins(); n != 2 {
		t.Errorf("compute-02: %d logins, want 2 (the power-off used the replacement)", n)
	}
	if h.PowerCommands() != 1 || f.site.Host("compute-02").Machine.State() != sitesim.PowerOff {
		t.Errorf("compute-02: %d power commands, %s", h.PowerCommands(), f.site.Host("compute-02").Machine.State())
	}
}

// A host whose key does not match known_hosts is never logged in to, not by
// the warm-up and not when its turn comes: it goes down through its BMC.
func TestHostKeyMismatchIsNeverConnectedTo(t *testing.T) {
	f := newFixture(t, nil)
	// compute-02's known_hosts line now carries compute-01's key.
	var lines []string
	for _, h := range f.site.Hosts {
		key := h.SSH.HostKey()
		if h.Spec.Name == "compute-02" {
			key = f.site.Host("compute-01").SSH.HostKey()
		}
		lines = append(lines, sitesim.KnownHostsLine(h.SSH.Addr(), key))
	}
	if err := os.WriteFile(f.site.KnownHostsFile, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r, stop := f.start()
	defer stop()
	job := f.shutdown(r)
	f.waitFor("job final", 60*time.Second, func() bool { return f.job(job.ID).State.Final() })

	bad := f.site.Host("compute-02")
	if n := bad.SSH.Logins(); n != 0 {
		t.Errorf("compute-02 (key mismatch) was logged in to %d times", n)
	}
	if bad.SSH.PowerCommands() != 0 || bad.Machine.State() != sitesim.PowerOff {
		t.Errorf("compute-02: %s after %d SSH power commands; want off through the BMC only", bad.Machine.State(), bad.SSH.PowerCommands())
	}
	if rs := bad.BMC.Resets(); !slices.Contains(rs, "GracefulShutdown") {
		t.Errorf("compute-02 BMC resets %v, want a soft off", rs)
	}
	if a := f.action(job.ID, "compute-02", "ssh-poweroff"); a.State != store.ActionFailed || !strings.Contains(a.Error, "host key mismatch") {
		t.Errorf("compute-02 ssh-poweroff: %s %q, want failed with the mismatch", a.State, a.Error)
	}
	for _, h := range f.site.Hosts {
		if h.Spec.Name != "compute-02" && (h.SSH.Logins() != 1 || h.SSH.PowerCommands() != 1) {
			t.Errorf("%s: %d logins, %d power commands; want 1 and 1", h.Spec.Name, h.SSH.Logins(), h.SSH.PowerCommands())
		}
	}
}

// peerLog records the runner's peer calls in order.
type peerLog struct {
	mu    sync.Mutex
	calls []string
}

func (l *peerLog) JobStarted(context.Context, store.Job)               {}
func (l *peerLog) StepFinished(context.Context, store.Job, store.Step) {}
func (l *peerLog) JobFinished(context.Context, store.Job)              {}
func (l *peerLog) PeerCall(peer, op string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, peer+" "+op)
}

func (l *peerLog) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.calls)
}

// A job that is not resuming sends the power-off without first reading the
// power state (that read only matters after a restart): on a one-host site
// the first BMC power read comes after the SSH power-off. The observer also
// puts the metrics wrapper between the runner and its connections, which
// the connection pool must see through.
func TestFreshJobSendsThePowerOffBeforeAnyPowerRead(t *testing.T) {
	f := newFixture(t, func(o *sitesim.Options) {
		o.Hosts = []sitesim.HostSpec{{Name: "compute-01", Role: "compute"}}
		o.Storage = "none"
		o.PowerOffDelay = 300 * time.Millisecond
	})
	log := &peerLog{}
	r, stop := f.startWith(runner.Options{Observer: log})
	defer stop()
	job := f.shutdown(r)
	f.waitFor("job final", 30*time.Second, func() bool { return f.job(job.ID).State.Final() })
	if j := f.job(job.ID); j.State != store.StateSucceeded {
		t.Fatalf("job %s: %s", j.State, j.Error)
	}
	calls := log.list()
	off := slices.Index(calls, "ssh poweroff")
	read := slices.Index(calls, "bmc power-state")
	if off < 0 || read < 0 || read < off {
		t.Errorf("peer calls %v: want the SSH power-off before the first BMC power read", calls)
	}
	if n := f.site.Hosts[0].SSH.Logins(); n != 1 {
		t.Errorf("%d SSH logins, want 1", n)
	}
}

// After a restart in the middle of the host step, hosts whose power-off
// was delivered are not sent a second one: the resumed job confirms them
// through the BMC (and reads the power state of any host it may have
// touched before sending anything).
func TestRestartDuringHostsSendsNoSecondPowerOff(t *testing.T) {
	f := newFixture(t, func(o *sitesim.Options) {
		o.Hosts = sitesim.DefaultHosts()
		o.HostOff = 20 * time.Second // the SSH power-off does it, no escalation
		for i := range o.Hosts {
			if o.Hosts[i].Role == "compute" {
				o.Hosts[i].PowerOffDelay = 3 * time.Second
			}
		}
	})
	r, stop := f.start()
	job := f.shutdown(r)
	f.waitFor("compute power-offs delivered", 30*time.Second, func() bool {
		n := 0
		for _, a := range f.actions(job.ID) {
			if a.Operation == "ssh-poweroff" && a.State == store.ActionSucceeded && strings.HasPrefix(a.Target, "compute") {
				n++
			}
		}
		return n == 3
	})
	stop() // the service stops; the job stays running
	if j := f.job(job.ID); j.State != store.StateRunning {
		t.Fatalf("after stop job is %s, want running", j.State)
	}
	f.resumeToSuccess(job.ID)
	for _, h := range f.site.Hosts {
		if h.Machine.State() != sitesim.PowerOff || h.SSH.PowerCommands() != 1 || len(h.BMC.Resets()) != 0 {
			t.Errorf("%s: %s after %d power commands, BMC resets %v", h.Spec.Name, h.Machine.State(), h.SSH.PowerCommands(), h.BMC.Resets())
		}
		if n := h.BMC.ActiveSessions(); n != 0 {
			t.Errorf("%s: %d BMC sessions left open", h.Spec.Name, n)
		}
	}
	for _, a := range f.actions(job.ID) {
		if a.TargetKind == "host" || a.TargetKind == "bmc" {
			if !a.State.Final() {
				t.Errorf("%s %s left %s", a.Target, a.Operation, a.State)
			}
		}
	}
}

// The host marked self (the machine running shutdownd) is powered off last:
// after every other host is off and after the job's final state is on disk,
// so that record survives the machine going down. The job writing its own
// final state must not cancel the self power-off that follows it.
func TestSelfHostIsPoweredOffAfterTheJobIsFinal(t *testing.T) {
	f := newFixture(t, func(o *sitesim.Options) {
		o.Hosts = []sitesim.HostSpec{
			{Name: "compute-01", Role: "compute"},
			{Name: "mgmt-01", Role: "control", Self: true},
		}
		o.Storage = "none"
	})
	r, stop := f.start()
	defer stop()
	job := f.shutdown(r)
	f.waitFor("job final", 30*time.Second, func() bool { return f.job(job.ID).State.Final() })
	j := f.job(job.ID)
	if j.State != store.StateSucceeded {
		t.Fatalf("job %s: %s", j.State, j.Error)
	}
	var self store.Action
	f.waitFor("self power-off recorded", 30*time.Second, func() bool {
		for _, a := range f.actions(job.ID) {
			if a.Operation == "self-poweroff" {
				self = a
			}
		}
		return self.ID != 0 && self.State != store.ActionRunning
	})
	if self.Target != "mgmt-01" || self.State != store.ActionSucceeded {
		t.Fatalf("self action %s on %s: %s (%s)", self.State, self.Target, self.Error, self.Detail)
	}
	mgmt, compute := f.site.Host("mgmt-01").SSH, f.site.Host("compute-01").SSH
	if n := mgmt.PowerCommands(); n != 1 {
		t.Fatalf("self host got %d power-off commands, want 1", n)
	}
	if n := compute.PowerCommands(); n != 1 {
		t.Fatalf("compute host got %d power-off commands, want 1", n)
	}
	last := func(cmds []sitesim.Command) time.Time { return cmds[len(cmds)-1].At }
	selfAt, computeAt := last(mgmt.Commands()), last(compute.Commands())
	if j.FinishedAt == nil || selfAt.Before(*j.FinishedAt) {
		t.Errorf("self power-off at %s, job final at %v: want it after the final state", selfAt, j.FinishedAt)
	}
	if !computeAt.Before(selfAt) {
		t.Errorf("self power-off at %s before the compute host's at %s", selfAt, computeAt)
	}
}

// An explicit host_order replaces the role order: its groups go down one
// after the other (each host of a group off before the next group starts),
// whatever the hosts' roles.
func TestHostOrderReplacesTheRoleOrder(t *testing.T) {
	f := newFixture(t, func(o *sitesim.Options) {
		o.Hosts = []sitesim.HostSpec{
			{Name: "compute-01", Role: "compute"},
			{Name: "storage-01", Role: "storage"},
			{Name: "control-01", Role: "control"},
		}
		o.Storage = "none"
	})
	f.cfg.HostOrder = [][]string{{"control-01"}, {"compute-01", "storage-01"}}
	r, stop := f.start()
	defer stop()
	job := f.shutdown(r)
	f.waitFor("job final", 30*time.Second, func() bool { return f.job(job.ID).State.Final() })
	if j := f.job(job.ID); j.State != store.StateSucceeded {
		t.Fatalf("job %s: %s", j.State, j.Error)
	}
	sent := map[string]time.Time{}
	for _, h := range f.site.Hosts {
		if n := h.SSH.PowerCommands(); n != 1 {
			t.Fatalf("%s got %d power-off commands, want 1", h.Spec.Name, n)
		}
		cmds := h.SSH.Commands()
		sent[h.Spec.Name] = cmds[len(cmds)-1].At
	}
	var controlOff time.Time
	for _, a := range f.actions(job.ID) {
		if a.TargetKind == "host" && a.Target == "control-01" && a.FinishedAt != nil {
			controlOff = *a.FinishedAt
		}
	}
	if controlOff.IsZero() {
		t.Fatal("no finished host action for control-01")
	}
	for _, n := range []string{"compute-01", "storage-01"} {
		if !sent[n].After(controlOff) {
			t.Errorf("%s sent its power-off at %s, before control-01 (first group) was off at %s", n, sent[n], controlOff)
		}
	}
}

// selfSite is a one-compute-host site whose control host is the machine
// running shutdownd; compute-01 takes powerOff to go down.
func selfSite(t *testing.T, powerOff time.Duration) *fixture {
	return newFixture(t, func(o *sitesim.Options) {
		o.Hosts = []sitesim.HostSpec{
			{Name: "compute-01", Role: "compute", PowerOffDelay: powerOff},
			{Name: "mgmt-01", Role: "control", Self: true},
		}
		o.Storage = "none"
	})
}

// A cancel that arrives while the last host group goes down cannot stop
// that group (its power-offs are sent), but it does stop what is still to
// come: the self host stays on and the job is cancelled, naming it.
func TestCancelDuringTheLastHostGroupKeepsTheSelfHostOn(t *testing.T) {
	f := selfSite(t, time.Second)
	r, stop := f.start()
	defer stop()
	job := f.shutdown(r)
	compute := f.site.Host("compute-01")
	f.waitFor("compute-01 power-off sent", 30*time.Second, func() bool { return compute.SSH.PowerCommands() == 1 })
	if _, err := f.store.RequestCancel(context.Background(), job.ID); err != nil {
		t.Fatal(err)
	}
	f.waitFor("job final", 30*time.Second, func() bool { return f.job(job.ID).State.Final() })
	j := f.job(job.ID)
	if j.State != store.StateCancelled || !strings.Contains(j.Error, "before this machine (mgmt-01) was powered off") {
		t.Fatalf("job %s: %q; want cancelled naming mgmt-01", j.State, j.Error)
	}
	// Give a wrong self power-off the time to happen before looking.
	time.Sleep(300 * time.Millisecond)
	if n := f.site.Host("mgmt-01").SSH.PowerCommands(); n != 0 {
		t.Errorf("self host got %d power-off commands after a cancel", n)
	}
	if compute.Machine.State() != sitesim.PowerOff {
		t.Errorf("compute-01 is %s: the group under way when the cancel came must finish", compute.Machine.State())
	}
	for _, a := range f.actions(job.ID) {
		if a.Operation == "self-poweroff" {
			t.Errorf("self power-off recorded (%s) for a cancelled job", a.State)
		}
	}
}

// cancelAfterStep requests a cancel from inside the runner's StepFinished
// callback for the named step: as late as a cancel can come before the job
// decides its final state.
type cancelAfterStep struct {
	peerLog
	st   *store.Store
	step string
}

func (c *cancelAfterStep) StepFinished(ctx context.Context, j store.Job, s store.Step) {
	if s.Name == c.step {
		if _, err := c.st.RequestCancel(ctx, j.ID); err != nil {
			panic(err)
		}
	}
}

// A cancel that comes as the last step ends, racing the job's final state,
// still keeps the self host on: either the job sees it and ends cancelled,
// or it ends succeeded and the self power-off is recorded as skipped.
func TestCancelAsTheJobEndsNeverPowersOffTheSelfHost(t *testing.T) {
	for i := range 3 {
		f := selfSite(t, 0)
		r, stop := f.startWith(runner.Options{Observer: &cancelAfterStep{st: f.store, step: runner.StepHosts}})
		job := f.shutdown(r)
		f.waitFor("job final", 30*time.Second, func() bool { return f.job(job.ID).State.Final() })
		j := f.job(job.ID)
		var self *store.Action
		f.waitFor("self action settled", 5*time.Second, func() bool {
			self = nil
			for _, a := range f.actions(job.ID) {
				if a.Operation == "self-poweroff" {
					self = &a
				}
			}
			return self == nil || self.State != store.ActionRunning
		})
		stop()
		switch {
		case j.State == store.StateCancelled && self == nil:
		case j.State == store.StateSucceeded && self != nil && self.State == store.ActionSkipped:
		default:
			t.Errorf("run %d: job %s (%q), self action %+v: want cancelled, or succeeded with the self power-off skipped", i, j.State, j.Error, self)
		}
		if n := f.site.Host("mgmt-01").SSH.PowerCommands(); n != 0 {
			t.Errorf("run %d: self host got %d power-off commands after a cancel", i, n)
		}
	}
}

// The job.finished webhook leaves before the machine running shutdownd is
// powered off: the runner drains the notifier first (bounded), so "inform
// us after the shutdown" still happens on a site whose management host goes
// down with it.
func TestSelfPowerOffWaitsForTheJobFinishedWebhook(t *testing.T) {
	f := selfSite(t, 0)
	var mu sync.Mutex
	var finishedAt time.Time
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Shutdownd-Event") == notify.EventJobFinished {
			time.Sleep(300 * time.Millisecond) // a slow receiver
			mu.Lock()
			finishedAt = time.Now()
			mu.Unlock()
		}
	}))
	defer hook.Close()
	n := notify.New(notify.Options{Webhooks: []config.Webhook{{URL: hook.URL}}, Store: f.store})
	defer n.Close()
	r, stop := f.startWith(runner.Options{Observer: runner.Observers(n)})
	defer stop()
	job := f.shutdown(r)
	mgmt := f.site.Host("mgmt-01").SSH
	f.waitFor("self power-off sent", 30*time.Second, func() bool { return mgmt.PowerCommands() == 1 })
	if j := f.job(job.ID); j.State != store.StateSucceeded {
		t.Fatalf("job %s: %s", j.State, j.Error)
	}
	cmds := mgmt.Commands()
	sentAt := cmds[len(cmds)-1].At
	mu.Lock()
	defer mu.Unlock()
	if finishedAt.IsZero() || !finishedAt.Before(sentAt) {
		t.Errorf("job.finished delivered at %v, self power-off sent at %s: want the webhook first", finishedAt, sentAt)
	}
}

// A job created after this machine's power-off was sent (one that slipped
// past the API's check) is not run: it ends cancelled at once, so nothing
// is left running for the next start-up to resume.
func TestJobAfterSelfPowerOffIsNotRun(t *testing.T) {
	f := selfSite(t, 0)
	r, stop := f.start()
	defer stop()
	first := f.shutdown(r)
	mgmt := f.site.Host("mgmt-01").SSH
	f.waitFor("self power-off sent", 30*time.Second, func() bool { return mgmt.PowerCommands() == 1 })
	if id, ok := r.PoweringOffSelf(); !ok || id != first.ID {
		t.Fatalf("PoweringOffSelf = %d, %v; want job %d", id, ok, first.ID)
	}
	logins := f.site.Host("compute-01").SSH.Logins()
	second := f.shutdown(r)
	f.waitFor("second job final", 30*time.Second, func() bool { return f.job(second.ID).State.Final() })
	if j := f.job(second.ID); j.State != store.StateCancelled || !strings.Contains(j.Error, "being powered off by shutdown job") {
		t.Errorf("second job %s: %q; want cancelled, not run", j.State, j.Error)
	}
	if n := f.site.Host("compute-01").SSH.Logins(); n != logins {
		t.Errorf("the refused job logged in to compute-01 (%d logins, was %d)", n, logins)
	}
}
