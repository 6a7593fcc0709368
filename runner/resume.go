package runner

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/store"
)

// closeInterrupted settles the sub-actions of a host that a killed process
// left running, once this run has settled the host itself (keep is the
// host's own action). Within one run every sub-action finishes before the
// host does, so anything still running here is from before the restart: a
// confirmation read succeeded if the host is off, anything else is skipped
// (whether it got through is unknown and no longer matters).
func (e *exec) closeInterrupted(step store.Step, host string, keep int64, off bool) {
	if !e.resumed {
		return
	}
	actions, err := e.jr.StepActions(e.db(), step.ID)
	if err != nil {
		e.log.Error("read actions", "err", err)
		return
	}
	var results []store.ActionResult
	for _, a := range actions {
		if a.Target != host || a.ID == keep || a.State.Final() || (a.TargetKind != store.TargetHost && a.TargetKind != store.TargetBMC) {
			continue
		}
		r := store.ActionResult{ID: a.ID, State: store.ActionSkipped, Detail: "interrupted by restart"}
		if off && a.Operation.ConfirmsOff() {
			r = store.ActionResult{ID: a.ID, State: store.ActionSucceeded, Detail: "Off (confirmed after restart)"}
		}
		results = append(results, r)
	}
	if len(results) > 0 {
		if err := e.jr.Finish(results...); err != nil {
			e.log.Error("finish interrupted actions", "err", err)
		}
	}
}

// DefaultBootIDFile is where Linux gives the id of the current boot: a
// random UUID, new at every boot, the same for every process of one boot.
const DefaultBootIDFile = "/proc/sys/kernel/random/boot_id"

// ReadBootID reads this machine's boot id from path (DefaultBootIDFile
// outside tests).
func ReadBootID(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read boot id: %w", err)
	}
	id := strings.TrimSpace(string(b))
	if id == "" {
		return "", fmt.Errorf("read boot id: %s is empty", path)
	}
	return id, nil
}

// resumeWindow is the configured resume_window; a Config not made by the
// loader (zero) gets the default.
func (r *Runner) resumeWindow() time.Duration {
	return cmp.Or(r.cfg.ResumeWindow, config.DefaultResumeWindow)
}

// heartbeatEvery is how often a running job is touched (store.TouchJob): a
// quarter of the resume window, at most a minute, so a restart within the
// window always finds a record younger than it.
func heartbeatEvery(window time.Duration) time.Duration {
	return min(window/4, time.Minute)
}

// heartbeat touches a running job every so often, so that its last record
// says when the service last worked on it, also in a step that waits for
// minutes without recording anything (a slow VM, a BMC confirmation).
type heartbeat struct {
	every  time.Duration
	last   time.Time
	failed bool // the last touch failed (logged once, not at every beat)
}

// beat touches the job when about every has passed since the last touch;
// "about", so that ticks a hair early do not skip a beat.
func (h *heartbeat) beat(e *exec) {
	if time.Since(h.last) < h.every*3/4 {
		return
	}
	h.last = time.Now()
	err := e.r.store.TouchJob(e.db(), e.job.ID)
	if err != nil && !h.failed {
		e.log.Error("touch job (heartbeat)", "err", err)
	}
	h.failed = err != nil
}

// resumeDecision is the rule for a job that a restart found active (see
// settleInterrupted): it resumes only when this is the boot it last ran in
// and its last record is younger than window. Otherwise why says what ruled
// it out. A job that carries no boot id (recorded before boot ids were
// kept) is judged by its age alone; a machine whose own boot id cannot be
// read resumes nothing, since it cannot tell a reboot from a restart.
func resumeDecision(j store.Job, last time.Time, boot string, window time.Duration, now time.Time) (resume bool, why string) {
	var whys []string
	switch {
	case boot == "":
		whys = append(whys, "the machine may have rebooted (its boot id cannot be read)")
	case j.BootID != "" && j.BootID != boot:
		whys = append(whys, "the machine rebooted")
	}
	if age := now.Sub(last); age >= window {
		whys = append(whys, fmt.Sprintf("last record %s ago", age.Round(time.Second)))
	}
	return len(whys) == 0, strings.Join(whys, "; ")
}

// settleInterrupted applies the resume rule to the job a previous process
// left active (simulations are failed before this). Every kind but a
// simulation is under it (shutdown today, startup tomorrow): both power
// things, and a restored site must never see a job from the outage before.
// A job that may not resume ends failed, with an event and a job.finished
// notification, and nothing is sent to any peer.
func (r *Runner) settleInterrupted(ctx context.Context) error {
	job, err := r.store.ActiveJob(ctx)
	if err != nil || job == nil || job.Kind == store.KindSimulation {
		return err
	}
	last, err := r.store.LastRecord(ctx, job.ID)
	if err != nil {
		return err
	}
	window, now := r.resumeWindow(), time.Now()
	resume, why := resumeDecision(*job, last, r.boot, window, now)
	facts := fmt.Sprintf("boot id of the job %s, of this machine now %s; last record at %s, %s ago; resume_window %s",
		cmp.Or(job.BootID, "(none recorded)"), cmp.Or(r.boot, "(unknown)"), store.FormatTime(last),
		now.Sub(last).Round(time.Millisecond), window)
	log := r.log.With("job_id", job.ID, "kind", job.Kind)
	if resume {
		log.Warn("job interrupted by a restart resumes: same boot, within resume_window", "last_record", last)
		if err := r.store.AddEvent(ctx, job.ID, store.LevelInfo, "same boot, last record within resume_window: the job goes on", facts); err != nil {
			log.Error("add event", "err", err)
		}
		return nil
	}
	msg := fmt.Sprintf("interrupted at %s, not resumed: %s", store.FormatTime(last), why)
	done, err := r.store.EndNotResumed(ctx, job.ID, msg, facts)
	if err != nil || !done {
		return err
	}
	log.Error("job interrupted by a restart not resumed; nothing is powered off", "error", msg)
	if r.obs == nil {
		return nil
	}
	// The job is final: a failed read loses its notification, not the start.
	j, err := r.store.Job(ctx, job.ID)
	if err != nil {
		log.Error("read job for observer", "err", err)
		return nil
	}
	r.obs.JobFinished(ctx, j)
	return nil
}
