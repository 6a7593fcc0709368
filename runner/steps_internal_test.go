package runner

import (
	"testing"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/store"
)

// A Ceph plan sets its flags in order, then stops every storage host at
// once; a plan of configured commands runs wholly in order.
func TestSplitPlan(t *testing.T) {
	t.Parallel()
	ceph := config.Storage{Type: config.StorageCeph, AdminHost: "st-1", Hosts: []string{"st-1", "st-2", "st-3"}}
	serial, parallel := splitPlan(ceph.Type, ceph.Plan())
	if len(serial) != len(config.CephFlags) || len(parallel) != 3 {
		t.Fatalf("ceph: %d serial, %d parallel; want %d flags, then 3 stops", len(serial), len(parallel), len(config.CephFlags))
	}
	for _, c := range parallel {
		if c.Command != config.CephStopCommand {
			t.Errorf("parallel command %q, want %q", c.Command, config.CephStopCommand)
		}
	}
	cmds := []config.StorageCommand{{Host: "a", Command: "x"}, {Host: "b", Command: config.CephStopCommand}}
	if serial, parallel := splitPlan("commands", cmds); len(serial) != 2 || parallel != nil {
		t.Errorf("commands: %d serial, %d parallel; want all in order", len(serial), len(parallel))
	}
}

// What a run before a restart did to the hosts decides what this run does:
// a host confirmed off is finished, a power-off sent is not sent again, a
// BMC confirmation that saw Off finishes an open power-off.
func TestPriorHosts(t *testing.T) {
	t.Parallel()
	act := func(id int64, kind store.TargetKind, target string, op store.Operation, st store.ActionState) store.Action {
		return store.Action{ID: id, TargetKind: kind, Target: target, Operation: op, State: st}
	}
	prior := []store.Action{
		act(1, store.TargetHost, "done", store.OpPowerOff, store.ActionSucceeded),
		act(2, store.TargetHost, "sent", store.OpPowerOff, store.ActionRunning),
		act(3, store.TargetHost, "sent", store.OpSSHPowerOff, store.ActionSucceeded),
		act(4, store.TargetHost, "confirmed", store.OpPowerOff, store.ActionRunning),
		act(5, store.TargetBMC, "confirmed", store.OpBMCConfirmSoftOff, store.ActionSucceeded),
		act(6, store.TargetHost, "failed", store.OpPowerOff, store.ActionFailed),
		act(7, store.TargetBMC, "failed", store.OpBMCConfirmOff, store.ActionFailed),
		act(8, store.TargetStorage, "st-1", "stop-ceph", store.ActionSucceeded),
	}
	finished, before := priorHosts(prior)
	if len(finished) != 1 || finished["done"].ID != 1 {
		t.Errorf("finished %v, want only host done", finished)
	}
	want := map[string]hostPrior{
		"done":      {touched: true},
		"sent":      {touched: true, sent: true, open: 2},
		"confirmed": {touched: true, confirmedOff: true, open: 4},
		"failed":    {touched: true},
	}
	if len(before) != len(want) {
		t.Errorf("%d hosts touched, want %d", len(before), len(want))
	}
	for name, w := range want {
		if got := before[name]; got == nil || *got != w {
			t.Errorf("%s: %+v, want %+v", name, got, w)
		}
	}
}
