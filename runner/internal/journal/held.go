package journal

import (
	"context"
	"errors"
	"fmt"
	"time"

	"modernc.org/sqlite"

	"github.com/edgeops/shutdownd/store"
)

// holdLocked appends es and then more to the held records: each gets its
// provisional IDs and outcome, is logged in full, and its submitter is
// released. It returns the number of records held.
func (j *Journal) holdLocked(es, more []*entry) int {
	for _, list := range [][]*entry{es, more} {
		for _, e := range list {
			j.provisionLocked(e)
			e.held = true
			j.held = append(j.held, e)
			j.nheld += e.records()
			j.heldJobs[e.b.JobID] += e.records()
			j.logHeld(e)
			e.release()
		}
	}
	if !j.busy {
		j.busy = true
		go j.run()
	}
	j.broadcastLocked()
	return j.nheld
}

// provisionLocked gives e's begun actions (or its ensured step) negative
// IDs, and the rows the store would have returned, so the submitter goes
// on as if they were written.
func (j *Journal) provisionLocked(e *entry) {
	if e.step != nil && e.step.ID == 0 {
		j.prov--
		e.prov = []int64{j.prov}
		e.st = store.Step{ID: j.prov, JobID: e.step.JobID, Seq: e.step.Seq, Name: e.step.Name, State: store.StepPending}
		return
	}
	e.acts = make([]store.Action, len(e.b.Begin))
	e.prov = make([]int64, len(e.b.Begin))
	for i, b := range e.b.Begin {
		j.prov--
		at := e.at
		k := b.Key
		e.prov[i] = j.prov
		e.acts[i] = store.Action{ID: j.prov, JobID: k.JobID, StepID: k.StepID, TargetKind: k.TargetKind, Target: k.Target,
			TargetID: k.TargetID, Operation: k.Operation, State: store.ActionRunning, Attempts: 1, Detail: b.Detail,
			StartedAt: &at, UpdatedAt: at}
	}
}

// retryHeld waits RetryEvery, then writes the held records, oldest first,
// until the store refuses one again or none is left. It reports false when
// the journal is closed.
func (j *Journal) retryHeld() bool {
	select {
	case <-j.stop:
		return false
	case <-time.After(j.retry):
	}
	for {
		j.mu.Lock()
		if len(j.held) == 0 {
			j.mu.Unlock()
			return true
		}
		e := j.held[0]
		j.mu.Unlock()
		err := j.write([]*entry{e})
		if store.Unwritable(err) {
			j.mu.Lock()
			j.lastErr = err
			j.mu.Unlock()
			if j.obs != nil {
				j.obs.StoreWriteFailed()
			}
			return true
		}
		j.mu.Lock()
		j.written(e, err)
		n := j.nheld
		j.mu.Unlock()
		j.notifyUnsaved(n)
	}
}

// written takes e, the oldest held entry, off the held list once the store
// took it (err nil) or refused it as wrong in itself (it would never be
// written: logged, dropped), and maps its provisional IDs. When it was the
// last, an event for each job that had records held says so in the job's
// own log (queued before anyone waiting for the flush is woken).
func (j *Journal) written(e *entry, err error) {
	j.held = j.held[1:]
	j.nheld -= e.records()
	if err != nil {
		j.log.Error("held record could not be written and is dropped (it is in the log above)",
			"job_id", e.b.JobID, "err", err)
	} else if e.step != nil && len(e.prov) == 1 {
		j.realID[e.prov[0]] = e.st.ID
	} else {
		for i, id := range e.prov {
			j.realID[id] = e.acts[i].ID
		}
	}
	if len(j.held) == 0 {
		j.log.Info("store takes writes again; every held record is written",
			"unsaved_for", time.Since(j.since).Round(time.Millisecond))
		reason := Unsaved{Err: j.lastErr}.Reason()
		for job, n := range j.heldJobs {
			detail := fmt.Sprintf("%d records held in memory from %s to %s (%s), then written with their own times",
				n, store.FormatTime(j.since), store.FormatTime(time.Now()), reason)
			now := time.Now()
			j.pending = append(j.pending, &entry{at: now, b: store.Batch{JobID: job, At: now,
				Events: []store.EventRecord{{Level: store.LevelWarn, Message: "records written late: the store refused writes", Detail: detail}}}})
		}
		clear(j.heldJobs)
		j.since, j.lastErr = time.Time{}, nil
	}
	j.broadcastLocked()
}

// logHeld writes each record of e to the service log, in full: if the
// process ends before the store takes writes again, this is the record.
func (j *Journal) logHeld(e *entry) {
	const msg = "record not saved (store refused the write); held in memory"
	base := []any{"job_id", e.b.JobID, "at", store.FormatTime(e.at)}
	log := func(kind string, attrs ...any) {
		j.log.Warn(msg, append(append([]any{"record", kind}, base...), attrs...)...)
	}
	switch {
	case e.step != nil:
		s := e.step
		log("step", "step_id", s.ID, "seq", s.Seq, "name", s.Name, "state", s.State, "detail", s.Detail, "error", s.Error,
			"provisional_step_id", e.st.ID)
		return
	case e.call != nil:
		log("job", "what", e.call.desc)
		return
	}
	for _, r := range e.b.Finish {
		log("action-finish", "action_id", r.ID, "state", r.State, "detail", r.Detail, "error", r.Error)
	}
	for i, b := range e.b.Begin {
		log("action-begin", append(keyAttrs(b.Key), "detail", b.Detail, "provisional_id", e.prov[i])...)
	}
	for _, r := range e.b.Record {
		log("action", append(keyAttrs(r.Key), "state", r.State, "detail", r.Detail, "error", r.Error)...)
	}
	for _, ev := range e.b.Events {
		log("event", "level", ev.Level, "message", ev.Message, "detail", ev.Detail)
	}
	if e.b.CurrentStep != nil {
		log("progress", "current_step", *e.b.CurrentStep)
	}
}

func keyAttrs(k store.ActionKey) []any {
	return []any{"step_id", k.StepID, "target_kind", k.TargetKind, "target", k.Target, "target_id", k.TargetID,
		"operation", k.Operation}
}

// Unsaved is what a job has held in memory, for the status API.
type Unsaved struct {
	Records  int       // held records of the job
	Since    time.Time // when the store first refused
	Err      error     // the store's last refusal
	Progress string    // the job's latest held current_step, if one is held
}

// Unsaved reports what jobID has held in memory; ok is false when nothing.
func (j *Journal) Unsaved(jobID int64) (u Unsaved, ok bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, e := range j.held {
		if e.b.JobID != jobID {
			continue
		}
		u.Records += e.records()
		if e.b.CurrentStep != nil {
			u.Progress = *e.b.CurrentStep
		}
	}
	u.Since, u.Err = j.since, j.lastErr
	return u, u.Records > 0
}

// Reason is the store's refusal in a few words ("database or disk is full
// (13)"), without the wrapping of the failed call.
func (u Unsaved) Reason() string {
	var se *sqlite.Error
	switch {
	case u.Err == nil:
		return "store not writable"
	case errors.As(u.Err, &se):
		return se.Error()
	}
	return u.Err.Error()
}

// callEntry is a call record of job jobID.
func callEntry(jobID int64, desc string, fn func(ctx context.Context) error) *entry {
	return &entry{b: store.Batch{JobID: jobID}, call: &call{desc: desc, fn: fn}}
}
