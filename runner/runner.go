// Package runner is the job engine: it claims the active job from the store,
// advances it step by step (OpenStack VMs, storage, hosts), records every
// target action before and after it happens, and resumes an interrupted
// shutdown after a restart.
package runner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/runner/internal/journal"
	"github.com/edgeops/shutdownd/runner/internal/pool"
	"github.com/edgeops/shutdownd/store"
)

// Step names, in the order they run. They are stored in steps.name and
// shown in the status API, so they never change.
const (
	StepOpenStack = "openstack"
	StepStorage   = "storage"
	StepHosts     = "hosts"
)

// jobSteps is the sequence of steps every job runs, in order; stepNames
// are their names.
var (
	jobSteps = []struct {
		name string
		run  func(*exec, store.Step) (store.StepState, string, error)
	}{
		{StepOpenStack, (*exec).openstackStep},
		{StepStorage, (*exec).storageStep},
		{StepHosts, (*exec).hostsStep},
	}
	stepNames = []string{StepOpenStack, StepStorage, StepHosts}
)

// Runner runs one job at a time. The store is the only source of truth: the
// runner holds no job state across restarts that is not in the database.
type Runner struct {
	cfg   *config.Config
	store *store.Store
	log   *slog.Logger
	deps  deps
	obs   Observer // may be nil
	// journal writes every record of the jobs, and holds in memory what a
	// store that cannot be written refuses (runner/internal/journal).
	journal *journal.Journal

	kick   chan struct{}
	settle sync.Once
	// nova follows the os-stop requests; connection warm-up waits for
	// them (see pool.Quiet).
	nova pool.StopCounter
	warm cloudWarmer // an authenticated OpenStack client for the next shutdown
	// selfDownJob is the shutdown job whose self power-off this process
	// sent (0: none): this machine is going down, and no job may start
	// now, or the dying machine would leave it running. It is cleared when
	// that power-off has failed for good (see powerOffSelf): a management
	// host left running must take the next trigger.
	selfDownJob atomic.Int64
	// boot is this machine's boot id ("" when it cannot be read): jobs
	// record it, and an interrupted job resumes only in the boot it ran in.
	boot string

	// idle is closed and replaced every time the runner finds no active job;
	// tests wait on it instead of sleeping.
	mu   sync.Mutex
	idle chan struct{}
}

// Options tune a Runner.
type Options struct {
	Logger *slog.Logger
	// Observer is told about jobs, steps and peer requests (metrics,
	// notifications); nil means nobody.
	Observer Observer
	// BootIDFile is where this machine's boot id is read (default
	// DefaultBootIDFile); only tests point it elsewhere, to play a reboot.
	BootIDFile string
}

// New returns a runner for cfg over st. Call Run to start it. It reads this
// machine's boot id and tells the store, which records it with every job
// created or started from now on.
func New(cfg *config.Config, st *store.Store, opts Options) *Runner {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	boot, err := ReadBootID(cmp.Or(opts.BootIDFile, DefaultBootIDFile))
	if err != nil {
		log.Error("this machine's boot id is unknown: a job interrupted by a restart will not resume", "err", err)
	}
	st.SetBootID(boot)
	r := &Runner{cfg: cfg, store: st, log: log, obs: opts.Observer, boot: boot, kick: make(chan struct{}, 1), idle: make(chan struct{})}
	var jobs journal.Observer
	if so, ok := opts.Observer.(StoreObserver); ok {
		jobs = so
	}
	r.journal = journal.New(st, journal.Options{Logger: log, Observer: jobs})
	d := realDeps()
	countStops(&d, &r.nova)
	if opts.Observer != nil {
		d = observeDeps(d, opts.Observer)
	}
	r.deps = d
	return r
}

// Kick wakes the runner at once: a job was created, cancelled or preempted.
// It never blocks.
func (r *Runner) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Idle returns a channel closed the next time the runner finds no active job.
func (r *Runner) Idle() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.idle
}

func (r *Runner) signalIdle() {
	r.mu.Lock()
	close(r.idle)
	r.idle = make(chan struct{})
	r.mu.Unlock()
}

// Run executes jobs until ctx is cancelled. At start it settles what a
// previous process left behind: an interrupted simulation is failed (it
// proves nothing once interrupted), an interrupted shutdown resumes if the
// resume rule allows it (settleInterrupted) and fails otherwise.
func (r *Runner) Run(ctx context.Context) error {
	if err := r.Settle(ctx); err != nil {
		return err
	}
	// Run returns only once the background login has ended too, so that
	// nothing of this runner reaches Keystone after it.
	var bg sync.WaitGroup
	bg.Go(func() { r.keepCloudWarm(ctx) })
	defer bg.Wait()
	for {
		if ctx.Err() != nil {
			return nil
		}
		job, err := r.store.ActiveJob(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			r.log.Error("read active job", "err", err)
		}
		if job != nil && r.selfDownJob.Load() != 0 {
			r.refuseWhileSelfDown(ctx, *job)
			job = nil
		}
		if job != nil {
			r.execute(ctx, *job)
			continue
		}
		r.signalIdle()
		select {
		case <-ctx.Done():
			return nil
		case <-r.kick:
		case <-time.After(time.Second):
		}
	}
}

// Settle fails the simulations a previous process left running and decides
// whether an interrupted shutdown may resume (settleInterrupted). It runs
// once; the service calls it before it accepts requests, so a job requested
// in the first milliseconds after start is never mistaken for an
// interrupted one. Run calls it too, for callers that start only a runner.
func (r *Runner) Settle(ctx context.Context) error {
	var err error
	r.settle.Do(func() {
		var n int
		n, err = r.store.FailInterruptedSimulations(ctx)
		if err != nil {
			err = fmt.Errorf("settle interrupted jobs: %w", err)
			return
		}
		if n > 0 {
			r.log.Warn("failed simulations interrupted by restart", "count", n)
		}
		if err = r.settleInterrupted(ctx); err != nil {
			err = fmt.Errorf("settle interrupted jobs: %w", err)
			return
		}
		if n, err = r.store.CloseOpenActionsOfFinalJobs(ctx); err != nil {
			err = fmt.Errorf("settle interrupted jobs: %w", err)
			return
		}
		if n > 0 {
			r.log.Warn("closed actions left open in finished jobs (a self power-off whose machine went down)", "count", n)
		}
	})
	return err
}

// exec is the state of one job execution.
type exec struct {
	r   *Runner
	job store.Job
	log *slog.Logger
	// ctx is cancelled when the job is preempted or the service stops;
	// cancel requests only set cancelled, checked at safe points, so an
	// action in flight finishes and is recorded.
	ctx       context.Context
	cancelled atomic.Bool
	resumed   bool
	// jr records the job's actions, steps, events and progress: in order,
	// and held in memory while the store cannot be written.
	jr journal.Job
	// pool opens and keeps the SSH connections and BMC sessions of a
	// shutdown ahead of need; nil for a simulation.
	pool *connPool
	// stopWatch ends the goroutine that watches the store for preemption
	// and cancel requests; finish calls it before writing the final state.
	stopWatch func()
}

// safePoint reports whether the job should stop before its next action.
func (e *exec) stopping() bool { return e.cancelled.Load() || e.ctx.Err() != nil }

// db returns a context for store writes that outlives cancellation, so the
// record of an action that happened is never lost to a cancelled context.
func (e *exec) db() context.Context { return context.WithoutCancel(e.ctx) }

func (e *exec) event(level store.Level, msg string, detail ...any) {
	d := ""
	if len(detail) > 0 {
		d = fmt.Sprint(detail...)
	}
	e.jr.Event(level, msg, d)
}

func (e *exec) progress(format string, args ...any) {
	e.jr.Progress(fmt.Sprintf(format, args...))
}

func (r *Runner) execute(parent context.Context, job store.Job) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	e := &exec{r: r, job: job, ctx: ctx, log: r.log.With("job_id", job.ID, "kind", job.Kind), resumed: job.State == store.StateRunning}
	if job.CancelRequested {
		e.cancelled.Store(true)
	}
	if err := e.start(); err != nil {
		e.log.Error("start job", "err", err)
		return
	}
	// The store records "job started" and every state change itself.
	if e.resumed {
		e.event(store.LevelWarn, "job resumed after restart")
	}
	e.log.Info("job started", "resumed", e.resumed)
	e.jobStarted()
	if job.Kind == store.KindShutdown {
		e.pool = startPool(e)
		defer e.pool.Close()
	}

	e.stopWatch = r.startWatch(e, cancel)
	defer e.stopWatch()
	if job.Kind == store.KindSimulation {
		e.checkPowerSource()
	}

	if !e.runSteps(parent) || parent.Err() != nil {
		return // service stopping; resume (shutdown) or fail (simulation) at next start
	}
	r.finish(e)
}

// runSteps runs the job's steps in order until one is cancelled or the
// job stops. It reports false when the service is stopping (parent ended)
// mid-step: the step is left running, so a shutdown resumes it.
func (e *exec) runSteps(parent context.Context) bool {
	for i, s := range e.steps() {
		if e.stopping() {
			return true
		}
		st, err := e.jr.EnsureStep(e.db(), i+1, s.name)
		if err != nil {
			// The job fails: finish finds no record of this step.
			e.log.Error("ensure step", "step", s.name, "err", err)
			return true
		}
		if st.State.Final() {
			// Done before a restart; finish reads its outcome from the
			// store like any other step's.
			continue
		}
		if err := e.jr.StartStep(st.ID); err != nil {
			e.log.Error("start step", "step", s.name, "err", err)
		}
		state, detail, err := s.run(e, st)
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		if e.ctx.Err() != nil && state != store.StepSucceeded && state != store.StepSkipped {
			if parent.Err() != nil {
				e.log.Warn("service stopping; job left to resume", "step", s.name)
				return false
			}
			state = store.StepCancelled
		}
		if err := e.jr.FinishStep(st.ID, state, detail, msg); err != nil {
			e.log.Error("finish step", "step", s.name, "err", err)
		}
		e.event(levelFor(state), fmt.Sprintf("step %s %s", s.name, state), detail)
		e.stepFinished(st.ID)
	}
	return true
}

// finish writes the job's final state, then powers off the self host, which
// must come last: after this, nothing of ours may still need the machine.
// The state is decided from what the store holds (failures).
func (r *Runner) finish(e *exec) {
	self, hasSelf := r.cfg.Self()
	hasSelf = hasSelf && e.job.Kind == store.KindShutdown
	var selfName string
	if hasSelf {
		selfName = self.Name
	}
	state, msg := e.outcome(selfName)
	if state == store.StateCancelled {
		e.closeOpen(msg)
	}
	var selfAction store.Action
	sendSelf := false
	if state != store.StateCancelled && hasSelf {
		selfAction, sendSelf = e.prepareSelf(self)
	}
	e.settleDeadline(state)
	e.jr.Progress("")
	// The watcher would take our own final state for a preemption and
	// cancel the job's context, under the self power-off that follows. A
	// preemption from here on makes FinishJob answer !ok instead.
	e.stopWatch()
	ok, held, err := e.finishJob(state, msg)
	if err != nil {
		e.log.Error("finish job", "err", err)
		return
	}
	if held {
		e.log.Error("job finished; its final state is held in memory until the store takes writes", "state", state, "error", msg)
		e.jobFinishedHeld(state, msg)
	}
	if !ok {
		e.log.Info("job was already final (cancelled or preempted)")
		e.jobFinished()
		return
	}
	if !held {
		e.log.Info("job finished", "state", state, "error", msg)
		e.jobFinished()
	}
	if sendSelf && !e.cancelArrivedBeforeFinal(selfAction) {
		r.selfDownJob.Store(e.job.ID)
		e.drainObservers()
		e.powerOffSelf(self, selfAction)
	}
}

// outcome decides the job's final state and its error text from what the
// store holds (failures) and how the job ended.
// self names the machine running us when the job would power it off ("":
// it would not).
func (e *exec) outcome(self string) (store.State, string) {
	if e.ctx.Err() != nil {
		// Preempted or superseded: the store already holds the final
		// state and why.
		msg := "preempted"
		if j, err := e.r.store.Job(e.db(), e.job.ID); err == nil && j.Error != "" {
			msg = j.Error
		}
		return store.StateCancelled, msg
	}
	failures := e.failures()
	withFailures := func(msg string) string {
		if len(failures) > 0 {
			msg += "; " + summarize(failures)
		}
		return msg
	}
	switch {
	case e.cancelled.Load() && self != "":
		// The self power-off is still to come, and a cancel stops it: work
		// was left undone, so the job is cancelled even if every step ran.
		return store.StateCancelled, withFailures("cancelled by request before this machine (" + self + ") was powered off")
	case e.cancelled.Load() && !e.cancelTooLate():
		return store.StateCancelled, withFailures("cancelled by request")
	case len(failures) > 0:
		return store.StateFailed, summarize(failures)
	}
	return store.StateSucceeded, ""
}

// start opens the job's journal and moves the job to running. A start the
// store cannot take now is held, and the job runs: the disk never stops a
// shutdown.
func (e *exec) start() error {
	e.jr = e.r.journal.Job(e.job.ID)
	_, err := e.jr.Call("job started", func(ctx context.Context) error { return e.r.store.StartJob(ctx, e.job.ID) })
	return err
}

// finalWait bounds how long a job's final state waits for the records the
// store refused (a full disk) to be written before it. The final state
// should be on disk before this machine powers off, but the batteries do
// not wait forever: after this, the final state is held in memory behind
// the other records and the job ends anyway (docs/security.md).
const finalWait = 30 * time.Second

// finishJob writes the job's final state after every record before it.
// held reports that the store could not take them within finalWait: the
// final state then waits in memory, and ok is true.
func (e *exec) finishJob(state store.State, msg string) (ok, held bool, err error) {
	ctx, cancel := context.WithTimeout(e.db(), finalWait)
	defer cancel()
	if e.r.journal.Flush(ctx) != nil {
		e.log.Error("records still not saved after the wait; the final state is held behind them", "waited", finalWait)
	}
	held, err = e.jr.Call(fmt.Sprintf("job %s: %s", state, msg), func(ctx context.Context) error {
		var err error
		ok, err = e.r.store.FinishJob(ctx, e.job.ID, state, msg)
		return err
	})
	if held {
		return true, true, nil
	}
	return ok, false, err
}

// UnsavedStep is the current_step to show for job jobID while the store
// refuses its records: that they are not being saved, since when, and the
// latest progress (held, or stored as given). ok is false when the job
// has nothing held.
func (r *Runner) UnsavedStep(jobID int64, stored string) (text string, ok bool) {
	u, ok := r.journal.Unsaved(jobID)
	if !ok {
		return "", false
	}
	text = fmt.Sprintf("Records not being saved (%s) since %s: %d held in memory and in the service log",
		u.Reason(), store.FormatTime(u.Since), u.Records)
	if p := cmp.Or(u.Progress, stored); p != "" {
		text += "; " + p
	}
	return text, true
}

// PoweringOffSelf reports the shutdown job that is powering off the machine
// running this process, if there is one; the API then answers a new
// request with that job instead of starting one. It stops reporting it
// once that power-off has failed for good.
func (r *Runner) PoweringOffSelf() (jobID int64, ok bool) {
	id := r.selfDownJob.Load()
	return id, id != 0
}

// refuseWhileSelfDown ends a job requested after this machine's power-off
// was sent (one that slipped past the API's check) without running it.
func (r *Runner) refuseWhileSelfDown(ctx context.Context, job store.Job) {
	msg := fmt.Sprintf("not run: this machine is being powered off by shutdown job %d; the site is already down", r.selfDownJob.Load())
	if _, err := r.store.FinishJob(context.WithoutCancel(ctx), job.ID, store.StateCancelled, msg); err != nil {
		r.log.Error("refuse job while powering off", "job_id", job.ID, "err", err)
		return
	}
	r.log.Warn("job refused: this machine is powering off", "job_id", job.ID)
}

// selfDrainWait bounds how long the self power-off waits for observers'
// deliveries (webhooks): every other host is already off by then, and one
// webhook attempt times out after 10 s.
const selfDrainWait = 10 * time.Second

// drainObservers gives a Drainer observer selfDrainWait to deliver what it
// holds before this machine goes down, and records what it left undone.
func (e *exec) drainObservers() {
	d, ok := e.r.obs.(Drainer)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(e.db(), selfDrainWait)
	defer cancel()
	if n := d.Drain(ctx); n > 0 {
		e.event(store.LevelWarn, fmt.Sprintf("%d notifications still undelivered after %s; powering off this machine anyway", n, selfDrainWait))
	}
}

// cancelArrivedBeforeFinal reports whether a cancel request reached the
// store after the job's state was decided but before its final state was
// written (the store takes no cancel request for a final job, so this read
// is the last word). The self power-off is then not sent: its actions are
// recorded as skipped, with an event.
func (e *exec) cancelArrivedBeforeFinal(selfAction store.Action) bool {
	j, err := e.r.store.Job(e.db(), e.job.ID)
	if err != nil {
		e.log.Error("re-read job before self power-off", "err", err)
		return false
	}
	if !j.CancelRequested {
		return false
	}
	e.finishAction(selfAction.ID, store.ActionSkipped, "not sent: cancel requested before this machine was powered off", "")
	e.event(store.LevelWarn, "cancel requested as the job ended; this machine is not powered off")
	return true
}

// startWatch runs watch until the returned stop function is called; stop
// waits for it to return and may be called more than once.
func (r *Runner) startWatch(e *exec, cancel context.CancelFunc) (stop func()) {
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		r.watch(e, cancel, done)
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			<-exited
		})
	}
}

// watch cancels the job's context when the job is no longer active in the
// store (preempted), and turns a cancel request into the cancelled flag. It
// also keeps the job's heartbeat (see heartbeat).
func (r *Runner) watch(e *exec, cancel context.CancelFunc, done <-chan struct{}) {
	ch, unsub := r.store.Subscribe()
	defer unsub()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	hb := heartbeat{every: heartbeatEvery(r.resumeWindow()), last: time.Now()}
	for {
		select {
		case <-done:
			return
		case <-ch:
		case <-r.kick:
			// A kick during a job can only mean cancel or preemption; the
			// main loop re-reads the store after the job anyway.
		case <-t.C:
		}
		hb.beat(e)
		j, err := r.store.Job(context.WithoutCancel(e.ctx), e.job.ID)
		if err != nil {
			continue
		}
		if j.State.Final() {
			e.log.Warn("job ended from outside; stopping", "state", j.State, "error", j.Error)
			cancel()
			return
		}
		if j.CancelRequested && !e.cancelled.Load() {
			e.cancelled.Store(true)
			e.event(store.LevelWarn, "cancel requested; stopping at the next safe point")
		}
	}
}

func levelFor(s store.StepState) store.Level {
	switch s {
	case store.StepFailed:
		return store.LevelError
	case store.StepCancelled:
		return store.LevelWarn
	}
	return store.LevelInfo
}

// summarize joins failures into the job's error text; long lists are cut so
// the status API stays readable, the full list is in the actions.
func summarize(failures []string) string {
	const max = 10
	head := failures
	if len(head) > max {
		head = head[:max]
	}
	s := fmt.Sprintf("%d failed: %s", len(failures), strings.Join(head, "; "))
	if len(failures) > max {
		s += fmt.Sprintf("; and %d more (see the job's actions)", len(failures)-max)
	}
	return s
}

var errCancelled = errors.New("cancelled")
