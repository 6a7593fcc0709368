package runner

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/runner/openstack"
	"github.com/edgeops/shutdownd/store"
)

// Nova statuses the runner acts on.
const (
	novaActive  = "ACTIVE"
	novaError   = "ERROR"
	novaShutoff = "SHUTOFF"
)

// openCloudFor logs in at once (never waiting for the background's
// backoff), recording retries as events so an operator can see a flaky Nova
// in the job's log. The login becomes the one the runner keeps; release
// ends the routing of its retries to this job.
func (e *exec) openCloudFor() (c Cloud, release func(), err error) {
	c, route, err := e.r.cloudLogin(e.ctx, e.retryEvent)
	if err != nil {
		return nil, func() {}, err
	}
	return c, func() { route.to.Store(nil) }, nil
}

func (e *exec) retryEvent(op string, attempt int, err error) {
	e.event(store.LevelWarn, fmt.Sprintf("openstack %s: retry %d", op, attempt), err.Error())
}

func (e *exec) excluded(s openstack.Server) bool {
	for _, x := range e.r.cfg.OpenStack.Exclude {
		if x == s.Name || x == s.ID {
			return true
		}
	}
	return false
}

func (e *exec) openstackStep(step store.Step) (store.StepState, string, error) {
	if !e.r.cfg.OpenStack.Enabled() {
		// Allowed (a site without OpenStack), but never silent: VMs that
		// do exist go down with their hosts.
		e.event(store.LevelWarn, config.NoOpenStackWarning)
		return store.StepSkipped, config.NoOpenStackWarning, nil
	}
	if e.job.Kind == store.KindSimulation {
		return e.openstackCheck(step)
	}
	return e.openstackStop(step)
}

// openstackCheck authenticates and lists every server, counting what a
// shutdown would do. It sends nothing but GETs.
func (e *exec) openstackCheck(step store.Step) (store.StepState, string, error) {
	e.progress("Checking OpenStack: authenticating and listing servers")
	e.reportCloudLogin()
	key := store.ActionKey{JobID: e.job.ID, StepID: step.ID, TargetKind: store.TargetOpenStack, Target: e.r.cfg.OpenStack.Name(), Operation: store.OpCheckListServers}
	a, err := e.jr.Begin(key, "")
	if err != nil {
		return store.StepFailed, "", fmt.Errorf("record action: %w", err)
	}
	cloud, release, err := e.openCloudFor()
	defer release()
	var servers []openstack.Server
	if err == nil {
		servers, err = cloud.ListServers(e.ctx)
	}
	if err != nil {
		e.finishAction(a.ID, store.ActionFailed, "", err.Error())
		return store.StepFailed, "", err
	}
	plan := e.classify(servers)
	// The summary comes first: the forecast reads it (store.simSummary).
	detail := plan.summary() + "; " + loginDetail(cloud, e.r.cfg.OpenStack)
	e.finishAction(a.ID, store.ActionSucceeded, detail, "")
	return store.StepSucceeded, detail, nil
}

// vmPlan sorts the listed servers into what a shutdown does with each.
type vmPlan struct {
	total    int
	stop     []openstack.Server
	off      []openstack.Server
	skipped  []openstack.Server
	excluded []openstack.Server
	byStatus map[string]int
}

func (e *exec) classify(servers []openstack.Server) vmPlan {
	p := vmPlan{total: len(servers), byStatus: map[string]int{}}
	for _, s := range servers {
		p.byStatus[s.Status]++
		switch {
		case e.excluded(s):
			p.excluded = append(p.excluded, s)
		case s.Status == novaShutoff:
			p.off = append(p.off, s)
		case s.Status == novaActive || s.Status == novaError:
			p.stop = append(p.stop, s)
		default:
			p.skipped = append(p.skipped, s)
		}
	}
	return p
}

func (p vmPlan) summary() string {
	var st []string
	for k, v := range p.byStatus {
		st = append(st, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(st)
	return fmt.Sprintf("%d servers (%s): %d to stop, %d already SHUTOFF, %d skipped, %d excluded",
		p.total, strings.Join(st, ", "), len(p.stop), len(p.off), len(p.skipped), len(p.excluded))
}

func (e *exec) finishAction(id int64, state store.ActionState, detail, errMsg string) {
	if err := e.jr.Finish(store.ActionResult{ID: id, State: state, Detail: detail, Error: errMsg}); err != nil {
		e.log.Error("finish action", "action_id", id, "err", err)
	}
}

func vmKey(e *exec, step store.Step, s openstack.Server) store.ActionKey {
	return store.ActionKey{JobID: e.job.ID, StepID: step.ID, TargetKind: store.TargetVM, Target: s.Name, TargetID: s.ID, Operation: store.OpOSStop}
}

// listPageSizes are the limits of the successive list requests of a
// shutdown. The first page is small enough for Nova to render in a few
// milliseconds, so the first os-stops leave at once, and large enough to
// keep the senders busy (at the configured concurrency) while Nova renders
// the next page, of its full size (no limit). Each server's decision is its
// own, so nothing waits for the whole listing. A site with fewer servers
// than the first page is listed in one request, as before; a larger one in
// at most one request more than Nova's pages alone (none at 2,000 servers:
// 250, 1,000 and 750, where pages of 1,000 end with an empty third page),
// which its number of VMs absorbs in the requests per VM.
var listPageSizes = []int{250, 0}

// firstProgressWait bounds how long current_step may stay as the step
// found it while the first page is listed (see openstackStop).
const firstProgressWait = 100 * time.Millisecond

// cloudForStop is the kept client when its token is good (warm), else a
// login now, whatever the background's backoff says, announced first (it
// may take retries). release ends the routing of retries to this job.
func (e *exec) cloudForStop() (c Cloud, warm bool, release func(), err error) {
	if c, release = e.r.takeCloud(e.retryEvent); c != nil {
		return c, true, release, nil
	}
	e.progress("Stopping OpenStack VMs: authenticating and listing servers")
	if c, release, err = e.openCloudFor(); err != nil {
		return nil, false, nil, err
	}
	return c, false, release, nil
}

// openstackStop stops every ACTIVE and ERROR server and waits for SHUTOFF by
// polling the server list (one request per poll for all servers, never one
// GET per VM). It stops the servers of the first page while the next pages
// load. It is idempotent: after a restart it re-lists, leaves alone what is
// already SHUTOFF and stops what is still on.
func (e *exec) openstackStop(step store.Step) (store.StepState, string, error) {
	cfg := e.r.cfg.OpenStack
	cloud, warm, release, err := e.cloudForStop()
	if err != nil {
		return store.StepFailed, "", err
	}
	defer release()

	// The listing runs on its own goroutine and hands over each page; the
	// recorder below takes them as they come.
	rec := &vmRecorder{e: e, step: step, done: map[string]bool{}, existing: map[string]bool{}, seen: map[string]bool{},
		firstDone: make(chan struct{})}
	rec.plan.byStatus = map[string]int{}
	lctx, stopListing := context.WithCancel(e.ctx)
	defer stopListing()
	pages := make(chan []openstack.Server, 16)
	listed := make(chan error, 1)
	go func() {
		defer close(pages)
		n := 0
		listed <- cloud.ListServerPages(lctx, listPageSizes, func(p []openstack.Server) error {
			select {
			case pages <- p:
			case <-lctx.Done():
				return lctx.Err()
			}
			if n++; n == 1 {
				// The next page waits for the first os-stops to be
				// recorded: rendering and decoding it would take the CPU
				// they need, and the first page keeps the senders busy
				// while it is listed.
				select {
				case <-rec.firstDone:
				case <-lctx.Done():
					return lctx.Err()
				}
			}
			return nil
		})
	}()
	// With the client ready there is nothing to say before the listing,
	// and the text waits for the first batch of actions (at most
	// firstProgressWait): both are commits on the store's one writer
	// connection, and a slow disk would otherwise hold the first os-stops
	// back behind this one's fsync.
	firstOut := make(chan struct{})
	progressed := make(chan struct{})
	var firstOnce sync.Once
	markFirst := func() { firstOnce.Do(func() { close(firstOut) }) }
	if warm {
		go func() {
			defer close(progressed)
			t := time.NewTimer(firstProgressWait)
			defer t.Stop()
			select {
			case <-firstOut:
			case <-t.C:
			}
			e.progress("Stopping OpenStack VMs: listing servers, sending os-stop")
		}()
	} else {
		close(progressed)
	}
	// Nothing of this step may write current_step after it returned.
	defer func() { markFirst(); <-progressed }()

	// Read while the first page is in flight.
	prior, err := e.jr.StepActions(e.db(), step.ID)
	if err != nil {
		stopListing()
		<-listed
		return store.StepFailed, "", fmt.Errorf("read actions: %w", err)
	}
	for _, a := range prior {
		if a.TargetKind != store.TargetVM {
			continue
		}
		rec.existing[a.TargetID] = true // only rows of a previous run were stopped by us
		if a.State.Final() {
			rec.done[a.TargetID] = true
		}
	}

	// The actions are recorded in batches by the recorder, running ahead of
	// the sends: the first os-stop leaves after one small transaction, and
	// later batches are written while earlier stops are in flight. Every
	// VM's action is on disk before its os-stop is sent.
	pending := map[string]*vmState{}
	w := newStopper(e, cloud, cfg.Concurrency)
	var recordErr error
	for b := range rec.run(pages, cfg.Concurrency, stopListing) {
		markFirst()
		if b.err != nil {
			recordErr = b.err
			continue
		}
		for i, s := range b.servers {
			pending[s.ID] = &vmState{server: s, actionID: b.actions[i].ID}
		}
		for _, s := range b.servers {
			if e.stopping() {
				break
			}
			if s.TaskState == "powering-off" {
				// Already stopping (our os-stop from before a restart): a
				// second one could reach Nova after the VM is SHUTOFF. Wait;
				// if it comes back idle and still on, the poll loop asks again.
				pending[s.ID].conflict = true
				continue
			}
			w.send(s.ID)
		}
	}
	listErr := <-listed
	if rec.stoppedListing.Load() {
		listErr = nil // we ended it: cancel or a failed write
	}
	plan := rec.plan
	// Written after the os-stops are out: nothing waits on these rows, and
	// the stops should not wait on them.
	if len(rec.recs) > 0 {
		if err := e.jr.Record(rec.recs); err != nil {
			e.log.Error("record vm actions", "count", len(rec.recs), "err", err)
		}
	}
	if e.ctx.Err() != nil {
		// Preempted or the service is stopping, maybe mid-listing: what
		// was sent is recorded; a shutdown resumes the step after restart.
		w.wait()
		e.applyStopResults(w.drain(), pending)
		return store.StepCancelled, "", e.ctx.Err()
	}
	switch {
	case recordErr != nil && len(pending) == 0:
		w.close()
		return store.StepFailed, "", fmt.Errorf("record vm actions: %w", recordErr)
	case recordErr != nil:
		// Some stops are out: keep polling those, then fail the step.
	}
	if listErr == nil && !rec.stoppedListing.Load() {
		e.closeUnlisted(prior, rec.seen)
	}
	if listErr != nil {
		if len(pending) == 0 {
			w.close()
			return store.StepFailed, "", listErr
		}
		e.event(store.LevelError, fmt.Sprintf("listing servers failed after %d servers; waiting for the %d stops already sent", plan.total, len(pending)), listErr.Error())
	} else if !rec.stoppedListing.Load() {
		e.event(store.LevelInfo, "listed servers", plan.summary())
	}
	total := len(plan.stop) + len(plan.off)
	markFirst()
	<-progressed
	e.progress("Stopping OpenStack VMs (%d/%d off)", total-len(pending), total)

	deadline := time.Now().Add(cfg.StopTimeout)
	poll := time.NewTicker(cfg.PollInterval)
	defer poll.Stop()
	for len(pending) > 0 {
		// Write what the stop workers learned since the last round.
		e.applyStopResults(w.drain(), pending)
		if len(pending) == 0 {
			break
		}
		if e.ctx.Err() != nil {
			w.wait()
			e.applyStopResults(w.drain(), pending)
			return store.StepCancelled, "", e.ctx.Err()
		}
		if e.cancelled.Load() {
			// Cancel at a safe point: no new os-stop; what was sent stays
			// sent and is recorded as such below.
			break
		}
		if time.Now().After(deadline) {
			break
		}
		select {
		case <-e.ctx.Done():
			continue
		case <-poll.C:
		}
		servers, err := cloud.ListServers(e.ctx)
		if err != nil {
			if e.ctx.Err() == nil {
				e.event(store.LevelWarn, "polling servers failed; will retry", err.Error())
			}
			continue
		}
		var results []store.ActionResult
		seen := make(map[string]bool, len(servers))
		for _, s := range servers {
			seen[s.ID] = true
			v, ok := pending[s.ID]
			if !ok {
				continue
			}
			switch {
			case s.Status == novaShutoff:
				results = append(results, store.ActionResult{ID: v.actionID, State: store.ActionSucceeded, Detail: "SHUTOFF"})
				delete(pending, s.ID)
			case s.TaskState != "" || w.inFlight(s.ID):
				// Nova is busy with it, or our os-stop is out: wait.
			case v.conflict && (s.Status == novaActive || s.Status == novaError) && !e.stopping():
				// A 409 came while Nova was busy with the server; now it is
				// idle and still on, so ask again. (An os-stop that ran out
				// of retries, about 36 s of them, is not sent again: the
				// VM fails at the timeout and the hosts going down stop it.)
				v.conflict = false
				w.send(s.ID)
			case v.conflict && s.Status != novaActive && s.Status != novaError:
				// The task Nova was busy with left the server PAUSED,
				// SUSPENDED, ...: skipped with its state, as if listed so.
				results = append(results, store.ActionResult{ID: v.actionID, State: store.ActionSkipped,
					Detail: "skipped: status " + s.Status + " (os-stop refused with 409 while Nova was busy with it)"})
				delete(pending, s.ID)
			}
		}
		for id, v := range pending {
			if !seen[id] && !w.inFlight(id) {
				results = append(results, store.ActionResult{ID: v.actionID, State: store.ActionSucceeded, Detail: "server no longer listed (deleted)"})
				delete(pending, id)
			}
		}
		if len(results) > 0 {
			if err := e.jr.Finish(results...); err != nil {
				e.log.Error("finish vm actions", "err", err)
			}
		}
		e.progress("Stopping OpenStack VMs (%d/%d off)", total-len(pending), total)
	}
	w.close()
	e.applyStopResults(w.drain(), pending)
	if len(pending) > 0 {
		var results []store.ActionResult
		for _, v := range pending {
			msg := v.err
			if msg == "" {
				msg = fmt.Sprintf("not SHUTOFF after %s", cfg.StopTimeout)
			}
			if e.cancelled.Load() {
				detail := "not sent: job cancelled"
				if v.sent > 0 {
					detail = "os-stop sent; SHUTOFF not awaited: job cancelled"
				}
				results = append(results, store.ActionResult{ID: v.actionID, State: store.ActionSkipped, Detail: detail})
				continue
			}
			results = append(results, store.ActionResult{ID: v.actionID, State: store.ActionFailed, Error: msg})
		}
		if err := e.jr.Finish(results...); err != nil {
			e.log.Error("finish vm actions", "err", err)
		}
		if !e.cancelled.Load() {
			e.event(store.LevelError, fmt.Sprintf("%d VMs not stopped at the timeout; continuing, the hosts going down stops them", len(pending)))
		}
	}
	state, detail, err := e.vmStepResult(step, plan)
	if listErr != nil && state == store.StepSucceeded {
		// The servers past the failed page were never seen, let alone
		// stopped; the hosts going down stops them.
		return store.StepFailed, detail, listErr
	}
	if recordErr != nil && state == store.StepSucceeded {
		return store.StepFailed, detail, fmt.Errorf("record vm actions: %w", recordErr)
	}
	return state, detail, err
}

// closeUnlisted finishes the os-stop rows a run before a restart left open
// for servers the complete listing no longer shows: deleted while the
// service was down, they are off. Without this their rows would stay
// running in a finished job.
func (e *exec) closeUnlisted(prior []store.Action, seen map[string]bool) {
	var results []store.ActionResult
	for _, a := range prior {
		if a.TargetKind == store.TargetVM && !a.State.Final() && !seen[a.TargetID] {
			results = append(results, store.ActionResult{ID: a.ID, State: store.ActionSucceeded, Detail: "server no longer listed (deleted)"})
		}
	}
	if len(results) == 0 {
		return
	}
	if err := e.jr.Finish(results...); err != nil {
		e.log.Error("finish unlisted vm actions", "err", err)
	}
}

func (e *exec) vmStepResult(step store.Step, plan vmPlan) (store.StepState, string, error) {
	actions, err := e.jr.StepActions(e.db(), step.ID)
	if err != nil {
		return store.StepFailed, "", fmt.Errorf("read actions: %w", err)
	}
	var ok, failed, skipped int
	for _, a := range actions {
		switch a.State {
		case store.ActionSucceeded:
			ok++
		case store.ActionFailed:
			failed++
		case store.ActionSkipped:
			skipped++
		}
	}
	detail := fmt.Sprintf("%d off, %d failed, %d skipped of %d servers", ok, failed, skipped, plan.total)
	if e.cancelled.Load() {
		return store.StepCancelled, detail, errCancelled
	}
	if failed > 0 {
		return store.StepFailed, detail, fmt.Errorf("%d VMs not stopped", failed)
	}
	return store.StepSucceeded, detail, nil
}

// stopBatch is one batch of VM actions recorded as running.
type stopBatch struct {
	servers []openstack.Server
	actions []store.Action
	err     error
}

// vmRecorder classifies the listed servers page by page and records the
// os-stop actions of those to stop in batches: the first one the size of the
// send concurrency, then doubling up to 500 rows, each taking what the
// listing has delivered so far, so that a small first page is stopped before
// the rest is listed. The other servers' rows (already SHUTOFF, skipped,
// excluded) are collected in recs for one write after the stops are out.
// plan and recs belong to the recorder's goroutine until the batch channel
// is closed.
type vmRecorder struct {
	e        *exec
	step     store.Step
	done     map[string]bool // by server ID: final actions from before a restart
	existing map[string]bool // by server ID: any action from before a restart
	seen     map[string]bool

	plan           vmPlan
	recs           []store.ActionRecord
	stoppedListing atomic.Bool
	// firstDone is closed once the first batch is recorded, or the first
	// pages had nothing to stop, or the recorder ended.
	firstDone chan struct{}
	firstOnce sync.Once
}

// add classifies one page and appends the servers to stop to queue.
func (r *vmRecorder) add(page []openstack.Server, queue []openstack.Server) []openstack.Server {
	e, step := r.e, r.step
	for _, s := range page {
		if r.seen[s.ID] {
			continue // never two actions, let alone two stops, for one server
		}
		r.seen[s.ID] = true
		r.plan.total++
		r.plan.byStatus[s.Status]++
		done := r.done[s.ID]
		switch {
		case e.excluded(s):
			r.plan.excluded = append(r.plan.excluded, s)
			if !done {
				r.recs = append(r.recs, store.ActionRecord{Key: vmKey(e, step, s), State: store.ActionSkipped, Detail: "excluded by configuration"})
			}
		case s.Status == novaShutoff:
			// An action still running from before a restart is completed;
			// otherwise the VM was off before we came.
			r.plan.off = append(r.plan.off, s)
			if !done {
				detail := "already SHUTOFF"
				if r.existing[s.ID] {
					detail = "SHUTOFF (confirmed after restart)"
				}
				r.recs = append(r.recs, store.ActionRecord{Key: vmKey(e, step, s), State: store.ActionSucceeded, Detail: detail})
			}
		case s.Status == novaActive || s.Status == novaError:
			r.plan.stop = append(r.plan.stop, s)
			if !done {
				queue = append(queue, s)
			}
		default:
			r.plan.skipped = append(r.plan.skipped, s)
			if !done {
				r.recs = append(r.recs, store.ActionRecord{Key: vmKey(e, step, s), State: store.ActionSkipped, Detail: "skipped: status " + s.Status})
			}
		}
	}
	return queue
}

// run records batches from the pages until the listing ends, the job stops
// (cancel, preemption) or a write fails, and delivers each batch once it is
// committed. It ends the listing itself (stopListing) when it stops early.
// The caller must read the channel to its end.
func (r *vmRecorder) run(pages <-chan []openstack.Server, first int, stopListing func()) <-chan stopBatch {
	out := make(chan stopBatch, 16)
	stop := func() {
		r.stoppedListing.Store(true)
		stopListing()
	}
	firstDone := func() { r.firstOnce.Do(func() { close(r.firstDone) }) }
	go func() {
		defer close(out)
		defer firstDone()
		var queue []openstack.Server
		size := max(first, 1)
		in := pages
		for {
			if len(queue) == 0 {
				if in == nil {
					return
				}
				p, ok := <-in
				if !ok {
					return
				}
				queue = r.add(p, queue)
			}
			// Whatever else has arrived goes into this batch's choice too.
			for drained := false; !drained; {
				select {
				case p, ok := <-in:
					if !ok {
						drained, in = true, nil
						break
					}
					queue = r.add(p, queue)
				default:
					drained = true
				}
			}
			if len(queue) == 0 {
				firstDone()
				continue
			}
			if r.e.stopping() {
				stop()
				return
			}
			n := min(size, len(queue))
			list := queue[:n:n]
			queue = queue[n:]
			keys := make([]store.ActionKey, len(list))
			for i, s := range list {
				keys[i] = vmKey(r.e, r.step, s)
			}
			actions, err := r.e.jr.BeginBatch(keys, "sending os-stop")
			out <- stopBatch{servers: list, actions: actions, err: err}
			firstDone()
			if err != nil {
				stop()
				return
			}
			size = min(size*2, 500)
		}
	}()
	return out
}

// vmState tracks one server being stopped.
type vmState struct {
	server   openstack.Server
	actionID int64
	sent     int
	conflict bool
	err      string
}

type stopResult struct {
	id  string
	err error
}

func (e *exec) applyStopResults(rs []stopResult, pending map[string]*vmState) {
	var results []store.ActionResult
	for _, r := range rs {
		v, ok := pending[r.id]
		if !ok {
			continue
		}
		v.sent++
		switch {
		case r.err == nil:
			v.err = ""
		case errors.Is(r.err, openstack.ErrConflict):
			// Nova is busy with the server (already powering off, or
			// another task): re-read it at the next poll instead of failing.
			v.conflict = true
		case errors.Is(r.err, openstack.ErrNotFound):
			results = append(results, store.ActionResult{ID: v.actionID, State: store.ActionSucceeded, Detail: "server deleted before stop"})
			delete(pending, r.id)
		case errors.Is(r.err, context.Canceled):
		default:
			// Retries are exhausted; keep polling, the VM may still stop,
			// and fail it at the timeout with this reason.
			v.err = r.err.Error()
			e.event(store.LevelWarn, fmt.Sprintf("os-stop %s failed after retries", v.server.Name), r.err.Error())
		}
	}
	if len(results) > 0 {
		if err := e.jr.Finish(results...); err != nil {
			e.log.Error("finish vm actions", "err", err)
		}
	}
}

// stopper sends os-stop with bounded concurrency and collects the results
// for the poll loop, which owns all the per-VM state.
type stopper struct {
	e     *exec
	cloud Cloud
	sem   chan struct{}
	wg    sync.WaitGroup

	mu      sync.Mutex
	results []stopResult
	flying  map[string]bool
}

func newStopper(e *exec, c Cloud, n int) *stopper {
	if n < 1 {
		n = 1
	}
	return &stopper{e: e, cloud: c, sem: make(chan struct{}, n), flying: map[string]bool{}}
}

// send queues one os-stop. It blocks while all workers are busy, which keeps
// the order of sends the order of the list.
func (w *stopper) send(id string) {
	select {
	case w.sem <- struct{}{}:
	case <-w.e.ctx.Done():
		return
	}
	w.mu.Lock()
	w.flying[id] = true
	w.mu.Unlock()
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		err := w.cloud.Stop(w.e.ctx, id)
		<-w.sem
		w.mu.Lock()
		delete(w.flying, id)
		w.results = append(w.results, stopResult{id: id, err: err})
		w.mu.Unlock()
	}()
}

func (w *stopper) inFlight(id string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.flying[id]
}

func (w *stopper) drain() []stopResult {
	w.mu.Lock()
	defer w.mu.Unlock()
	rs := w.results
	w.results = nil
	return rs
}

func (w *stopper) wait()  { w.wg.Wait() }
func (w *stopper) close() { w.wg.Wait() }
