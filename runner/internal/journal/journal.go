// Package journal writes the runner's records (actions, steps, events,
// progress, a job's start and final state) to the store, and turns a store
// that cannot be written (disk full, I/O error, read-only file system) into
// something a shutdown goes through instead of stopping at.
//
// What it guarantees:
//
//   - Order. Records reach the store in the order they were submitted; a
//     record is never written before one submitted earlier.
//   - A refused write blocks nothing. When the store refuses a write as
//     unwritable (store.Unwritable), the records are held in memory, each is
//     logged in full at once (the service log goes to journald), and the
//     caller goes on: Begin returns a provisional action with a negative ID
//     that later Finish calls use like any other. From then on every new
//     record is held behind them, whatever the store would say, so the
//     order holds.
//   - Held records are written when the store takes writes again. While
//     anything is held, the journal retries every RetryEvery, oldest first,
//     one record at a time, each with the time it was made (store.Batch.At),
//     and maps provisional IDs to the rows the store created, so a finish of
//     an action begun while the disk was full updates the right row. Events
//     are appended to their job's hash chain as they are written, in order,
//     so the chain stays whole.
//   - Group commit. Writes several goroutines ask for at about the same time
//     (the hosts of a group finishing together) share one transaction, and
//     one fsync; a write that is wrong in itself (a missing row: not
//     unwritable) fails alone, and is not held: it would never succeed.
//   - Reads see held records. Job.Steps and Job.StepActions lay what is held
//     over what the store returns, so a step's outcome is computed alike
//     whether the disk took its records or not.
//
// What it does not guarantee: records held when the process ends are lost
// from the database (they are in the service log). A job's final state
// waits a bounded time for the held records before it is itself held (see
// Job.FinishJob).
package journal

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/edgeops/shutdownd/store"
)

// DefaultRetryEvery is the pause between attempts to write held records. A
// refused write on a full disk costs well under a millisecond, and an
// operator who frees space wants the records on disk soon after.
const DefaultRetryEvery = time.Second

// Observer learns about refused writes and held records (metrics). Calls
// are made with the journal's lock released, and must return at once.
type Observer interface {
	// StoreWriteFailed is called for every write the store refused as
	// unwritable, retries included.
	StoreWriteFailed()
	// RecordsUnsaved is called with the number of records held in memory
	// whenever it changes.
	RecordsUnsaved(n int)
}

// Options tune a Journal.
type Options struct {
	Logger     *slog.Logger
	RetryEvery time.Duration // default DefaultRetryEvery
	Observer   Observer      // may be nil
}

// Journal writes records of every job to one store. It is safe for
// concurrent use; Job gives the methods for one job.
type Journal struct {
	st    *store.Store
	log   *slog.Logger
	obs   Observer
	retry time.Duration
	stop  chan struct{}
	once  sync.Once

	mu      sync.Mutex
	pending []*entry // to write, in order; empty while held is not
	held    []*entry // refused by the store, in order
	nheld   int      // records in held (an entry may hold many)
	busy    bool     // the writer goroutine runs
	writing bool     // the writer is writing entries taken from pending
	changed chan struct{}
	since   time.Time // when the first held record was refused
	lastErr error     // the store's last refusal
	prov    int64     // the last provisional ID given out (negative)
	// realID maps provisional action and step IDs to the store's, once
	// their records are written.
	realID map[int64]int64
	// heldJobs counts the records held per job since the store first
	// refused, for the event that says so once they are written.
	heldJobs map[int64]int
}

// New returns a journal writing to st.
func New(st *store.Store, opts Options) *Journal {
	j := &Journal{st: st, log: opts.Logger, obs: opts.Observer, retry: opts.RetryEvery,
		stop: make(chan struct{}), changed: make(chan struct{}), realID: map[int64]int64{},
		heldJobs: map[int64]int{}}
	if j.log == nil {
		j.log = slog.Default()
	}
	if j.retry <= 0 {
		j.retry = DefaultRetryEvery
	}
	return j
}

// Close stops the retries of held records and reports how many are still
// held (they stay in the service log only). Writes submitted after Close
// that the store refuses stay held and are not retried.
func (j *Journal) Close() int {
	j.once.Do(func() { close(j.stop) })
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.nheld
}

// entry is one submitted write: a batch of action, event and progress
// records, or a step change, or a call (a job's start or final state).
// Only batch entries are grouped into one transaction.
type entry struct {
	at   time.Time
	b    store.Batch       // JobID is always set
	step *store.StepChange // a step change, written alone
	call *call             // written alone

	// prov are the provisional IDs given to b.Begin (or to an ensured
	// step, prov[0]) when the entry was held.
	prov []int64

	// The outcome, for the submitter.
	acts []store.Action // b.Begin's rows
	st   store.Step     // an ensured step
	err  error          // a write wrong in itself
	held bool           // refused by the store and held
	done chan struct{}  // nil: nobody waits
}

// call is a write the journal does not know the shape of: fn does it, and
// desc says what it is in the service log.
type call struct {
	desc string
	fn   func(ctx context.Context) error
}

// records counts what e holds, for the unsaved count.
func (e *entry) records() int {
	if e.step != nil || e.call != nil {
		return 1
	}
	n := len(e.b.Finish) + len(e.b.Begin) + len(e.b.Record) + len(e.b.Events)
	if e.b.CurrentStep != nil {
		n++
	}
	return n
}

func (e *entry) release() {
	if e.done != nil {
		close(e.done)
	}
}

// submit queues es in order and returns once they are written or held,
// unless wait is false.
func (j *Journal) submit(wait bool, es ...*entry) {
	now := time.Now()
	for _, e := range es {
		e.at = now
		e.b.At = now
		if wait {
			e.done = make(chan struct{})
		}
	}
	j.mu.Lock()
	if len(j.held) > 0 {
		// The store refused something before these: they go behind it.
		n := j.holdLocked(es, nil)
		j.mu.Unlock()
		j.notifyUnsaved(n)
	} else {
		j.pending = append(j.pending, es...)
		if !j.busy {
			j.busy = true
			go j.run()
		}
		j.mu.Unlock()
	}
	if wait {
		for _, e := range es {
			<-e.done
		}
	}
}

// broadcastLocked wakes whoever waits for the journal to change.
func (j *Journal) broadcastLocked() {
	close(j.changed)
	j.changed = make(chan struct{})
}

// Wait returns once everything submitted before it is written or held.
func (j *Journal) Wait() {
	for {
		j.mu.Lock()
		if len(j.pending) == 0 && !j.writing {
			j.mu.Unlock()
			return
		}
		ch := j.changed
		j.mu.Unlock()
		<-ch
	}
}

// Flush waits until nothing is pending or held: everything submitted so far
// is in the store. It returns ctx's error if that does not happen first.
func (j *Journal) Flush(ctx context.Context) error {
	for {
		j.mu.Lock()
		if len(j.pending) == 0 && !j.writing && len(j.held) == 0 {
			j.mu.Unlock()
			return nil
		}
		ch := j.changed
		j.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// run is the writer: it writes what is pending, grouped, until nothing is;
// while records are held it retries them instead.
func (j *Journal) run() {
	for {
		j.mu.Lock()
		if len(j.held) > 0 {
			j.mu.Unlock()
			if !j.retryHeld() {
				j.mu.Lock()
				j.busy = false
				j.broadcastLocked()
				j.mu.Unlock()
				return
			}
			continue
		}
		es := j.pending
		j.pending = nil
		if len(es) == 0 {
			j.busy = false
			j.broadcastLocked()
			j.mu.Unlock()
			return
		}
		j.writing = true
		j.mu.Unlock()
		j.writeAll(es)
		j.mu.Lock()
		j.writing = false
		j.broadcastLocked()
		j.mu.Unlock()
	}
}

// writeAll writes es in order, consecutive batches of one job in one
// transaction. From the first write the store refuses, es's rest is held.
func (j *Journal) writeAll(es []*entry) {
	for i := 0; i < len(es); {
		n := 1
		if es[i].step == nil && es[i].call == nil {
			for i+n < len(es) && es[i+n].step == nil && es[i+n].call == nil && es[i+n].b.JobID == es[i].b.JobID {
				n++
			}
		}
		group := es[i : i+n]
		err := j.write(group)
		if err != nil && !store.Unwritable(err) && n > 1 {
			// One bad write fails its whole transaction: write each
			// alone, so that only the bad one fails.
			for k, e := range group {
				if err = j.write([]*entry{e}); store.Unwritable(err) {
					j.refused(es[i+k:], err)
					return
				}
				e.err = err
				e.release()
			}
			i += n
			continue
		}
		if store.Unwritable(err) {
			j.refused(es[i:], err)
			return
		}
		for _, e := range group {
			e.err = err
			e.release()
		}
		i += n
	}
}

// refused holds es (the store just refused the first of them) and
// whatever was submitted behind them.
func (j *Journal) refused(es []*entry, err error) {
	j.mu.Lock()
	first := len(j.held) == 0
	j.lastErr = err
	if first {
		j.since = time.Now()
		j.log.Error("store refused a write; holding records in memory and retrying until it takes writes again",
			"err", err, "retry_every", j.retry)
	}
	n := j.holdLocked(es, j.pending)
	j.pending = nil
	j.mu.Unlock()
	if j.obs != nil {
		j.obs.StoreWriteFailed()
	}
	j.notifyUnsaved(n)
}

func (j *Journal) notifyUnsaved(n int) {
	if j.obs != nil {
		j.obs.RecordsUnsaved(n)
	}
}

// write writes a group of entries (batches of one job, or one step change
// or call) in one transaction and stores each entry's outcome.
func (j *Journal) write(group []*entry) error {
	ctx := context.Background()
	e := group[0]
	j.resolve(group)
	switch {
	case e.step != nil:
		st, err := j.st.ChangeStep(ctx, *e.step)
		if err == nil && e.step.ID == 0 {
			j.mu.Lock() // a held entry's outcome is read by the overlay
			e.st = st
			j.mu.Unlock()
		}
		return err
	case e.call != nil:
		return e.call.fn(ctx)
	}
	b := store.Batch{JobID: e.b.JobID, At: e.b.At}
	for _, e := range group {
		b.Finish = append(b.Finish, e.b.Finish...)
		b.Begin = append(b.Begin, e.b.Begin...)
		b.Record = append(b.Record, e.b.Record...)
		b.Events = append(b.Events, e.b.Events...)
		if e.b.CurrentStep != nil {
			b.CurrentStep = e.b.CurrentStep
		}
	}
	as, err := j.st.WriteBatch(ctx, b)
	if err != nil {
		return err
	}
	j.mu.Lock()
	for _, e := range group {
		e.acts, as = as[:len(e.b.Begin)], as[len(e.b.Begin):]
	}
	j.mu.Unlock()
	return nil
}

// resolve replaces the provisional IDs in group's records by the store's,
// where their records are written by now. An ID still provisional stays:
// its row does not exist, and the store says so.
func (j *Journal) resolve(group []*entry) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, e := range group {
		if e.step != nil {
			e.step.ID = j.realLocked(e.step.ID)
		}
		for i := range e.b.Finish {
			e.b.Finish[i].ID = j.realLocked(e.b.Finish[i].ID)
		}
		for i := range e.b.Begin {
			e.b.Begin[i].Key.StepID = j.realLocked(e.b.Begin[i].Key.StepID)
		}
		for i := range e.b.Record {
			e.b.Record[i].Key.StepID = j.realLocked(e.b.Record[i].Key.StepID)
		}
	}
}

func (j *Journal) realLocked(id int64) int64 {
	if r, ok := j.realID[id]; ok && id < 0 {
		return r
	}
	return id
}
