package runner

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/store"
)

// prepareSelf records the self host's power-off before the job's final
// state is written, so the record exists even though the machine running
// us goes down right after.
//
// Only after the hosts step ran to its end (succeeded, or failed for some
// hosts): a job that never got there (a store error ended it early) must not
// take down the machine an operator needs while the site's hosts are up.
func (e *exec) prepareSelf(h config.Host) (store.Action, bool) {
	steps, err := e.jr.Steps(e.db())
	if err != nil {
		e.log.Error("read steps for self power-off", "err", err)
		return store.Action{}, false
	}
	i := slices.IndexFunc(steps, func(s store.Step) bool { return s.Name == StepHosts })
	if i < 0 || (steps[i].State != store.StepSucceeded && steps[i].State != store.StepFailed) {
		e.event(store.LevelError, "this machine is not powered off: the hosts step did not run to its end", "")
		return store.Action{}, false
	}
	key := store.ActionKey{JobID: e.job.ID, StepID: steps[i].ID, TargetKind: store.TargetHost, Target: h.Name, Operation: store.OpSelfPowerOff}
	a, err := e.jr.Begin(key, "this machine: powered off after the job's final state is written")
	if err != nil {
		e.log.Error("record self action", "err", err)
		return store.Action{}, false
	}
	return a, true
}

// powerOffSelf powers off the machine running shutdownd, last (see
// selfPowerOff). The job is final by now. If this machine is
// still up when every way of powering it off has failed, the power-off is
// over: the service goes back to normal work, so that the next trigger
// starts a new job instead of being answered with this one.
func (e *exec) powerOffSelf(h config.Host, action store.Action) {
	s := &selfPowerOff{e: e, h: h, action: action, step: store.Step{ID: action.StepID, JobID: e.job.ID},
		rec: newRecorder(e), start: time.Now()}
	down := s.run()
	s.rec.wait()
	if !down {
		e.r.selfDownJob.Store(0)
		e.log.Error("this machine was not powered off; the service goes back to normal work")
	}
}

// selfPowerOff is the power-off of one host marked self: the machine this
// process runs on. Success cannot be seen from here the way it is for other
// hosts: when it works, systemd stops this service as the machine goes down
// (the job's context is cancelled), or, in a simulated site, the host's BMC
// reads Off. A dropped SSH connection is how a power-off usually ends, and
// counts as sent; only a clear failure counts as failed: the command
// refused or exiting non-zero, or this machine still up when the wait is
// over. Then, as for every other host, its BMC (when it has one) is told to
// soft off, then to hard off.
type selfPowerOff struct {
	e      *exec
	h      config.Host
	action store.Action // self-poweroff: the outcome
	step   store.Step
	rec    *recorder
	start  time.Time
	ctl    *bmcLink // nil: no BMC, or it could not be opened
}

// selfWait is how a wait for this machine to go down ended.
type selfWait int

const (
	selfStillUp  selfWait = iota // the timeout passed and we still run
	selfOff                      // the BMC reads Off
	selfStopping                 // this service is being stopped: the machine is going down
)

// run reports whether the machine is going down (or is down).
func (s *selfPowerOff) run() bool {
	e, h := s.e, s.h
	e.log.Warn("powering off this machine", "host", h.Name)
	defer func() {
		if s.ctl != nil {
			s.ctl.Close(context.WithoutCancel(e.ctx))
		}
	}()
	sent := s.ssh()
	s.openBMC()
	if sent {
		switch s.await(store.OpBMCConfirmOff, e.r.cfg.Timeouts.HostOff) {
		case selfOff:
			return s.done("Off (BMC) after the power-off command, " + since(s.start).String())
		case selfStopping:
			return s.done(s.stoppingDetail())
		}
		s.rec.event(store.LevelWarn, fmt.Sprintf("this machine (%s) still runs %s after its power-off command", h.Name, e.r.cfg.Timeouts.HostOff))
	}
	if s.ctl == nil {
		why := fmt.Sprintf("still running %s after the power-off command, and no BMC to force it", e.r.cfg.Timeouts.HostOff)
		if !sent {
			why = "SSH power-off failed, and no BMC to force it"
		}
		return s.failed(why)
	}
	for _, o := range []struct {
		op, confirm store.Operation
		f           func(context.Context) error
		timeout     time.Duration
	}{
		{store.OpBMCSoftOff, store.OpBMCConfirmSoftOff, s.ctl.SoftOff, e.r.cfg.Timeouts.BMCSoftOff},
		{store.OpBMCHardOff, store.OpBMCConfirmHardOff, s.ctl.HardOff, e.r.cfg.Timeouts.BMCHardOff},
	} {
		if e.bmcPower(s.step, h, o.op, o.f, s.rec) {
			switch s.await(o.confirm, o.timeout) {
			case selfOff:
				return s.done(fmt.Sprintf("Off after %s, %s", o.op, since(s.start)))
			case selfStopping:
				return s.done(s.stoppingDetail())
			}
		} else if e.ctx.Err() != nil {
			return s.done(s.stoppingDetail())
		}
	}
	return s.failed("still running after BMC soft off and hard off")
}

// ssh sends the power-off command over SSH, with a context that outlives a
// service stop (the power-off itself makes systemd stop us); the SSH
// connect and command timeouts bound it. It reports whether it was sent.
func (s *selfPowerOff) ssh() bool {
	e, h := s.e, s.h
	key := store.ActionKey{JobID: e.job.ID, StepID: s.step.ID, TargetKind: store.TargetHost, Target: h.Name, Operation: store.OpSSHPowerOff}
	a, err := s.rec.begin(key, h.SSH.PoweroffCommand)
	if err != nil {
		e.log.Error("record action", "err", err)
	}
	ctx := e.db()
	conn, err := e.r.deps.DialHost(ctx, h)
	if err == nil {
		err = conn.PowerOff(ctx, h.SSH.PoweroffCommand)
		conn.Close()
	}
	if err != nil {
		if a.ID != 0 {
			s.rec.finish(a.ID, store.ActionFailed, "", err.Error())
		}
		s.rec.event(store.LevelWarn, fmt.Sprintf("this machine (%s): SSH power-off failed", h.Name), err.Error())
		return false
	}
	if a.ID != 0 {
		s.rec.finish(a.ID, store.ActionSucceeded, "sent: "+h.SSH.PoweroffCommand, "")
	}
	return true
}

// openBMC opens the host's BMC session, if it has a BMC; a failure is
// recorded, and the power-off goes on without it.
func (s *selfPowerOff) openBMC() {
	if s.h.BMC == nil || s.e.ctx.Err() != nil {
		return
	}
	c, err := s.e.r.deps.OpenBMC(s.e.ctx, s.h)
	if err != nil {
		s.rec.event(store.LevelWarn, fmt.Sprintf("this machine (%s): BMC unreachable", s.h.Name), err.Error())
		return
	}
	s.ctl = &bmcLink{e: s.e, h: s.h, ctl: c}
}

// await waits up to timeout for this machine to go down: the BMC reading
// Off (confirmation op), or this service being stopped. Without a BMC
// session only the latter can end it early; the wait is then recorded as
// a host action of its own.
func (s *selfPowerOff) await(op store.Operation, timeout time.Duration) selfWait {
	e := s.e
	if s.ctl != nil {
		if e.confirmOff(s.step, s.h, s.ctl, op, timeout, s.rec) {
			return selfOff
		}
		if e.ctx.Err() != nil {
			return selfStopping
		}
		return selfStillUp
	}
	key := store.ActionKey{JobID: e.job.ID, StepID: s.step.ID, TargetKind: store.TargetHost, Target: s.h.Name, Operation: store.OpAwaitDown}
	a, err := s.rec.begin(key, fmt.Sprintf("waiting up to %s for this machine to go down", timeout))
	if err != nil {
		e.log.Error("record action", "err", err)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-e.ctx.Done():
		return selfStopping // closed by done
	case <-t.C:
	}
	if a.ID != 0 {
		s.rec.finish(a.ID, store.ActionFailed, "", fmt.Sprintf("still running after %s", timeout))
	}
	return selfStillUp
}

func (s *selfPowerOff) stoppingDetail() string {
	return fmt.Sprintf("power-off under way: this service was stopped %s after it began, as the machine goes down", since(s.start))
}

// done records the power-off as succeeded. Sub-actions a service stop left
// open are closed: they end with this process, and nobody will finish them.
func (s *selfPowerOff) done(detail string) bool {
	s.closeOpen(func(a store.Action) store.ActionResult {
		return store.ActionResult{ID: a.ID, State: store.ActionSkipped, Detail: "not awaited: " + detail}
	})
	s.rec.finish(s.action.ID, store.ActionSucceeded, detail, "")
	s.rec.event(store.LevelInfo, fmt.Sprintf("this machine (%s) is going down", s.h.Name), detail)
	return true
}

// failed records that this machine was not powered off, and why.
func (s *selfPowerOff) failed(why string) bool {
	s.rec.finish(s.action.ID, store.ActionFailed, "", why)
	s.rec.event(store.LevelError, fmt.Sprintf("this machine (%s) was not powered off; the service goes back to normal work", s.h.Name), why)
	return false
}

// closeOpen finishes the host's sub-actions still open (all but the
// self-poweroff action itself) with the result close gives.
func (s *selfPowerOff) closeOpen(close func(store.Action) store.ActionResult) {
	s.rec.wait()
	as, err := s.e.jr.StepActions(s.e.db(), s.step.ID)
	if err != nil {
		s.e.log.Error("read actions", "err", err)
		return
	}
	var results []store.ActionResult
	for _, a := range as {
		if a.Target == s.h.Name && a.ID != s.action.ID && !a.State.Final() {
			results = append(results, close(a))
		}
	}
	if len(results) > 0 {
		if err := s.e.jr.Finish(results...); err != nil {
			s.e.log.Error("close actions", "err", err)
		}
	}
}
