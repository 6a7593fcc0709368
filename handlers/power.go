package handlers

import (
	"context"
	"net/http"
	"time"

	"github.com/edgeops/shutdownd/power"
)

// PowerSource is the power source watcher as GET /power needs it.
type PowerSource interface {
	Status(ctx context.Context) power.Status
}

// PowerJSON is the answer of GET /power (SPEC section 7). Without a power
// source only Configured is sent (false). Durations are seconds.
type PowerJSON struct {
	Configured bool    `json:"configured"`
	Source     *string `json:"source,omitempty"`
	UPS        *string `json:"ups,omitempty"`
	Address    *string `json:"address,omitempty"`
	// Connected: the last read of the NUT server succeeded.
	Connected *bool `json:"connected,omitempty"`
	// LostSince and LastError say since when and why it does not answer.
	LostSince *string `json:"lost_since,omitempty"`
	LastError *string `json:"last_error,omitempty"`
	// Reading is the last successful reading (kept while disconnected).
	Reading *PowerReadingJSON `json:"reading,omitempty"`
	// OnBattery is the last known state; OnBatterySince when the mains went.
	OnBattery        *bool    `json:"on_battery,omitempty"`
	OnBatterySince   *string  `json:"on_battery_since,omitempty"`
	OnBatterySeconds *float64 `json:"on_battery_seconds,omitempty"`
	GraceSeconds     *float64 `json:"grace_seconds,omitempty"`
	// Forecast is a shutdown started now, as GET /plan gives it.
	Forecast          *PlanJSON `json:"forecast,omitempty"`
	MarginSeconds     *float64  `json:"margin_seconds,omitempty"`
	MarginLeftSeconds *float64  `json:"margin_left_seconds,omitempty"`
	ShutdownJobID     *int64    `json:"shutdown_job_id,omitempty"`
	Reason            *string   `json:"reason,omitempty"`
	// Next is what the watcher will do, in words; NextInSeconds about when.
	Next          *string  `json:"next,omitempty"`
	NextInSeconds *float64 `json:"next_in_seconds,omitempty"`
}

// PowerReadingJSON is one reading of the UPS.
type PowerReadingJSON struct {
	At             string   `json:"at"`
	Status         string   `json:"status"`
	Flags          []string `json:"flags"`
	OnBattery      bool     `json:"on_battery"`
	Charge         *float64 `json:"charge"`
	RuntimeSeconds *float64 `json:"runtime_seconds"`
}

// NewPowerJSON converts the watcher's status to its API shape.
func NewPowerJSON(s power.Status) PowerJSON {
	p := PowerJSON{Configured: true, Source: &s.Source, UPS: &s.UPS, Address: &s.Address, Connected: &s.Connected,
		OnBattery: &s.OnBattery, GraceSeconds: ptr(seconds(s.Grace)), MarginSeconds: ptr(seconds(s.Margin)), Next: &s.Next}
	if s.LostSince != nil {
		p.LostSince, p.LastError = fmtTimePtr(s.LostSince), &s.LastError
	}
	if r := s.Reading; r != nil {
		rj := &PowerReadingJSON{At: fmtTime(r.At), Status: r.StatusText(), Flags: r.Status, OnBattery: r.OnBattery()}
		if rj.Flags == nil {
			rj.Flags = []string{}
		}
		if r.HasCharge {
			rj.Charge = ptr(r.Charge)
		}
		if r.HasRuntime {
			rj.RuntimeSeconds = ptr(seconds(r.Runtime))
		}
		p.Reading = rj
	}
	if s.OnBatterySince != nil {
		p.OnBatterySince = fmtTimePtr(s.OnBatterySince)
		p.OnBatterySeconds = ptr(seconds(time.Since(*s.OnBatterySince)))
	}
	if s.Forecast != nil {
		f := NewPlanJSON(*s.Forecast)
		p.Forecast = &f
	}
	if s.MarginLeft != nil {
		p.MarginLeftSeconds = ptr(seconds(*s.MarginLeft))
	}
	if s.ShutdownJob != 0 {
		p.ShutdownJobID, p.Reason = &s.ShutdownJob, &s.Reason
	}
	if s.NextIn != nil {
		p.NextInSeconds = ptr(seconds(*s.NextIn))
	}
	return p
}

func ptr[T any](v T) *T { return &v }

// MountPower adds GET /power (scope read), answered by src; nil src (no
// power_source configured) answers {"configured": false}. It is mounted by
// the program, which alone holds the watcher.
func (s *Server) MountPower(src PowerSource) {
	s.router.Handle("/power", s.RequireScope(ScopeRead, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if src == nil {
			writeData(w, http.StatusOK, PowerJSON{})
			return
		}
		writeData(w, http.StatusOK, NewPowerJSON(src.Status(r.Context())))
	}))).Methods(http.MethodGet)
}
