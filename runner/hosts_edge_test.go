package runner_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/sitesim"
	"github.com/edgeops/shutdownd/store"
)

// hostActions returns the job's per-host power-off actions (the outcome of
// each host's whole sequence) by host name.
func (f *fixture) hostActions(jobID int64) map[string]store.Action {
	out := map[string]store.Action{}
	for _, a := range f.actions(jobID) {
		if a.TargetKind == "host" && a.Operation == "power-off" {
			out[a.Target] = a
		}
	}
	return out
}

// runShutdown runs one shutdown to its end and returns the job.
func (f *fixture) runShutdown() store.Job {
	f.t.Helper()
	r, stop := f.start()
	defer stop()
	job := f.shutdown(r)
	f.waitFor("job final", 60*time.Second, func() bool { return f.job(job.ID).State.Final() })
	return f.job(job.ID)
}

// A host without a BMC is powered off over SSH, with nothing to confirm it;
// if SSH fails too, it is reported failed with the reason, and the other
// hosts still go down. A simulation checks such a host over SSH only.
func TestHostWithoutBMC(t *testing.T) {
	f := newFixture(t, func(o *sitesim.Options) {
		o.Hosts = []sitesim.HostSpec{
			{Name: "compute-01", Role: "compute", NoBMC: true},
			{Name: "compute-02", Role: "compute", NoBMC: true, SSHDown: true},
			{Name: "control-01", Role: "control"},
		}
		o.Storage = "none"
	})
	r, stop := f.start()
	sim := f.simulate(r)
	f.waitFor("simulation final", 30*time.Second, func() bool { return f.job(sim.ID).State.Final() })
	stop()
	if j := f.job(sim.ID); j.State != store.StateFailed || !strings.Contains(j.Error, "compute-02") || strings.Contains(j.Error, "compute-01") {
		t.Errorf("simulation %s: %q; want failed naming compute-02 (SSH down) only", j.State, j.Error)
	}

	j := f.runShutdown()
	if j.State != store.StateFailed || !strings.Contains(j.Error, "compute-02") || strings.Contains(j.Error, "compute-01") {
		t.Fatalf("job %s: %q; want failed naming compute-02 only", j.State, j.Error)
	}
	hosts := f.hostActions(j.ID)
	if a := hosts["compute-01"]; a.State != store.ActionSucceeded || a.Detail != "power-off sent over SSH; no BMC to confirm" {
		t.Errorf("compute-01: %s %q %q", a.State, a.Detail, a.Error)
	}
	if a := hosts["compute-02"]; a.State != store.ActionFailed || a.Error != "SSH power-off failed and no BMC configured" {
		t.Errorf("compute-02: %s %q %q", a.State, a.Detail, a.Error)
	}
	if a := hosts["control-01"]; a.State != store.ActionSucceeded {
		t.Errorf("control-01 (after the failed group): %s %q", a.State, a.Error)
	}
	if s := f.site.Host("compute-01").Machine.State(); s != sitesim.PowerOff {
		t.Errorf("compute-01 is %s", s)
	}
}

// A host that is already off when the shutdown starts (in maintenance) is
// recorded as such, and is sent nothing: no SSH command, no BMC reset.
func TestHostAlreadyOffIsSentNothing(t *testing.T) {
	f := newFixture(t, func(o *sitesim.Options) {
		o.Hosts = []sitesim.HostSpec{
			{Name: "compute-01", Role: "compute"},
			{Name: "compute-02", Role: "compute"},
		}
		o.Storage = "none"
	})
	off := f.site.Host("compute-02")
	off.Machine.SetState(sitesim.PowerOff, "test")
	j := f.runShutdown()
	if j.State != store.StateSucceeded {
		t.Fatalf("job %s: %s", j.State, j.Error)
	}
	if a := f.hostActions(j.ID)["compute-02"]; a.State != store.ActionSucceeded || a.Detail != "already Off (BMC)" {
		t.Errorf("compute-02: %s %q %q, want succeeded, already Off (BMC)", a.State, a.Detail, a.Error)
	}
	if n, resets := off.SSH.PowerCommands(), off.BMC.Resets(); n != 0 || len(resets) != 0 {
		t.Errorf("compute-02 (already off) got %d SSH power-offs and BMC resets %v", n, resets)
	}
	if h := off.Machine.History(); len(h) != 1 {
		t.Errorf("compute-02 power history %v: want only the test's own power-off", h)
	}
}

// A power-off command the host refuses (sudo asks for a password) is not
// taken for a power-off: the host goes to the BMC soft off at once, without
// waiting host_off for a shutdown that was never started.
func TestRefusedPowerOffCommandGoesStraightToBMCSoftOff(t *testing.T) {
	f := newFixture(t, func(o *sitesim.Options) {
		o.Hosts = []sitesim.HostSpec{{Name: "compute-01", Role: "compute", SudoDenied: true}}
		o.Storage = "none"
		o.HostOff = time.Minute // waiting it would time the test out
		o.User = "ops"          // sudo asks root for nothing
	})
	f.cfg.Hosts[0].SSH.PoweroffCommand = "sudo -n systemctl poweroff"
	j := f.runShutdown()
	if j.State != store.StateSucceeded {
		t.Fatalf("job %s: %s", j.State, j.Error)
	}
	h := f.site.Host("compute-01")
	if resets := h.BMC.Resets(); !slices.Equal(resets, []string{"GracefulShutdown"}) {
		t.Errorf("BMC resets %v, want only GracefulShutdown", resets)
	}
	if a := f.hostActions(j.ID)["compute-01"]; !strings.HasPrefix(a.Detail, "off via BMC soft off") {
		t.Errorf("compute-01: %s %q", a.State, a.Detail)
	}
	var ssh store.Action
	for _, a := range f.actions(j.ID) {
		if a.Operation == "ssh-poweroff" {
			ssh = a
		}
	}
	if ssh.State != store.ActionFailed || !strings.Contains(ssh.Error, "sudo: a password is required") {
		t.Errorf("ssh power-off action %s %q: want failed with sudo's reason", ssh.State, ssh.Error)
	}
}

// A host that stays on through the whole escalation (the power-off command
// ignored, the BMC's soft off ignored, its hard off accepted and without
// effect) is reported failed as still on, after each stage had its time;
// the other host of the group is not held up by it.
func TestHostStillOnAfterHardOffIsReportedFailed(t *testing.T) {
	f := newFixture(t, func(o *sitesim.Options) {
		o.Hosts = []sitesim.HostSpec{
			{Name: "compute-01", Role: "compute", IgnorePowerOff: true, IgnoreSoftOff: true, IgnoreHardOff: true},
			{Name: "compute-02", Role: "compute"},
		}
		o.Storage = "none"
		o.HostOff, o.BMCSoftOff, o.BMCHardOff = 300*time.Millisecond, 300*time.Millisecond, 300*time.Millisecond
	})
	j := f.runShutdown()
	if j.State != store.StateFailed || !strings.Contains(j.Error, "compute-01") || strings.Contains(j.Error, "compute-02") {
		t.Fatalf("job %s: %q; want failed naming compute-01 only", j.State, j.Error)
	}
	hosts := f.hostActions(j.ID)
	if a := hosts["compute-01"]; a.State != store.ActionFailed || a.Error != "still on after BMC hard off" {
		t.Errorf("compute-01: %s %q", a.State, a.Error)
	}
	if a := hosts["compute-02"]; a.State != store.ActionSucceeded {
		t.Errorf("compute-02: %s %q", a.State, a.Error)
	}
	stuck := f.site.Host("compute-01")
	if resets := stuck.BMC.Resets(); !slices.Equal(resets, []string{"GracefulShutdown", "ForceOff"}) {
		t.Errorf("BMC resets %v, want GracefulShutdown then ForceOff", resets)
	}
	// Each confirmation waited its own timeout before the next stage.
	var confirms []store.Action
	for _, a := range f.actions(j.ID) {
		if a.Target == "compute-01" && a.Operation.ConfirmsOff() {
			confirms = append(confirms, a)
		}
	}
	if len(confirms) != 3 {
		t.Fatalf("%d confirmation actions, want 3 (after SSH, soft off, hard off)", len(confirms))
	}
	for _, a := range confirms {
		if a.State != store.ActionFailed || a.FinishedAt.Sub(*a.StartedAt) < 300*time.Millisecond {
			t.Errorf("%s: %s after %s; want failed after its 300ms", a.Operation, a.State, a.FinishedAt.Sub(*a.StartedAt))
		}
	}
}
