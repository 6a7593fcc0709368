package runner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/edgeops/shutdownd/runner/openstack"
	"github.com/edgeops/shutdownd/store"
)

// startVMsStep starts exactly the VMs the restored shutdown stopped: its
// os-stop recorded as succeeded, and SHUTOFF now. VMs deleted since are
// skipped, VMs already ACTIVE are done, excluded VMs are left alone, and
// VMs that were off before the shutdown were never stopped by it, so they
// stay off. It first waits, bounded by timeouts.host_boot, until Keystone
// and Nova answer and every nova-compute service is up.
func (e *exec) startVMsStep(step store.Step) (store.StepState, string, error) {
	if !e.r.cfg.OpenStack.Enabled() {
		return store.StepSkipped, "no openstack section", nil
	}
	restored, err := e.r.store.RestoredShutdown(e.db(), e.job.ID)
	if err != nil {
		return store.StepFailed, "", fmt.Errorf("read the restored shutdown: %w", err)
	}
	want, err := e.r.store.StoppedVMs(e.db(), restored)
	if err != nil {
		return store.StepFailed, "", err
	}
	if len(want) == 0 {
		return store.StepSucceeded, fmt.Sprintf("shutdown job %d stopped no VMs", restored), nil
	}
	s := &vmStarter{e: e, step: step, want: want, pending: map[string]*startState{}}
	down, err := s.waitCloud()
	if s.release != nil {
		defer s.release()
	}
	if errors.Is(err, errCancelled) || e.ctx.Err() != nil {
		return store.StepCancelled, "", err
	}
	if err != nil {
		recs := make([]store.ActionRecord, len(want))
		for i, v := range want {
			msg := "not started: " + err.Error()
			recs[i] = store.ActionRecord{Key: store.ActionKey{JobID: e.job.ID, StepID: step.ID, TargetKind: "vm",
				Target: v.Name, TargetID: v.ID, Operation: opOSStart}, State: store.ActionFailed, Error: msg}
		}
		if rerr := e.jr.Record(recs); rerr != nil {
			e.log.Error("record vm actions", "err", rerr)
		}
		return store.StepFailed, "", err
	}
	s.down = down
	if err := s.plan(); err != nil {
		return store.StepFailed, "", err
	}
	s.sendAll()
	s.poll()
	return s.result(restored)
}

// vmStarter is one run of the startup's VM step.
type vmStarter struct {
	e       *exec
	step    store.Step
	want    []store.StoppedVM
	cloud   Cloud
	release func()
	// down are the compute hosts whose nova-compute is down, with why:
	// their VMs are not sent an os-start (it would wait there and start
	// whenever the host comes back, maybe by hand hours later).
	down map[string]string
	// pending are the VMs whose os-start is out (or to send), by id.
	pending map[string]*startState
	toSend  []string
	counts  struct{ started, already, skipped, failed int }
}

type startState struct {
	vm       store.StoppedVM
	actionID int64
	conflict bool   // a 409: re-read, send again once Nova is idle on it
	err      string // the last send error after retries
}

// waitCloud logs in and waits until every nova-compute service is up,
// except those of hosts the hosts step could not bring back, all within
// timeouts.host_boot. It returns the hosts whose service is still down.
func (s *vmStarter) waitCloud() (map[string]string, error) {
	e := s.e
	boot := e.r.cfg.Timeouts.HostBoot
	key := store.ActionKey{JobID: e.job.ID, StepID: s.step.ID, TargetKind: "openstack", Target: e.r.cfg.OpenStack.Name(), Operation: opComputeWait}
	a, err := e.jr.Begin(key, fmt.Sprintf("waiting up to %s for Keystone, Nova and every nova-compute", boot))
	if err != nil {
		return nil, fmt.Errorf("record action: %w", err)
	}
	notBack := e.hostsNotBack()
	start := time.Now()
	deadline := start.Add(boot)
	var lastErr error
	for {
		e.progress("Starting OpenStack VMs: waiting for Keystone, Nova and the compute services")
		down, err := s.computeDown(notBack)
		if err == nil && (onlyNotBack(down, notBack) || !time.Now().Before(deadline)) {
			detail := fmt.Sprintf("compute services up after %s", since(start))
			if len(down) > 0 {
				detail += "; down: " + hostList(down)
			}
			e.finishAction(a.ID, store.ActionSucceeded, detail, "")
			return down, nil
		}
		lastErr = err
		if e.stopping() {
			return nil, errCancelled
		}
		if !time.Now().Before(deadline) {
			break
		}
		select {
		case <-e.ctx.Done():
		case <-time.After(min(e.r.cfg.OpenStack.PollInterval, time.Until(deadline)+time.Millisecond)):
		}
	}
	msg := fmt.Sprintf("OpenStack not answering after %s: %v", boot, lastErr)
	e.finishAction(a.ID, store.ActionFailed, "", msg)
	return nil, errors.New(msg)
}

// computeDown logs in if needed and returns the compute hosts whose
// nova-compute is not up, with why.
func (s *vmStarter) computeDown(notBack map[string]string) (map[string]string, error) {
	if s.cloud == nil {
		c, release, err := s.e.openCloudFor()
		if err != nil {
			return nil, err
		}
		s.cloud, s.release = c, release
	}
	svcs, err := s.cloud.ComputeServices(s.e.ctx)
	if err != nil {
		return nil, err
	}
	down := map[string]string{}
	for _, sv := range svcs {
		if sv.State == serviceStateUp {
			continue
		}
		why := "nova-compute is " + sv.State
		if w, ok := notBack[serviceHost(sv.Host)]; ok {
			why += " (the host did not come back: " + w + ")"
		}
		down[sv.Host] = why
	}
	return down, nil
}

// plan lists the servers once and decides, for each VM the shutdown
// stopped, what this run does with it; every decision is recorded.
func (s *vmStarter) plan() error {
	e := s.e
	prior, err := e.jr.StepActions(e.db(), s.step.ID)
	if err != nil {
		return fmt.Errorf("read actions: %w", err)
	}
	final := map[string]bool{}
	for _, a := range prior {
		if a.Operation == opOSStart && a.State.Final() {
			final[a.TargetID] = true
		}
	}
	servers, err := s.cloud.ListServers(e.ctx)
	if err != nil {
		return fmt.Errorf("list servers: %w", err)
	}
	byID := make(map[string]openstack.Server, len(servers))
	for _, sv := range servers {
		byID[sv.ID] = sv
	}
	var recs []store.ActionRecord
	var begins []store.ActionKey
	var toBegin []store.StoppedVM
	for _, v := range s.want {
		if final[v.ID] {
			continue
		}
		key := store.ActionKey{JobID: e.job.ID, StepID: s.step.ID, TargetKind: "vm", Target: v.Name, TargetID: v.ID, Operation: opOSStart}
		sv, listed := byID[v.ID]
		state, detail := s.decide(v, sv, listed)
		if state == store.ActionFailed {
			recs = append(recs, store.ActionRecord{Key: key, State: state, Error: detail})
			continue
		}
		if state != "" {
			recs = append(recs, store.ActionRecord{Key: key, State: state, Detail: detail})
			continue
		}
		begins, toBegin = append(begins, key), append(toBegin, v)
		if sv.TaskState != novaPoweringOn {
			s.toSend = append(s.toSend, v.ID)
		}
	}
	if len(recs) > 0 {
		if err := e.jr.Record(recs); err != nil {
			e.log.Error("record vm actions", "err", err)
		}
	}
	if len(begins) == 0 {
		return nil
	}
	as, err := e.jr.BeginBatch(begins, "")
	if err != nil {
		return fmt.Errorf("record vm actions: %w", err)
	}
	for i, v := range toBegin {
		s.pending[v.ID] = &startState{vm: v, actionID: as[i].ID}
	}
	return nil
}

// decide returns the final state of a VM that needs no os-start, or ""
// when it is to be started (or waited for: powering-on already).
func (s *vmStarter) decide(v store.StoppedVM, sv openstack.Server, listed bool) (store.ActionState, string) {
	switch {
	case !listed:
		s.counts.skipped++
		return store.ActionSkipped, "deleted since the shutdown"
	case s.e.excluded(sv):
		s.counts.skipped++
		return store.ActionSkipped, "excluded by configuration: left alone"
	case sv.Status == novaActive && sv.TaskState == "":
		s.counts.already++
		return store.ActionSucceeded, "already ACTIVE"
	case sv.TaskState == novaPoweringOn:
		return "", "" // an os-start is out (ours, before a restart): wait, never send it again
	case sv.Status != novaShutoff:
		s.counts.skipped++
		return store.ActionSkipped, "status " + sv.Status + " (not SHUTOFF): left alone"
	}
	if why, ok := s.down[sv.Host]; ok {
		s.counts.failed++
		msg := fmt.Sprintf("not started: compute host %s: %s", sv.Host, why)
		return store.ActionFailed, msg
	}
	return "", ""
}

// sendAll sends os-start to every VM of toSend, at the configured
// concurrency, and records send errors on the VM's state.
func (s *vmStarter) sendAll() {
	e := s.e
	n := max(e.r.cfg.OpenStack.Concurrency, 1)
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	e.progress("Starting OpenStack VMs: sending os-start to %d VMs", len(s.toSend))
	for _, id := range s.toSend {
		if e.stopping() {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			err := s.cloud.Start(e.ctx, id)
			mu.Lock()
			defer mu.Unlock()
			s.applySend(id, err)
		})
	}
	wg.Wait()
	s.toSend = nil
}

// applySend notes one os-start's outcome; s's lock is held by the caller.
func (s *vmStarter) applySend(id string, err error) {
	st := s.pending[id]
	switch {
	case err == nil:
		st.err = ""
	case errors.Is(err, openstack.ErrConflict):
		st.conflict = true // Nova is busy with it: re-read at the next poll
	case errors.Is(err, openstack.ErrNotFound):
		s.e.finishAction(st.actionID, store.ActionSkipped, "deleted since the shutdown", "")
		s.counts.skipped++
		delete(s.pending, id)
	case errors.Is(err, context.Canceled):
	default:
		st.err = err.Error()
		s.e.event("warn", fmt.Sprintf("os-start %s failed after retries", st.vm.Name), err.Error())
	}
}

// poll lists the servers every poll interval until every started VM is
// ACTIVE or openstack.stop_timeout (the start timeout too) passes.
func (s *vmStarter) poll() {
	e := s.e
	cfg := e.r.cfg.OpenStack
	total := len(s.pending)
	deadline := time.Now().Add(cfg.StopTimeout)
	for len(s.pending) > 0 && !e.stopping() && time.Now().Before(deadline) {
		e.progress("Starting OpenStack VMs (%d/%d ACTIVE)", total-len(s.pending), total)
		select {
		case <-e.ctx.Done():
			return
		case <-time.After(cfg.PollInterval):
		}
		servers, err := s.cloud.ListServers(e.ctx)
		if err != nil {
			if e.ctx.Err() == nil {
				e.event("warn", "polling servers failed; will retry", err.Error())
			}
			continue
		}
		s.apply(servers)
		s.sendAll()
	}
}

// apply reads one listing: ACTIVE is done, gone is skipped, a VM whose
// os-start met a 409 and that is idle and SHUTOFF now is sent it again.
func (s *vmStarter) apply(servers []openstack.Server) {
	seen := make(map[string]openstack.Server, len(servers))
	for _, sv := range servers {
		seen[sv.ID] = sv
	}
	var results []store.ActionResult
	for id, st := range s.pending {
		sv, ok := seen[id]
		switch {
		case !ok:
			results = append(results, store.ActionResult{ID: st.actionID, State: store.ActionSkipped, Detail: "deleted since the shutdown"})
			s.counts.skipped++
		case sv.Status == novaActive && sv.TaskState == "":
			results = append(results, store.ActionResult{ID: st.actionID, State: store.ActionSucceeded, Detail: "ACTIVE"})
			s.counts.started++
		case st.conflict && sv.Status == novaShutoff && sv.TaskState == "":
			st.conflict = false
			s.toSend = append(s.toSend, id)
			continue
		default:
			continue
		}
		delete(s.pending, id)
	}
	if len(results) > 0 {
		if err := s.e.jr.Finish(results...); err != nil {
			s.e.log.Error("finish vm actions", "err", err)
		}
	}
}

// result fails the VMs still not ACTIVE and sums the step up.
func (s *vmStarter) result(restored int64) (store.StepState, string, error) {
	e := s.e
	if e.ctx.Err() != nil {
		return store.StepCancelled, "", e.ctx.Err()
	}
	var results []store.ActionResult
	for _, st := range s.pending {
		if e.cancelled.Load() {
			results = append(results, store.ActionResult{ID: st.actionID, State: store.ActionSkipped, Detail: "ACTIVE not awaited: job cancelled"})
			continue
		}
		msg := cmp.Or(st.err, fmt.Sprintf("not ACTIVE after %s", e.r.cfg.OpenStack.StopTimeout))
		results = append(results, store.ActionResult{ID: st.actionID, State: store.ActionFailed, Error: msg})
		s.counts.failed++
	}
	if len(results) > 0 {
		if err := e.jr.Finish(results...); err != nil {
			e.log.Error("finish vm actions", "err", err)
		}
	}
	c := s.counts
	detail := fmt.Sprintf("shutdown job %d stopped %d VMs: %d started, %d already ACTIVE, %d left alone, %d failed",
		restored, len(s.want), c.started, c.already, c.skipped, c.failed)
	if e.cancelled.Load() {
		return store.StepCancelled, detail, errCancelled
	}
	if c.failed > 0 {
		return store.StepFailed, detail, fmt.Errorf("%d VMs not started", c.failed)
	}
	return store.StepSucceeded, detail, nil
}

// onlyNotBack reports whether every compute service down is one of a host
// the hosts step could not bring back: nothing else is worth waiting for.
func onlyNotBack(down, notBack map[string]string) bool {
	for h := range down {
		if _, ok := notBack[serviceHost(h)]; !ok {
			return false
		}
	}
	return true
}
