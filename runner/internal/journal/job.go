package journal

import (
	"context"
	"fmt"
	"slices"

	"github.com/edgeops/shutdownd/store"
)

// Job is the journal of one job: what the runner's steps call to record.
// The synchronous methods return once their records are written or held;
// the error they return is a write wrong in itself (store.ErrNotFound, a
// state that is not final), never a store that cannot be written.
type Job struct {
	j  *Journal
	id int64
}

// Job returns the journal of job id.
func (j *Journal) Job(id int64) Job { return Job{j: j, id: id} }

// Begin records the start of an action and returns it, written or held
// (then with a provisional, negative ID). On an error nothing was recorded
// and the action's command must not be sent.
func (jb Job) Begin(key store.ActionKey, detail string) (store.Action, error) {
	as, errs := jb.BeginAll([]store.ActionBegin{{Key: key, Detail: detail}})
	return as[0], errs[0]
}

// BeginAll records the start of several actions, in one transaction when
// nothing is wrong, each with its own outcome.
func (jb Job) BeginAll(bs []store.ActionBegin) ([]store.Action, []error) {
	es := make([]*entry, len(bs))
	for i, b := range bs {
		es[i] = &entry{b: store.Batch{JobID: jb.id, Begin: []store.ActionBegin{b}}}
	}
	jb.j.submit(true, es...)
	as, errs := make([]store.Action, len(bs)), make([]error, len(bs))
	for i, e := range es {
		if errs[i] = e.err; e.err == nil {
			as[i] = e.acts[0]
		}
	}
	return as, errs
}

// BeginBatch records the start of actions with one detail, all or none
// (the os-stops of a batch of VMs).
func (jb Job) BeginBatch(keys []store.ActionKey, detail string) ([]store.Action, error) {
	bs := make([]store.ActionBegin, len(keys))
	for i, k := range keys {
		bs[i] = store.ActionBegin{Key: k, Detail: detail}
	}
	e := &entry{b: store.Batch{JobID: jb.id, Begin: bs}}
	jb.j.submit(true, e)
	if e.err != nil {
		return nil, e.err
	}
	return e.acts, nil
}

// Finish records the outcomes of actions begun before (provisional IDs
// included). Each state must be final.
func (jb Job) Finish(rs ...store.ActionResult) error {
	e := &entry{b: store.Batch{JobID: jb.id, Finish: slices.Clone(rs)}}
	jb.j.submit(true, e)
	return e.err
}

// Record records actions directly in a final state (store.RecordActions).
func (jb Job) Record(recs []store.ActionRecord) error {
	e := &entry{b: store.Batch{JobID: jb.id, Record: slices.Clone(recs)}}
	jb.j.submit(true, e)
	return e.err
}

// Event appends an event to the job's log, without waiting for it.
func (jb Job) Event(level store.Level, msg, detail string) {
	jb.j.submit(false, &entry{b: store.Batch{JobID: jb.id, Events: []store.EventRecord{{Level: level, Message: msg, Detail: detail}}}})
}

// Progress replaces the job's current_step, without waiting for it.
func (jb Job) Progress(text string) {
	jb.j.submit(false, &entry{b: store.Batch{JobID: jb.id, CurrentStep: &text}})
}

// EnsureStep returns the job's step seq, creating it if needed; held, it is
// a provisional step with a negative ID. A step the store already has is
// read, not written, so a resumed job finds it even on a full disk.
func (jb Job) EnsureStep(ctx context.Context, seq int, name string) (store.Step, error) {
	steps, err := jb.Steps(ctx)
	if err != nil {
		return store.Step{}, fmt.Errorf("ensure step %d: %w", seq, err)
	}
	if i := slices.IndexFunc(steps, func(s store.Step) bool { return s.Seq == seq }); i >= 0 {
		return steps[i], nil
	}
	e := &entry{b: store.Batch{JobID: jb.id}, step: &store.StepChange{JobID: jb.id, Seq: seq, Name: name}}
	jb.j.submit(true, e)
	return e.st, e.err
}

// StartStep marks a step running.
func (jb Job) StartStep(id int64) error {
	e := &entry{b: store.Batch{JobID: jb.id}, step: &store.StepChange{JobID: jb.id, ID: id, State: store.StepRunning}}
	jb.j.submit(true, e)
	return e.err
}

// FinishStep sets a step's final state.
func (jb Job) FinishStep(id int64, state store.StepState, detail, errMsg string) error {
	if !state.Final() {
		return fmt.Errorf("finish step %d: %q is not a final state", id, state)
	}
	e := &entry{b: store.Batch{JobID: jb.id}, step: &store.StepChange{JobID: jb.id, ID: id, State: state, Detail: detail, Error: errMsg}}
	jb.j.submit(true, e)
	return e.err
}

// Call makes a write of the job that has no record shape here (its start,
// its final state) in its place in the order: fn runs when the store takes
// writes, now or later. desc names it in the service log. held reports
// that it waits in memory; err is fn's error when that is not a store
// that cannot be written.
func (jb Job) Call(desc string, fn func(ctx context.Context) error) (held bool, err error) {
	e := callEntry(jb.id, desc, fn)
	jb.j.submit(true, e)
	return e.held, e.err
}

// Steps returns the job's steps as the store has them with the held step
// changes laid over, in order.
func (jb Job) Steps(ctx context.Context) ([]store.Step, error) {
	steps, err := jb.j.st.Steps(ctx, jb.id)
	if err != nil {
		return nil, err
	}
	j := jb.j
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, e := range j.held {
		if e.b.JobID != jb.id || e.step == nil {
			continue
		}
		c := e.step
		if c.ID == 0 {
			if !slices.ContainsFunc(steps, func(s store.Step) bool { return s.Seq == c.Seq }) {
				steps = append(steps, e.st)
			}
			continue
		}
		for i := range steps {
			if steps[i].ID == c.ID || steps[i].ID == j.realLocked(c.ID) {
				applyStep(&steps[i], c, e)
			}
		}
	}
	slices.SortFunc(steps, func(a, b store.Step) int { return a.Seq - b.Seq })
	return steps, nil
}

func applyStep(s *store.Step, c *store.StepChange, e *entry) {
	at := e.at
	s.State, s.Error = c.State, c.Error
	if s.StartedAt == nil {
		s.StartedAt = &at
	}
	if c.State == store.StepRunning {
		s.FinishedAt = nil
		return
	}
	s.Detail, s.FinishedAt = c.Detail, &at
}

// StepActions returns a step's actions as the store has them with the
// held records laid over: begun actions held appear with their
// provisional IDs, finished ones with their outcome.
func (jb Job) StepActions(ctx context.Context, stepID int64) ([]store.Action, error) {
	j := jb.j
	j.mu.Lock()
	real := j.realLocked(stepID)
	j.mu.Unlock()
	as := []store.Action{}
	if real > 0 {
		var err error
		if as, err = j.st.StepActions(ctx, real); err != nil {
			return nil, err
		}
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	o := overlay{j: j, step: stepID, as: as, byKey: map[actionKey]int{}, byID: map[int64]int{}}
	for i, a := range as {
		o.byKey[keyOf(store.ActionKey{TargetKind: a.TargetKind, Target: a.Target, TargetID: a.TargetID, Operation: a.Operation})] = i
		o.byID[a.ID] = i
	}
	for _, e := range j.held {
		if e.b.JobID == jb.id && e.step == nil && e.call == nil {
			o.apply(e)
		}
	}
	return o.as, nil
}

// actionKey is what makes an action unique within its step.
type actionKey struct {
	kind             store.TargetKind
	target, targetID string
	op               store.Operation
}

func keyOf(k store.ActionKey) actionKey {
	return actionKey{k.TargetKind, k.Target, k.TargetID, k.Operation}
}

// overlay lays held records over one step's actions, in the order the
// store will write them (finishes, begins, records of an entry).
type overlay struct {
	j     *Journal
	step  int64
	as    []store.Action
	byKey map[actionKey]int
	byID  map[int64]int
}

func (o *overlay) inStep(id int64) bool {
	return id == o.step || o.j.realLocked(id) == o.j.realLocked(o.step)
}

func (o *overlay) apply(e *entry) {
	at := e.at
	for _, r := range e.b.Finish {
		i, ok := o.byID[r.ID]
		if !ok {
			i, ok = o.byID[o.j.realLocked(r.ID)]
		}
		if ok {
			a := &o.as[i]
			a.State, a.Detail, a.Error, a.FinishedAt, a.UpdatedAt = r.State, r.Detail, r.Error, &at, at
		}
	}
	for i, b := range e.b.Begin {
		if !o.inStep(b.Key.StepID) {
			continue
		}
		if k, ok := o.byKey[keyOf(b.Key)]; ok {
			a := &o.as[k]
			a.State, a.Attempts, a.Detail, a.Error, a.FinishedAt, a.UpdatedAt = store.ActionRunning, a.Attempts+1, b.Detail, "", nil, at
			o.byID[e.acts[i].ID] = k
			continue
		}
		o.add(e.acts[i])
	}
	for _, r := range e.b.Record {
		if !o.inStep(r.Key.StepID) {
			continue
		}
		k, ok := o.byKey[keyOf(r.Key)]
		if !ok {
			o.add(store.Action{JobID: r.Key.JobID, StepID: o.step, TargetKind: r.Key.TargetKind, Target: r.Key.Target,
				TargetID: r.Key.TargetID, Operation: r.Key.Operation, StartedAt: &at})
			k = len(o.as) - 1
		}
		a := &o.as[k]
		a.State, a.Detail, a.Error, a.FinishedAt, a.UpdatedAt = r.State, r.Detail, r.Error, &at, at
	}
}

func (o *overlay) add(a store.Action) {
	o.as = append(o.as, a)
	o.byKey[keyOf(store.ActionKey{TargetKind: a.TargetKind, Target: a.Target, TargetID: a.TargetID, Operation: a.Operation})] = len(o.as) - 1
	if a.ID != 0 {
		o.byID[a.ID] = len(o.as) - 1
	}
}
