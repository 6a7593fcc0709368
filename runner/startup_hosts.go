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
	"github.com/edgeops/shutdownd/runner/internal/pool"
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
	var next map[string]*powerRead
	defer func() { closeReads(e, next) }()
	for gi, g := range groups {
		if e.stopping() {
			return store.StepCancelled, fmt.Sprintf("%d/%d hosts up", up.Load(), total), errCancelled
		}
		label := groupLabel(g)
		rec.setProgress("Powering on hosts: %s (%d/%d up)", label, up.Load(), total)
		rec.event("info", fmt.Sprintf("host group %d (%s) starting", gi+1, label))
		reads := next
		if reads == nil {
			reads = e.readPowers(step, g, back, rec)
		}
		next = nil
		var wg, sent sync.WaitGroup
		for _, h := range g {
			if back[h.Name] {
				continue
			}
			sent.Add(1)
			wg.Go(func() {
				if e.startHost(step, h, reads[h.Name], sent.Done, rec) {
					up.Add(1)
				} else if e.ctx.Err() == nil {
					failed.Add(1)
				}
				rec.setProgress("Powering on hosts: %s (%d/%d up)", label, up.Load(), total)
			})
		}
		// While this group boots, the next group's BMC sessions open and
		// read the power state: at its turn only the power-on is left to
		// send. Not before this group's power-ons are out, whose logins
		// would otherwise share the CPU with them.
		sent.Wait()
		if gi+1 < len(groups) && !e.stopping() {
			next = e.readPowers(step, groups[gi+1], back, rec)
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
func (e *exec) startHost(step store.Step, h config.Host, read *powerRead, sent func(), rec *recorder) bool {
	key := store.ActionKey{JobID: e.job.ID, StepID: step.ID, TargetKind: "host", Target: h.Name, Operation: opPowerOn}
	a, err := rec.begin(key, "")
	if err != nil {
		sent()
		closeRead(e, read)
		e.log.Error("record action", "err", err)
		return false
	}
	start := time.Now()
	bmcErr := e.powerOnByBMC(step, h, read, rec)
	sent()
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
	if pool.PermanentSSH(err) {
		msg = fmt.Sprintf("SSH refused: %v", err)
	}
	if bmcErr != nil {
		msg = fmt.Sprintf("BMC does not answer (%v); %s", bmcErr, msg)
	}
	rec.finish(a.ID, store.ActionFailed, "", msg)
	return false
}

// powerRead is a host's BMC session and the power state it read, ready
// (done closed) or being read.
type powerRead struct {
	ctl   PowerController
	state bmc.PowerState
	err   error
	done  chan struct{}
}

// readPowers opens the BMC session of every host of g not back yet and
// reads its power state, in the background; each read is recorded.
func (e *exec) readPowers(step store.Step, g []config.Host, back map[string]bool, rec *recorder) map[string]*powerRead {
	out := map[string]*powerRead{}
	for _, h := range g {
		if back[h.Name] || h.BMC == nil {
			continue
		}
		pr := &powerRead{done: make(chan struct{})}
		out[h.Name] = pr
		go func() {
			defer close(pr.done)
			pr.ctl, pr.state, pr.err = e.readPower(step, h, rec)
		}()
	}
	return out
}

// readPower opens h's BMC session and reads the power state, recording it.
func (e *exec) readPower(step store.Step, h config.Host, rec *recorder) (PowerController, bmc.PowerState, error) {
	key := store.ActionKey{JobID: e.job.ID, StepID: step.ID, TargetKind: "bmc", Target: h.Name, Operation: opBMCPowerState}
	a, err := rec.begin(key, fmt.Sprintf("%s %s", h.BMC.Protocol, h.BMC.Address))
	if err != nil {
		return nil, bmc.Unknown, fmt.Errorf("record action: %w", err)
	}
	ctl, err := e.r.deps.OpenBMC(e.ctx, h)
	if err == nil {
		var ps bmc.PowerState
		if ps, err = ctl.PowerState(e.ctx); err == nil {
			rec.finish(a.ID, store.ActionSucceeded, string(ps), "")
			return ctl, ps, nil
		}
		ctl.Close(context.WithoutCancel(e.ctx))
	}
	if e.ctx.Err() == nil {
		rec.finish(a.ID, store.ActionFailed, "", err.Error())
	}
	return nil, bmc.Unknown, err
}

// closeRead closes a read's session once the read has ended.
func closeRead(e *exec, pr *powerRead) {
	if pr == nil {
		return
	}
	<-pr.done
	if pr.ctl != nil {
		pr.ctl.Close(context.WithoutCancel(e.ctx))
	}
}

func closeReads(e *exec, reads map[string]*powerRead) {
	for _, pr := range reads {
		closeRead(e, pr)
	}
}

// powerOnByBMC powers h on when its BMC read Off (read, or a read of its
// own when nil), recording the request. It returns why the BMC could not
// be used (nil when the host is On, was powered on, or has no BMC). A
// power-on refused on a session opened in advance (a BMC ends idle
// sessions) is sent once more on a new session, after a new read: a
// power-on to a host that reads Off is never a second power-on.
func (e *exec) powerOnByBMC(step store.Step, h config.Host, read *powerRead, rec *recorder) error {
	if h.BMC == nil {
		rec.event("warn", fmt.Sprintf("host %s has no BMC: waiting for it to be powered on by other means", h.Name))
		return nil
	}
	early := read != nil
	if read == nil {
		read = &powerRead{done: make(chan struct{})}
		read.ctl, read.state, read.err = e.readPower(step, h, rec)
		close(read.done)
	}
	<-read.done
	defer closeRead(e, read)
	if read.err != nil {
		return read.err
	}
	if read.state != bmc.Off {
		return nil // On already (by hand, by itself, or our power-on before a restart)
	}
	if e.stopping() {
		return errCancelled
	}
	on, err := rec.begin(store.ActionKey{JobID: e.job.ID, StepID: step.ID, TargetKind: "bmc", Target: h.Name, Operation: opBMCPowerOn}, "")
	if err != nil {
		return fmt.Errorf("record action: %w", err)
	}
	err = read.ctl.PowerOn(e.ctx)
	if err != nil && early && e.ctx.Err() == nil {
		e.event("info", fmt.Sprintf("host %s: power-on on the BMC session opened in advance failed; reading again on a new one", h.Name), err.Error())
		fresh := &powerRead{done: make(chan struct{})}
		fresh.ctl, fresh.state, fresh.err = e.readPower(step, h, rec)
		close(fresh.done)
		defer closeRead(e, fresh)
		switch {
		case fresh.err != nil:
			err = fresh.err
		case fresh.state != bmc.Off:
			err = nil // it is on: the first request did reach it
		default:
			err = fresh.ctl.PowerOn(e.ctx)
		}
	}
	if err != nil {
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
		if pool.PermanentSSH(err) || e.ctx.Err() != nil || !time.Now().Before(deadline) {
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
