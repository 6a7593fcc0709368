package runner

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/runner/openstack"
	"github.com/edgeops/shutdownd/store"
)

// vmStop is one run of a shutdown's OpenStack step, a pipeline of phases:
//
//   - list: the servers are listed page by page on their own goroutine
//     (listPageSizes), so the first os-stops leave before the listing ends;
//   - record: the vmRecorder sorts each page and records the os-stop
//     actions in growing batches, each on disk before its stops are sent;
//   - send: the stopper sends os-stop with bounded concurrency;
//   - settleListing: the rows of the servers not stopped are written, and
//     the listing's end is judged (complete, failed, cut short);
//   - poll: one list request per poll for all servers (never one GET per
//     VM) until each is SHUTOFF, the timeout passes or the job is cancelled;
//   - settle: what is still pending is recorded as failed or skipped.
//
// The poll goroutine (the caller's) owns pending and every per-VM
// decision; the recorder and the stopper hand it their results. It is
// idempotent: after a restart it re-lists, leaves alone what is already
// SHUTOFF and stops what is still on.
type vmStop struct {
	e     *exec
	step  store.Step
	cfg   config.OpenStack
	cloud Cloud

	rec     *vmRecorder
	w       *stopper
	pending map[string]*vmState // by server ID: recorded, not yet final

	listErr   error // the listing failed (not when this step ended it)
	recordErr error // a batch of os-stop actions could not be recorded

	// firstOut is closed once the first batch is recorded; progressed once
	// the step's first progress text is written (see announce).
	firstOut, progressed chan struct{}
	firstOnce            sync.Once
}

func newVMStop(e *exec, step store.Step, cloud Cloud) *vmStop {
	s := &vmStop{e: e, step: step, cfg: e.r.cfg.OpenStack, cloud: cloud, pending: map[string]*vmState{},
		firstOut: make(chan struct{}), progressed: make(chan struct{})}
	s.rec = &vmRecorder{e: e, step: step, done: map[string]bool{}, existing: map[string]bool{}, seen: map[string]bool{},
		firstDone: make(chan struct{})}
	s.rec.plan.byStatus = map[string]int{}
	s.w = newStopper(e, cloud, s.cfg.Concurrency)
	return s
}

// openstackStop stops every ACTIVE and ERROR server and waits for SHUTOFF
// (see vmStop).
func (e *exec) openstackStop(step store.Step) (store.StepState, string, error) {
	cloud, warm, release, err := e.cloudForStop()
	if err != nil {
		return store.StepFailed, "", err
	}
	defer release()
	return newVMStop(e, step, cloud).run(warm)
}

// run runs the phases in order. warm says the client was ready before the
// step began (see announce).
func (s *vmStop) run(warm bool) (store.StepState, string, error) {
	e := s.e
	lctx, stopListing := context.WithCancel(e.ctx)
	defer stopListing()
	pages, listed := s.list(lctx)
	s.announce(warm)
	// Nothing of this step may write current_step after it returned.
	defer s.announced()

	// Read while the first page is in flight.
	prior, err := e.jr.StepActions(e.db(), s.step.ID)
	if err != nil {
		stopListing()
		<-listed
		return store.StepFailed, "", fmt.Errorf("read actions: %w", err)
	}
	s.rec.remember(prior)
	s.record(pages, stopListing)
	if s.listErr = <-listed; s.rec.stoppedListing.Load() {
		s.listErr = nil // we ended it: cancel or a failed write
	}
	if out := s.settleListing(prior); out != nil {
		return out.state, out.detail, out.err
	}
	if s.poll() {
		s.w.wait()
		s.e.applyStopResults(s.w.drain(), s.pending)
		return store.StepCancelled, "", e.ctx.Err()
	}
	s.settle()
	return s.result()
}

// stepOutcome is how a step ends: its state, detail and error.
type stepOutcome struct {
	state  store.StepState
	detail string
	err    error
}

// list runs the listing on its own goroutine and hands over each page on
// pages (closed at the end); listed then carries its error.
func (s *vmStop) list(ctx context.Context) (pages <-chan []openstack.Server, listed <-chan error) {
	out := make(chan []openstack.Server, 16)
	done := make(chan error, 1)
	go func() {
		defer close(out)
		n := 0
		done <- s.cloud.ListServerPages(ctx, listPageSizes, func(p []openstack.Server) error {
			select {
			case out <- p:
			case <-ctx.Done():
				return ctx.Err()
			}
			if n++; n == 1 {
				// The next page waits for the first os-stops to be
				// recorded: rendering and decoding it would take the CPU
				// they need, and the first page keeps the senders busy
				// while it is listed.
				select {
				case <-s.rec.firstDone:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		})
	}()
	return out, done
}

// announce writes the step's first progress text. With the client ready
// (warm) there is nothing to say before the listing, and the text waits for
// the first batch of actions (at most firstProgressWait): both are commits
// on the store's one writer connection, and a slow disk would otherwise
// hold the first os-stops back behind this one's fsync. A step that logged
// in has said so already (cloudForStop).
func (s *vmStop) announce(warm bool) {
	if !warm {
		close(s.progressed)
		return
	}
	go func() {
		defer close(s.progressed)
		t := time.NewTimer(firstProgressWait)
		defer t.Stop()
		select {
		case <-s.firstOut:
		case <-t.C:
		}
		s.e.progress("Stopping OpenStack VMs: listing servers, sending os-stop")
	}()
}

// markFirst lets announce go ahead.
func (s *vmStop) markFirst() { s.firstOnce.Do(func() { close(s.firstOut) }) }

// announced returns once announce has written its text.
func (s *vmStop) announced() {
	s.markFirst()
	<-s.progressed
}

// record takes the recorder's batches as they are committed and sends
// their os-stops. The recorder runs ahead of the sends: the first os-stop
// leaves after one small transaction, and later batches are written while
// earlier stops are in flight. Every VM's action is on disk before its
// os-stop is sent.
func (s *vmStop) record(pages <-chan []openstack.Server, stopListing func()) {
	for b := range s.rec.run(pages, s.cfg.Concurrency, stopListing) {
		s.markFirst()
		if b.err != nil {
			s.recordErr = b.err
			continue
		}
		for i, srv := range b.servers {
			s.pending[srv.ID] = &vmState{server: srv, actionID: b.actions[i].ID}
		}
		for _, srv := range b.servers {
			if s.e.stopping() {
				break
			}
			if srv.TaskState == "powering-off" {
				// Already stopping (our os-stop from before a restart): a
				// second one could reach Nova after the VM is SHUTOFF. Wait;
				// if it comes back idle and still on, the poll asks again.
				s.pending[srv.ID].conflict = true
				continue
			}
			s.w.send(srv.ID)
		}
	}
}

// settleListing writes the rows of the servers that are not stopped and
// judges the listing's end. It returns the step's outcome when the step
// ends here: cancelled, or failed with no stop out to wait for.
func (s *vmStop) settleListing(prior []store.Action) *stepOutcome {
	e := s.e
	// Written after the os-stops are out: nothing waits on these rows, and
	// the stops should not wait on them.
	if len(s.rec.recs) > 0 {
		if err := e.jr.Record(s.rec.recs); err != nil {
			e.log.Error("record vm actions", "count", len(s.rec.recs), "err", err)
		}
	}
	if e.ctx.Err() != nil {
		// Preempted or the service is stopping, maybe mid-listing: what
		// was sent is recorded; a shutdown resumes the step after restart.
		s.w.wait()
		e.applyStopResults(s.w.drain(), s.pending)
		return &stepOutcome{store.StepCancelled, "", e.ctx.Err()}
	}
	if s.recordErr != nil && len(s.pending) == 0 {
		s.w.close()
		return &stepOutcome{store.StepFailed, "", fmt.Errorf("record vm actions: %w", s.recordErr)}
	}
	// With some stops out after a failed write, they are polled and the
	// step fails at the end (result).
	stopped := s.rec.stoppedListing.Load()
	switch {
	case s.listErr != nil && len(s.pending) == 0:
		s.w.close()
		return &stepOutcome{store.StepFailed, "", s.listErr}
	case s.listErr != nil:
		e.event(store.LevelError, fmt.Sprintf("listing servers failed after %d servers; waiting for the %d stops already sent",
			s.rec.plan.total, len(s.pending)), s.listErr.Error())
	case !stopped:
		e.closeUnlisted(prior, s.rec.seen)
		e.event(store.LevelInfo, "listed servers", s.rec.plan.summary())
	}
	s.announced()
	s.progress()
	return nil
}

// progress says how many of the servers to stop are off.
func (s *vmStop) progress() {
	total := len(s.rec.plan.stop) + len(s.rec.plan.off)
	s.e.progress("Stopping OpenStack VMs (%d/%d off)", total-len(s.pending), total)
}

// poll lists the servers every poll interval until none is pending, the
// stop timeout passes or a cancel is requested (at a safe point: no new
// os-stop; what was sent stays sent). It reports whether the job's context
// ended (preempted, or the service stopping) instead.
func (s *vmStop) poll() (interrupted bool) {
	e := s.e
	deadline := time.Now().Add(s.cfg.StopTimeout)
	tick := time.NewTicker(s.cfg.PollInterval)
	defer tick.Stop()
	for len(s.pending) > 0 {
		// Write what the stop workers learned since the last round.
		e.applyStopResults(s.w.drain(), s.pending)
		switch {
		case len(s.pending) == 0:
			return false
		case e.ctx.Err() != nil:
			return true
		case e.cancelled.Load(), time.Now().After(deadline):
			return false
		}
		select {
		case <-e.ctx.Done():
			continue
		case <-tick.C:
		}
		servers, err := s.cloud.ListServers(e.ctx)
		if err != nil {
			if e.ctx.Err() == nil {
				e.event(store.LevelWarn, "polling servers failed; will retry", err.Error())
			}
			continue
		}
		s.pollRound(servers)
		s.progress()
	}
	return false
}

// pollRound applies one listing to the pending servers (pollDecision) and
// records those it settles.
func (s *vmStop) pollRound(servers []openstack.Server) {
	var results []store.ActionResult
	seen := make(map[string]bool, len(servers))
	for _, srv := range servers {
		seen[srv.ID] = true
		v, ok := s.pending[srv.ID]
		if !ok {
			continue
		}
		switch pollDecision(srv, v.conflict, s.w.inFlight(srv.ID), s.e.stopping()) {
		case pollOff:
			results = append(results, store.ActionResult{ID: v.actionID, State: store.ActionSucceeded, Detail: "SHUTOFF"})
			delete(s.pending, srv.ID)
		case pollResend:
			v.conflict = false
			s.w.send(srv.ID)
		case pollSkipped:
			results = append(results, store.ActionResult{ID: v.actionID, State: store.ActionSkipped,
				Detail: "skipped: status " + srv.Status + " (os-stop refused with 409 while Nova was busy with it)"})
			delete(s.pending, srv.ID)
		}
	}
	for id, v := range s.pending {
		if !seen[id] && !s.w.inFlight(id) {
			results = append(results, store.ActionResult{ID: v.actionID, State: store.ActionSucceeded, Detail: "server no longer listed (deleted)"})
			delete(s.pending, id)
		}
	}
	s.e.finishVMActions(results)
}

// pollVerdict is what one poll's listing means for a pending server.
type pollVerdict int

const (
	pollWait    pollVerdict = iota // not off yet, or Nova or our os-stop is busy with it
	pollOff                        // SHUTOFF: the stop succeeded
	pollResend                     // refused while Nova was busy, now idle and on: ask again
	pollSkipped                    // refused while Nova was busy, which left it PAUSED, SUSPENDED, ...
)

// pollDecision is the verdict for a pending server as listed: conflict
// says its os-stop was refused with 409 (Nova busy with it), inFlight that
// our os-stop is out, stopping that the job takes no new os-stop. An
// os-stop that ran out of retries (about 36 s of them) is not sent again:
// the VM fails at the timeout and the hosts going down stop it.
func pollDecision(srv openstack.Server, conflict, inFlight, stopping bool) pollVerdict {
	on := srv.Status == novaActive || srv.Status == novaError
	switch {
	case srv.Status == novaShutoff:
		return pollOff
	case srv.TaskState != "" || inFlight:
		return pollWait
	case conflict && on && !stopping:
		return pollResend
	case conflict && !on:
		return pollSkipped
	}
	return pollWait
}

// settle waits for the os-stops still out and records every server still
// pending: failed at the timeout, or skipped when the job was cancelled.
func (s *vmStop) settle() {
	e := s.e
	s.w.close()
	e.applyStopResults(s.w.drain(), s.pending)
	if len(s.pending) == 0 {
		return
	}
	cancelled := e.cancelled.Load()
	results := make([]store.ActionResult, 0, len(s.pending))
	for _, v := range s.pending {
		results = append(results, unfinished(v, cancelled, s.cfg.StopTimeout))
	}
	e.finishVMActions(results)
	if !cancelled {
		e.event(store.LevelError, fmt.Sprintf("%d VMs not stopped at the timeout; continuing, the hosts going down stops them", len(s.pending)))
	}
}

// unfinished is the record of a server still pending when the step ends:
// skipped, saying whether its os-stop went out, when the job was
// cancelled; failed otherwise, with the os-stop's last error or the
// timeout.
func unfinished(v *vmState, cancelled bool, timeout time.Duration) store.ActionResult {
	if cancelled {
		detail := "not sent: job cancelled"
		if v.sent > 0 {
			detail = "os-stop sent; SHUTOFF not awaited: job cancelled"
		}
		return store.ActionResult{ID: v.actionID, State: store.ActionSkipped, Detail: detail}
	}
	msg := v.err
	if msg == "" {
		msg = fmt.Sprintf("not SHUTOFF after %s", timeout)
	}
	return store.ActionResult{ID: v.actionID, State: store.ActionFailed, Error: msg}
}

// result is the step's outcome from its actions in the store, failed too
// when the listing or a write failed with all that was listed stopped.
func (s *vmStop) result() (store.StepState, string, error) {
	state, detail, err := s.e.vmStepResult(s.step, s.rec.plan)
	switch {
	case state != store.StepSucceeded:
	case s.listErr != nil:
		// The servers past the failed page were never seen, let alone
		// stopped; the hosts going down stops them.
		return store.StepFailed, detail, s.listErr
	case s.recordErr != nil:
		return store.StepFailed, detail, fmt.Errorf("record vm actions: %w", s.recordErr)
	}
	return state, detail, err
}

// finishVMActions records the outcomes of VM actions; a write the store
// refuses is logged (the journal holds it).
func (e *exec) finishVMActions(results []store.ActionResult) {
	if len(results) == 0 {
		return
	}
	if err := e.jr.Finish(results...); err != nil {
		e.log.Error("finish vm actions", "err", err)
	}
}
