package runner

import "github.com/edgeops/shutdownd/store"

// cancelTooLate reports whether a cancel request came after the job's last
// step had already run to its end. Such a job is not cancelled: nothing was
// stopped, so its state is what its steps did, and calling it cancelled
// would tell an operator that work was left undone when it was all done.
// The late request is recorded as an event.
func (e *exec) cancelTooLate() bool {
	steps, err := e.r.store.Steps(e.db(), e.job.ID)
	if err != nil || len(steps) < 3 {
		return false
	}
	for _, s := range steps {
		switch s.State {
		case store.StepSucceeded, store.StepFailed, store.StepSkipped:
		default:
			return false
		}
	}
	e.event("info", "cancel requested too late to stop anything: every step ran to its end")
	return true
}
