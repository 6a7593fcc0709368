package runner

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/runner/bmc"
	"github.com/edgeops/shutdownd/runner/hostctl"
	"github.com/edgeops/shutdownd/store"
)

func (e *exec) hostsStep(step store.Step) (store.StepState, string, error) {
	e.pool.Release()
	if e.job.Kind == store.KindSimulation {
		return e.hostsCheck(step)
	}
	return e.hostsStop(step)
}

// hostsStop powers off each group in order, the hosts of one group in
// parallel. A group starts only when every host of the previous group is
// off or has failed: storage must not go down while compute still writes.
func (e *exec) hostsStop(step store.Step) (store.StepState, string, error) {
	groups := e.r.cfg.HostGroups()
	prior, err := e.jr.StepActions(e.db(), step.ID)
	if err != nil {
		return store.StepFailed, "", fmt.Errorf("read actions: %w", err)
	}
	finished, before := priorHosts(prior)
	if err := e.finishConfirmedBeforeRestart(finished, before); err != nil {
		return store.StepFailed, "", err
	}
	hs := &hostsRun{e: e, step: step, finished: finished, before: before, rec: newRecorder(e)}
	for _, g := range groups {
		hs.total += len(g)
	}
	hs.off.Add(int64(len(finished)))
	for gi, g := range groups {
		if e.stopping() {
			return store.StepCancelled, fmt.Sprintf("%d/%d hosts off", hs.off.Load(), hs.total), errCancelled
		}
		hs.group(gi, g)
	}
	detail := fmt.Sprintf("%d/%d hosts off", hs.off.Load(), hs.total)
	if n := hs.failed.Load(); n > 0 {
		return store.StepFailed, detail, fmt.Errorf("%d hosts not confirmed off", n)
	}
	return store.StepSucceeded, detail, nil
}

// priorHosts reads what a run before a restart did to the hosts: finished
// are the hosts confirmed off (a host that failed is tried again: its BMC
// may answer now), before what was done to each host touched.
func priorHosts(prior []store.Action) (finished map[string]store.Action, before map[string]*hostPrior) {
	finished, before = map[string]store.Action{}, map[string]*hostPrior{}
	for _, a := range prior {
		isHost := a.TargetKind == store.TargetHost
		if isHost && a.Operation == store.OpPowerOff && a.State == store.ActionSucceeded {
			finished[a.Target] = a
		}
		if !isHost && a.TargetKind != store.TargetBMC {
			continue
		}
		hp := before[a.Target]
		if hp == nil {
			hp = &hostPrior{}
			before[a.Target] = hp
		}
		hp.touched = true
		switch {
		case isHost && a.Operation == store.OpSSHPowerOff && a.State == store.ActionSucceeded:
			hp.sent = true
		case !isHost && a.Operation.ConfirmsOff() && a.State == store.ActionSucceeded:
			hp.confirmedOff = true
		case isHost && a.Operation == store.OpPowerOff && !a.State.Final():
			hp.open = a.ID
		}
	}
	return finished, before
}

// finishConfirmedBeforeRestart finishes the power-off of a host the BMC
// confirmed Off before a restart, whose own record the stopped process did
// not get to write: it is off, and not tried again (its BMC may not answer
// now). Such hosts join finished.
func (e *exec) finishConfirmedBeforeRestart(finished map[string]store.Action, before map[string]*hostPrior) error {
	var confirmed []store.ActionResult
	for name, hp := range before {
		if _, done := finished[name]; !done && hp.confirmedOff && hp.open != 0 {
			confirmed = append(confirmed, store.ActionResult{ID: hp.open, State: store.ActionSucceeded, Detail: "Off (confirmed by the BMC before the restart)"})
			finished[name] = store.Action{ID: hp.open}
		}
	}
	if len(confirmed) == 0 {
		return nil
	}
	if err := e.jr.Finish(confirmed...); err != nil {
		return fmt.Errorf("record hosts confirmed off before the restart: %w", err)
	}
	return nil
}

// hostsRun is one run of a shutdown's hosts step.
type hostsRun struct {
	e        *exec
	step     store.Step
	finished map[string]store.Action // hosts off before this run
	before   map[string]*hostPrior
	rec      *recorder
	total    int

	off, failed atomic.Int64
}

// group powers off the hosts of group gi at once and returns when each is
// off or has failed.
func (hs *hostsRun) group(gi int, g []config.Host) {
	e := hs.e
	label := groupLabel(g)
	hs.rec.setProgress("Powering off hosts: %s (%d/%d off)", label, hs.off.Load(), hs.total)
	hs.rec.event(store.LevelInfo, fmt.Sprintf("host group %d (%s) starting", gi+1, label))
	var runs []*hostRun
	for _, h := range g {
		if _, ok := hs.finished[h.Name]; ok {
			continue
		}
		r := &hostRun{h: h}
		if p := hs.before[h.Name]; p != nil {
			r.prior = *p
		}
		r.check = h.BMC != nil && (r.prior.touched || (e.pool != nil && e.pool.SSHWarmFailed(h.Name)))
		runs = append(runs, r)
	}
	e.beginGroup(hs.step, runs, hs.rec)
	var wg sync.WaitGroup
	for _, r := range runs {
		wg.Go(func() {
			if e.powerOffHost(hs.step, r, hs.rec) {
				hs.off.Add(1)
			} else {
				hs.failed.Add(1)
			}
			hs.rec.setProgress("Powering off hosts: %s (%d/%d off)", label, hs.off.Load(), hs.total)
		})
	}
	wg.Wait()
	hs.rec.wait() // before anything else writes progress
}

// hostRun is one host's power-off in this run of the job.
type hostRun struct {
	h     config.Host
	prior hostPrior
	// check: read the power state through the BMC before sending anything
	// (see powerOffHost).
	check bool
	// action and ssh are the host's power-off and ssh-poweroff actions when
	// beginGroup recorded them; nil: powerOffHost records them itself.
	action, ssh *store.Action
}

// beginGroup records, before any command of the group leaves, each host's
// power-off action and, for the hosts that send the SSH power-off at once,
// their ssh-poweroff action: one transaction for the whole group (with the
// group's event and progress) instead of two per host, which on a group of
// seventy kept the last command waiting behind a hundred and forty commits.
// A host whose record could not be written records its own (and reports
// the failure).
func (e *exec) beginGroup(step store.Step, runs []*hostRun, rec *recorder) {
	var bs []store.ActionBegin
	var dst []**store.Action
	for _, r := range runs {
		bs = append(bs, store.ActionBegin{Key: store.ActionKey{JobID: e.job.ID, StepID: step.ID, TargetKind: store.TargetHost, Target: r.h.Name, Operation: store.OpPowerOff}})
		dst = append(dst, &r.action)
		if !r.check && !r.prior.sent {
			bs = append(bs, store.ActionBegin{Key: store.ActionKey{JobID: e.job.ID, StepID: step.ID, TargetKind: store.TargetHost, Target: r.h.Name, Operation: store.OpSSHPowerOff},
				Detail: r.h.SSH.PoweroffCommand})
			dst = append(dst, &r.ssh)
		}
	}
	if len(bs) == 0 {
		return
	}
	as, errs := rec.beginAll(bs)
	for i := range as {
		if errs[i] != nil {
			e.log.Error("record host group", "err", errs[i])
			continue
		}
		*dst[i] = &as[i]
	}
}

// hostPrior is what a previous run of this job (before a restart) did to a
// host. It is zero for a job that did not resume.
type hostPrior struct {
	// touched: some action on the host was recorded, so a power-off may
	// have reached it; its power state is read before anything is sent.
	touched bool
	// sent: the SSH power-off was delivered; it is not sent again.
	sent bool
	// confirmedOff: a BMC confirmation saw it Off; open is its power-off
	// action when that was left unfinished.
	confirmedOff bool
	open         int64
}

func groupLabel(g []config.Host) string {
	roles := map[string]bool{}
	var names []string
	for _, h := range g {
		if !roles[h.Role] {
			roles[h.Role] = true
			names = append(names, h.Role)
		}
	}
	return strings.Join(names, "+")
}

// powerOffHost runs the per-host sequence of the spec: power-off over SSH,
// confirm Off through the BMC, escalate to BMC soft off and then hard off.
// Every external call is recorded before and after. It reports whether the
// host is (or, without a BMC, was told to be) off.
//
// The BMC session comes from the job's pool (opened while the VMs stopped)
// or is opened alongside the SSH power-off, so neither waits for the other.
// Reading "already Off?" before the power-off matters only for a host that
// a run before a restart may have powered off already (prior.touched): no
// host confirmed Off is sent a second power-off. Otherwise the command
// leaves at once; a host that cannot be reached over SSH has its power read
// before the BMC is told to power it off.
func (e *exec) powerOffHost(step store.Step, run *hostRun, rec *recorder) bool {
	h := run.h
	ha := run.action
	if ha == nil {
		hostKey := store.ActionKey{JobID: e.job.ID, StepID: step.ID, TargetKind: store.TargetHost, Target: h.Name, Operation: store.OpPowerOff}
		a, err := rec.begin(hostKey, "")
		if err != nil {
			// Nothing is sent to a host whose power-off is not on record;
			// the step fails, naming it if nothing else failed.
			e.log.Error("record host action; not powered off", "host", h.Name, "err", err)
			return false
		}
		ha = &a
	}
	p := &hostPowerOff{e: e, step: step, run: run, rec: rec, action: ha, start: time.Now()}
	return p.finish(p.sequence())
}

// hostPowerOff is one host's power-off sequence (powerOffHost).
type hostPowerOff struct {
	e      *exec
	step   store.Step
	run    *hostRun
	rec    *recorder
	action *store.Action // the host's power-off action
	start  time.Time
}

// finish records the host's outcome and reports whether it is off.
func (p *hostPowerOff) finish(ok bool, detail, msg string) bool {
	e, h := p.e, p.run.h
	if !ok && e.ctx.Err() != nil {
		// The service is stopping (or the job was preempted): leave the
		// action running, so a resumed job tries this host again.
		return false
	}
	e.closeInterrupted(p.step, h.Name, p.action.ID, ok)
	if ok {
		p.rec.finish(p.action.ID, store.ActionSucceeded, detail, "")
		p.rec.event(store.LevelInfo, fmt.Sprintf("host %s off", h.Name), detail)
		return true
	}
	p.rec.finish(p.action.ID, store.ActionFailed, detail, msg)
	p.rec.event(store.LevelError, fmt.Sprintf("host %s not confirmed off", h.Name), msg)
	return false
}

// sequence runs the steps of the power-off and returns what finish takes:
// whether the host is off, the detail and the failure.
func (p *hostPowerOff) sequence() (bool, string, string) {
	e, h := p.e, p.run.h
	bmcs := e.openBMCAsync(h) // in the background while SSH goes ahead
	defer bmcs.close()
	checked, off := p.checkFirst(bmcs)
	if off {
		return true, "already Off (BMC)", ""
	}
	sent := p.run.prior.sent
	if sent {
		p.rec.event(store.LevelInfo, "host "+h.Name+": power-off was sent before the restart; confirming through the BMC")
	} else if ok, wrong := e.sshPowerOff(p.step, h, p.run.ssh, p.rec); wrong != nil {
		return false, "", thisMachineReason(wrong)
	} else {
		sent = ok
	}
	if h.BMC == nil {
		if sent {
			return true, "power-off sent over SSH; no BMC to confirm", ""
		}
		return false, "", "SSH power-off failed and no BMC configured"
	}
	ctl, err := bmcs.wait()
	if err != nil {
		p.rec.event(store.LevelWarn, fmt.Sprintf("host %s: BMC unreachable", h.Name), err.Error())
		if sent {
			return false, "power-off sent over SSH", "BMC unreachable, power-off not confirmed: " + err.Error()
		}
		return false, "", "SSH and BMC both failed: " + err.Error()
	}
	return p.confirmOrForce(ctl, sent, checked)
}

// checkFirst reads the power state before anything is sent, only where it
// can matter (run.check): a host a run before a restart may have powered
// off, or one the warm-up could not reach over SSH (it may be off already;
// dialling it again could take the whole connect timeout). checked says the
// state was read, off that it read Off.
func (p *hostPowerOff) checkFirst(bmcs *pendingBMC) (checked, off bool) {
	if !p.run.check {
		return false, false
	}
	ctl, err := bmcs.wait()
	if err != nil {
		return false, false
	}
	ps, err := ctl.PowerState(p.e.ctx)
	return true, err == nil && ps == bmc.Off
}

// confirmOrForce confirms through the BMC that a host sent the SSH
// power-off goes Off, else escalates (forceOff). A host SSH could not reach
// may be off already: never power off through the BMC what is already Off.
func (p *hostPowerOff) confirmOrForce(ctl PowerController, sent, checked bool) (bool, string, string) {
	e, h, t := p.e, p.run.h, p.e.r.cfg.Timeouts
	if sent {
		if e.confirmOff(p.step, h, ctl, store.OpBMCConfirmOff, t.HostOff, p.rec) {
			return true, fmt.Sprintf("off via SSH after %s", since(p.start)), ""
		}
		if e.ctx.Err() != nil {
			return false, "", "interrupted"
		}
		p.rec.event(store.LevelWarn, fmt.Sprintf("host %s still on after %s; escalating to BMC soft off", h.Name, t.HostOff))
	} else if !checked {
		if ps, err := ctl.PowerState(e.ctx); err == nil && ps == bmc.Off {
			return true, "already Off (BMC)", ""
		}
	}
	return e.forceOff(p.step, h, ctl, p.start, p.rec)
}

// forceOff escalates through the BMC: soft off, then hard off, each
// confirmed by reading the power state. It returns what powerOffHost's
// finish takes: whether the host is off, the detail and the failure.
func (e *exec) forceOff(step store.Step, h config.Host, ctl PowerController, start time.Time, rec *recorder) (bool, string, string) {
	t := e.r.cfg.Timeouts
	if e.ctx.Err() != nil {
		return false, "", "interrupted"
	}
	if e.bmcPower(step, h, store.OpBMCSoftOff, ctl.SoftOff, rec) && e.confirmOff(step, h, ctl, store.OpBMCConfirmSoftOff, t.BMCSoftOff, rec) {
		return true, fmt.Sprintf("off via BMC soft off after %s", since(start)), ""
	}
	if e.ctx.Err() != nil {
		return false, "", "interrupted"
	}
	rec.event(store.LevelWarn, fmt.Sprintf("host %s still on; BMC hard off", h.Name))
	if e.bmcPower(step, h, store.OpBMCHardOff, ctl.HardOff, rec) && e.confirmOff(step, h, ctl, store.OpBMCConfirmHardOff, t.BMCHardOff, rec) {
		return true, fmt.Sprintf("off via BMC hard off after %s", since(start)), ""
	}
	return false, "", "still on after BMC hard off"
}

func since(t time.Time) time.Duration { return time.Since(t).Round(10 * time.Millisecond) }

// bmcFor returns h's BMC session: the pool's (opened in advance) for a
// shutdown, else a new one. warm reports a session opened in advance.
func (e *exec) bmcFor(h config.Host) (PowerController, bool, error) {
	if e.pool != nil {
		return e.pool.TakeBMC(h)
	}
	c, err := e.r.deps.OpenBMC(e.ctx, h)
	return c, false, err
}

// bmcLink is a host's BMC session during its power-off sequence. A session
// opened in advance may have expired by the time it is used (BMCs end idle
// sessions): if its first read fails, one new session replaces it and the
// read is made again. Power commands always follow a read that succeeded,
// so they are never sent twice.
type bmcLink struct {
	e    *exec
	h    config.Host
	ctl  PowerController
	warm bool // opened in advance and not yet proven by an answer
}

func (b *bmcLink) PowerState(ctx context.Context) (bmc.PowerState, error) {
	ps, err := b.ctl.PowerState(ctx)
	if err == nil || errors.Is(err, bmc.ErrUnexpectedState) {
		b.warm = false // the session answered
		return ps, err
	}
	if !b.warm || ctx.Err() != nil {
		return ps, err
	}
	b.warm = false
	fresh, oerr := b.e.r.deps.OpenBMC(ctx, b.h)
	if oerr != nil {
		return ps, err
	}
	b.e.event(store.LevelInfo, fmt.Sprintf("host %s: BMC session opened in advance no longer answers; opened a new one", b.h.Name), err.Error())
	b.ctl.Close(context.WithoutCancel(ctx))
	b.ctl = fresh
	return fresh.PowerState(ctx)
}

func (b *bmcLink) SoftOff(ctx context.Context) error { return b.ctl.SoftOff(ctx) }
func (b *bmcLink) HardOff(ctx context.Context) error { return b.ctl.HardOff(ctx) }
func (b *bmcLink) Close(ctx context.Context) error   { return b.ctl.Close(ctx) }

// sshPowerOff sends the power-off command. It reports whether the command
// was sent; a dropped connection counts as sent (the host went down).
// wrong is set when the host's address led to this machine: nothing was
// sent, and the caller must not use the BMC either (thisMachineReason).
func (e *exec) sshPowerOff(step store.Step, h config.Host, a *store.Action, rec *recorder) (sent bool, wrong error) {
	if a == nil {
		key := store.ActionKey{JobID: e.job.ID, StepID: step.ID, TargetKind: store.TargetHost, Target: h.Name, Operation: store.OpSSHPowerOff}
		b, err := rec.begin(key, h.SSH.PoweroffCommand)
		if err != nil {
			e.log.Error("record action", "err", err)
			return false, nil
		}
		a = &b
	}
	// After the command the connection is of no more use: not kept.
	dialErr, err := e.onHost(h, false, func(conn HostConn) error {
		return conn.PowerOff(e.ctx, h.SSH.PoweroffCommand)
	})
	if (dialErr != nil || err != nil) && e.ctx.Err() != nil {
		return false, nil // service stopping: left running, retried on resume
	}
	if errors.Is(dialErr, hostctl.ErrThisMachine) {
		rec.finish(a.ID, store.ActionFailed, "", "refused, nothing sent: "+dialErr.Error())
		return false, dialErr
	}
	if dialErr != nil {
		rec.finish(a.ID, store.ActionFailed, "", "ssh: "+dialErr.Error())
		rec.event(store.LevelWarn, fmt.Sprintf("host %s: SSH failed, going to the BMC", h.Name), dialErr.Error())
		return false, nil
	}
	if err != nil {
		rec.finish(a.ID, store.ActionFailed, "", err.Error())
		rec.event(store.LevelWarn, fmt.Sprintf("host %s: power-off command failed", h.Name), err.Error())
		return false, nil
	}
	rec.finish(a.ID, store.ActionSucceeded, "sent: "+h.SSH.PoweroffCommand, "")
	return true, nil
}

// thisMachineReason is the failure of a host whose SSH address led to this
// machine. Its BMC is not used either: the same change of DNS or NAT that
// moved the SSH address may have moved the BMC's, and forcing off a machine
// whose identity was just proven wrong could take down this one, or
// another, mid-shutdown. A host left on loses power when the batteries
// run out, as it would have without shutdownd; the wrong machine powered
// off can lose the whole site.
func thisMachineReason(err error) string {
	return "not powered off, and its BMC not used: " + err.Error() +
		" (an address that changed since start-up may lead the BMC astray too; check DNS and NAT for this host)"
}

// pendingBMC is a host's BMC session being opened in the background while
// the SSH power-off goes ahead, so that neither waits for the other.
type pendingBMC struct {
	ready chan struct{}
	ctl   *bmcLink
	err   error
	ctx   context.Context
}

// openBMCAsync starts opening h's BMC session (the pool's when it has one);
// a host without BMC gets a pending session that is ready with none.
func (e *exec) openBMCAsync(h config.Host) *pendingBMC {
	p := &pendingBMC{ready: make(chan struct{}), ctx: e.ctx}
	if h.BMC == nil {
		close(p.ready)
		return p
	}
	go func() {
		defer close(p.ready)
		c, warm, err := e.bmcFor(h)
		if err != nil {
			p.err = err
			return
		}
		p.ctl = &bmcLink{e: e, h: h, ctl: c, warm: warm}
	}()
	return p
}

// wait returns the session once it is open (or failed to open).
func (p *pendingBMC) wait() (*bmcLink, error) {
	<-p.ready
	return p.ctl, p.err
}

// close waits for the open to end and closes the session, even when the
// job's context is cancelled (a BMC keeps a session it is not told about).
func (p *pendingBMC) close() {
	if ctl, _ := p.wait(); ctl != nil {
		ctl.Close(context.WithoutCancel(p.ctx))
	}
}

func (e *exec) bmcPower(step store.Step, h config.Host, op store.Operation, f func(context.Context) error, rec *recorder) bool {
	key := store.ActionKey{JobID: e.job.ID, StepID: step.ID, TargetKind: store.TargetBMC, Target: h.Name, Operation: op}
	a, err := rec.begin(key, fmt.Sprintf("%s %s", h.BMC.Protocol, h.BMC.Address))
	if err != nil {
		e.log.Error("record action", "err", err)
		return false
	}
	if err := f(e.ctx); err != nil {
		if e.ctx.Err() != nil {
			return false // service stopping: left running, retried on resume
		}
		rec.finish(a.ID, store.ActionFailed, "", err.Error())
		return false
	}
	rec.finish(a.ID, store.ActionSucceeded, "accepted", "")
	return true
}

// confirmOff polls the BMC until the power state reads Off or the timeout
// passes.
func (e *exec) confirmOff(step store.Step, h config.Host, ctl PowerController, op store.Operation, timeout time.Duration, rec *recorder) bool {
	key := store.ActionKey{JobID: e.job.ID, StepID: step.ID, TargetKind: store.TargetBMC, Target: h.Name, Operation: op}
	a, err := rec.begin(key, fmt.Sprintf("waiting up to %s for Off", timeout))
	if err != nil {
		e.log.Error("record action", "err", err)
		return false
	}
	start := time.Now()
	deadline := start.Add(timeout)
	interval := e.r.cfg.Timeouts.BMCPollInterval
	var last bmc.PowerState
	var lastErr error
	for {
		ps, err := ctl.PowerState(e.ctx)
		last, lastErr = ps, err
		if err == nil && ps == bmc.Off {
			rec.finish(a.ID, store.ActionSucceeded, fmt.Sprintf("Off after %s", since(start)), "")
			return true
		}
		if time.Now().After(deadline) || e.ctx.Err() != nil {
			break
		}
		select {
		case <-e.ctx.Done():
		case <-time.After(min(interval, time.Until(deadline)+time.Millisecond)):
		}
	}
	if e.ctx.Err() != nil {
		// The service is stopping: not a failed confirmation; the action
		// stays running and the resumed job reads the power state again.
		return false
	}
	msg := fmt.Sprintf("power state %s after %s", last, timeout)
	if lastErr != nil {
		msg = fmt.Sprintf("power state unreadable after %s: %v", timeout, lastErr)
	}
	rec.finish(a.ID, store.ActionFailed, "", msg)
	return false
}

// hostsCheck logs in to every host and every BMC, changing nothing: an SSH
// login with host-key verification and a harmless command, the proof that
// the host's power-off and storage commands would be permitted
// (checkPrivilege), a BMC session and a power-state read that must say On.
// All hosts are checked; every failure is reported.
func (e *exec) hostsCheck(step store.Step) (store.StepState, string, error) {
	hosts := e.r.cfg.Hosts
	var checked, failed atomic.Int64
	total := len(hosts)
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, h := range hosts {
		if e.ctx.Err() != nil {
			break // preempted: the checks not started are not results
		}
		wg.Add(1)
		sem <- struct{}{}
		go func(h config.Host) {
			defer wg.Done()
			defer func() { <-sem }()
			if !e.checkHost(step, h) {
				failed.Add(1)
			}
			checked.Add(1)
			e.progress("Checking hosts (%d/%d checked, %d failed)", checked.Load(), total, failed.Load())
		}(h)
	}
	wg.Wait()
	detail := fmt.Sprintf("%d/%d hosts passed", int64(total)-failed.Load(), total)
	if failed.Load() > 0 {
		return store.StepFailed, detail, fmt.Errorf("%d hosts failed checks", failed.Load())
	}
	return store.StepSucceeded, detail, nil
}

func (e *exec) checkHost(step store.Step, h config.Host) bool {
	ok := true
	check := func(kind store.TargetKind, op store.Operation, detail string, f func() (string, error)) {
		if e.ctx.Err() != nil {
			return // preempted or stopping: checks not started are not results
		}
		key := store.ActionKey{JobID: e.job.ID, StepID: step.ID, TargetKind: kind, Target: h.Name, Operation: op}
		a, err := e.jr.Begin(key, detail)
		if err != nil {
			e.log.Error("record action", "err", err)
			ok = false
			return
		}
		out, err := f()
		if err != nil && e.ctx.Err() != nil {
			// Cut short by a preemption (or the service stopping): not a
			// finding about the host; the job's end closes the action.
			return
		}
		if err != nil {
			ok = false
			e.finishAction(a.ID, store.ActionFailed, "", err.Error())
			return
		}
		e.finishAction(a.ID, store.ActionSucceeded, out, "")
	}
	var conn HostConn
	check("host", "check-ssh", h.Address, func() (string, error) {
		c, err := e.r.deps.DialHost(e.ctx, h)
		if err != nil {
			return "", fmt.Errorf("ssh: %w", err)
		}
		if _, err := c.Run(e.ctx, "true"); err != nil {
			c.Close()
			return "", fmt.Errorf("ssh command: %w", err)
		}
		conn = c
		return "login and command ok", nil
	})
	if conn != nil {
		cmds, preset := e.commandsOn(h)
		check("host", "check-privilege", strings.Join(cmds, "; "), func() (string, error) {
			return checkPrivilege(e.ctx, conn, h.SSH.User, cmds, preset)
		})
		conn.Close()
	}
	if h.BMC == nil {
		return ok
	}
	check("bmc", "check-bmc", fmt.Sprintf("%s %s", h.BMC.Protocol, h.BMC.Address), func() (string, error) {
		ctl, err := e.r.deps.OpenBMC(e.ctx, h)
		if err != nil {
			return "", err
		}
		defer ctl.Close(context.WithoutCancel(e.ctx))
		ps, err := ctl.PowerState(e.ctx)
		if err != nil {
			return "", fmt.Errorf("read power state: %w", err)
		}
		if ps != bmc.On {
			return "", fmt.Errorf("power state is %s, expected On", ps)
		}
		return "session ok, power On", nil
	})
	return ok
}

// commandsOn returns every command a shutdown would run on h that needs
// privilege: its power-off command and its storage commands (the Ceph
// preset's or the configured ones), each once; preset reports whether the
// Ceph preset sends it (as it is: it cannot be given sudo). The read-only
// health command is not among them: the simulation runs it, which proves it.
func (e *exec) commandsOn(h config.Host) (cmds []string, preset map[string]bool) {
	cmds, preset = []string{h.SSH.PoweroffCommand}, map[string]bool{}
	st := e.r.cfg.Storage
	for _, c := range st.Plan() {
		if c.Host == h.Name && !slices.Contains(cmds, c.Command) {
			cmds = append(cmds, c.Command)
			preset[c.Command] = st.Type == config.StorageCeph
		}
	}
	return cmds, preset
}

// checkPrivilege proves, without running them, that user may run cmds on
// the host of conn: user is root (`id -u` prints 0), or each command goes
// through sudo and `sudo -n -l` permits it. A command that does not go
// through sudo is not proven for a user other than root, even where sudo
// would permit it: it is sent as it is, and what allows it then (polkit,
// group rights) cannot be checked without running it; the failure says how
// to make it provable. The Ceph preset's commands never go through sudo:
// they need root. Every command is checked; the error names each refusal.
func checkPrivilege(ctx context.Context, conn HostConn, user string, cmds []string, preset map[string]bool) (string, error) {
	res, err := conn.Run(ctx, "id -u")
	if err != nil {
		return "", fmt.Errorf("id -u: %w", err)
	}
	uid := strings.TrimSpace(res.Stdout)
	if uid == "0" {
		return fmt.Sprintf("user %s is root (id -u 0): %d commands permitted", user, len(cmds)), nil
	}
	var refused, permitted, ceph []string
	for _, c := range cmds {
		if preset[c] {
			ceph = append(ceph, c)
			continue
		}
		sc := parseSudo(c)
		res, err := conn.Run(ctx, "sudo -n -l "+sc.listArgs())
		switch {
		case err != nil && ctx.Err() != nil:
			return "", err
		case err != nil:
			refused = append(refused, fmt.Sprintf("sudo -n -l refuses '%s': %s", sc.cmd, sudoReason(res)))
		case !sc.sudo:
			refused = append(refused, fmt.Sprintf("'%s' does not go through sudo, so nothing proves it is permitted "+
				"(sudo -n -l permits it: make the command 'sudo -n %s')", c, sc.cmd))
		default:
			permitted = append(permitted, sc.cmd)
		}
	}
	if len(ceph) > 0 {
		refused = append(refused, fmt.Sprintf("the ceph preset sends its commands without sudo (%s): it needs root on this host "+
			"(or storage type commands, with sudo)", strings.Join(ceph, "; ")))
	}
	if len(refused) > 0 {
		return "", fmt.Errorf("user %s is not root (id -u %s) and %s", user, uid, strings.Join(refused, "; "))
	}
	return fmt.Sprintf("user %s (id -u %s): sudo -n -l permits %s", user, uid, strings.Join(permitted, "; ")), nil
}

// sudoReason is why `sudo -n -l` refused: what it printed, else its exit
// status (sudo lists a command no rule allows with no message).
func sudoReason(res hostctl.Result) string {
	if msg := strings.Join(strings.Fields(res.Stderr), " "); msg != "" {
		return msg
	}
	return fmt.Sprintf("no sudo rule allows it (exit %d)", res.ExitStatus)
}

// sudoCommand is a command line taken apart for `sudo -n -l`: whether it
// goes through sudo, the options naming whom it runs as, and the command
// sudo runs.
type sudoCommand struct {
	sudo  bool
	runAs []string // -u USER, -g GROUP
	cmd   string
}

// sudoArgOptions are sudo's options that take a value.
var sudoArgOptions = map[string]bool{"-u": true, "-g": true, "-p": true, "-C": true, "-D": true, "-T": true, "-U": true, "-h": true, "-r": true, "-t": true}

func parseSudo(line string) sudoCommand {
	f := strings.Fields(line)
	if len(f) == 0 || path.Base(f[0]) != "sudo" {
		return sudoCommand{cmd: line}
	}
	sc := sudoCommand{sudo: true}
	f = f[1:]
	for len(f) > 0 && strings.HasPrefix(f[0], "-") {
		if f[0] == "--" {
			f = f[1:]
			break
		}
		if sudoArgOptions[f[0]] && len(f) > 1 {
			if f[0] == "-u" || f[0] == "-g" {
				sc.runAs = append(sc.runAs, f[0], f[1])
			}
			f = f[2:]
			continue
		}
		f = f[1:]
	}
	sc.cmd = strings.Join(f, " ")
	return sc
}

// listArgs are the arguments of `sudo -n -l` that ask about this command.
func (sc sudoCommand) listArgs() string {
	return strings.Join(append(slices.Clone(sc.runAs), sc.cmd), " ")
}
