// Package power watches the site's UPS through a NUT server and starts the
// shutdown by itself (SPEC section 7). It guarantees:
//
//   - a blip is never a shutdown: on battery for less than on_battery_grace,
//     then back on mains, records two power events and nothing else;
//   - at most one shutdown per outage: the job is created through
//     store.CreateShutdown, exactly as POST /shutdown does (never a second
//     job while one runs), and a shutdown created by anyone since the
//     outage began (a manual POST during the grace) is that outage's job;
//   - losing the NUT server while the last state was on battery counts as
//     critical, as NUT's own upsmon does: once the grace has passed since
//     the mains went away, the shutdown starts; losing it on mains is a
//     warning and no job;
//   - a restart of the service during an outage does not restart the
//     grace: the state is taken back from the stored power events.
//
// Every change of mains or battery state, and every loss and return of the
// NUT server, is a power event in the store.
package power

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/nut"
	"github.com/edgeops/shutdownd/store"
)

// TokenPrefix starts the token name of every job the watcher creates:
// power-source:nut/<ups>.
const TokenPrefix = "power-source:"

// Forecaster estimates how long a shutdown started now would take (the
// runner).
type Forecaster interface {
	Forecast(ctx context.Context) (store.Forecast, error)
}

// Kicker wakes the runner once a job was created.
type Kicker interface{ Kick() }

// StartupStarter starts the startup job that restores the shutdown
// shutdownJob, for startup_after/startup_min_charge. Options.Startup nil
// means the store's own (storeStartup): the job is created as POST /startup
// creates it, named after the power source.
type StartupStarter interface {
	StartStartup(ctx context.Context, shutdownJob int64, reason string) (jobID int64, err error)
}

// Options configures a Watcher.
type Options struct {
	Config     *config.PowerSource
	Store      *store.Store
	Forecaster Forecaster
	Runner     Kicker // may be nil: the runner notices the job at its next poll
	Startup    StartupStarter
	Logger     *slog.Logger
}

// Watcher polls the UPS and acts on what it reads. Run it with Run; Status
// is safe to call from any goroutine.
type Watcher struct {
	cfg      *config.PowerSource
	store    *store.Store
	forecast Forecaster
	runner   Kicker
	startup  StartupStarter
	log      *slog.Logger
	src      *nut.Session
	source   string

	mu sync.Mutex
	s  state
}

// state is what the watcher knows; guarded by Watcher.mu.
type state struct {
	// connected: the last read succeeded; lostAt is when reads started
	// failing (zero while connected or before the first read).
	connected, lostLogged bool
	lostAt                time.Time
	lastErr               string
	losses                int
	// reading is the last successful reading; hasReading before the first.
	reading    nut.Reading
	hasReading bool
	// onBattery is the last known state; batterySince is when the mains
	// went away (zero on mains), mainsSince when they came back.
	onBattery                bool
	batterySince, mainsSince time.Time
	// outageJob is the shutdown of the current outage (0: none yet);
	// lastShutdown the latest one the watcher knows, for the startup.
	outageJob, lastShutdown int64
	startupAsked            bool
	forecast                *store.Forecast
	reason                  string // why the shutdown started
}

// New builds a watcher over the configured NUT server.
func New(o Options) (*Watcher, error) {
	n := o.Config.NUT
	opts := nut.Options{Address: n.Address, UPS: n.UPS, User: n.User, Password: string(n.Password), Timeout: n.Timeout}
	if n.StartTLS {
		cfg, err := nut.TLSConfig(n.CAFile)
		if err != nil {
			return nil, err
		}
		opts.TLS = cfg
	}
	// Reconnect at the poll interval at first, then back off to at most
	// eight polls (and never more than 30 s), so that a NUT server that
	// comes back is read again within seconds.
	src := nut.NewSession(opts, o.Config.PollInterval, min(8*o.Config.PollInterval, 30*time.Second))
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	startup := o.Startup
	if startup == nil {
		startup = storeStartup{st: o.Store, runner: o.Runner, source: o.Config.Source()}
	}
	return &Watcher{cfg: o.Config, store: o.Store, forecast: o.Forecaster, runner: o.Runner, startup: startup,
		log: log.With("power_source", o.Config.Source()), src: src, source: o.Config.Source()}, nil
}

// storeStartup creates the startup job in the store, as POST /startup
// does (never while another job is active), with the power source as its
// trigger, and wakes the runner.
type storeStartup struct {
	st     *store.Store
	runner Kicker
	source string
}

// StartStartup creates the startup job restoring shutdownJob.
func (s storeStartup) StartStartup(ctx context.Context, shutdownJob int64, reason string) (int64, error) {
	j, err := s.st.CreateStartup(ctx, store.NewJob{TokenName: TokenPrefix + s.source, Reason: reason}, shutdownJob)
	if err != nil {
		return 0, fmt.Errorf("create startup job: %w", err)
	}
	if s.runner != nil {
		s.runner.Kick()
	}
	return j.ID, nil
}

// Run polls every poll_interval until ctx ends, then logs out.
func (w *Watcher) Run(ctx context.Context) error {
	defer w.src.Close()
	if err := w.restore(ctx); err != nil {
		w.log.Error("power events could not be read back; the grace starts from the first reading", "err", err)
	}
	t := time.NewTicker(w.cfg.PollInterval)
	defer t.Stop()
	for {
		w.Poll(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// restore takes the outage back from the stored power events after a
// restart: when the last mains/battery event of this source says battery,
// the grace counts from then, and a shutdown recorded since is the
// outage's job.
func (w *Watcher) restore(ctx context.Context) error {
	evs, err := w.store.PowerEvents(ctx, store.PowerEventFilter{Limit: 200})
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range evs { // newest first
		if e.Source != w.source {
			continue
		}
		switch e.Kind {
		case store.PowerShutdown:
			if w.s.lastShutdown == 0 && e.JobID != nil {
				w.s.lastShutdown = *e.JobID
			}
			continue
		case store.PowerOnBattery:
			w.s.onBattery, w.s.batterySince = true, e.At
			if w.s.lastShutdown != 0 {
				w.s.outageJob = w.s.lastShutdown
			}
		case store.PowerOnMains:
			w.s.mainsSince = e.At
		default:
			continue
		}
		return nil
	}
	return nil
}

// Poll reads the UPS once and acts on it.
func (w *Watcher) Poll(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, w.cfg.NUT.Timeout+time.Second)
	r, err := w.src.Read(rctx)
	cancel()
	if ctx.Err() != nil {
		return
	}
	now := time.Now()
	if err != nil {
		w.lost(ctx, now, err)
	} else {
		w.read(ctx, now, r)
	}
	w.decide(ctx, now)
}

// record stores a power event; a store that cannot be written does not
// stop the watcher (its decision is in the service log too).
func (w *Watcher) record(ctx context.Context, e store.PowerEvent) {
	e.Source = w.source
	if _, err := w.store.AddPowerEvent(context.WithoutCancel(ctx), e); err != nil {
		w.log.Error("power event not stored", "kind", e.Kind, "detail", e.Detail, "err", err)
	}
}

// withReading fills an event's reading fields.
func withReading(e store.PowerEvent, r nut.Reading) store.PowerEvent {
	e.Status = r.StatusText()
	if r.HasCharge {
		c := r.Charge
		e.Charge = &c
	}
	if r.HasRuntime {
		d := r.Runtime
		e.Runtime = &d
	}
	return e
}

// lost handles a failed read: the first failure of a run of them is a
// connection_lost event, critical when the last state was on battery.
func (w *Watcher) lost(ctx context.Context, now time.Time, err error) {
	w.mu.Lock()
	first := !w.s.lostLogged
	w.s.connected, w.s.lastErr = false, err.Error()
	if first {
		w.s.lostLogged, w.s.lostAt = true, now
		w.s.losses++
	}
	onBattery := w.s.onBattery
	w.mu.Unlock()
	if !first {
		return
	}
	level, what := store.PowerWarn, "on mains when last read: no shutdown for this"
	if onBattery {
		level, what = store.PowerCritical, "on battery when last read: critical, as upsmon treats it"
	}
	w.log.Warn("NUT server lost", "err", err, "on_battery", onBattery)
	w.record(ctx, store.PowerEvent{Kind: store.PowerConnectionLost, Level: level, Detail: fmt.Sprintf("%s; %s", err, what)})
}

// read handles a successful read: the return of the server, and a change
// between mains and battery, are events.
func (w *Watcher) read(ctx context.Context, now time.Time, r nut.Reading) {
	w.mu.Lock()
	back := w.s.lostLogged
	w.s.connected, w.s.lostLogged, w.s.lastErr = true, false, ""
	lostAt := w.s.lostAt
	changed := r.OnBattery() != w.s.onBattery
	if !r.OnBattery() && w.s.mainsSince.IsZero() {
		// The first reading on mains is the normal state, not a change.
		w.s.mainsSince = now
	}
	w.s.reading, w.s.hasReading = r, true
	if changed {
		w.s.onBattery = r.OnBattery()
		if w.s.onBattery {
			w.s.batterySince, w.s.outageJob, w.s.reason = now, 0, ""
		} else {
			w.s.batterySince, w.s.mainsSince, w.s.startupAsked = time.Time{}, now, false
		}
	}
	w.mu.Unlock()
	if back {
		w.log.Info("NUT server answers again", "status", r.StatusText())
		w.record(ctx, withReading(store.PowerEvent{Kind: store.PowerConnectionBack, Level: store.PowerInfo,
			Detail: fmt.Sprintf("answering again after %s", now.Sub(lostAt).Round(time.Second))}, r))
	}
	if !changed {
		return
	}
	if r.OnBattery() {
		w.log.Warn("UPS on battery", "status", r.StatusText(), "charge", r.Charge, "runtime", r.Runtime)
		w.record(ctx, withReading(store.PowerEvent{Kind: store.PowerOnBattery, Level: store.PowerWarn,
			Detail: fmt.Sprintf("mains lost; a shutdown can start after the grace of %s", w.cfg.OnBatteryGrace)}, r))
		return
	}
	w.log.Info("UPS on mains", "status", r.StatusText())
	w.record(ctx, withReading(store.PowerEvent{Kind: store.PowerOnMains, Level: store.PowerInfo, Detail: "mains back"}, r))
}
