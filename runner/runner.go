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
	"github.com/edgeops/shutdownd/store"
)

// Step names, in the order they run. They are stored in steps.name and
// shown in the status API, so they never change.
const (
	StepOpenStack = "openstack"
	StepStorage   = "storage"
	StepHosts     = "hosts"
)

// Runner runs one job at a time. The store is the only source of truth: the
// runner holds no job state across restarts that is not in the database.
type Runner struct {
	cfg   *config.Config
	store *store.Store
	log   *slog.Logger
	deps  Deps
	obs   Observer // may be nil
	// journal writes every record of the jobs, and holds in memory what a
	// store that cannot be written refuses (runner/internal/journal).
	journal *journal.Journal

	kick   chan struct{}
	settle sync.Once
	// nova follows the os-stop requests; connection warm-up waits for
	// them (see warmQuiet).
	nova stopCounter
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
	Deps   Deps
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
	opts.Deps.fill()
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
	countStops(&opts.Deps, &r.nova)
	if opts.Observer != nil {
		opts.Deps = observeDeps(opts.Deps, opts.Observer)
	}
	r.deps = opts.Deps
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

	mu       sync.Mutex
	failures []string
}

func (e *exec) fail(format string, args ...any) {
	e.mu.Lock()
	e.failures = append(e.failures, fmt.Sprintf(format, args...))
	e.mu.Unlock()
}

// failFromRecords adds a failed step's failed targets, as the store holds
// them, to the job's failures; a step with none is named with why instead.
// Only outcomes count: a host's failed SSH power-off or BMC confirmation
// that its escalation then made good is not a failure of the host.
func (e *exec) failFromRecords(st store.Step, why string) {
	as, err := e.jr.StepActions(e.db(), st.ID)
	if err != nil {
		e.log.Error("read step actions", "step", st.Name, "err", err)
	}
	n := 0
	for _, a := range as {
		if a.State != store.ActionFailed || a.TargetKind == "bmc" || a.Operation == "ssh-poweroff" {
			continue
		}
		target := a.Target
		if a.TargetID != "" {
			target += " (" + a.TargetID + ")"
		}
		e.fail("%s %s: %s", a.TargetKind, target, cmp.Or(a.Error, "failed"))
		n++
	}
	if n == 0 {
		e.fail("step %s: %s", st.Name, why)
	}
}

func (e *exec) failureCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.failures)
}

// safePoint reports whether the job should stop before its next action.
func (e *exec) stopping() bool { return e.cancelled.Load() || e.ctx.Err() != nil }

// db returns a context for store writes that outlives cancellation, so the
// record of an action that happened is never lost to a cancelled context.
func (e *exec) db() context.Context { return context.WithoutCancel(e.ctx) }

func (e *exec) event(level, msg string, detail ...any) {
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
		e.event("warn", "job resumed after restart")
	}
	e.log.Info("job started", "resumed", e.resumed)
	e.jobStarted()
	if job.Kind == store.KindShutdown {
		e.pool = startPool(e)
		defer e.pool.close()
	}

	e.stopWatch = r.startWatch(e, cancel)
	defer e.stopWatch()

	steps := []jobStep{
		{StepOpenStack, "OpenStack VMs", (*exec).openstackStep},
		{StepStorage, "storage", (*exec).storageStep},
		{StepHosts, "hosts", (*exec).hostsStep},
	}
	if job.Kind == store.KindStartup {
		steps = startupSteps
	}
	for i, s := range steps {
		if e.stopping() {
			break
		}
		st, err := e.jr.EnsureStep(e.db(), i+1, s.name)
		if err != nil {
			e.fail("step %s: %v", s.name, err)
			e.log.Error("ensure step", "step", s.name, "err", err)
			break
		}
		if st.State.Final() {
			// Done before a restart; its failure still counts, or the
			// resumed job would end succeeded with a failed step.
			if st.State == store.StepFailed {
				e.failFromRecords(st, "before the restart: "+cmp.Or(st.Error, st.Detail, "failed"))
			}
			continue
		}
		if err := e.jr.StartStep(st.ID); err != nil {
			e.log.Error("start step", "step", s.name, "err", err)
		}
		failuresBefore := e.failureCount()
		state, detail, err := s.run(e, st)
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		if state == store.StepFailed && e.failureCount() == failuresBefore {
			// The step failed without naming a target here (targets that
			// had failed before a restart, or a store error): the job
			// fails too, naming what the store says failed.
			e.failFromRecords(st, cmp.Or(msg, detail, "failed"))
		}
		if e.ctx.Err() != nil && state != store.StepSucceeded && state != store.StepSkipped {
			if parent.Err() != nil {
				// The service is stopping: leave the step running so a
				// shutdown resumes it after restart.
				e.log.Warn("service stopping; job left to resume", "step", s.name)
				return
			}
			state = store.StepCancelled
		}
		if err := e.jr.FinishStep(st.ID, state, detail, msg); err != nil {
			e.log.Error("finish step", "step", s.name, "err", err)
		}
		e.event(levelFor(state), fmt.Sprintf("step %s %s", s.name, state), detail)
		e.stepFinished(st.ID)
	}
	if parent.Err() != nil {
		return // service stopping; resume (shutdown) or fail (simulation) at next start
	}
	r.finish(e)
}

// finish writes the job's final state, then powers off self hosts, which
// must come last: after this, nothing of ours may still need the machine.
func (r *Runner) finish(e *exec) {
	state, msg := store.StateSucceeded, ""
	e.mu.Lock()
	failures := append([]string(nil), e.failures...)
	e.mu.Unlock()
	var selfHosts []config.Host
	if e.job.Kind == store.KindShutdown {
		selfHosts = r.cfg.SelfHosts()
	}
	switch {
	case e.ctx.Err() != nil:
		// Preempted or superseded: the store already holds the final
		// state and why.
		state, msg = store.StateCancelled, "preempted"
		if j, err := r.store.Job(e.db(), e.job.ID); err == nil && j.Error != "" {
			msg = j.Error
		}
	case e.cancelled.Load() && len(selfHosts) > 0:
		// The self power-off is still to come, and a cancel stops it: work
		// was left undone, so the job is cancelled even if every step ran.
		state, msg = store.StateCancelled, "cancelled by request before this machine ("+hostNames(selfHosts)+") was powered off"
		if len(failures) > 0 {
			msg += "; " + summarize(failures)
		}
	case e.cancelled.Load() && !e.cancelTooLate():
		state, msg = store.StateCancelled, "cancelled by request"
		if len(failures) > 0 {
			msg += "; " + summarize(failures)
		}
	case len(failures) > 0:
		state, msg = store.StateFailed, summarize(failures)
	}
	if state == store.StateCancelled {
		e.closeOpen(msg)
	}
	var selfActions []store.Action
	if state != store.StateCancelled && len(selfHosts) > 0 {
		selfActions = e.prepareSelf(selfHosts)
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
	if len(selfActions) > 0 && !e.cancelArrivedBeforeFinal(selfActions) {
		r.selfDownJob.Store(e.job.ID)
		e.drainObservers()
		e.powerOffSelf(selfHosts, selfActions)
	}
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
		e.event("warn", fmt.Sprintf("%d notifications still undelivered after %s; powering off this machine anyway", n, selfDrainWait))
	}
}

// cancelArrivedBeforeFinal reports whether a cancel request reached the
// store after the job's state was decided but before its final state was
// written (the store takes no cancel request for a final job, so this read
// is the last word). The self power-off is then not sent: its actions are
// recorded as skipped, with an event.
func (e *exec) cancelArrivedBeforeFinal(selfActions []store.Action) bool {
	j, err := e.r.store.Job(e.db(), e.job.ID)
	if err != nil {
		e.log.Error("re-read job before self power-off", "err", err)
		return false
	}
	if !j.CancelRequested {
		return false
	}
	for _, a := range selfActions {
		e.finishAction(a.ID, store.ActionSkipped, "not sent: cancel requested before this machine was powered off", "")
	}
	e.event("warn", "cancel requested as the job ended; this machine is not powered off")
	return true
}

func hostNames(hosts []config.Host) string {
	names := make([]string, len(hosts))
	for i, h := range hosts {
		names[i] = h.Name
	}
	return strings.Join(names, ", ")
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
			e.event("warn", "cancel requested; stopping at the next safe point")
		}
	}
}

func levelFor(s store.StepState) string {
	switch s {
	case store.StepFailed:
		return "error"
	case store.StepCancelled:
		return "warn"
	}
	return "info"
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
