package runner

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/edgeops/shutdownd/runner/openstack"
	"github.com/edgeops/shutdownd/store"
)

// Nova statuses the runner acts on.
const (
	novaActive  = "ACTIVE"
	novaError   = "ERROR"
	novaShutoff = "SHUTOFF"
)

// openCloudFor authenticates, recording retries as events so an operator can
// see a flaky Nova in the job's log.
func (e *exec) openCloudFor() (Cloud, error) {
	return e.r.deps.OpenCloud(e.ctx, e.r.cfg.OpenStack, func(op string, attempt int, err error) {
		e.event("warn", fmt.Sprintf("openstack %s: retry %d", op, attempt), err.Error())
	})
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
	if e.r.cfg.OpenStack.Cloud == "" {
		return store.StepSkipped, "no OpenStack cloud configured", nil
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
	key := store.ActionKey{JobID: e.job.ID, StepID: step.ID, TargetKind: "openstack", Target: e.r.cfg.OpenStack.Cloud, Operation: "check-list-servers"}
	a, err := e.r.store.BeginAction(e.db(), key, "")
	if err != nil {
		return store.StepFailed, "", fmt.Errorf("record action: %w", err)
	}
	cloud, err := e.openCloudFor()
	var servers []openstack.Server
	if err == nil {
		servers, err = cloud.ListServers(e.ctx)
	}
	if err != nil {
		e.fail("openstack: %v", err)
		e.finishAction(a.ID, store.ActionFailed, "", err.Error())
		return store.StepFailed, "", err
	}
	plan := e.classify(servers)
	detail := plan.summary()
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
	if err := e.r.store.FinishAction(e.db(), id, state, detail, errMsg); err != nil {
		e.log.Error("finish action", "action_id", id, "err", err)
	}
}

func vmKey(e *exec, step store.Step, s openstack.Server) store.ActionKey {
	return store.ActionKey{JobID: e.job.ID, StepID: step.ID, TargetKind: "vm", Target: s.Name, TargetID: s.ID, Operation: "os-stop"}
}

// openstackStop stops every ACTIVE and ERROR server and waits for SHUTOFF by
// polling the server list (one request per poll for all servers, never one
// GET per VM). It is idempotent: after a restart it re-lists, leaves alone
// what is already SHUTOFF and stops what is still on.
func (e *exec) openstackStop(step store.Step) (store.StepState, string, error) {
	cfg := e.r.cfg.OpenStack
	e.progress("Stopping OpenStack VMs: authenticating")
	cloud, err := e.openCloudFor()
	if err != nil {
		e.fail("openstack: %v", err)
		return store.StepFailed, "", err
	}
	e.progress("Stopping OpenStack VMs: listing servers")
	servers, err := cloud.ListServers(e.ctx)
	if err != nil {
		e.fail("openstack: %v", err)
		return store.StepFailed, "", err
	}
	plan := e.classify(servers)
	e.event("info", "listed servers", plan.summary())

	prior, err := e.r.store.StepActions(e.db(), step.ID)
	if err != nil {
		return store.StepFailed, "", fmt.Errorf("read actions: %w", err)
	}
	done := map[string]store.Action{} // by server ID: actions already final
	for _, a := range prior {
		if a.TargetKind == "vm" && actionFinal(a.State) {
			done[a.TargetID] = a
		}
	}

	// Record the servers nothing will be sent to, in one transaction with
	// the already-SHUTOFF ones below (one commit, not one per VM).
	var recs []store.ActionRecord
	record := func(list []openstack.Server, state store.ActionState, why func(openstack.Server) string) {
		for _, s := range list {
			if _, ok := done[s.ID]; ok {
				continue
			}
			recs = append(recs, store.ActionRecord{Key: vmKey(e, step, s), State: state, Detail: why(s)})
		}
	}
	record(plan.excluded, store.ActionSkipped, func(openstack.Server) string { return "excluded by configuration" })
	record(plan.skipped, store.ActionSkipped, func(s openstack.Server) string { return "skipped: status " + s.Status })

	// Servers already SHUTOFF: an action still running from before a
	// restart is completed; otherwise the VM was off before we came.
	var offNew []openstack.Server
	for _, s := range plan.off {
		if _, ok := done[s.ID]; ok {
			continue
		}
		offNew = append(offNew, s)
	}
	if len(offNew) > 0 {
		// Only rows that exist from a previous run were stopped by us.
		existing := map[string]bool{}
		for _, a := range prior {
			if a.TargetKind == "vm" {
				existing[a.TargetID] = true
			}
		}
		for _, s := range offNew {
			detail := "already SHUTOFF"
			if existing[s.ID] {
				detail = "SHUTOFF (confirmed after restart)"
			}
			recs = append(recs, store.ActionRecord{Key: vmKey(e, step, s), State: store.ActionSucceeded, Detail: detail})
		}
	}
	// Written after the os-stops are out (or now, if there are none):
	// nothing waits on these rows, and the first stop should not wait on them.
	recordRest := func() {
		if len(recs) == 0 {
			return
		}
		if _, err := e.r.store.RecordActions(e.db(), recs); err != nil {
			e.log.Error("record vm actions", "count", len(recs), "err", err)
		}
	}

	var toStop []openstack.Server
	for _, s := range plan.stop {
		if _, ok := done[s.ID]; !ok {
			toStop = append(toStop, s)
		}
	}
	total := len(plan.stop) + len(plan.off)
	offCount := total - len(toStop)
	e.progress("Stopping OpenStack VMs (%d/%d off)", offCount, total)
	if len(toStop) == 0 {
		recordRest()
		return e.vmStepResult(step, plan)
	}

	// The actions are recorded in batches by a goroutine running ahead of
	// the sends: the first os-stop leaves after one small transaction
	// instead of one covering every VM (half a second at 2,000 VMs), and
	// later batches are written while earlier stops are in flight. Every
	// VM's action is still on disk before its os-stop is sent.
	pending := make(map[string]*vmState, len(toStop))
	w := newStopper(e, cloud, cfg.Concurrency)
	for b := range e.recordStops(step, toStop, cfg.Concurrency) {
		if b.err != nil {
			if len(pending) == 0 {
				recordRest()
				return store.StepFailed, "", fmt.Errorf("record vm actions: %w", b.err)
			}
			// Some stops are out: keep polling those, fail the job.
			e.fail("record vm actions: %v", b.err)
			break
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
	recordRest()

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
				e.event("warn", "polling servers failed; will retry", err.Error())
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
			case v.conflict && s.TaskState == "" && (s.Status == novaActive || s.Status == novaError) && !e.stopping():
				// A 409 came while Nova was busy with the server; now it is
				// idle and still on, so ask again.
				v.conflict = false
				w.send(s.ID)
			}
		}
		for id, v := range pending {
			if !seen[id] && !w.inFlight(id) {
				results = append(results, store.ActionResult{ID: v.actionID, State: store.ActionSucceeded, Detail: "server no longer listed (deleted)"})
				delete(pending, id)
			}
		}
		if len(results) > 0 {
			if err := e.r.store.FinishActions(e.db(), results); err != nil {
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
			e.fail("vm %s (%s): %s", v.server.Name, v.server.ID, msg)
		}
		if err := e.r.store.FinishActions(e.db(), results); err != nil {
			e.log.Error("finish vm actions", "err", err)
		}
		if !e.cancelled.Load() {
			e.event("error", fmt.Sprintf("%d VMs not stopped at the timeout; continuing, the hosts going down stops them", len(pending)))
		}
	}
	return e.vmStepResult(step, plan)
}

func (e *exec) vmStepResult(step store.Step, plan vmPlan) (store.StepState, string, error) {
	actions, err := e.r.store.StepActions(e.db(), step.ID)
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

// recordStops records the os-stop actions of servers in batches, the first
// one the size of the send concurrency, then doubling up to 500 rows, and
// delivers each batch once it is committed. The channel holds every batch,
// so the goroutine never blocks on a reader that stopped early; it ends
// after the first error.
func (e *exec) recordStops(step store.Step, servers []openstack.Server, first int) <-chan stopBatch {
	var batches [][]openstack.Server
	for size := max(first, 1); len(servers) > 0; size = min(size*2, 500) {
		n := min(size, len(servers))
		batches = append(batches, servers[:n])
		servers = servers[n:]
	}
	ch := make(chan stopBatch, len(batches))
	go func() {
		defer close(ch)
		for _, list := range batches {
			keys := make([]store.ActionKey, len(list))
			for i, s := range list {
				keys[i] = vmKey(e, step, s)
			}
			actions, err := e.r.store.BeginActions(e.db(), keys, "sending os-stop")
			ch <- stopBatch{servers: list, actions: actions, err: err}
			if err != nil {
				return
			}
		}
	}()
	return ch
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
			e.event("warn", fmt.Sprintf("os-stop %s failed after retries", v.server.Name), r.err.Error())
		}
	}
	if len(results) > 0 {
		if err := e.r.store.FinishActions(e.db(), results); err != nil {
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

func actionFinal(s store.ActionState) bool {
	return s == store.ActionSucceeded || s == store.ActionFailed || s == store.ActionSkipped
}
