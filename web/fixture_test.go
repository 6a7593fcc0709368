package web

import (
	"context"
	"fmt"
	"testing"

	"github.com/edgeops/shutdownd/store"
)

// bigShutdown is the shape of a recorded shutdown for recordShutdown.
type bigShutdown struct {
	VMs, Hosts int
	// FailedVMs is how many VMs end failed (still on at the stop timeout).
	FailedVMs int
	// SoftOff and HardOff are how many hosts escalate to a BMC soft off,
	// then also to a hard off; the last HardOff of them fail.
	SoftOff, HardOff, FailedHosts int
	// Open leaves the job running after the storage step, with the hosts
	// step begun for half of the hosts.
	Open bool
}

// recordShutdown writes a shutdown through the store's own write methods,
// in the order and batches the runner uses (VM stops in batches of 250,
// each batch's outcomes in one transaction, hosts by role group), so the
// job page reads what a real shutdown of that size leaves. It returns the
// job and the host names in the order their power-off was recorded.
func recordShutdown(tb testing.TB, st *store.Store, s bigShutdown) (store.Job, []string) {
	tb.Helper()
	ctx := context.Background()
	must := func(err error) {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
	}
	job, _, err := st.CreateShutdown(ctx, store.NewJob{TokenName: "ups", RemoteAddr: "10.0.9.7", Reason: "utility power lost"})
	must(err)
	must(st.StartJob(ctx, job.ID))

	vmStep, err := st.EnsureStep(ctx, job.ID, 1, "openstack")
	must(err)
	must(st.StartStep(ctx, vmStep.ID))
	for from := 0; from < s.VMs; from += 250 {
		var keys []store.ActionKey
		for i := from; i < min(from+250, s.VMs); i++ {
			keys = append(keys, store.ActionKey{JobID: job.ID, StepID: vmStep.ID, TargetKind: "vm",
				Target: fmt.Sprintf("vm-%04d", i), TargetID: fmt.Sprintf("uuid-%04d", i), Operation: "os-stop"})
		}
		as, err := st.BeginActions(ctx, keys, "")
		must(err)
		must(st.AddEvent(ctx, job.ID, "info", fmt.Sprintf("os-stop sent to %d VMs", len(as)), ""))
		var res []store.ActionResult
		for k, a := range as {
			r := store.ActionResult{ID: a.ID, State: store.ActionSucceeded, Detail: "SHUTOFF"}
			if from+k >= s.VMs-s.FailedVMs {
				r = store.ActionResult{ID: a.ID, State: store.ActionFailed, Error: "still ACTIVE after stop_timeout 5m"}
			}
			res = append(res, r)
		}
		// Outcomes arrive in a few polls, not all at once.
		for half := range 2 {
			part := res[half*len(res)/2 : (half+1)*len(res)/2]
			must(st.FinishActions(ctx, part))
			must(setCurrentStep(ctx, st, job.ID, fmt.Sprintf("Stopping OpenStack VMs (%d/%d off)", from+len(part)*(half+1), s.VMs)))
		}
	}
	vmState := store.StepSucceeded
	if s.FailedVMs > 0 {
		vmState = store.StepFailed
	}
	must(st.FinishStep(ctx, vmStep.ID, vmState, fmt.Sprintf("%d/%d VMs off", s.VMs-s.FailedVMs, s.VMs), ""))

	stStep, err := st.EnsureStep(ctx, job.ID, 2, "storage")
	must(err)
	must(st.StartStep(ctx, stStep.ID))
	for _, flag := range []string{"noout", "norecover", "norebalance", "nobackfill", "nodown", "pause"} {
		a, err := beginAction(ctx, st, store.ActionKey{JobID: job.ID, StepID: stStep.ID, TargetKind: "storage",
			Target: "storage-001", TargetID: "ceph osd set " + flag, Operation: store.Operation("ceph-set-" + flag)}, "")
		must(err)
		must(finishAction(ctx, st, a.ID, store.ActionSucceeded, "", ""))
	}
	must(st.FinishStep(ctx, stStep.ID, store.StepSucceeded, "7 commands", ""))

	hStep, err := st.EnsureStep(ctx, job.ID, 3, "hosts")
	must(err)
	must(st.StartStep(ctx, hStep.ID))
	hosts := s.Hosts
	if s.Open {
		hosts = s.Hosts / 2
	}
	var order []string
	const group = 25
	for from := 0; from < hosts; from += group {
		var begins []store.ActionBegin
		var names []string
		for i := from; i < min(from+group, hosts); i++ {
			name := fmt.Sprintf("host-%03d", i)
			names = append(names, name)
			begins = append(begins,
				store.ActionBegin{Key: store.ActionKey{JobID: job.ID, StepID: hStep.ID, TargetKind: "host", Target: name, Operation: "power-off"}},
				store.ActionBegin{Key: store.ActionKey{JobID: job.ID, StepID: hStep.ID, TargetKind: "host", Target: name, Operation: "ssh-poweroff"}, Detail: "systemctl poweroff"})
		}
		as, err := st.WriteBatch(ctx, store.Batch{JobID: job.ID, Begin: begins, Events: []store.EventRecord{{Level: "info", Message: fmt.Sprintf("host group %d starting", from/group+1)}}})
		must(err)
		order = append(order, names...)
		if s.Open {
			continue
		}
		for k, name := range names {
			i := from + k
			powerOff, ssh := as[2*k], as[2*k+1]
			must(finishAction(ctx, st, ssh.ID, store.ActionSucceeded, "sent: systemctl poweroff", ""))
			key := func(op store.Operation) store.ActionKey {
				return store.ActionKey{JobID: job.ID, StepID: hStep.ID, TargetKind: "bmc", Target: name, Operation: op}
			}
			step := func(op store.Operation, ok bool, msg string) {
				a, err := beginAction(ctx, st, key(op), "")
				must(err)
				state := store.ActionSucceeded
				if !ok {
					state = store.ActionFailed
				}
				must(finishAction(ctx, st, a.ID, state, "", msg))
			}
			soft, hard := i < s.SoftOff, i < s.HardOff
			failed := hard && i >= s.HardOff-s.FailedHosts
			step("bmc-confirm-off", !soft, "power state On after 3m0s")
			if soft {
				step("bmc-soft-off", true, "")
				step("bmc-confirm-soft-off", !hard, "power state On after 1m0s")
			}
			if hard {
				step("bmc-hard-off", !failed, "BMC refused: <script>alert(1)</script>")
			}
			if failed {
				must(finishAction(ctx, st, powerOff.ID, store.ActionFailed, "", "still on after BMC hard off"))
				must(st.AddEvent(ctx, job.ID, "error", "host "+name+" not confirmed off", "still on after BMC hard off"))
				continue
			}
			must(finishAction(ctx, st, powerOff.ID, store.ActionSucceeded, "off via SSH", ""))
			must(st.AddEvent(ctx, job.ID, "info", "host "+name+" off", ""))
		}
	}
	if s.Open {
		j, err := st.Job(ctx, job.ID)
		must(err)
		return j, order
	}
	state, msg := store.StateSucceeded, ""
	if s.FailedHosts > 0 || s.FailedVMs > 0 {
		state, msg = store.StateFailed, "some targets failed"
	}
	hState := store.StepSucceeded
	if s.FailedHosts > 0 {
		hState = store.StepFailed
	}
	must(st.FinishStep(ctx, hStep.ID, hState, fmt.Sprintf("%d/%d hosts off", hosts-s.FailedHosts, hosts), ""))
	_, err = st.FinishJob(ctx, job.ID, state, msg)
	must(err)
	j, err := st.Job(ctx, job.ID)
	must(err)
	return j, order
}
