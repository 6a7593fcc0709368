package power

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/edgeops/shutdownd/nut"
	"github.com/edgeops/shutdownd/store"
)

// decide starts the shutdown when the state read calls for it, and the
// startup when the mains have been back long enough.
func (w *Watcher) decide(ctx context.Context, now time.Time) {
	w.mu.Lock()
	s := w.s
	w.mu.Unlock()
	if s.onBattery && s.connected && w.forecast != nil {
		f, err := w.forecast.Forecast(ctx)
		if err != nil {
			w.log.Error("no forecast: the runtime condition is not checked this time", "err", err)
		} else {
			w.mu.Lock()
			w.s.forecast = &f
			s.forecast = &f
			w.mu.Unlock()
		}
	}
	if s.outageJob == 0 {
		if reason := w.trigger(s, now); reason != "" {
			w.startShutdown(ctx, s, now, reason)
		}
		return
	}
	if !s.onBattery && s.connected {
		w.maybeStartup(ctx, s, now)
	}
}

// trigger returns why a shutdown must start now, or "".
func (w *Watcher) trigger(s state, now time.Time) string {
	r := s.reading
	if s.connected && r.Has(nut.StatusForced) {
		return "the UPS flags FSD (forced shutdown): " + readingText(r)
	}
	if !s.onBattery {
		return ""
	}
	onBattery := now.Sub(s.batterySince)
	if onBattery < w.cfg.OnBatteryGrace {
		return ""
	}
	lead := "on battery " + secs(onBattery)
	if !s.connected {
		return fmt.Sprintf("%s, NUT server lost since %s (%s); last reading %s", lead,
			s.lostAt.UTC().Format(time.RFC3339), s.lastErr, readingText(r))
	}
	when := w.cfg.ShutdownWhen
	if when.LowBattery && r.Has(nut.StatusLowBattery) {
		return fmt.Sprintf("%s, the UPS flags LB (low battery): %s", lead, readingText(r))
	}
	if r.HasRuntime && s.forecast != nil && r.Runtime < s.forecast.Estimate+when.RuntimeMargin {
		return fmt.Sprintf("%s, runtime %s < forecast %s + margin %s", lead, secs(r.Runtime), secs(s.forecast.Estimate), secs(when.RuntimeMargin))
	}
	if when.ChargeBelow > 0 && r.HasCharge && r.Charge < when.ChargeBelow {
		return fmt.Sprintf("%s, charge %s%% < %s%%", lead, pct(r.Charge), pct(when.ChargeBelow))
	}
	return ""
}

// startShutdown creates the shutdown as POST /shutdown does, unless one was
// created since the outage began: that one (a manual request during the
// grace, say) is this outage's job, even if it has ended or was cancelled
// by an operator. A store error leaves outageJob 0, so the next poll tries
// again.
func (w *Watcher) startShutdown(ctx context.Context, s state, now time.Time, reason string) {
	since := s.batterySince
	if since.IsZero() {
		since = now
	}
	latest, err := w.store.LatestJob(ctx, store.KindShutdown)
	if err != nil {
		w.log.Error("shutdown due but the store cannot be read; trying again at the next poll", "reason", reason, "err", err)
		return
	}
	job, created := latest, false
	// The watcher notices the mains gone up to one poll late; a request
	// sent by a faster UPS controller in that poll belongs to the outage.
	if latest == nil || latest.CreatedAt.Before(since.Add(-w.cfg.PollInterval)) {
		j, c, err := w.store.CreateShutdown(ctx, store.NewJob{TokenName: TokenPrefix + w.source,
			RemoteAddr: w.cfg.NUT.Address, Reason: reason})
		if err != nil {
			w.log.Error("shutdown due but not created; trying again at the next poll", "reason", reason, "err", err)
			return
		}
		job, created = &j, c
	}
	if created && w.runner != nil {
		w.runner.Kick()
	}
	w.mu.Lock()
	w.s.outageJob, w.s.lastShutdown, w.s.reason = job.ID, job.ID, reason
	w.mu.Unlock()
	detail := fmt.Sprintf("started shutdown job %d: %s", job.ID, reason)
	if !created {
		detail = fmt.Sprintf("shutdown due (%s); shutdown job %d (from %s) already handles this outage, none added", reason, job.ID, job.TokenName)
	}
	w.log.Warn("power source: shutdown", "job", job.ID, "created", created, "reason", reason)
	id := job.ID
	w.record(ctx, withReading(store.PowerEvent{Kind: store.PowerShutdown, Level: store.PowerCritical, JobID: &id, Detail: detail}, s.reading))
}

// maybeStartup asks the startup hook to restore the outage's shutdown once
// the mains have been back for startup_after and the battery holds
// startup_min_charge, and that shutdown succeeded.
func (w *Watcher) maybeStartup(ctx context.Context, s state, now time.Time) {
	if w.cfg.StartupAfter <= 0 || s.startupAsked || s.lastShutdown == 0 {
		return
	}
	r := s.reading
	if now.Sub(s.mainsSince) < w.cfg.StartupAfter || !r.HasCharge || r.Charge < w.cfg.StartupMinCharge {
		return
	}
	j, err := w.store.Job(ctx, s.lastShutdown)
	if err != nil || j.State != store.StateSucceeded {
		return
	}
	reason := fmt.Sprintf("mains back %s, charge %s%% >= %s%%", secs(now.Sub(s.mainsSince)), pct(r.Charge), pct(w.cfg.StartupMinCharge))
	id, err := w.startup.StartStartup(ctx, s.lastShutdown, reason)
	if err != nil {
		w.log.Error("startup due but not started; trying again at the next poll", "reason", reason, "err", err)
		return
	}
	w.mu.Lock()
	w.s.startupAsked, w.s.outageJob = true, 0
	w.mu.Unlock()
	w.record(ctx, withReading(store.PowerEvent{Kind: store.PowerStartup, Level: store.PowerInfo, JobID: &id,
		Detail: fmt.Sprintf("started startup job %d: %s", id, reason)}, r))
}

func readingText(r nut.Reading) string {
	t := "status " + r.StatusText()
	if r.HasCharge {
		t += ", charge " + pct(r.Charge) + "%"
	}
	if r.HasRuntime {
		t += ", runtime " + secs(r.Runtime)
	}
	return t
}

// secs writes a duration in whole seconds, as the reasons do: "94 s".
func secs(d time.Duration) string {
	return strconv.FormatInt(int64(d.Round(time.Second)/time.Second), 10) + " s"
}

func pct(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
