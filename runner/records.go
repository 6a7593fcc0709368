package runner

import (
	"fmt"
	"sync"

	"github.com/edgeops/shutdownd/store"
)

// recorder writes the records of work running in parallel (the hosts of a
// group, the Ceph stops of the storage hosts) with group commit: whatever
// the goroutines ask for while a transaction is being committed goes into
// the next one, so seventy hosts finishing their SSH power-off at about the
// same time cost a few commits instead of seventy, each behind the
// others on the single writer (and, with synchronous=FULL, an fsync each).
//
// begin and finish wait until their record is committed, so an action is
// still on disk before its external call starts and after it ends, exactly
// as with a direct write. Events and progress text are written on the
// side (the latest progress only); wait drains them, and must be called
// before anything else writes progress or the step ends.
type recorder struct {
	e *exec

	mu       sync.Mutex
	cond     *sync.Cond // signalled when the flusher stops
	pending  []*recReq
	progress *string
	busy     bool
}

type recReq struct {
	begin  *store.ActionBegin
	finish *store.ActionResult
	event  *store.EventRecord

	act  store.Action
	err  error
	done chan struct{} // nil: nobody waits
}

func newRecorder(e *exec) *recorder {
	r := &recorder{e: e}
	r.cond = sync.NewCond(&r.mu)
	return r
}

// begin records the start of an action and returns it once committed.
func (r *recorder) begin(key store.ActionKey, detail string) (store.Action, error) {
	q := &recReq{begin: &store.ActionBegin{Key: key, Detail: detail}, done: make(chan struct{})}
	r.submit(q, nil)
	<-q.done
	return q.act, q.err
}

// beginAll records the start of several actions, in one transaction when
// nothing fails, and returns them (or each one's error) once committed.
func (r *recorder) beginAll(bs []store.ActionBegin) ([]store.Action, []error) {
	qs := make([]*recReq, len(bs))
	r.mu.Lock()
	for i := range bs {
		qs[i] = &recReq{begin: &bs[i], done: make(chan struct{})}
		r.pending = append(r.pending, qs[i])
	}
	r.mu.Unlock()
	r.submit(nil, nil)
	as, errs := make([]store.Action, len(bs)), make([]error, len(bs))
	for i, q := range qs {
		<-q.done
		as[i], errs[i] = q.act, q.err
	}
	return as, errs
}

// finish records the end of an action and returns once committed; a failed
// write is logged, as exec.finishAction does.
func (r *recorder) finish(id int64, state store.ActionState, detail, errMsg string) {
	q := &recReq{finish: &store.ActionResult{ID: id, State: state, Detail: detail, Error: errMsg}, done: make(chan struct{})}
	r.submit(q, nil)
	<-q.done
	if q.err != nil {
		r.e.log.Error("finish action", "action_id", id, "err", q.err)
	}
}

// event appends an event to the job's log, on the side.
func (r *recorder) event(level, msg string, detail ...any) {
	d := ""
	if len(detail) > 0 {
		d = fmt.Sprint(detail...)
	}
	r.submit(&recReq{event: &store.EventRecord{Level: level, Message: msg, Detail: d}}, nil)
}

// setProgress replaces the job's current_step text, on the side; only the
// latest text is written.
func (r *recorder) setProgress(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	r.submit(nil, &s)
}

func (r *recorder) submit(q *recReq, progress *string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if q != nil {
		r.pending = append(r.pending, q)
	}
	if progress != nil {
		r.progress = progress
	}
	if !r.busy {
		r.busy = true
		go r.flush()
	}
}

// wait returns once everything submitted so far is written.
func (r *recorder) wait() {
	r.mu.Lock()
	for r.busy {
		r.cond.Wait()
	}
	r.mu.Unlock()
}

func (r *recorder) flush() {
	for {
		r.mu.Lock()
		reqs, progress := r.pending, r.progress
		r.pending, r.progress = nil, nil
		if len(reqs) == 0 && progress == nil {
			r.busy = false
			r.cond.Broadcast()
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		if err := r.write(reqs, progress); err != nil && len(reqs)+btoi(progress != nil) > 1 {
			// One bad write fails its whole transaction: write each alone,
			// so that only the bad one fails.
			for _, q := range reqs {
				r.write([]*recReq{q}, nil)
			}
			if progress != nil {
				r.write(nil, progress)
			}
		}
		for _, q := range reqs {
			if q.done != nil {
				close(q.done)
			} else if q.err != nil {
				r.e.log.Error("add event", "err", q.err)
			}
		}
	}
}

// write commits reqs and progress in one batch and stores each request's
// outcome in it.
func (r *recorder) write(reqs []*recReq, progress *string) error {
	b := store.Batch{JobID: r.e.job.ID, CurrentStep: progress}
	var begins []*recReq
	for _, q := range reqs {
		switch {
		case q.begin != nil:
			b.Begin = append(b.Begin, *q.begin)
			begins = append(begins, q)
		case q.finish != nil:
			b.Finish = append(b.Finish, *q.finish)
		case q.event != nil:
			b.Events = append(b.Events, *q.event)
		}
	}
	as, err := r.e.r.store.WriteBatch(r.e.db(), b)
	for _, q := range reqs {
		q.err = err
	}
	if err == nil {
		for i, q := range begins {
			q.act = as[i]
		}
	} else if progress != nil && len(reqs) == 0 {
		r.e.log.Error("set current step", "err", err)
	}
	return err
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
