package runner_test

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/runner"
	"github.com/edgeops/shutdownd/sitesim"
	"github.com/edgeops/shutdownd/store"
)

// The Ceph flags are set one after the other on the admin host; only then
// does ceph.target stop, on all storage hosts at once, each stop its own
// action recorded before and after. A storage host that cannot be reached
// fails its own stop and nothing else: the other hosts stop Ceph, and the
// job goes on to power every host off.
func TestCephStopsOnAllStorageHostsAtOnceAfterTheFlags(t *testing.T) {
	f := newFixture(t, func(o *sitesim.Options) {
		o.Hosts = []sitesim.HostSpec{
			{Name: "compute-01", Role: "compute"},
			{Name: "storage-01", Role: "storage"},
			{Name: "storage-02", Role: "storage"},
			{Name: "storage-03", Role: "storage", SSHDown: true},
			{Name: "storage-04", Role: "storage"},
			{Name: "control-01", Role: "control"},
		}
		// Every command takes this long on the host: run one after the
		// other, the stops could not overlap.
		o.SSHLatency = 400 * time.Millisecond
		o.HostOff = 10 * time.Second
	})
	r, stop := f.start()
	defer stop()
	job := f.shutdown(r)
	f.waitFor("job final", 60*time.Second, func() bool { return f.job(job.ID).State.Final() })
	j := f.job(job.ID)
	if j.State != store.StateFailed || !strings.Contains(j.Error, `storage "systemctl stop ceph.target" on storage-03`) {
		t.Fatalf("job %s (%s), want failed for storage-03's stop only", j.State, j.Error)
	}

	var flags, stops []store.Action
	for _, a := range f.actions(job.ID) {
		switch {
		case a.TargetKind != "storage":
		case strings.HasPrefix(string(a.Operation), "ceph-set-"):
			flags = append(flags, a)
		case a.Operation == "stop-ceph":
			stops = append(stops, a)
		}
	}
	if len(flags) != len(config.CephFlags) || len(stops) != 4 {
		t.Fatalf("%d flag actions and %d stop actions, want %d and 4", len(flags), len(stops), len(config.CephFlags))
	}
	for i, a := range flags {
		if a.State != store.ActionSucceeded || a.Target != "storage-01" || string(a.Operation) != "ceph-set-"+config.CephFlags[i] {
			t.Errorf("flag %d: %s %s on %s, want ceph-set-%s succeeded on storage-01", i, a.Operation, a.State, a.Target, config.CephFlags[i])
		}
		if i > 0 && a.StartedAt.Before(*flags[i-1].FinishedAt) {
			t.Errorf("flag %s started before %s finished", a.Operation, flags[i-1].Operation)
		}
	}
	lastFlag := *flags[len(flags)-1].FinishedAt
	var ok []store.Action
	for _, a := range stops {
		if a.StartedAt == nil || a.FinishedAt == nil || a.TargetID != config.CephStopCommand {
			t.Errorf("stop on %s: %+v, want its own action with start and end", a.Target, a)
			continue
		}
		if a.StartedAt.Before(lastFlag) {
			t.Errorf("ceph.target stop on %s started before the last flag was set", a.Target)
		}
		switch a.Target {
		case "storage-03":
			if a.State != store.ActionFailed || !strings.Contains(a.Error, "ssh storage-03") {
				t.Errorf("storage-03 stop: %s %q, want failed (SSH down)", a.State, a.Error)
			}
		default:
			if a.State != store.ActionSucceeded {
				t.Errorf("%s stop: %s %q", a.Target, a.State, a.Error)
			}
			ok = append(ok, a)
		}
	}
	// At once: every stop had started before the first one ended.
	for _, a := range ok {
		for _, b := range ok {
			if !a.StartedAt.Before(*b.FinishedAt) {
				t.Errorf("stop on %s started after the stop on %s had ended: not run in parallel", a.Target, b.Target)
			}
		}
	}
	for _, name := range []string{"storage-01", "storage-02", "storage-04"} {
		if !f.site.Host(name).SSH.CephStopped() {
			t.Errorf("ceph not stopped on %s", name)
		}
	}
	for _, h := range f.site.Hosts {
		if h.Machine.State() != sitesim.PowerOff {
			t.Errorf("%s still %s: a failed storage stop must not stop the shutdown", h.Spec.Name, h.Machine.State())
		}
	}
	if rs := f.site.Host("storage-03").BMC.Resets(); len(rs) == 0 || rs[0] != "GracefulShutdown" {
		t.Errorf("storage-03 (SSH down) BMC resets %v, want a soft off", rs)
	}
}

// A `commands` storage plan runs strictly in the configured order, one
// action per command; a failing command is recorded and the rest still
// run, and the hosts still go down. A simulation runs only the health
// command.
func TestStorageCommandsRunInOrderAndAFailureDoesNotStopTheRest(t *testing.T) {
	f := newFixture(t, func(o *sitesim.Options) {
		o.Hosts = []sitesim.HostSpec{
			{Name: "compute-01", Role: "compute"},
			{Name: "storage-01", Role: "storage"},
			{Name: "storage-02", Role: "storage"},
		}
		o.Storage = "none"
	})
	f.cfg.Storage = config.Storage{
		Type: config.StorageCommands, AdminHost: "storage-01", HealthCommand: "ceph health",
		Commands: []config.StorageCommand{
			{Host: "storage-01", Command: "ceph osd set noout"},
			{Host: "storage-01", Command: "no-such-tool --flush"},
			{Host: "storage-02", Command: "systemctl stop ceph.target"},
		},
	}
	r, stop := f.start()
	defer stop()

	sim := f.simulate(r)
	f.waitFor("simulation final", 30*time.Second, func() bool { return f.job(sim.ID).State.Final() })
	if j := f.job(sim.ID); j.State != store.StateSucceeded {
		t.Fatalf("simulation %s: %s", j.State, j.Error)
	}
	if flags := f.site.Host("storage-01").SSH.CephFlags(); len(flags) != 0 || f.site.Host("storage-02").SSH.CephStopped() {
		t.Fatalf("the simulation changed storage: flags %v", flags)
	}

	job := f.shutdown(r)
	f.waitFor("job final", 30*time.Second, func() bool { return f.job(job.ID).State.Final() })
	j := f.job(job.ID)
	if j.State != store.StateFailed || !strings.Contains(j.Error, "no-such-tool") {
		t.Fatalf("job %s (%s): want failed naming the failing command", j.State, j.Error)
	}
	var cmds []store.Action
	for _, a := range f.actions(job.ID) {
		if a.TargetKind == "storage" {
			cmds = append(cmds, a)
		}
	}
	if len(cmds) != 3 {
		t.Fatalf("%d storage actions, want 3", len(cmds))
	}
	want := []struct {
		host, cmd string
		state     store.ActionState
	}{
		{"storage-01", "ceph osd set noout", store.ActionSucceeded},
		{"storage-01", "no-such-tool --flush", store.ActionFailed},
		{"storage-02", "systemctl stop ceph.target", store.ActionSucceeded},
	}
	for i, a := range cmds {
		w := want[i]
		if a.Target != w.host || a.TargetID != w.cmd || a.State != w.state {
			t.Errorf("storage action %d: %q on %s %s, want %q on %s %s", i, a.TargetID, a.Target, a.State, w.cmd, w.host, w.state)
		}
		if i > 0 && a.StartedAt.Before(*cmds[i-1].FinishedAt) {
			t.Errorf("%q started before %q finished", a.TargetID, cmds[i-1].TargetID)
		}
	}
	if !strings.Contains(cmds[1].Error, "command not found") {
		t.Errorf("failed command's error %q does not say why", cmds[1].Error)
	}
	if flags := f.site.Host("storage-01").SSH.CephFlags(); len(flags) != 1 || flags[0] != "noout" || !f.site.Host("storage-02").SSH.CephStopped() {
		t.Errorf("commands did not take effect: flags %v", flags)
	}
	for _, h := range f.site.Hosts {
		if h.Machine.State() != sitesim.PowerOff {
			t.Errorf("%s is %s: a failed storage command must not keep hosts up", h.Spec.Name, h.Machine.State())
		}
	}
}

// simulate settles the runner (so the new simulation is not taken for one a
// previous process left behind), queues a simulation and wakes the runner.
func (f *fixture) simulate(r *runner.Runner) store.Job {
	f.t.Helper()
	if err := r.Settle(context.Background()); err != nil {
		f.t.Fatal(err)
	}
	job, err := f.store.CreateSimulation(context.Background(), store.NewJob{Kind: store.KindSimulation})
	if err != nil {
		f.t.Fatal(err)
	}
	r.Kick()
	return job
}

// An admin host that accepts TCP and never answers SSH costs the storage
// step one connect timeout (two if the warm-up had tried it already), not
// one per Ceph flag: its later commands fail
// at once, naming the first failure, and the other storage hosts still
// stop Ceph.
func TestUnreachableAdminHostCostsOneConnectTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var dials atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			dials.Add(1)
			go func() { time.Sleep(10 * time.Second); c.Close() }() // no SSH banner
		}
	}()
	f := newFixture(t, func(o *sitesim.Options) {
		o.Hosts = []sitesim.HostSpec{
			{Name: "compute-01", Role: "compute"},
			{Name: "storage-01", Role: "storage"},
			{Name: "storage-02", Role: "storage"},
		}
	})
	for i := range f.cfg.Hosts {
		if f.cfg.Hosts[i].Name == "storage-01" {
			f.cfg.Hosts[i].Address = ln.Addr().String()
			f.cfg.Hosts[i].SSH.ConnectTimeout = 500 * time.Millisecond
		}
	}
	r, stop := f.start()
	defer stop()
	job := f.shutdown(r)
	var dialsInStorage int64 // before the host step, which dials afresh, gets to storage-01
	f.waitFor("storage step final", 60*time.Second, func() bool {
		steps, _ := f.store.Steps(context.Background(), job.ID)
		dialsInStorage = dials.Load()
		return len(steps) >= 2 && steps[1].State.Final()
	})
	var cmds []store.Action
	for _, a := range f.actions(job.ID) {
		if a.TargetKind == "storage" {
			cmds = append(cmds, a)
		}
	}
	onAdmin := 0
	for _, a := range cmds {
		switch a.Target {
		case "storage-01":
			onAdmin++
			if a.State != store.ActionFailed {
				t.Errorf("%s on the unreachable admin host: %s", a.TargetID, a.State)
			}
		case "storage-02":
			if a.State != store.ActionSucceeded {
				t.Errorf("%s on storage-02: %s %q", a.TargetID, a.State, a.Error)
			}
		}
	}
	if onAdmin != len(config.CephFlags)+1 {
		t.Errorf("%d actions on storage-01, want every flag and its ceph.target stop", onAdmin)
	}
	// One dial for the step; two when the connection warm-up had already
	// tried (and failed) during the VM step, since a failed warm dial is
	// tried again once. Never one per command.
	if n := dialsInStorage; n < 1 || n > 2 {
		t.Errorf("%d SSH dials to the unreachable admin host by the end of the storage step, want 1 or 2", n)
	}
	if !f.site.Host("storage-02").SSH.CephStopped() {
		t.Error("storage-02 did not stop Ceph")
	}
}
