package handlers

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/edgeops/shutdownd/store"
)

// Forecaster estimates how long a shutdown would take now (the runner).
type Forecaster interface {
	Forecast(ctx context.Context) (store.Forecast, error)
}

// PlanJSON is the answer of GET /plan: how long a shutdown started now
// would take, to compare with the UPS runtime. Durations are seconds.
type PlanJSON struct {
	// EstimateSeconds is the expected duration: measured durations of
	// earlier shutdowns, scaled to what the last simulation found, and the
	// worst case for any step never measured.
	EstimateSeconds float64 `json:"estimate_seconds"`
	// WorstCaseSeconds is the most the configured timeouts allow.
	WorstCaseSeconds float64 `json:"worst_case_seconds"`
	// VMsToStop is from the last simulation; null when none listed the
	// servers yet.
	VMsToStop       *int           `json:"vms_to_stop"`
	SimulationJobID *int64         `json:"simulation_job_id"`
	SimulatedAt     *string        `json:"simulated_at"`
	ComputedAt      string         `json:"computed_at"`
	Steps           []PlanStepJSON `json:"steps"`
	// StartupSeconds is how long the last successful startup took, the
	// best guide to how long the site takes to come back; null before
	// any. StartupJobID names that startup.
	StartupSeconds *float64 `json:"startup_seconds"`
	StartupJobID   *int64   `json:"startup_job_id"`
}

// PlanStepJSON is the forecast of one step.
type PlanStepJSON struct {
	Name             string  `json:"name"` // openstack, storage, hosts
	EstimateSeconds  float64 `json:"estimate_seconds"`
	WorstCaseSeconds float64 `json:"worst_case_seconds"`
	Basis            string  `json:"basis"` // measured, mixed, timeouts, skipped
	Detail           string  `json:"detail"`
}

// NewPlanJSON converts a forecast to its API shape.
func NewPlanJSON(f store.Forecast) PlanJSON {
	p := PlanJSON{
		EstimateSeconds:  seconds(f.Estimate),
		WorstCaseSeconds: seconds(f.WorstCase),
		SimulatedAt:      fmtTimePtr(f.SimulatedAt),
		ComputedAt:       fmtTime(f.ComputedAt),
		Steps:            make([]PlanStepJSON, 0, len(f.Steps)),
	}
	if f.VMsToStop >= 0 {
		n := f.VMsToStop
		p.VMsToStop = &n
	}
	if f.SimulationJobID > 0 {
		id := f.SimulationJobID
		p.SimulationJobID = &id
	}
	for _, s := range f.Steps {
		p.Steps = append(p.Steps, PlanStepJSON{Name: s.Name, EstimateSeconds: seconds(s.Estimate),
			WorstCaseSeconds: seconds(s.WorstCase), Basis: s.Basis, Detail: s.Detail})
	}
	return p
}

// seconds rounds to milliseconds: more digits would be noise.
func seconds(d time.Duration) float64 {
	return float64(d.Round(time.Millisecond)) / float64(time.Second)
}

// MountPlan adds GET /plan (scope read), answered by f. It is mounted by the
// program rather than in routes because the forecast needs the site's
// configuration, which only the runner holds.
func (s *Server) MountPlan(f Forecaster) {
	s.router.Handle("/plan", s.RequireScope(ScopeRead, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fc, err := f.Forecast(r.Context())
		if err != nil {
			s.WriteError(w, r, fmt.Errorf("forecast: %w", err))
			return
		}
		p := NewPlanJSON(fc)
		if err := s.addStartup(r.Context(), &p); err != nil {
			s.WriteError(w, r, fmt.Errorf("forecast: %w", err))
			return
		}
		writeData(w, http.StatusOK, p)
	}))).Methods(http.MethodGet)
}

// addStartup fills in the duration of the last successful startup.
func (s *Server) addStartup(ctx context.Context, p *PlanJSON) error {
	js, err := s.store.ListJobs(ctx, store.JobFilter{Kind: store.KindStartup, State: store.StateSucceeded, Limit: 1})
	if err != nil || len(js) == 0 || js[0].StartedAt == nil || js[0].FinishedAt == nil {
		return err
	}
	d, id := seconds(js[0].FinishedAt.Sub(*js[0].StartedAt)), js[0].ID
	p.StartupSeconds, p.StartupJobID = &d, &id
	return nil
}
