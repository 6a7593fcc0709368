package main

import (
	"context"
	"fmt"
	"net/http"

	"github.com/edgeops/shutdownd/handlers"
	"github.com/edgeops/shutdownd/metrics"
	"github.com/edgeops/shutdownd/notify"
	"github.com/edgeops/shutdownd/power"
	"github.com/edgeops/shutdownd/runner"
	"github.com/edgeops/shutdownd/store"
	"github.com/edgeops/shutdownd/web"
)

// handler builds the HTTP handler: the JSON API and everything mounted on
// its router (so every path shares the JSON 404/405 and panic handling).
// Features are wired here, one block each.
func (m *Main) handler(st *store.Store) (http.Handler, error) {
	api := handlers.New(handlers.Options{Store: st, Runner: m.Runner, Logger: m.Logger,
		TrustedProxies: m.Config.TrustedProxies})

	// Power source: the NUT watcher (started by Run), GET /power (read),
	// its metrics, and the overview's UPS reading.
	var webPower web.PowerSource
	if ps := m.Config.PowerSource; ps != nil {
		w, err := power.New(power.Options{Config: ps, Store: st, Forecaster: m.Runner, Runner: m.Runner, Logger: m.Logger})
		if err != nil {
			return nil, fmt.Errorf("power source: %w", err)
		}
		m.Power = w
		api.MountPower(w)
		m.Metrics.WatchPower(w)
		webPower = overviewPower{w}
	} else {
		api.MountPower(nil)
	}

	// History pages: GET / (the overview), /history, /history/{id},
	// login/logout. The overview lists the configured hosts, the runner's
	// forecast and, with a power source, the UPS's runtime beside it.
	if _, err := web.Mount(api.Router(), web.Options{Store: st, API: api, Logger: m.Logger,
		TLS: m.Config.TLS.CertFile != "", Hosts: m.Config.Hosts, SimulationMaxAge: m.Config.Web.SimulationMaxAge,
		Forecaster: m.Runner, Power: webPower}); err != nil {
		return nil, fmt.Errorf("mount history pages: %w", err)
	}

	// Forecast: GET /plan (read).
	api.MountPlan(m.Runner)

	// Prometheus: GET /metrics (open, read token or off), and every
	// request counted by route; this wraps the whole handler, so it stays
	// the last block, inside only the path cleaning that the API does too
	// (so "//shutdown" is counted as the /shutdown it is served as).
	if err := m.Metrics.Mount(api.Router(), m.Config.Metrics.Access, func(h http.Handler) http.Handler {
		return api.RequireScope(handlers.ScopeRead, h)
	}); err != nil {
		return nil, err
	}
	return handlers.CleanPaths(m.Metrics.Instrument(api.Router(), api)), nil
}

// overviewPower shows the watcher's last reading on the overview.
type overviewPower struct{ w *power.Watcher }

func (p overviewPower) PowerReading(ctx context.Context) (web.PowerReading, bool) {
	s := p.w.Status(ctx)
	if s.Reading == nil || !s.Reading.HasRuntime {
		return web.PowerReading{}, false
	}
	return web.PowerReading{Source: s.Source + "@" + s.Address, OnBattery: s.Reading.OnBattery(),
		Runtime: s.Reading.Runtime, At: s.Reading.At}, true
}

// startPower runs the power source watcher, when there is one, until ctx
// ends; Close waits for it with the runner.
func (m *Main) startPower(ctx context.Context) {
	if m.Power == nil {
		return
	}
	m.wg.Go(func() {
		if err := m.Power.Run(ctx); err != nil {
			m.Logger.Error("power source watcher stopped", "err", err)
		}
	})
}

// observer builds what watches the runner: Prometheus metrics and the
// webhook notifier (whose senders run until Close).
func (m *Main) observer(st *store.Store) runner.Observer {
	m.Metrics = metrics.New(st, m.Logger)
	m.Notifier = notify.New(notify.Options{Webhooks: m.Config.Notify.Webhooks, Store: st, Logger: m.Logger})
	return runner.Observers(m.Metrics, m.Notifier)
}
