package runner

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/runner/bmc"
	"github.com/edgeops/shutdownd/store"
)

// startHostsStep powers the hosts on, group by group in the reverse of the
// shutdown order (the self host is on already: it runs this), the hosts of
// one group in parallel. A host counts as back when it answers SSH with its
// known host key. A host that does not come back is recorded failed, and
// the job goes on: the rest of the site must come back without it.
//
// After a restart, a host already recorded back is not touched again, and a
// host is powered on only when its BMC reads Off: a power-on sent before
// the restart is never sent a second time to a host that is on.
func (e *exec) startHostsStep(step store.Step) (store.StepState, string, error) {
	groups := e.r.cfg.StartupGroups()
	prior, err := e.jr.StepActions(e.db(), step.ID)
	if err != nil {
		return store.StepFailed, "", fmt.Errorf("read actions: %w", err)
	}
	back := map[string]bool{}
	var interrupted []store.ActionResult
	for _, a := range prior {
		switch {
		case a.TargetKind == "host" && a.Operation == opPowerOn && a.State == store.ActionSucceeded:
			back[a.Target] = true
		case a.TargetKind == "bmc" && !a.State.Final():
			// Its outcome was lost with the process; the power state is
			// read again below, which decides.
			interrupted = append(interrupted, store.ActionResult{ID: a.ID, State: store.ActionSkipped,
				Detail: "interrupted by a restart before its outcome was recorded; the power state is read again"})
		}
	}
	if len(interrupted) > 0 {
		if err := e.jr.Finish(interrupted...); err != nil {
			e.log.Error("close interrupted bmc actions", "err", err)
		}
	}
	total := 0
	for _, g := range groups {
		total += len(g)
	}
	var up, failed atomic.Int64
	up.Add(int64(len(back)))
	rec := newRecorder(e)
	for gi, g := range groups {
		if e.stopping() {
			return store.StepCancelled, fmt.Sprintf("%d/%d hosts up", up.Load(), total), errCancelled
		}
		label := groupLabel(g)
		rec.setProgress("Powering on hosts: %s (%d/%d up)", label, up.Load(), total)
		rec.event("info", fmt.Sprintf("host group %d (%s) starting", gi+1, label))
		var wg sync.WaitGroup
		for _, h := range g {
			if back[h.Name] {
				continue
			}
			wg.Go(func() {
				if e.startHost(step, h, rec) {
					up.Add(1)
				} else if e.ctx.Err() == nil {
					failed.Add(1)
				}
				rec.setProgress("Powering on hosts: %s (%d/%d up)", label, up.Load(), total)
			})
		}
		wg.Wait()
		rec.wait()
	}
	detail := fmt.Sprintf("%d/%d hosts up", up.Load(), total)
	if e.ctx.Err() != nil {
		return store.StepCancelled, detail, e.ctx.Err()
	}
	if n := failed.Load(); n > 0 {
		return store.StepFailed, detail, fmt.Errorf("%d hosts did not come back", n)
	}
	return store.StepSucceeded, detail, nil
}

// startHost brings one host back: the power state read through the BMC, a
// power-on when it reads Off, then the wait for SSH. A BMC that does not
// answer does not end the wait: a host may power itself on when mains come
// back (its "restore on AC power loss" setting), and one that answers SSH
// is back whoever switched it on.
func (e *exec) startHost(step store.Step, h config.Host, rec *recorder) bool {
	key := store.ActionKey{JobID: e.job.ID, StepID: step.ID, TargetKind: "host", Target: h.Name, Operation: opPowerOn}
	a, err := rec.begin(key, "")
	if err != nil {
		e.log.Error("record action", "err", err)
		e.fail("host %s: record action: %v", h.Name, err)
		return false
	}
	start := time.Now()
	bmcErr := e.powerOnByBMC(step, h, rec)
	if e.ctx.Err() != nil {
		return false // left running: a resumed job reads the power state again
	}
	boot := e.r.cfg.Timeouts.HostBoot
	err = e.waitSSH(h, boot)
	if e.ctx.Err() != nil {
		return false
	}
	if err == nil {
		rec.finish(a.ID, store.ActionSucceeded, fmt.Sprintf("SSH answers with its known host key after %s", since(start)), "")
		return true
	}
	msg := fmt.Sprintf("SSH does not answer after %s: %v", boot, err)
	if permanentSSH(err) {
		msg = fmt.Sprintf("SSH refused: %v", err)
	}
	if bmcErr != nil {
		msg = fmt.Sprintf("BMC does not answer (%v); %s", bmcErr, msg)
	}
	rec.finish(a.ID, store.ActionFailed, "", msg)
	e.fail("host %s: %s", h.Name, msg)
	return false
}

// powerOnByBMC reads h's power state and powers it on when it reads Off,
// recording both. It returns why the BMC could not be used (nil when the
// host is On, was powered on, or has no BMC to ask).
func (e *exec) powerOnByBMC(step store.Step, h config.Host, rec *recorder) error {
	if h.BMC == nil {
		rec.event("warn", fmt.Sprintf("host %s has no BMC: waiting for it to be powered on by other means", h.Name))
		return nil
	}
	key := func(op string) store.ActionKey {
		return store.ActionKey{JobID: e.job.ID, StepID: step.ID, TargetKind: "bmc", Target: h.Name, Operation: op}
	}
	a, err := rec.begin(key(opBMCPowerState), fmt.Sprintf("%s %s", h.BMC.Protocol, h.BMC.Address))
	if err != nil {
		return fmt.Errorf("record action: %w", err)
	}
	ctl, err := e.r.deps.OpenBMC(e.ctx, h)
	if err != nil {
		if e.ctx.Err() == nil {
			rec.finish(a.ID, store.ActionFailed, "", err.Error())
		}
		return err
	}
	defer ctl.Close(context.WithoutCancel(e.ctx))
	ps, err := ctl.PowerState(e.ctx)
	if err != nil {
		if e.ctx.Err() == nil {
			rec.finish(a.ID, store.ActionFailed, "", err.Error())
		}
		return err
	}
	rec.finish(a.ID, store.ActionSucceeded, string(ps), "")
	if ps != bmc.Off {
		return nil // On already (by hand, by itself, or our power-on before a restart)
	}
	if e.stopping() {
		return errCancelled
	}
	on, err := rec.begin(key(opBMCPowerOn), "")
	if err != nil {
		return fmt.Errorf("record action: %w", err)
	}
	if err := ctl.PowerOn(e.ctx); err != nil {
		if e.ctx.Err() == nil {
			rec.finish(on.ID, store.ActionFailed, "", err.Error())
		}
		return err
	}
	rec.finish(on.ID, store.ActionSucceeded, "accepted", "")
	return nil
}

// waitSSH dials h until it answers with its known host key or timeout
// passes. A refused host key or login is final at once: waiting would not
// change it, and the host must never be trusted on another key.
func (e *exec) waitSSH(h config.Host, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	interval := e.r.cfg.Timeouts.BMCPollInterval
	for {
		ctx, cancel := context.WithDeadline(e.ctx, deadline)
		conn, err := e.r.deps.DialHost(ctx, h)
		cancel()
		if err == nil {
			conn.Close()
			return nil
		}
		if permanentSSH(err) || e.ctx.Err() != nil || !time.Now().Before(deadline) {
			return err
		}
		select {
		case <-e.ctx.Done():
			return e.ctx.Err()
		case <-time.After(min(interval, time.Until(deadline)+time.Millisecond)):
		}
	}
}

// hostList names hosts for a message, sorted.
func hostList(m map[string]string) string {
	return strings.Join(slices.Sorted(maps.Keys(m)), ", ")
}
