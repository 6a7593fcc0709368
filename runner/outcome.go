package runner

import (
	"cmp"
	"fmt"

	"github.com/edgeops/shutdownd/store"
)

// failures reads from the store (through the journal, which lays what a
// full disk holds back over it) what went wrong in the job: the job's
// result is decided there at finish, never collected along the way, so a
// job resumed after a restart is judged by the same records as one that
// ran in one go. A read that fails is itself a failure: a job whose
// outcome cannot be read is not reported succeeded.
func (e *exec) failures() []string {
	steps, err := e.jr.Steps(e.db())
	if err != nil {
		return []string{fmt.Sprintf("read steps: %v", err)}
	}
	actions := make(map[int64][]store.Action, len(steps))
	var out []string
	for _, st := range steps {
		as, err := e.jr.StepActions(e.db(), st.ID)
		if err != nil {
			out = append(out, fmt.Sprintf("step %s: read actions: %v", st.Name, err))
			continue
		}
		actions[st.ID] = as
	}
	out = append(out, failuresOf(steps, actions)...)
	if !e.stopping() {
		out = append(out, unrecorded(steps)...)
	}
	return out
}

// failuresOf names, step by step, the failed targets (the outcome
// actions: a host's power-off, not the SSH command its BMC then made good)
// and, for a failed step without any, the step and its error (a login or
// a listing that failed, a record the store refused).
func failuresOf(steps []store.Step, actions map[int64][]store.Action) []string {
	var out []string
	for _, st := range steps {
		n := 0
		for _, a := range actions[st.ID] {
			if a.State != store.ActionFailed || a.Operation.PartOfPowerOff() || a.Operation.PartOfPowerOn() {
				continue
			}
			out = append(out, describeFailure(a))
			n++
		}
		if st.State == store.StepFailed && n == 0 {
			out = append(out, fmt.Sprintf("step %s: %s", st.Name, cmp.Or(st.Error, st.Detail, "failed")))
		}
	}
	return out
}

// describeFailure names one failed action the way an operator reads the
// job's error: which target, which command, and why.
func describeFailure(a store.Action) string {
	why := cmp.Or(a.Error, "failed")
	switch {
	case a.TargetKind == store.TargetVM:
		return fmt.Sprintf("vm %s (%s): %s", a.Target, a.TargetID, why)
	case a.TargetKind == store.TargetOpenStack:
		return fmt.Sprintf("openstack: %s", why)
	case a.Operation == store.OpCheckStorageHealth:
		return fmt.Sprintf("storage health on %s: %s", a.Target, why)
	case a.TargetKind == store.TargetStorage:
		return fmt.Sprintf("storage %q on %s: %s", a.TargetID, a.Target, why)
	case a.Operation == store.OpPowerOff, a.Operation == store.OpSelfPowerOff, a.Operation == store.OpPowerOn:
		return fmt.Sprintf("host %s: %s", a.Target, why)
	}
	return fmt.Sprintf("%s %s %s: %s", a.TargetKind, a.Target, a.Operation, why)
}

// unrecorded names the steps of the sequence the store has no row for in
// a job that was not stopped: their record could not be written, so they
// never ran.
func unrecorded(steps []store.Step) []string {
	have := make(map[string]bool, len(steps))
	for _, s := range steps {
		have[s.Name] = true
	}
	var out []string
	for _, name := range stepNames {
		if !have[name] {
			out = append(out, fmt.Sprintf("step %s: not run, its record could not be written (see the service log)", name))
		}
	}
	return out
}
