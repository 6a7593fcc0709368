package runner_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/runner"
	"github.com/edgeops/shutdownd/sitesim"
	"github.com/edgeops/shutdownd/store"
)

// fixture is a simulated site, a store on a real file and a runner.
type fixture struct {
	t     *testing.T
	site  *sitesim.Site
	cfg   *config.Config
	store *store.Store
}

func newFixture(t *testing.T, tune func(*sitesim.Options)) *fixture {
	t.Helper()
	dir := t.TempDir()
	o := sitesim.Options{
		Dir: dir, Projects: []string{"a", "b"}, VMsPerProject: 15,
		VMStopMin: 20 * time.Millisecond, VMStopMax: 100 * time.Millisecond,
		PowerOffDelay: 100 * time.Millisecond, SoftOffDelay: 100 * time.Millisecond,
		PollInterval: 50 * time.Millisecond, BMCPollEvery: 25 * time.Millisecond,
		HostOff: time.Second, BMCSoftOff: time.Second, BMCHardOff: time.Second,
		Seed: 7,
	}
	if tune != nil {
		tune(&o)
	}
	site, err := sitesim.Start(context.Background(), o)
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
	st, err := store.Open(context.Background(), cfg.Database)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &fixture{t: t, site: site, cfg: cfg, store: st}
}

// start runs a runner until the returned stop function is called; stop
// waits for Run to return.
func (f *fixture) start() (*runner.Runner, func()) {
	return f.startWith(runner.Options{})
}

// startWith is start with options (an observer); the logger is discarded.
func (f *fixture) startWith(opts runner.Options) (*runner.Runner, func()) {
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	r := runner.New(f.cfg, f.store, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := r.Run(ctx); err != nil {
			f.t.Errorf("run: %v", err)
		}
	}()
	return r, func() { cancel(); <-done }
}

// resumeToSuccess starts a new runner over the same store, as a restarted
// service does, and waits until the job has succeeded; the runner stops when
// the test ends.
func (f *fixture) resumeToSuccess(id int64) {
	f.t.Helper()
	f.resumeWith(id, runner.Options{})
}

// resumeWith is resumeToSuccess with a runner of the given options.
func (f *fixture) resumeWith(id int64, opts runner.Options) {
	f.t.Helper()
	r, stop := f.startWith(opts)
	f.t.Cleanup(stop)
	r.Kick()
	f.waitFor("job final", 60*time.Second, func() bool { return f.job(id).State.Final() })
	if j := f.job(id); j.State != store.StateSucceeded {
		f.t.Fatalf("resumed job %s: %s", j.State, j.Error)
	}
}

// waitFor polls cond on every store write (and every 100 ms) until it holds.
func (f *fixture) waitFor(what string, within time.Duration, cond func() bool) {
	f.t.Helper()
	ch, unsub := f.store.Subscribe()
	defer unsub()
	deadline := time.After(within)
	for !cond() {
		select {
		case <-ch:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			f.t.Fatalf("timed out after %s waiting for %s", within, what)
		}
	}
}

func (f *fixture) job(id int64) store.Job {
	j, err := f.store.Job(context.Background(), id)
	if err != nil {
		f.t.Fatal(err)
	}
	return j
}

func (f *fixture) countActions(id int64, kind store.TargetKind, state store.ActionState) int {
	as, err := f.store.Actions(context.Background(), id)
	if err != nil {
		f.t.Fatal(err)
	}
	n := 0
	for _, a := range as {
		if a.TargetKind == kind && (state == "" || a.State == state) {
			n++
		}
	}
	return n
}

func TestCancelStopsAtTheNextSafePointAndKeepsWhatWasDone(t *testing.T) {
	f := newFixture(t, func(o *sitesim.Options) {
		// Slow VMs and one stop at a time: the cancel lands mid-step.
		o.VMStopMin, o.VMStopMax = 300*time.Millisecond, 600*time.Millisecond
		o.Concurrency = 1
		o.NovaLatency = 30 * time.Millisecond
	})
	r, stop := f.start()
	defer stop()
	job := f.shutdown(r)
	f.waitFor("first os-stop", 10*time.Second, func() bool { return f.site.Nova.StopRequests() >= 2 })
	if _, err := f.store.RequestCancel(context.Background(), job.ID); err != nil {
		t.Fatal(err)
	}
	r.Kick()
	f.waitFor("job final", 20*time.Second, func() bool { return f.job(job.ID).State.Final() })
	j := f.job(job.ID)
	if j.State != store.StateCancelled {
		t.Fatalf("job %s (%s), want cancelled", j.State, j.Error)
	}
	sent := f.site.Nova.StopRequests()
	if sent >= 25 {
		t.Errorf("%d os-stop sent after cancel; the cancel did not stop the step", sent)
	}
	if n := f.countActions(job.ID, "vm", store.ActionRunning); n != 0 {
		t.Errorf("%d VM actions left running", n)
	}
	if n := f.countActions(job.ID, "vm", store.ActionSkipped); n == 0 {
		t.Error("no VM recorded as skipped by the cancel")
	}
	for _, h := range f.site.Hosts {
		if h.SSH.PowerCommands() != 0 || len(h.SSH.CephFlags()) != 0 {
			t.Errorf("host %s touched after cancel", h.Spec.Name)
		}
	}
	steps, _ := f.store.Steps(context.Background(), job.ID)
	if len(steps) != 1 || steps[0].State != store.StepCancelled {
		t.Errorf("steps = %+v, want only openstack, cancelled", steps)
	}
}

func TestServiceStopMidShutdownResumesTheSameJob(t *testing.T) {
	f := newFixture(t, func(o *sitesim.Options) {
		o.VMStopMin, o.VMStopMax = 200*time.Millisecond, 800*time.Millisecond
		o.Concurrency = 4
	})
	r, stop := f.start()
	job := f.shutdown(r)
	f.waitFor("some VMs off", 10*time.Second, func() bool { return f.countActions(job.ID, "vm", store.ActionSucceeded) >= 5 })
	stop() // the service stops: the job stays running in the store
	if j := f.job(job.ID); j.State != store.StateRunning {
		t.Fatalf("after stop job is %s, want running", j.State)
	}
	f.resumeToSuccess(job.ID)
	for _, vm := range f.site.Nova.Servers() {
		if n := f.site.Nova.StopRequestsFor(vm.ID); n > 1 {
			t.Errorf("vm %s got %d os-stop", vm.Name, n)
		}
	}
	for _, h := range f.site.Hosts {
		if h.Machine.State() != sitesim.PowerOff || h.SSH.PowerCommands() != 1 {
			t.Errorf("host %s: %s after %d power commands", h.Spec.Name, h.Machine.State(), h.SSH.PowerCommands())
		}
	}
	jobs, _ := f.store.ListJobs(context.Background(), store.JobFilter{})
	if len(jobs) != 1 {
		t.Errorf("%d jobs, want the same one job", len(jobs))
	}
}

func TestVMThatNeverStopsFailsAtTheTimeoutAndTheJobGoesOn(t *testing.T) {
	f := newFixture(t, func(o *sitesim.Options) {
		o.VMs = []sitesim.VM{
			{ID: "vm-ok", Name: "ok", Project: "a", StopDelay: 50 * time.Millisecond},
			{ID: "vm-stuck", Name: "stuck", Project: "a", StopDelay: 50 * time.Millisecond, NeverStops: true},
		}
		o.StopTimeout = time.Second
	})
	r, stop := f.start()
	defer stop()
	job := f.shutdown(r)
	f.waitFor("job final", 30*time.Second, func() bool { return f.job(job.ID).State.Final() })
	j := f.job(job.ID)
	if j.State != store.StateFailed {
		t.Fatalf("job %s, want failed (one VM did not stop)", j.State)
	}
	as, _ := f.store.Actions(context.Background(), job.ID)
	var stuck store.Action
	for _, a := range as {
		if a.TargetID == "vm-stuck" {
			stuck = a
		}
	}
	if stuck.State != store.ActionFailed || stuck.Error == "" {
		t.Errorf("stuck vm action = %s %q", stuck.State, stuck.Error)
	}
	for _, h := range f.site.Hosts {
		if h.Machine.State() != sitesim.PowerOff {
			t.Errorf("host %s still %s: the job did not go on to the hosts", h.Spec.Name, h.Machine.State())
		}
	}
	if !f.site.Host("storage-01").SSH.CephStopped() {
		t.Error("storage not stopped after the VM timeout")
	}
}
