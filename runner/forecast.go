package runner

import (
	"context"
	"fmt"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/store"
)

// Forecast estimates how long a shutdown would take now: the counts of the
// last simulation, the durations measured in earlier shutdowns, and the
// configured timeouts for what was never measured. It answers GET /plan,
// closes every simulation (as an event) and decides whether a job with a
// deadline is on track.
func (r *Runner) Forecast(ctx context.Context) (store.Forecast, error) {
	m, err := r.store.Measurements(ctx)
	if err != nil {
		return store.Forecast{}, fmt.Errorf("forecast: %w", err)
	}
	return forecast(r.cfg, m, time.Now()), nil
}

// forecast is the model, kept pure for tests. It errs on the long side, as
// an operator compares it with the UPS runtime: a step's measured duration
// is scaled up (never down) by the number of VMs to stop now, hosts of a
// group take as long as the slowest, groups add up, and nothing estimated
// exceeds what the timeouts allow. Self hosts are left out: they go down
// after the job has ended.
func forecast(cfg *config.Config, m store.Measurements, now time.Time) store.Forecast {
	f := store.Forecast{VMsToStop: m.VMsToStop, SimulationJobID: m.SimulationJobID, SimulatedAt: m.SimulatedAt, ComputedAt: now.UTC()}
	f.Steps = []store.StepForecast{forecastVMs(cfg, m), forecastStorage(cfg, m), forecastHosts(cfg, m)}
	for _, s := range f.Steps {
		f.Estimate += s.Estimate
		f.WorstCase += s.WorstCase
	}
	return f
}

func forecastVMs(cfg *config.Config, m store.Measurements) store.StepForecast {
	o := cfg.OpenStack
	s := store.StepForecast{Name: StepOpenStack}
	if !o.Enabled() {
		s.Basis, s.Detail = store.BasisSkipped, "no OpenStack cloud configured"
		return s
	}
	// Authenticate and list (a request each), then the stop timeout.
	s.WorstCase = o.StopTimeout + 2*o.RequestTimeout
	sm, ok := m.Steps[StepOpenStack]
	if !ok {
		s.Estimate, s.Basis, s.Detail = s.WorstCase, store.BasisTimeouts, "never measured: stop_timeout plus two request timeouts"
		return s
	}
	s.Estimate, s.Basis = sm.Duration, store.BasisMeasured
	s.Detail = fmt.Sprintf("shutdown job %d stopped %d VMs in %s", sm.JobID, sm.Stopped, sm.Duration.Round(time.Millisecond))
	if m.VMsToStop >= 0 {
		s.Detail += fmt.Sprintf("; %d to stop now (simulation job %d)", m.VMsToStop, m.SimulationJobID)
		if sm.Stopped > 0 && m.VMsToStop > sm.Stopped {
			s.Estimate = time.Duration(float64(sm.Duration) * float64(m.VMsToStop) / float64(sm.Stopped))
		}
	}
	s.Estimate = min(s.Estimate, s.WorstCase)
	return s
}

func forecastStorage(cfg *config.Config, m store.Measurements) store.StepForecast {
	s := store.StepForecast{Name: StepStorage}
	plan := cfg.Storage.Plan()
	if len(plan) == 0 {
		s.Basis, s.Detail = store.BasisSkipped, "no storage commands"
		return s
	}
	measured := 0
	for _, c := range plan {
		worst := 10 * time.Second
		if h, ok := cfg.Host(c.Host); ok {
			worst = h.SSH.ConnectTimeout + h.SSH.CommandTimeout
		}
		s.WorstCase += worst
		if d, ok := m.StorageCommands[c.Host+"\x00"+c.Command]; ok {
			s.Estimate += min(d, worst)
			measured++
		} else {
			s.Estimate += worst
		}
	}
	s.Basis, s.Detail = basis(measured, len(plan), "commands")
	return s
}

func forecastHosts(cfg *config.Config, m store.Measurements) store.StepForecast {
	s := store.StepForecast{Name: StepHosts}
	groups := cfg.HostGroups()
	measured, total := 0, 0
	for _, g := range groups {
		var est, worst time.Duration
		for _, h := range g {
			total++
			w := h.SSH.ConnectTimeout + h.SSH.CommandTimeout + cfg.Timeouts.HostOff
			if h.BMC != nil {
				w += cfg.Timeouts.BMCSoftOff + cfg.Timeouts.BMCHardOff
			}
			worst = max(worst, w)
			if d, ok := m.Hosts[h.Name]; ok {
				est = max(est, min(d, w))
				measured++
			} else {
				est = max(est, w)
			}
		}
		s.Estimate += est
		s.WorstCase += worst
	}
	if total == 0 {
		s.Basis, s.Detail = store.BasisSkipped, "no hosts besides self"
		return s
	}
	s.Basis, s.Detail = basis(measured, total, "hosts")
	s.Detail += fmt.Sprintf(", %d groups in sequence", len(groups))
	return s
}

func basis(measured, total int, what string) (string, string) {
	detail := fmt.Sprintf("%d of %d %s measured", measured, total, what)
	switch measured {
	case total:
		return store.BasisMeasured, detail
	case 0:
		return store.BasisTimeouts, detail + "; timeouts for the rest"
	}
	return store.BasisMixed, detail + "; timeouts for the rest"
}

// checkDeadline re-evaluates whether a shutdown with a deadline will make
// it: now plus what the forecast says the unfinished steps need (the
// running step counts as already part done). It records a change as an
// event, so the job's log shows when it fell behind.
func (e *exec) checkDeadline(steps []store.Step) {
	if e.job.Deadline == nil || e.job.Kind != store.KindShutdown {
		return
	}
	f, err := e.r.Forecast(e.db())
	if err != nil {
		e.log.Error("forecast", "err", err)
		return
	}
	now := time.Now()
	byName := map[string]store.Step{}
	for _, st := range steps {
		byName[st.Name] = st
	}
	var remaining time.Duration
	for _, sf := range f.Steps {
		st, ok := byName[sf.Name]
		switch {
		case ok && st.State.Final():
		case ok && st.StartedAt != nil:
			remaining += max(0, sf.Estimate-now.Sub(*st.StartedAt))
		default:
			remaining += sf.Estimate
		}
	}
	end := now.Add(remaining)
	e.setOnTrack(!end.After(*e.job.Deadline), fmt.Sprintf("estimated end %s (%s remaining), deadline %s",
		end.UTC().Format(time.RFC3339), remaining.Round(time.Second), e.job.Deadline.UTC().Format(time.RFC3339)))
}

// settleDeadline runs just before the job's final state is written, so that
// the final answer (and the job.finished notification) carries it. It
// closes every simulation with a forecast event. A shutdown with a deadline
// was on track if it ends in time. A simulation's deadline asks "would a
// shutdown requested together with this simulation end in time?", answered
// with the forecast that includes what the simulation just found.
func (e *exec) settleDeadline(state store.State) {
	if state == store.StateCancelled {
		return
	}
	j := e.job
	now := time.Now()
	if j.Kind == store.KindSimulation {
		f, err := e.r.Forecast(e.db())
		if err != nil {
			e.log.Error("forecast", "err", err)
			return
		}
		e.event(store.LevelInfo, fmt.Sprintf("shutdown forecast: about %s (worst case %s)", f.Estimate.Round(time.Second), f.WorstCase.Round(time.Second)),
			forecastDetail(f))
		if j.Deadline != nil {
			end := j.CreatedAt.Add(f.Estimate)
			e.setOnTrack(!end.After(*j.Deadline), fmt.Sprintf("a shutdown requested at %s would end about %s, deadline %s",
				j.CreatedAt.UTC().Format(time.RFC3339), end.UTC().Format(time.RFC3339), j.Deadline.UTC().Format(time.RFC3339)))
		}
		return
	}
	if j.Deadline != nil {
		e.setOnTrack(!now.After(*j.Deadline), fmt.Sprintf("finished %s, deadline %s",
			now.UTC().Format(time.RFC3339), j.Deadline.UTC().Format(time.RFC3339)))
	}
}

func (e *exec) setOnTrack(onTrack bool, detail string) {
	changed, err := e.r.store.SetOnTrack(e.db(), e.job.ID, onTrack)
	if err != nil {
		e.log.Error("set on_track", "err", err)
		return
	}
	if !changed {
		return
	}
	if onTrack {
		e.event(store.LevelInfo, "deadline: on track", detail)
	} else {
		e.event(store.LevelWarn, "deadline: behind", detail)
	}
}

func forecastDetail(f store.Forecast) string {
	s := ""
	for i, st := range f.Steps {
		if i > 0 {
			s += "; "
		}
		s += fmt.Sprintf("%s %s (%s: %s)", st.Name, st.Estimate.Round(time.Second), st.Basis, st.Detail)
	}
	return s
}
