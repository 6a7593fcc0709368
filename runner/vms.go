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
	p := vmPlan{byStatus: map[string]int{}}
	for _, s := range servers {
		p.add(s, bucketOf(s.Status, e.excluded(s)))
	}
	return p
}

// vmBucket is what a shutdown does with a listed server.
type vmBucket int

const (
	vmExcluded vmBucket = iota // left alone: the configuration says so
	vmOff                      // SHUTOFF already: nothing to send
	vmToStop                   // ACTIVE or ERROR: sent os-stop
	vmSkipped                  // any other status (PAUSED, SUSPENDED, BUILD, ...): left alone
)

// bucketOf sorts a listed server by its Nova status; excluded wins.
func bucketOf(status string, excluded bool) vmBucket {
	switch {
	case excluded:
		return vmExcluded
	case status == novaShutoff:
		return vmOff
	case status == novaActive || status == novaError:
		return vmToStop
	}
	return vmSkipped
}

// listedRecord is the final record of a listed server that is not
// stopped (every bucket but vmToStop): before says a run before a restart
// recorded an action for it, so a SHUTOFF server was stopped by us.
func listedRecord(b vmBucket, status string, before bool) (store.ActionState, string) {
	switch b {
	case vmExcluded:
		return store.ActionSkipped, "excluded by configuration"
	case vmOff:
		if before {
			return store.ActionSucceeded, "SHUTOFF (confirmed after restart)"
		}
		return store.ActionSucceeded, "already SHUTOFF"
	}
	return store.ActionSkipped, "skipped: status " + status
}

// add counts s in the plan, in bucket b.
func (p *vmPlan) add(s openstack.Server, b vmBucket) {
	p.total++
	p.byStatus[s.Status]++
	switch b {
	case vmExcluded:
		p.excluded = append(p.excluded, s)
	case vmOff:
		p.off = append(p.off, s)
	case vmToStop:
		p.stop = append(p.stop, s)
	default:
		p.skipped = append(p.skipped, s)
	}
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
// found it while the first page is listed (see vmStop.announce).
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

// remember notes the VM actions a run before a restart recorded: only
// their servers were stopped by us, and those with a final action are not
// acted on again.
func (r *vmRecorder) remember(prior []store.Action) {
	for _, a := range prior {
		if a.TargetKind != store.TargetVM {
			continue
		}
		r.existing[a.TargetID] = true
		if a.State.Final() {
			r.done[a.TargetID] = true
		}
	}
}

// add classifies one page and appends the servers to stop to queue.
func (r *vmRecorder) add(page []openstack.Server, queue []openstack.Server) []openstack.Server {
	for _, s := range page {
		if r.seen[s.ID] {
			continue // never two actions, let alone two stops, for one server
		}
		r.seen[s.ID] = true
		b := bucketOf(s.Status, r.e.excluded(s))
		r.plan.add(s, b)
		switch {
		case r.done[s.ID]:
			// Final before a restart: nothing to send or record.
		case b == vmToStop:
			queue = append(queue, s)
		default:
			st, detail := listedRecord(b, s.Status, r.existing[s.ID])
			r.recs = append(r.recs, store.ActionRecord{Key: vmKey(r.e, r.step, s), State: st, Detail: detail})
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
			queue, in = r.drain(in, queue)
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

// drain adds the pages that have arrived on in without waiting; in is
// nil once the listing has ended.
func (r *vmRecorder) drain(in <-chan []openstack.Server, queue []openstack.Server) ([]openstack.Server, <-chan []openstack.Server) {
	for {
		select {
		case p, ok := <-in:
			if !ok {
				return queue, nil
			}
			queue = r.add(p, queue)
		default:
			return queue, in
		}
	}
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
