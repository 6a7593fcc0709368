package runner

import (
	"strings"

	"github.com/edgeops/shutdownd/store"
)

// closeInterrupted settles the sub-actions of a host that a killed process
// left running, once this run has settled the host itself (keep is the
// host's own action). Within one run every sub-action finishes before the
// host does, so anything still running here is from before the restart: a
// confirmation read succeeded if the host is off, anything else is skipped
// (whether it got through is unknown and no longer matters).
func (e *exec) closeInterrupted(step store.Step, host string, keep int64, off bool) {
	if !e.resumed {
		return
	}
	actions, err := e.jr.StepActions(e.db(), step.ID)
	if err != nil {
		e.log.Error("read actions", "err", err)
		return
	}
	var results []store.ActionResult
	for _, a := range actions {
		if a.Target != host || a.ID == keep || a.State.Final() || (a.TargetKind != "host" && a.TargetKind != "bmc") {
			continue
		}
		r := store.ActionResult{ID: a.ID, State: store.ActionSkipped, Detail: "interrupted by restart"}
		if off && strings.HasPrefix(a.Operation, "bmc-confirm") {
			r = store.ActionResult{ID: a.ID, State: store.ActionSucceeded, Detail: "Off (confirmed after restart)"}
		}
		results = append(results, r)
	}
	if len(results) > 0 {
		if err := e.jr.Finish(results...); err != nil {
			e.log.Error("finish interrupted actions", "err", err)
		}
	}
}
