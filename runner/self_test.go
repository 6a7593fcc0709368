package runner_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/sitesim"
	"github.com/edgeops/shutdownd/store"
)

// selfSiteWith is selfSite with the self host (mgmt-01) shaped by spec.
func selfSiteWith(t *testing.T, spec sitesim.HostSpec) *fixture {
	spec.Name, spec.Role, spec.Self = "mgmt-01", "control", true
	return newFixture(t, func(o *sitesim.Options) {
		o.Hosts = []sitesim.HostSpec{{Name: "compute-01", Role: "compute"}, spec}
		o.Storage = "none"
		if spec.SudoDenied {
			o.User = "ops" // sudo asks root for nothing: a refusal needs another user
		}
	})
}

// selfOutcome waits until the job is final and its self power-off has an
// outcome, and returns both.
func (f *fixture) selfOutcome(jobID int64) (store.Job, store.Action) {
	f.t.Helper()
	var self store.Action
	f.waitFor("self power-off settled", 60*time.Second, func() bool {
		if !f.job(jobID).State.Final() {
			return false
		}
		for _, a := range f.actions(jobID) {
			if a.Operation == "self-poweroff" {
				self = a
			}
		}
		return self.ID != 0 && self.State.Final()
	})
	return f.job(jobID), self
}

func (f *fixture) ops(jobID int64, host string) map[store.Operation]store.Action {
	out := map[store.Operation]store.Action{}
	for _, a := range f.actions(jobID) {
		if a.Target == host {
			out[a.Operation] = a
		}
	}
	return out
}

// A self host that accepts its power-off and stays up is taken down by its
// BMC, soft off first, as any other host would be.
func TestSelfHostThatStaysUpIsPoweredOffByItsBMC(t *testing.T) {
	f := selfSiteWith(t, sitesim.HostSpec{IgnorePowerOff: true})
	r, stop := f.start()
	defer stop()
	job := f.shutdown(r)
	j, self := f.selfOutcome(job.ID)
	if j.State != store.StateSucceeded {
		t.Fatalf("job %s: %s", j.State, j.Error)
	}
	if self.State != store.ActionSucceeded || !strings.Contains(self.Detail, "bmc-soft-off") {
		t.Fatalf("self power-off %s %q %q; want succeeded through bmc-soft-off", self.State, self.Detail, self.Error)
	}
	ops := f.ops(job.ID, "mgmt-01")
	for op, want := range map[store.Operation]store.ActionState{"ssh-poweroff": store.ActionSucceeded, "bmc-confirm-off": store.ActionFailed,
		"bmc-soft-off": store.ActionSucceeded, "bmc-confirm-soft-off": store.ActionSucceeded} {
		if ops[op].State != want {
			t.Errorf("%s: %s, want %s", op, ops[op].State, want)
		}
	}
	if _, ok := ops["bmc-hard-off"]; ok {
		t.Error("hard off sent although soft off worked")
	}
	mgmt := f.site.Host("mgmt-01")
	if mgmt.Machine.State() != sitesim.PowerOff || len(mgmt.BMC.Resets()) != 1 {
		t.Errorf("mgmt-01 %s, BMC resets %v", mgmt.Machine.State(), mgmt.BMC.Resets())
	}
	if id, ok := r.PoweringOffSelf(); !ok || id != job.ID {
		t.Errorf("PoweringOffSelf = %d, %v: the machine is down, new jobs must stay refused", id, ok)
	}
}

// A power-off command the self host refuses (sudo asks for a password) is a
// clear failure: its BMC powers it off.
func TestSelfPowerOffRefusedGoesToTheBMC(t *testing.T) {
	f := selfSiteWith(t, sitesim.HostSpec{SudoDenied: true})
	for i := range f.cfg.Hosts {
		if f.cfg.Hosts[i].Self {
			f.cfg.Hosts[i].SSH.User = "ops" // sudo asks root for nothing
			f.cfg.Hosts[i].SSH.PoweroffCommand = "sudo systemctl poweroff"
		}
	}
	r, stop := f.start()
	defer stop()
	job := f.shutdown(r)
	_, self := f.selfOutcome(job.ID)
	ops := f.ops(job.ID, "mgmt-01")
	if a := ops["ssh-poweroff"]; a.State != store.ActionFailed || !strings.Contains(a.Error, "exited 1") {
		t.Errorf("ssh-poweroff %s %q; want failed, exited 1", a.State, a.Error)
	}
	if _, ok := ops["bmc-confirm-off"]; ok {
		t.Error("waited for a power-off that was refused")
	}
	if self.State != store.ActionSucceeded || !strings.Contains(self.Detail, "bmc-soft-off") {
		t.Errorf("self power-off %s %q %q; want succeeded through bmc-soft-off", self.State, self.Detail, self.Error)
	}
	if s := f.site.Host("mgmt-01").Machine.State(); s != sitesim.PowerOff {
		t.Errorf("mgmt-01 is %s", s)
	}
}

// When SSH and the BMC all fail to power off the self host, the job records
// it and the service goes back to normal: the next shutdown is a new job
// that runs, and so is a simulation.
func TestFailedSelfPowerOffEndsCleanly(t *testing.T) {
	f := selfSiteWith(t, sitesim.HostSpec{IgnorePowerOff: true, IgnoreSoftOff: true, IgnoreHardOff: true})
	r, stop := f.start()
	defer stop()
	first := f.shutdown(r)
	j, self := f.selfOutcome(first.ID)
	if j.State != store.StateSucceeded {
		t.Fatalf("job %s: %s", j.State, j.Error)
	}
	if self.State != store.ActionFailed || self.Error != "still running after BMC soft off and hard off" {
		t.Fatalf("self power-off %s %q; want failed, still running", self.State, self.Error)
	}
	f.waitFor("the service back to normal", 30*time.Second, func() bool { _, down := r.PoweringOffSelf(); return !down })
	evs, err := f.store.Events(context.Background(), first.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	var said bool
	for _, e := range evs {
		said = said || (e.Level == "error" && strings.Contains(e.Message, "this machine (mgmt-01) was not powered off"))
	}
	if !said {
		t.Error("no error event saying this machine was not powered off")
	}

	sim, err := f.store.CreateSimulation(context.Background(), store.NewJob{Kind: store.KindSimulation})
	if err != nil {
		t.Fatal(err)
	}
	r.Kick()
	f.waitFor("simulation final", 30*time.Second, func() bool { return f.job(sim.ID).State.Final() })
	if j := f.job(sim.ID); j.State == store.StateCancelled || strings.Contains(j.Error, "being powered off") {
		t.Errorf("simulation after the failed self power-off: %s %q; want it run", j.State, j.Error)
	}
	second := f.shutdown(r)
	if second.ID == first.ID {
		t.Fatal("the second shutdown is the first job")
	}
	j2, self2 := f.selfOutcome(second.ID)
	if j2.State != store.StateSucceeded || self2.State != store.ActionFailed {
		t.Errorf("second shutdown %s %q, self %s; want run to its end like the first", j2.State, j2.Error, self2.State)
	}
	if n := f.site.Host("mgmt-01").SSH.PowerCommands(); n != 2 {
		t.Errorf("self host got %d power-off commands, want one per shutdown", n)
	}
}

// Without a BMC, a self host still up when host_off has passed after its
// power-off command has failed to go down: recorded, and back to normal.
func TestSelfHostWithoutBMCStillUpEndsCleanly(t *testing.T) {
	f := selfSiteWith(t, sitesim.HostSpec{NoBMC: true, IgnorePowerOff: true})
	r, stop := f.start()
	defer stop()
	job := f.shutdown(r)
	_, self := f.selfOutcome(job.ID)
	if self.State != store.ActionFailed || !strings.Contains(self.Error, "no BMC to force it") {
		t.Fatalf("self power-off %s %q; want failed, no BMC", self.State, self.Error)
	}
	if a := f.ops(job.ID, "mgmt-01")["await-down"]; a.State != store.ActionFailed {
		t.Errorf("await-down %s %q", a.State, a.Error)
	}
	f.waitFor("the service back to normal", 30*time.Second, func() bool { _, down := r.PoweringOffSelf(); return !down })
}

// The usual end of a self power-off on a real machine: systemd stops the
// service while it waits for the machine to go down. The power-off is
// recorded as under way, not as failed, and nothing is left open.
func TestServiceStoppedDuringTheSelfPowerOffRecordsItUnderWay(t *testing.T) {
	f := selfSiteWith(t, sitesim.HostSpec{NoBMC: true})
	f.cfg.Timeouts.HostOff = time.Minute
	r, stop := f.start()
	job := f.shutdown(r)
	f.waitFor("waiting for this machine to go down", 30*time.Second, func() bool {
		a, ok := f.ops(job.ID, "mgmt-01")["await-down"]
		return ok && a.State == store.ActionRunning
	})
	stop()
	ops := f.ops(job.ID, "mgmt-01")
	if a := ops["self-poweroff"]; a.State != store.ActionSucceeded || !strings.Contains(a.Detail, "this service was stopped") {
		t.Errorf("self power-off %s %q %q; want succeeded, under way", a.State, a.Detail, a.Error)
	}
	if a := ops["ssh-poweroff"]; a.State != store.ActionSucceeded {
		t.Errorf("ssh-poweroff %s %q", a.State, a.Error)
	}
	if a := ops["await-down"]; a.State != store.ActionSkipped {
		t.Errorf("await-down left %s", a.State)
	}
}
