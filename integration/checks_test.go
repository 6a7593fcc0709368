package integration

import (
	"slices"
	"strings"
	"testing"

	"github.com/edgeops/shutdownd/store"
)

func TestIntegrationHostKeyMismatchIsNeverLoggedIntoAndReportedInSimulationAndShutdown(t *testing.T) {
	t.Parallel()
	s := startSite(t, siteSpec{hosts: []hostSpec{
		{name: "compute-01", role: "compute", bmc: bmcIPMI, wrongHostKey: true},
		{name: "compute-02", role: "compute", bmc: bmcRedfish},
	}})
	bad := s.hosts["compute-01"]

	sim := s.simulate()
	if sim.job.State != store.StateFailed || !strings.Contains(sim.job.Error, "compute-01") || !strings.Contains(sim.job.Error, "host key mismatch") {
		t.Fatalf("simulation %s %q, want failed naming compute-01's host key:\n%s", sim.job.State, sim.job.Error, sim.dump())
	}
	if a := sim.action(t, "host", "compute-01", "check-ssh"); a.State != store.ActionFailed || !strings.Contains(a.Error, "host key mismatch") {
		t.Errorf("check-ssh %s %q", a.State, a.Error)
	}
	if a := sim.action(t, "bmc", "compute-01", "check-bmc"); a.State != store.ActionSucceeded {
		t.Errorf("check-bmc %s: %s (the BMC was fine)", a.State, a.Error)
	}
	if a := sim.action(t, "host", "compute-02", "check-ssh"); a.State != store.ActionSucceeded {
		t.Errorf("compute-02 check-ssh %s: %s", a.State, a.Error)
	}
	if n := bad.sshd.Logins(); n != 0 {
		t.Fatalf("sshd of compute-01 logged %d logins after a simulation", n)
	}
	s.assertNothingChanged(t)

	sd := s.shutdown()
	if sd.job.State != store.StateSucceeded {
		t.Fatalf("shutdown %s:\n%s", sd.job.State, sd.dump())
	}
	if a := sd.action(t, "host", "compute-01", "ssh-poweroff"); a.State != store.ActionFailed || !strings.Contains(a.Error, "host key mismatch") {
		t.Errorf("ssh-poweroff %s %q, want failed on the host key", a.State, a.Error)
	}
	if ev := sd.eventsMatching("host compute-01: SSH failed, going to the BMC"); len(ev) != 1 || !strings.Contains(ev[0].Detail, "host key mismatch") {
		t.Errorf("events about compute-01's SSH: %+v", ev)
	}
	if n := bad.sshd.Logins(); n != 0 {
		t.Errorf("sshd of compute-01 logged %d logins", n)
	}
	if got := bad.lines(t); len(got) != 0 {
		t.Errorf("compute-01 recorder saw %q", got)
	}
	if ops := bad.ipmiOps(t); !slices.Equal(ops, []string{"shutdown 1"}) {
		t.Errorf("compute-01 chassis operations %q, want one soft off", ops)
	}
	if bad.powerOn(t) {
		t.Error("compute-01 still on")
	}
	if got := s.hosts["compute-02"].lines(t); !slices.Contains(got, "systemctl poweroff") {
		t.Errorf("compute-02 received %q", got)
	}
}

func TestIntegrationSimulationReportsThreeBrokenTargetsAsThreeFindings(t *testing.T) {
	t.Parallel()
	s := startSite(t, siteSpec{
		hosts: []hostSpec{
			{name: "compute-01", role: "compute", bmc: bmcIPMI, sshDown: true},
			{name: "compute-02", role: "compute", bmc: bmcRedfish, bmcDown: true},
			{name: "control-01", role: "control", bmc: bmcIPMI},
		},
		vms:            mixedVMs(),
		cloudsPassword: "wrong-password-1",
	})
	r := s.simulate()
	if r.job.State != store.StateFailed || !strings.HasPrefix(r.job.Error, "3 failed: ") {
		t.Fatalf("simulation %s %q, want failed with 3 findings:\n%s", r.job.State, r.job.Error, r.dump())
	}
	type finding struct {
		kind   store.TargetKind
		target string
		op     store.Operation
		text   string
	}
	want := []finding{
		{"openstack", "edge", "check-list-servers", "openstack auth"},
		{"host", "compute-01", "check-ssh", "unreachable"},
		{"bmc", "compute-02", "check-bmc", "compute-02"},
	}
	failed := r.failed()
	if len(failed) != len(want) {
		t.Errorf("%d failed actions, want %d:\n%s", len(failed), len(want), r.dump())
	}
	for _, f := range want {
		a := r.action(t, f.kind, f.target, f.op)
		if a.State != store.ActionFailed || !strings.Contains(a.Error, f.text) {
			t.Errorf("%s %s %s: %s %q, want failed mentioning %q", f.kind, f.target, f.op, a.State, a.Error, f.text)
		}
		if !strings.Contains(r.job.Error, string(f.kind)+" "+f.target) && !strings.Contains(r.job.Error, f.text) {
			t.Errorf("job error %q does not report %s %s", r.job.Error, f.kind, f.target)
		}
	}
	for _, op := range []store.Operation{store.OpCheckSSH, store.OpCheckBMC} {
		if a := r.action(t, kindOf(op), "control-01", op); a.State != store.ActionSucceeded {
			t.Errorf("control-01 %s %s: %s", op, a.State, a.Error)
		}
	}
	s.assertNothingChanged(t)
}

func kindOf(op store.Operation) store.TargetKind {
	if op == "check-bmc" {
		return "bmc"
	}
	return "host"
}
