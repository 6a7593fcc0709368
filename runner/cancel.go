package runner

import "github.com/edgeops/shutdownd/store"

// cancelTooLate reports whether a cancel request came after the job's last
// step had already run to its end. Such a job is not cancelled: nothing was
// stopped, so its state is what its steps did, and calling it cancelled
// would tell an operator that work was left undone when it was all done.
// The late request is recorded as an event.
func (e *exec) cancelTooLate() bool {
	steps, err := e.jr.Steps(e.db())
	if err != nil || !ranToEnd(steps) {
		return false
	}
	e.event(store.LevelInfo, "cancel requested too late to stop anything: every step ran to its end")
	return true
}

// closeOpen settles what a job leaves open when it ends without running to
// its end: preempted or superseded (its context cancelled from outside), or
// cancelled at a restart before the interrupted step resumed. Steps still
// running end cancelled and actions still open end skipped, saying why, so
// the record of a final job never shows work as under way. Nothing of the
// job is in flight any more when this runs.
func (e *exec) closeOpen(why string) {
	steps, err := e.jr.Steps(e.db())
	if err != nil {
		e.log.Error("read steps to close", "err", err)
		return
	}
	for _, st := range steps {
		as, err := e.jr.StepActions(e.db(), st.ID)
		if err != nil {
			e.log.Error("read actions to close", "step", st.Name, "err", err)
			continue
		}
		var results []store.ActionResult
		for _, a := range as {
			if !a.State.Final() {
				results = append(results, store.ActionResult{ID: a.ID, State: store.ActionSkipped, Detail: "not awaited: " + why})
			}
		}
		if len(results) > 0 {
			if err := e.jr.Finish(results...); err != nil {
				e.log.Error("close actions", "step", st.Name, "err", err)
			}
		}
		if !st.State.Final() {
			if err := e.jr.FinishStep(st.ID, store.StepCancelled, "", why); err != nil {
				e.log.Error("close step", "step", st.Name, "err", err)
			}
		}
	}
}

// ranToEnd reports whether every step of the job's sequence (stepNames) is
// recorded and ended by running, not by a cancel: the job did all it had
// to do. A step missing from steps was never reached.
func ranToEnd(steps []store.Step) bool {
	byName := make(map[string]store.StepState, len(steps))
	for _, s := range steps {
		byName[s.Name] = s.State
	}
	for _, name := range stepNames {
		switch st, ok := byName[name]; {
		case !ok:
			return false
		case st != store.StepSucceeded && st != store.StepFailed && st != store.StepSkipped:
			return false
		}
	}
	return true
}
