package runner

import (
	"reflect"
	"testing"

	"github.com/edgeops/shutdownd/store"
)

// A job's failures are read from its steps and actions: the failed
// targets, by outcome (a host's power-off, not the SSH command its BMC made
// good), and a failed step that names none is named with its own error.
func TestFailuresOf(t *testing.T) {
	t.Parallel()
	failed := func(kind store.TargetKind, target, id string, op store.Operation, why string) store.Action {
		return store.Action{TargetKind: kind, Target: target, TargetID: id, Operation: op, State: store.ActionFailed, Error: why}
	}
	ok := func(kind store.TargetKind, target string, op store.Operation) store.Action {
		return store.Action{TargetKind: kind, Target: target, Operation: op, State: store.ActionSucceeded}
	}
	step := func(id int64, name string, state store.StepState, errMsg string) store.Step {
		return store.Step{ID: id, Name: name, State: state, Error: errMsg}
	}
	cases := []struct {
		name    string
		steps   []store.Step
		actions map[int64][]store.Action
		want    []string
	}{
		{
			name:  "all succeeded",
			steps: []store.Step{step(1, StepOpenStack, store.StepSucceeded, ""), step(2, StepStorage, store.StepSkipped, ""), step(3, StepHosts, store.StepSucceeded, "")},
			actions: map[int64][]store.Action{1: {ok(store.TargetVM, "web", store.OpOSStop)}, 3: {
				failed(store.TargetHost, "c1", "", store.OpSSHPowerOff, "ssh: refused"), ok(store.TargetHost, "c1", store.OpPowerOff)}},
		},
		{
			name: "each kind of target, in step order",
			steps: []store.Step{step(1, StepOpenStack, store.StepFailed, "1 VMs not stopped"), step(2, StepStorage, store.StepFailed, "1 storage commands failed"),
				step(3, StepHosts, store.StepFailed, "1 hosts not confirmed off")},
			actions: map[int64][]store.Action{
				1: {failed(store.TargetVM, "stuck", "vm-1", store.OpOSStop, "not SHUTOFF after 5s")},
				2: {failed(store.TargetStorage, "st-3", "systemctl stop ceph.target", "stop-ceph", "exited 1")},
				3: {failed(store.TargetBMC, "c2", "", store.OpBMCConfirmOff, "power state On after 1s"),
					failed(store.TargetHost, "c2", "", store.OpPowerOff, "still on after BMC hard off")},
			},
			want: []string{"vm stuck (vm-1): not SHUTOFF after 5s", `storage "systemctl stop ceph.target" on st-3: exited 1`, "host c2: still on after BMC hard off"},
		},
		{
			name:  "a failed step without a failed target is named with its error",
			steps: []store.Step{step(1, StepOpenStack, store.StepFailed, "list servers: 404 not found"), step(2, StepStorage, store.StepSucceeded, "")},
			want:  []string{"step openstack: list servers: 404 not found"},
		},
		{
			name:  "checks of a simulation",
			steps: []store.Step{step(1, StepOpenStack, store.StepFailed, ""), step(2, StepStorage, store.StepFailed, ""), step(3, StepHosts, store.StepFailed, "")},
			actions: map[int64][]store.Action{
				1: {failed(store.TargetOpenStack, "edge", "", store.OpCheckListServers, "openstack auth: denied")},
				2: {failed(store.TargetStorage, "st-1", "", store.OpCheckStorageHealth, "exited 2")},
				3: {failed(store.TargetHost, "c1", "", store.OpCheckSSH, "host key mismatch"), failed(store.TargetBMC, "c1", "", store.OpCheckBMC, "timeout")},
			},
			want: []string{"openstack: openstack auth: denied", "storage health on st-1: exited 2", "host c1 check-ssh: host key mismatch", "bmc c1 check-bmc: timeout"},
		},
		{
			name:    "a failed target in a cancelled step still counts",
			steps:   []store.Step{step(1, StepOpenStack, store.StepSucceeded, ""), step(2, StepStorage, store.StepCancelled, "cancelled")},
			actions: map[int64][]store.Action{2: {failed(store.TargetStorage, "st-1", "ceph osd set noout", "ceph-set-noout", "")}},
			want:    []string{`storage "ceph osd set noout" on st-1: failed`},
		},
	}
	for _, c := range cases {
		if got := failuresOf(c.steps, c.actions); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
	}
}

func TestUnrecorded(t *testing.T) {
	t.Parallel()
	got := unrecorded([]store.Step{{Name: StepOpenStack}, {Name: StepStorage}})
	if len(got) != 1 || got[0] != "step hosts: not run, its record could not be written (see the service log)" {
		t.Errorf("unrecorded = %q; want the hosts step named", got)
	}
	if got := unrecorded([]store.Step{{Name: StepOpenStack}, {Name: StepStorage}, {Name: StepHosts}}); got != nil {
		t.Errorf("unrecorded = %q; want none", got)
	}
}
