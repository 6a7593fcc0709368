package integration

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/store"
)

func TestIntegrationShutdownWithIPMIAndRedfishPowersOffEveryHostInRoleOrder(t *testing.T) {
	t.Parallel()
	s := startSite(t, siteSpec{hosts: mixedHosts(), vms: mixedVMs(), storageAdmin: "storage-01"})
	r := s.shutdown()
	if r.job.State != store.StateSucceeded {
		t.Fatalf("shutdown %s:\n%s", r.job.State, r.dump())
	}

	// Nova: every running VM got exactly one os-stop and is SHUTOFF; the
	// one already off got none.
	for _, vm := range mixedVMs() {
		want := 1
		if vm.Status == "SHUTOFF" {
			want = 0
		}
		if n := s.nova.StopRequestsFor(vm.ID); n != want {
			t.Errorf("%s: %d os-stop requests, want %d", vm.Name, n, want)
		}
		if st := s.nova.Status(vm.ID); st != "SHUTOFF" {
			t.Errorf("%s is %s", vm.Name, st)
		}
	}

	// What each host received, in order: only the power-off, except the
	// Ceph admin host, which got every flag and the stop first.
	var storageWant []string
	for _, f := range config.CephFlags {
		storageWant = append(storageWant, "ceph osd set "+f)
	}
	storageWant = append(storageWant, "systemctl stop ceph.target", "systemctl poweroff")
	for _, name := range s.order {
		h := s.hosts[name]
		want := []string{"systemctl poweroff"}
		if name == "storage-01" {
			want = storageWant
		}
		if got := h.lines(t); !slices.Equal(got, want) {
			t.Errorf("%s received %q, want %q", name, got, want)
		}
		// Off through the OS shutting down, seen by the BMC, which was
		// never asked to cut power; sshd is gone like the host.
		if h.powerOn(t) {
			t.Errorf("%s is still on", name)
		}
		if ops := h.ipmiOps(t); len(ops) != 0 {
			t.Errorf("%s: ipmi chassis operations %q, want none (off over SSH)", name, ops)
		}
		if rs := h.resets(); len(rs) != 0 {
			t.Errorf("%s: redfish resets %q, want none (off over SSH)", name, rs)
		}
		hist := h.sshd.Machine().History()
		if len(hist) != 1 || hist[0].Cause != "ssh" {
			t.Errorf("%s power history %+v, want one Off caused by ssh", name, hist)
		}
		waitFor(t, 5*time.Second, name+" sshd down", func() bool { return !h.sshd.Running() })
		a := r.action(t, "host", name, "power-off")
		if a.State != store.ActionSucceeded || !strings.HasPrefix(a.Detail, "off via SSH") {
			t.Errorf("%s power-off %s %q %s", name, a.State, a.Detail, a.Error)
		}
		if c := r.action(t, "bmc", name, "bmc-confirm-off"); c.State != store.ActionSucceeded {
			t.Errorf("%s: Off not confirmed through its BMC: %s", name, c.Error)
		}
	}
	if f, err := s.hosts["storage-01"].sshd.CephFlags(); err != nil || !slices.Equal(f, config.CephFlags) {
		t.Errorf("ceph flags set %q (%v), want %q", f, err, config.CephFlags)
	}

	// Order: VMs first, then storage, then compute, storage, control, each
	// group's power-off only after the previous group was Off.
	st := s.hosts["storage-01"]
	if first := st.commandAt(t, "ceph osd set noout"); !first.After(s.nova.FirstStopAt()) {
		t.Errorf("ceph flags at %s, before the first os-stop at %s", first, s.nova.FirstStopAt())
	}
	computeOff := latest(s.hosts["compute-01"].sshd.Machine().OffAt(), s.hosts["compute-02"].sshd.Machine().OffAt())
	if at := st.commandAt(t, "systemctl poweroff"); at.Before(computeOff) {
		t.Errorf("storage-01 told to power off at %s, before compute was off at %s", at, computeOff)
	}
	if at := s.hosts["control-01"].commandAt(t, "systemctl poweroff"); at.Before(st.sshd.Machine().OffAt()) {
		t.Errorf("control-01 told to power off at %s, before storage was off at %s", at, st.sshd.Machine().OffAt())
	}
}

func latest(ts ...time.Time) time.Time {
	var m time.Time
	for _, t := range ts {
		if t.After(m) {
			m = t
		}
	}
	return m
}

func TestIntegrationHostUnreachableBySSHGoesDownThroughBMCSoftThenHardOff(t *testing.T) {
	t.Parallel()
	s := startSite(t, siteSpec{
		hosts: []hostSpec{
			// Soft off ignored by the OS: the BMC must cut power.
			{name: "compute-01", role: "compute", bmc: bmcIPMI, sshDown: true, ignoreSoftOff: true},
			// Soft off honoured: no hard off needed.
			{name: "compute-02", role: "compute", bmc: bmcRedfish, sshDown: true},
		},
		bmcSoftOff: time.Second,
	})
	r := s.shutdown()
	if r.job.State != store.StateSucceeded {
		t.Fatalf("shutdown %s:\n%s", r.job.State, r.dump())
	}
	for _, name := range s.order {
		h := s.hosts[name]
		if got := h.lines(t); len(got) != 0 {
			t.Errorf("%s: recorder saw %q though SSH was down", name, got)
		}
		if a := r.action(t, "host", name, "ssh-poweroff"); a.State != store.ActionFailed || !strings.Contains(a.Error, "unreachable") {
			t.Errorf("%s ssh-poweroff %s %q, want failed as unreachable", name, a.State, a.Error)
		}
		if r.has("bmc", name, "bmc-confirm-off") {
			t.Errorf("%s: waited for an SSH power-off that was never sent", name)
		}
		if h.powerOn(t) {
			t.Errorf("%s is still on", name)
		}
	}

	c1 := s.hosts["compute-01"]
	if ops := c1.ipmiOps(t); !slices.Equal(ops, []string{"shutdown 1", "power 0"}) {
		t.Errorf("compute-01 ipmi chassis operations %q, want soft then hard off", ops)
	}
	if a := r.action(t, "bmc", "compute-01", "bmc-confirm-soft-off"); a.State != store.ActionFailed {
		t.Errorf("compute-01 soft off confirmed: %s %q", a.State, a.Detail)
	}
	if a := r.action(t, "bmc", "compute-01", "bmc-hard-off"); a.State != store.ActionSucceeded {
		t.Errorf("compute-01 hard off %s: %s", a.State, a.Error)
	}
	if a := r.action(t, "host", "compute-01", "power-off"); !strings.HasPrefix(a.Detail, "off via BMC hard off") {
		t.Errorf("compute-01 power-off detail %q", a.Detail)
	}

	if rs := s.hosts["compute-02"].resets(); !slices.Equal(rs, []string{"GracefulShutdown"}) {
		t.Errorf("compute-02 redfish resets %q, want only GracefulShutdown", rs)
	}
	if r.has("bmc", "compute-02", "bmc-hard-off") {
		t.Error("compute-02 hard off though the soft off worked")
	}
	if a := r.action(t, "host", "compute-02", "power-off"); !strings.HasPrefix(a.Detail, "off via BMC soft off") {
		t.Errorf("compute-02 power-off detail %q", a.Detail)
	}
}

func TestIntegrationHostThatIgnoresPowerOffIsEscalatedWithTimingsRecorded(t *testing.T) {
	t.Parallel()
	const hostOff, softOff = 1500 * time.Millisecond, time.Second
	s := startSite(t, siteSpec{
		hosts: []hostSpec{
			{name: "compute-01", role: "compute", bmc: bmcIPMI, ignorePowerOff: true},
			{name: "compute-02", role: "compute", bmc: bmcRedfish, ignorePowerOff: true, ignoreSoftOff: true},
		},
		hostOff: hostOff, bmcSoftOff: softOff,
	})
	r := s.shutdown()
	if r.job.State != store.StateSucceeded {
		t.Fatalf("shutdown %s:\n%s", r.job.State, r.dump())
	}
	for _, name := range s.order {
		h := s.hosts[name]
		if got := h.lines(t); !slices.Equal(got, []string{"systemctl poweroff"}) {
			t.Errorf("%s received %q", name, got)
		}
		if h.powerOn(t) {
			t.Errorf("%s is still on", name)
		}
		if a := r.action(t, "host", name, "ssh-poweroff"); a.State != store.ActionSucceeded {
			t.Errorf("%s ssh-poweroff %s: %s", name, a.State, a.Error)
		}
		// The wait for Off after the SSH command took the configured
		// host_off, and says so.
		c := r.action(t, "bmc", name, "bmc-confirm-off")
		if c.State != store.ActionFailed || !strings.Contains(c.Error, hostOff.String()) {
			t.Errorf("%s bmc-confirm-off %s %q, want failed after %s", name, c.State, c.Error, hostOff)
		}
		if took := c.FinishedAt.Sub(*c.StartedAt); took < hostOff {
			t.Errorf("%s escalated after %s, before host_off %s", name, took, hostOff)
		}
		if ev := r.eventsMatching("host " + name + " still on after " + hostOff.String()); len(ev) != 1 {
			t.Errorf("%s: %d escalation events", name, len(ev))
		}
		soft := r.action(t, "bmc", name, "bmc-soft-off")
		if soft.StartedAt.Before(*c.FinishedAt) {
			t.Errorf("%s soft off at %s, before the host_off wait ended at %s", name, soft.StartedAt, c.FinishedAt)
		}
	}

	// compute-01: the soft off through IPMI worked.
	if ops := s.hosts["compute-01"].ipmiOps(t); !slices.Equal(ops, []string{"shutdown 1"}) {
		t.Errorf("compute-01 chassis operations %q, want one soft off", ops)
	}
	if a := r.action(t, "host", "compute-01", "power-off"); !strings.HasPrefix(a.Detail, "off via BMC soft off after") {
		t.Errorf("compute-01 power-off detail %q", a.Detail)
	}
	// The chassis going off through ipmi_sim took the host's sshd down.
	c1 := s.hosts["compute-01"]
	waitFor(t, 5*time.Second, "compute-01 sshd down after the chassis soft off", func() bool { return !c1.sshd.Running() })
	if h := c1.sshd.Machine().History(); len(h) != 1 || h[0].Cause != "ipmi" {
		t.Errorf("compute-01 power history %+v, want one Off through IPMI", h)
	}
	// compute-02: soft off ignored too, so hard off after bmc_soft_off.
	if rs := s.hosts["compute-02"].resets(); !slices.Equal(rs, []string{"GracefulShutdown", "ForceOff"}) {
		t.Errorf("compute-02 redfish resets %q, want GracefulShutdown then ForceOff", rs)
	}
	cs := r.action(t, "bmc", "compute-02", "bmc-confirm-soft-off")
	if took := cs.FinishedAt.Sub(*cs.StartedAt); cs.State != store.ActionFailed || took < softOff {
		t.Errorf("compute-02 soft off wait %s after %s, want failed after %s", cs.State, took, softOff)
	}
	a := r.action(t, "host", "compute-02", "power-off")
	if !strings.HasPrefix(a.Detail, "off via BMC hard off after") {
		t.Errorf("compute-02 power-off detail %q", a.Detail)
	}
	if took := a.FinishedAt.Sub(*a.StartedAt); took < hostOff+softOff {
		t.Errorf("compute-02 down after %s, less than host_off+bmc_soft_off", took)
	}
	if h := s.hosts["compute-02"].sshd.Machine().History(); len(h) != 1 || h[0].Cause != "bmc-hard" {
		t.Errorf("compute-02 power history %+v, want one hard off", h)
	}
}

func TestIntegrationUnreachableBMCFailsThatHostAndTheOthersStillGoDown(t *testing.T) {
	t.Parallel()
	s := startSite(t, siteSpec{
		hosts: []hostSpec{
			{name: "compute-01", role: "compute", bmc: bmcRedfish, bmcDown: true},
			{name: "compute-02", role: "compute", bmc: bmcIPMI},
			{name: "storage-01", role: "storage", bmc: bmcRedfish},
			{name: "control-01", role: "control", bmc: bmcIPMI},
		},
		storageAdmin: "storage-01",
	})
	r := s.shutdown()
	if r.job.State != store.StateFailed {
		t.Fatalf("shutdown %s, want failed:\n%s", r.job.State, r.dump())
	}
	a := r.action(t, "host", "compute-01", "power-off")
	if a.State != store.ActionFailed || !strings.Contains(a.Error, "BMC unreachable") || !strings.Contains(a.Error, "power-off not confirmed") {
		t.Errorf("compute-01 power-off %s %q, want failed: BMC unreachable, not confirmed", a.State, a.Error)
	}
	if !strings.Contains(r.job.Error, "compute-01") || !strings.Contains(r.job.Error, "BMC unreachable") {
		t.Errorf("job error %q does not name compute-01 and its BMC", r.job.Error)
	}
	if strings.Contains(r.job.Error, bmcPassword) || strings.Contains(r.dump(), bmcPassword) {
		t.Error("BMC password in the job record")
	}
	if got := s.hosts["compute-01"].lines(t); !slices.Equal(got, []string{"systemctl poweroff"}) {
		t.Errorf("compute-01 received %q, want the power-off over SSH", got)
	}
	if ev := r.eventsMatching("host compute-01: BMC unreachable"); len(ev) == 0 {
		t.Error("no event for the unreachable BMC")
	}
	for _, name := range []string{"compute-02", "storage-01", "control-01"} {
		h := s.hosts[name]
		if a := r.action(t, "host", name, "power-off"); a.State != store.ActionSucceeded {
			t.Errorf("%s power-off %s: %s", name, a.State, a.Error)
		}
		if h.powerOn(t) {
			t.Errorf("%s still on", name)
		}
	}
	for _, f := range r.failed() {
		if f.Target != "compute-01" {
			t.Errorf("unexpected failure on %s %s: %s", f.Target, f.Operation, f.Error)
		}
	}
	if !s.hosts["storage-01"].sshd.CephStopped() {
		t.Error("storage step did not run")
	}
}
