package runner_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/runner"
	"github.com/edgeops/shutdownd/sitesim"
	"github.com/edgeops/shutdownd/store"
)

// events returns the messages of the job's events, oldest first.
func (f *fixture) events(jobID int64) []string {
	f.t.Helper()
	evs, err := f.store.Events(context.Background(), jobID, 0)
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		out = append(out, e.Message)
	}
	return out
}

// A cancel during the storage step stops before the next command: the flag
// under way completes, the rest are never sent, and no host is powered off.
func TestCancelDuringStorageStopsBeforeTheNextCommandAndTheHosts(t *testing.T) {
	f := newFixture(t, func(o *sitesim.Options) {
		o.Hosts = []sitesim.HostSpec{
			{Name: "compute-01", Role: "compute"},
			{Name: "storage-01", Role: "storage"},
		}
		o.SSHLatency = 200 * time.Millisecond // each Ceph command takes this long
	})
	r, stop := f.start()
	defer stop()
	job := f.shutdown(r)
	admin := f.site.Host("storage-01").SSH
	f.waitFor("first Ceph flag set", 30*time.Second, func() bool { return len(admin.CephFlags()) > 0 })
	if _, err := f.store.RequestCancel(context.Background(), job.ID); err != nil {
		t.Fatal(err)
	}
	f.waitFor("job final", 30*time.Second, func() bool { return f.job(job.ID).State.Final() })
	j := f.job(job.ID)
	if j.State != store.StateCancelled {
		t.Fatalf("job %s: %s", j.State, j.Error)
	}
	steps, err := f.store.Steps(context.Background(), job.ID)
	if err != nil {
		t.Fatal(err)
	}
	var states []store.StepState
	for _, s := range steps {
		states = append(states, s.State)
	}
	if !slices.Equal(states, []store.StepState{store.StepSucceeded, store.StepCancelled}) {
		t.Errorf("steps %v, want the VM step succeeded and storage cancelled (hosts never started)", states)
	}
	if flags := admin.CephFlags(); len(flags) == 0 || len(flags) == len(config.CephFlags) {
		t.Errorf("flags set %v: want those set before the cancel, not all", flags)
	}
	if admin.CephStopped() {
		t.Error("ceph.target stopped after the cancel")
	}
	for _, h := range f.site.Hosts {
		if h.SSH.PowerCommands() != 0 || len(h.BMC.Resets()) != 0 || h.Machine.State() != sitesim.PowerOn {
			t.Errorf("%s touched after a cancel in the storage step", h.Spec.Name)
		}
	}
}

// A cancel while a host group goes down lets that group finish (its
// power-offs are out) and stops before the next group.
func TestCancelDuringAHostGroupStopsBeforeTheNextGroup(t *testing.T) {
	f := newFixture(t, func(o *sitesim.Options) {
		o.Hosts = []sitesim.HostSpec{
			{Name: "compute-01", Role: "compute", PowerOffDelay: time.Second},
			{Name: "control-01", Role: "control"},
		}
		o.Storage = "none"
	})
	r, stop := f.start()
	defer stop()
	job := f.shutdown(r)
	compute := f.site.Host("compute-01")
	f.waitFor("compute power-off sent", 30*time.Second, func() bool { return compute.SSH.PowerCommands() == 1 })
	if _, err := f.store.RequestCancel(context.Background(), job.ID); err != nil {
		t.Fatal(err)
	}
	f.waitFor("job final", 30*time.Second, func() bool { return f.job(job.ID).State.Final() })
	if j := f.job(job.ID); j.State != store.StateCancelled {
		t.Fatalf("job %s: %s", j.State, j.Error)
	}
	if s := compute.Machine.State(); s != sitesim.PowerOff {
		t.Errorf("compute-01 is %s: the group under way must finish", s)
	}
	if a := f.hostActions(job.ID)["compute-01"]; a.State != store.ActionSucceeded {
		t.Errorf("compute-01 action %s %q", a.State, a.Error)
	}
	control := f.site.Host("control-01")
	if control.SSH.PowerCommands() != 0 || control.Machine.State() != sitesim.PowerOn {
		t.Error("control-01 (the next group) was powered off after the cancel")
	}
}

// A simulation that was running when the service stopped is not resumed:
// the next start marks it failed, "interrupted by restart", and runs none
// of its checks again.
func TestInterruptedSimulationIsMarkedFailedNotResumed(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	job, err := f.store.CreateSimulation(ctx, store.NewJob{Kind: store.KindSimulation})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.store.StartJob(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	_, stop := f.start()
	defer stop()
	f.waitFor("simulation final", 30*time.Second, func() bool { return f.job(job.ID).State.Final() })
	j := f.job(job.ID)
	if j.State != store.StateFailed || !strings.Contains(j.Error, "interrupted by restart") {
		t.Fatalf("simulation %s: %q; want failed, interrupted by restart", j.State, j.Error)
	}
	time.Sleep(300 * time.Millisecond) // room for a wrong resume to log in
	for _, h := range f.site.Hosts {
		if n := h.SSH.Logins(); n != 0 {
			t.Errorf("%s: %d SSH logins: the interrupted simulation was resumed", h.Spec.Name, n)
		}
	}
	if n := f.site.Nova.ListRequests(); n != 0 {
		t.Errorf("%d server lists after the restart: the interrupted simulation was resumed", n)
	}
}

// A shutdown with a deadline it cannot meet records that it is behind, as
// an event and in on_track, and ends with on_track false.
func TestShutdownPastItsDeadlineIsRecordedBehind(t *testing.T) {
	f := newFixture(t, func(o *sitesim.Options) {
		o.Hosts = []sitesim.HostSpec{{Name: "compute-01", Role: "compute", PowerOffDelay: 500 * time.Millisecond}}
		o.Storage = "none"
	})
	r, stop := f.start()
	defer stop()
	deadline := time.Now().Add(200 * time.Millisecond)
	job, _, err := f.store.CreateShutdown(context.Background(), store.NewJob{Kind: store.KindShutdown, Deadline: &deadline})
	if err != nil {
		t.Fatal(err)
	}
	r.Kick()
	f.waitFor("job final", 30*time.Second, func() bool { return f.job(job.ID).State.Final() })
	j := f.job(job.ID)
	if j.State != store.StateSucceeded {
		t.Fatalf("job %s: %s", j.State, j.Error)
	}
	if j.OnTrack == nil || *j.OnTrack {
		t.Errorf("on_track %v, want false for a job that ended after its deadline", j.OnTrack)
	}
	if evs := f.events(job.ID); !slices.Contains(evs, "deadline: behind") {
		t.Errorf("no \"deadline: behind\" event in %q", evs)
	}
}

// A shutdown requested again while a running shutdown's cancel is pending
// is not answered with the job that is about to stop: that job ends
// cancelled, superseded, and a new shutdown takes the site down.
func TestShutdownRequestedAgainWhileItsCancelIsPendingStillShutsDown(t *testing.T) {
	f := newFixture(t, func(o *sitesim.Options) {
		o.VMStopMin, o.VMStopMax = 500*time.Millisecond, time.Second
		o.Hosts = []sitesim.HostSpec{{Name: "compute-01", Role: "compute"}, {Name: "storage-01", Role: "storage"}}
	})
	r, stop := f.start()
	defer stop()
	first := f.shutdown(r)
	f.waitFor("first os-stop", 30*time.Second, func() bool { return f.site.Nova.StopRequests() > 0 })
	ctx := context.Background()
	if _, err := f.store.RequestCancel(ctx, first.ID); err != nil {
		t.Fatal(err)
	}
	second, created, err := f.store.CreateShutdown(ctx, store.NewJob{Kind: store.KindShutdown, Reason: "power lost again"})
	if err != nil {
		t.Fatal(err)
	}
	if !created || second.ID == first.ID {
		t.Fatalf("the new request got job %d (created %v): the job being cancelled", second.ID, created)
	}
	r.Kick()
	f.waitFor("second job final", 60*time.Second, func() bool { return f.job(second.ID).State.Final() })
	if j := f.job(first.ID); j.State != store.StateCancelled || !strings.Contains(j.Error, fmt.Sprintf("superseded by shutdown job %d", second.ID)) {
		t.Errorf("first job %s: %q; want cancelled, superseded", j.State, j.Error)
	}
	if j := f.job(second.ID); j.State != store.StateSucceeded {
		t.Fatalf("second job %s: %s", j.State, j.Error)
	}
	for _, a := range f.actions(first.ID) {
		if !(a.State == store.ActionSucceeded || a.State == store.ActionFailed || a.State == store.ActionSkipped) {
			t.Errorf("first job's action %s %s on %s left %s", a.TargetKind, a.Operation, a.Target, a.State)
		}
	}
	for _, h := range f.site.Hosts {
		if s := h.Machine.State(); s != sitesim.PowerOff {
			t.Errorf("%s is %s", h.Spec.Name, s)
		}
	}
	for _, vm := range f.site.Nova.Servers() {
		if vm.Status == "ACTIVE" || vm.Status == "ERROR" {
			t.Errorf("VM %s still %s", vm.Name, vm.Status)
		}
		if off := f.site.Nova.ShutoffAt(vm.ID); !off.IsZero() {
			for _, at := range f.site.Nova.StopTimesFor(vm.ID) {
				if at.After(off) {
					t.Errorf("VM %s got an os-stop after it was SHUTOFF", vm.Name)
				}
			}
		}
	}
}

// A step that failed before a restart still fails the resumed job, naming
// what failed: the job's result is what its steps did, not what the last
// process saw.
func TestStepFailedBeforeARestartStillFailsTheJob(t *testing.T) {
	f := newFixture(t, func(o *sitesim.Options) {
		o.VMs = []sitesim.VM{
			{ID: "vm-ok", Name: "ok", Project: "a", Status: "ACTIVE", StopDelay: 50 * time.Millisecond},
			{ID: "vm-stuck", Name: "stuck", Project: "a", Status: "ACTIVE", StopDelay: 50 * time.Millisecond, NeverStops: true},
		}
		o.StopTimeout = time.Second
		o.Hosts = []sitesim.HostSpec{{Name: "compute-01", Role: "compute", PowerOffDelay: 2 * time.Second}}
		o.Storage = "none"
		o.HostOff = 20 * time.Second
	})
	r, stop := f.start()
	job := f.shutdown(r)
	f.waitFor("host power-off sent", 30*time.Second, func() bool { return f.site.Host("compute-01").SSH.PowerCommands() == 1 })
	stop() // the service stops in the host step, after the VM step failed
	steps, err := f.store.Steps(context.Background(), job.ID)
	if err != nil || len(steps) < 1 || steps[0].State != store.StepFailed {
		t.Fatalf("before the restart: steps %+v, %v; want the VM step failed", steps, err)
	}
	f.waitFor("host off", 30*time.Second, func() bool { return f.site.Host("compute-01").Machine.State() == sitesim.PowerOff })
	r2, stop2 := f.start()
	defer stop2()
	r2.Kick()
	f.waitFor("job final", 60*time.Second, func() bool { return f.job(job.ID).State.Final() })
	j := f.job(job.ID)
	if j.State != store.StateFailed || !strings.Contains(j.Error, "vm stuck (vm-stuck)") {
		t.Errorf("resumed job %s %q; want failed naming the VM that did not stop before the restart", j.State, j.Error)
	}
}

// A cancel requested while the service was down (or before it reached a
// safe point) ends the resumed job cancelled, and closes what the stopped
// process left open: no step or action of a final job stays running.
func TestCancelledBeforeResumeClosesWhatWasOpen(t *testing.T) {
	f := newFixture(t, func(o *sitesim.Options) {
		o.Hosts = []sitesim.HostSpec{{Name: "compute-01", Role: "compute", PowerOffDelay: 2 * time.Second}, {Name: "control-01", Role: "control"}}
		o.Storage = "none"
		o.HostOff = 20 * time.Second
	})
	r, stop := f.start()
	job := f.shutdown(r)
	f.waitFor("power-off sent", 30*time.Second, func() bool { return f.site.Host("compute-01").SSH.PowerCommands() == 1 })
	stop()
	if _, err := f.store.RequestCancel(context.Background(), job.ID); err != nil {
		t.Fatal(err)
	}
	r2, stop2 := f.start()
	defer stop2()
	r2.Kick()
	f.waitFor("job final", 60*time.Second, func() bool { return f.job(job.ID).State.Final() })
	if j := f.job(job.ID); j.State != store.StateCancelled {
		t.Fatalf("job %s: %s", j.State, j.Error)
	}
	steps, err := f.store.Steps(context.Background(), job.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range steps {
		if !s.State.Final() {
			t.Errorf("step %s left %s in a cancelled job", s.Name, s.State)
		}
	}
	for _, a := range f.actions(job.ID) {
		if a.State == store.ActionRunning || a.State == store.ActionPending {
			t.Errorf("action %s %s on %s left %s", a.TargetKind, a.Operation, a.Target, a.State)
		}
	}
	if n := f.site.Host("control-01").SSH.PowerCommands(); n != 0 {
		t.Errorf("control-01 got %d power-offs after the cancel", n)
	}
}

// A simulation preempted by a shutdown in the middle of its host checks
// records no finding about the hosts it had not finished: the checks cut
// short and those never started are not failures, and nothing is left
// running; the shutdown then takes the site down.
func TestPreemptedSimulationRecordsNoFalseFindings(t *testing.T) {
	f := newFixture(t, func(o *sitesim.Options) {
		o.Hosts = nil
		for i := range 24 {
			o.Hosts = append(o.Hosts, sitesim.HostSpec{Name: fmt.Sprintf("compute-%02d", i), Role: "compute"})
		}
		o.Storage = "none"
		o.SSHLatency = time.Second // each check's command takes this long
	})
	r, stop := f.start()
	defer stop()
	sim := f.simulate(r)
	f.waitFor("host checks started", 30*time.Second, func() bool {
		for _, a := range f.actions(sim.ID) {
			if a.Operation == "check-ssh" {
				return true
			}
		}
		return false
	})
	sd := f.shutdown(r)
	f.waitFor("shutdown final", 60*time.Second, func() bool { return f.job(sd.ID).State.Final() })
	if j := f.job(sim.ID); j.State != store.StateCancelled {
		t.Fatalf("simulation %s: %s", j.State, j.Error)
	}
	for _, a := range f.actions(sim.ID) {
		if a.State == store.ActionFailed {
			t.Errorf("preempted simulation recorded %s %s on %s as failed: %s", a.TargetKind, a.Operation, a.Target, a.Error)
		}
		if !a.State.Final() {
			t.Errorf("preempted simulation left %s %s on %s %s", a.TargetKind, a.Operation, a.Target, a.State)
		}
	}
	if j := f.job(sd.ID); j.State != store.StateSucceeded {
		t.Errorf("shutdown %s: %s", j.State, j.Error)
	}
}

// The self power-off is recorded before the job's final state and finished
// only if the machine lets us; when it went down first, the next start
// finds the action open in a final job. It closes it as not recorded, and
// never sends the power-off again: the machine was started by hand.
func TestSelfPowerOffLeftOpenIsClosedNotResumed(t *testing.T) {
	f := selfSite(t, 0)
	ctx := context.Background()
	job := f.startedShutdown()
	step, err := f.store.EnsureStep(ctx, job.ID, 3, runner.StepHosts)
	if err != nil {
		t.Fatal(err)
	}
	a, err := beginAction(ctx, f.store, store.ActionKey{JobID: job.ID, StepID: step.ID, TargetKind: "host", Target: "mgmt-01", Operation: "self-poweroff"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.FinishJob(ctx, job.ID, store.StateSucceeded, ""); err != nil {
		t.Fatal(err)
	}
	_, stop := f.start()
	defer stop()
	f.waitFor("self action closed", 30*time.Second, func() bool {
		for _, x := range f.actions(job.ID) {
			if x.ID == a.ID {
				return x.State.Final()
			}
		}
		return false
	})
	for _, x := range f.actions(job.ID) {
		if x.ID == a.ID && (x.State != store.ActionSkipped || !strings.Contains(x.Detail, "outcome not recorded")) {
			t.Errorf("self action %s %q; want skipped, outcome not recorded", x.State, x.Detail)
		}
	}
	time.Sleep(300 * time.Millisecond) // room for a wrong power-off
	if n := f.site.Host("mgmt-01").SSH.PowerCommands(); n != 0 {
		t.Errorf("the restarted service powered this machine off again (%d commands)", n)
	}
}

// A VM deleted while the service was down, after its os-stop was sent, is
// no longer listed when the job resumes: its action is closed as deleted
// (it is off), not left running in a finished job.
func TestVMDeletedWhileTheServiceWasDownIsClosedOnResume(t *testing.T) {
	f := newFixture(t, func(o *sitesim.Options) {
		o.VMs = []sitesim.VM{
			{ID: "vm-ok", Name: "ok", Project: "a", Status: "ACTIVE", StopDelay: 50 * time.Millisecond},
			{ID: "vm-slow", Name: "slow", Project: "a", Status: "ACTIVE", StopDelay: time.Hour},
		}
		o.StopTimeout = time.Minute
		o.Hosts = []sitesim.HostSpec{{Name: "compute-01", Role: "compute"}}
		o.Storage = "none"
	})
	r, stop := f.start()
	job := f.shutdown(r)
	f.waitFor("both os-stops sent", 30*time.Second, func() bool { return f.site.Nova.StopRequestsFor("vm-slow") == 1 })
	stop()
	f.site.Nova.Delete("vm-slow")
	f.resumeToSuccess(job.ID)
	for _, a := range f.actions(job.ID) {
		if a.TargetID == "vm-slow" && (a.State != store.ActionSucceeded || !strings.Contains(a.Detail, "no longer listed")) {
			t.Errorf("deleted VM's action %s %q; want succeeded, no longer listed", a.State, a.Detail)
		}
		if !a.State.Final() {
			t.Errorf("action %s %s on %s left %s", a.TargetKind, a.Operation, a.Target, a.State)
		}
	}
}

// A host whose BMC confirmed it Off just before the service stopped, whose
// own record was not yet written, is finished on resume as confirmed off,
// even with its BMC unreachable now, and is sent nothing again.
func TestHostConfirmedOffBeforeARestartIsNotTriedAgain(t *testing.T) {
	f := newFixture(t, func(o *sitesim.Options) {
		o.Hosts = []sitesim.HostSpec{{Name: "compute-01", Role: "compute", BMCDown: true, SSHDown: true}}
		o.Storage = "none"
	})
	ctx := context.Background()
	job := f.startedShutdown()
	for i, name := range []string{runner.StepOpenStack, runner.StepStorage} {
		st, err := f.store.EnsureStep(ctx, job.ID, i+1, name)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.store.FinishStep(ctx, st.ID, store.StepSucceeded, "", ""); err != nil {
			t.Fatal(err)
		}
	}
	hosts, err := f.store.EnsureStep(ctx, job.ID, 3, runner.StepHosts)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.store.StartStep(ctx, hosts.ID); err != nil {
		t.Fatal(err)
	}
	key := store.ActionKey{JobID: job.ID, StepID: hosts.ID, TargetKind: "host", Target: "compute-01", Operation: "power-off"}
	hostRow, err := beginAction(ctx, f.store, key, "")
	if err != nil {
		t.Fatal(err)
	}
	key.TargetKind, key.Operation = "bmc", "bmc-confirm-off"
	confirm, err := beginAction(ctx, f.store, key, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := finishAction(ctx, f.store, confirm.ID, store.ActionSucceeded, "Off", ""); err != nil {
		t.Fatal(err)
	}
	f.resumeToSuccess(job.ID)
	for _, a := range f.actions(job.ID) {
		if a.ID == hostRow.ID && (a.State != store.ActionSucceeded || !strings.Contains(a.Detail, "confirmed by the BMC before the restart")) {
			t.Errorf("host row %s %q %q; want succeeded, confirmed before the restart", a.State, a.Detail, a.Error)
		}
	}
	if n := f.site.Host("compute-01").SSH.PowerCommands(); n != 0 {
		t.Errorf("compute-01 sent %d power-offs again", n)
	}
}

// startedShutdown records a shutdown as a stopped process leaves it:
// created and running, with no runner; the test writes what it had done.
func (f *fixture) startedShutdown() store.Job {
	f.t.Helper()
	ctx := context.Background()
	job, _, err := f.store.CreateShutdown(ctx, store.NewJob{Kind: store.KindShutdown})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.store.StartJob(ctx, job.ID); err != nil {
		f.t.Fatal(err)
	}
	return job
}
