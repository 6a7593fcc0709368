package runner

import (
	"fmt"

	"github.com/edgeops/shutdownd/store"
)

// recorder is the job's journal (runner/internal/journal) as the host and
// storage steps use it: their goroutines' writes share transactions (group
// commit), and a store that cannot be written holds them in memory instead
// of stopping the step.
//
// begin and finish return once their record is written or held, so an
// action is recorded before its external call starts and after it ends.
// Events and progress text are written on the side, in order with the
// rest; wait returns once they are written or held.
type recorder struct{ e *exec }

func newRecorder(e *exec) *recorder { return &recorder{e: e} }

// begin records the start of an action. An error means a record wrong in
// itself (never a full disk): nothing must be sent.
func (r *recorder) begin(key store.ActionKey, detail string) (store.Action, error) {
	return r.e.jr.Begin(key, detail)
}

// beginAll records the start of several actions, each with its outcome.
func (r *recorder) beginAll(bs []store.ActionBegin) ([]store.Action, []error) {
	return r.e.jr.BeginAll(bs)
}

// finish records the end of an action; an error is logged.
func (r *recorder) finish(id int64, state store.ActionState, detail, errMsg string) {
	r.e.finishAction(id, state, detail, errMsg)
}

// event appends an event to the job's log, on the side.
func (r *recorder) event(level store.Level, msg string, detail ...any) {
	r.e.event(level, msg, detail...)
}

// setProgress replaces the job's current_step text, on the side.
func (r *recorder) setProgress(format string, args ...any) {
	r.e.jr.Progress(fmt.Sprintf(format, args...))
}

// wait returns once everything submitted so far is written or held.
func (r *recorder) wait() { r.e.r.journal.Wait() }
