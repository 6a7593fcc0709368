package web

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/edgeops/shutdownd/store"
	"github.com/edgeops/shutdownd/web/timeline"
)

// PowerSource is the site's UPS as the pages need it: the overview compares
// the forecast of a shutdown with its battery runtime, and the timeline of
// a running job draws when the battery runs out. It is the hook for the
// power source watcher still to come; with none configured (Options.Power
// nil) the overview shows the forecast alone.
type PowerSource interface {
	// PowerReading returns the last reading; ok is false before the first.
	PowerReading(ctx context.Context) (r PowerReading, ok bool)
}

// PowerReading is one reading of the UPS.
type PowerReading struct {
	Source    string // e.g. "nut:ups1@10.0.0.2:3493", shown as is
	OnBattery bool
	// Runtime is the battery runtime the UPS reports (battery.runtime).
	Runtime time.Duration
	At      time.Time // when it was read
}

// Empty is when the battery runs out at the reported rate.
func (p PowerReading) Empty() time.Time { return p.At.Add(p.Runtime) }

type overviewData struct {
	base
	Roles  []roleHosts
	Hosts  int
	Active *activeView
	Sim    simView
	// LastShutdown and LastStartup are nil when there was none.
	LastShutdown, LastStartup *lastJob
	Forecast                  *forecastView
	ForecastErr               bool
	Power                     *PowerReading
	PowerConfigured           bool
}

// activeView is the job running now, with its progress.
type activeView struct {
	store.JobSummary
	Duration time.Duration
	Steps    []store.Step
	Done     int // target actions ended (succeeded, failed or skipped)
}

type simView struct {
	Last   *lastJob // last successful simulation
	Age    time.Duration
	MaxAge time.Duration
	Stale  bool // older than MaxAge, or none at all
	// Latest is the newest simulation when it is not Last (it failed, or
	// runs): a failure after the last success is news.
	Latest *lastJob
}

type lastJob struct {
	store.Job
	Duration time.Duration
	Ago      time.Duration // since it finished (or was created)
}

type forecastView struct {
	store.Forecast
	Chart timeline.ForecastChart
	// Verdict compares with the UPS runtime: covered (even the worst
	// case), estimate (the estimate only), short, or "" without a reading.
	Verdict string
	Margin  time.Duration // runtime minus the estimate (negative: short)
}

func (w *Web) handleOverview(rw http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	now := w.now()
	d := overviewData{base: w.base(r, "Site overview"), Hosts: len(w.hosts), PowerConfigured: w.power != nil}
	power, err := w.hostPowers(ctx)
	if err != nil {
		w.serverError(rw, r, err)
		return
	}
	d.Roles = byRole(w.hosts, power)
	if d.Active, err = w.activeJob(ctx, now); err != nil {
		w.serverError(rw, r, err)
		return
	}
	d.Reload = d.Active != nil
	if d.Sim, err = w.simulations(ctx, now); err != nil {
		w.serverError(rw, r, err)
		return
	}
	if d.LastShutdown, err = w.latest(ctx, store.KindShutdown, now); err != nil {
		w.serverError(rw, r, err)
		return
	}
	if d.LastStartup, err = w.latest(ctx, store.KindStartup, now); err != nil {
		w.serverError(rw, r, err)
		return
	}
	if w.power != nil {
		if p, ok := w.power.PowerReading(ctx); ok {
			d.Power = &p
		}
	}
	if w.forecaster != nil {
		f, err := w.forecaster.Forecast(ctx)
		if err != nil {
			// The rest of the overview still helps; the log has the cause.
			w.log.LogAttrs(ctx, slog.LevelWarn, "overview forecast", slog.Any("err", err))
			d.ForecastErr = true
		} else {
			d.Forecast = newForecastView(f, d.Power)
		}
	}
	w.render(rw, r, http.StatusOK, "overview", d)
}

func newForecastView(f store.Forecast, p *PowerReading) *forecastView {
	v := &forecastView{Forecast: f}
	var runtime *time.Duration
	if p != nil {
		runtime = &p.Runtime
		v.Margin = p.Runtime - f.Estimate
		switch {
		case p.Runtime >= f.WorstCase:
			v.Verdict = "covered"
		case p.Runtime >= f.Estimate:
			v.Verdict = "estimate"
		default:
			v.Verdict = "short"
		}
	}
	v.Chart = timeline.BuildForecast(f, runtime)
	return v
}

func (w *Web) activeJob(ctx context.Context, now time.Time) (*activeView, error) {
	j, err := w.store.ActiveJob(ctx)
	if err != nil || j == nil {
		return nil, err
	}
	sums, err := w.store.JobSummaries(ctx, store.JobFilter{Before: j.ID + 1, Limit: 1})
	if err != nil {
		return nil, err
	}
	v := &activeView{JobSummary: store.JobSummary{Job: *j}}
	if len(sums) == 1 && sums[0].ID == j.ID {
		v.JobSummary = sums[0]
	}
	v.Duration = v.JobSummary.Duration(now)
	v.Done = v.Succeeded + v.Failed + v.Skipped
	if v.Steps, err = w.store.Steps(ctx, j.ID); err != nil {
		return nil, err
	}
	return v, nil
}

func (w *Web) simulations(ctx context.Context, now time.Time) (simView, error) {
	v := simView{MaxAge: w.simMaxAge, Stale: true}
	ok, err := w.store.ListJobs(ctx, store.JobFilter{Kind: store.KindSimulation, State: store.StateSucceeded, Limit: 1})
	if err != nil {
		return v, fmt.Errorf("read last simulation: %w", err)
	}
	if len(ok) == 1 {
		v.Last = newLastJob(ok[0], now)
		v.Age = v.Last.Ago
		v.Stale = v.Age > w.simMaxAge
	}
	latest, err := w.latest(ctx, store.KindSimulation, now)
	if err != nil {
		return v, err
	}
	if latest != nil && (v.Last == nil || latest.ID != v.Last.ID) {
		v.Latest = latest
	}
	return v, nil
}

func (w *Web) latest(ctx context.Context, kind store.Kind, now time.Time) (*lastJob, error) {
	j, err := w.store.LatestJob(ctx, kind)
	if err != nil || j == nil {
		return nil, err
	}
	return newLastJob(*j, now), nil
}

func newLastJob(j store.Job, now time.Time) *lastJob {
	l := &lastJob{Job: j, Duration: span(j.StartedAt, j.FinishedAt, now)}
	end := j.CreatedAt
	if j.FinishedAt != nil {
		end = *j.FinishedAt
	}
	l.Ago = now.Sub(end)
	return l
}

// fmtAgo says how long ago, in the largest unit that matters: "just now",
// "12 min ago", "5 h ago", "3 days ago".
func fmtAgo(d time.Duration) string {
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return fmt.Sprintf("%d min ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h ago", int(d.Hours()))
	default:
		return fmt.Sprintf("%d days ago", int(d.Hours()/24))
	}
}

// fmtAge writes a configured age: 168h is "7 days", 36h is "36 h".
func fmtAge(d time.Duration) string {
	if d >= 48*time.Hour && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%d days", int(d.Hours()/24))
	}
	if d%time.Hour == 0 {
		return fmt.Sprintf("%d h", int(d.Hours()))
	}
	return d.String()
}
