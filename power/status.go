package power

import (
	"context"
	"fmt"
	"time"

	"github.com/edgeops/shutdownd/nut"
	"github.com/edgeops/shutdownd/store"
)

// Status is what the watcher knows and will do, for GET /power, the
// metrics and the overview.
type Status struct {
	Source  string // nut/<ups>
	UPS     string
	Address string
	// Connected: the last read succeeded. LostSince is when reads started
	// failing; LastError why (nil and "" while connected).
	Connected bool
	LostSince *time.Time
	LastError string
	// ConnectionLosses counts the losses since the service started.
	ConnectionLosses int
	// Reading is the last successful reading; nil before the first.
	Reading *nut.Reading
	// OnBattery is the last known state (kept while disconnected);
	// OnBatterySince is when the mains went away.
	OnBattery      bool
	OnBatterySince *time.Time
	Grace          time.Duration
	// Forecast is a shutdown started now; nil when it could not be
	// computed.
	Forecast *store.Forecast
	Margin   time.Duration
	// MarginLeft is runtime - (forecast + margin): how long before the
	// runtime condition starts a shutdown; nil without runtime or forecast.
	MarginLeft *time.Duration
	// ShutdownJob is the shutdown of the current outage, 0 when none.
	ShutdownJob int64
	Reason      string
	// Next says in words what happens next; NextIn, when set, is about
	// how long until the shutdown if nothing changes.
	Next   string
	NextIn *time.Duration
}

// Status returns the watcher's state now, with a fresh forecast.
func (w *Watcher) Status(ctx context.Context) Status {
	var fc *store.Forecast
	if w.forecast != nil {
		if f, err := w.forecast.Forecast(ctx); err == nil {
			fc = &f
		}
	}
	w.mu.Lock()
	s := w.s
	w.mu.Unlock()
	now := time.Now()
	st := Status{Source: w.source, UPS: w.cfg.NUT.UPS, Address: w.cfg.NUT.Address, Connected: s.connected,
		LastError: s.lastErr, ConnectionLosses: s.losses, OnBattery: s.onBattery, Grace: w.cfg.OnBatteryGrace,
		Forecast: fc, Margin: w.cfg.ShutdownWhen.RuntimeMargin, ShutdownJob: s.outageJob, Reason: s.reason}
	if s.lostLogged {
		t := s.lostAt
		st.LostSince = &t
	}
	if s.hasReading {
		r := s.reading
		st.Reading = &r
	}
	if s.onBattery {
		t := s.batterySince
		st.OnBatterySince = &t
	}
	if s.hasReading && s.reading.HasRuntime && fc != nil {
		left := s.reading.Runtime - fc.Estimate - st.Margin
		st.MarginLeft = &left
	}
	st.Next, st.NextIn = w.next(s, st, now)
	return st
}

// next says what the watcher will do, in words an operator reads at a
// glance during an outage.
func (w *Watcher) next(s state, st Status, now time.Time) (string, *time.Duration) {
	in := func(d time.Duration) *time.Duration { d = max(d, 0); return &d }
	switch {
	case s.outageJob != 0 && s.onBattery:
		return fmt.Sprintf("nothing more: shutdown job %d handles this outage", s.outageJob), nil
	case !s.hasReading && !s.connected && !s.lostLogged:
		return "waiting for the first reading of the UPS", nil
	case !s.connected && !s.onBattery:
		return "nothing: the NUT server does not answer, and the UPS was on mains when last read; a shutdown starts only if it answers again on battery", nil
	case !s.onBattery:
		if s.outageJob != 0 && w.cfg.StartupAfter > 0 {
			if w.startup == nil {
				return fmt.Sprintf("nothing: on mains after shutdown job %d; the startup by the power source is not available in this build", s.outageJob), nil
			}
			return fmt.Sprintf("startup once the mains have been back %s and the charge is at least %.0f%%", w.cfg.StartupAfter, w.cfg.StartupMinCharge), nil
		}
		return "nothing: on mains", nil
	}
	graceLeft := w.cfg.OnBatteryGrace - now.Sub(s.batterySince)
	if !s.connected {
		if graceLeft > 0 {
			return fmt.Sprintf("shutdown in about %s unless the NUT server answers on mains: it was lost while on battery", secs(graceLeft)), in(graceLeft)
		}
		return "shutdown now: the NUT server was lost while on battery", in(0)
	}
	if w.trigger(state{connected: true, onBattery: true, batterySince: now.Add(-w.cfg.OnBatteryGrace), reading: s.reading, forecast: st.Forecast}, now) != "" {
		return fmt.Sprintf("shutdown in about %s if still on battery", secs(max(graceLeft, 0))), in(graceLeft)
	}
	if st.MarginLeft != nil {
		// The runtime falls about a second per second on battery.
		d := max(graceLeft, *st.MarginLeft)
		return fmt.Sprintf("shutdown in about %s if still on battery (when the runtime falls below the forecast plus the margin)", secs(max(d, 0))), in(d)
	}
	return "shutdown when the UPS flags low battery or the charge falls below the threshold, if still on battery", nil
}
