package handlers

import (
	"bytes"
	"encoding/json"
	"net/http"

	"github.com/edgeops/shutdownd/store"
)

// This file holds every JSON shape the API answers with, in one place, so
// the OpenAPI document can describe exactly these structs. Keys are
// snake_case; timestamps are RFC 3339 in UTC with microseconds; optional
// timestamps are null when unset; strings that may be empty are always
// present so clients need no existence checks.

// statusTimeFormat is the start_time format of the status endpoints, kept
// byte-compatible with the existing edge shutdown API (UTC, no offset).
const statusTimeFormat = "2006-01-02T15:04:05.000000"

// acceptedMessage is the data of a 202 answer to POST /simulate and
// POST /shutdown, byte-compatible with the existing API.
const acceptedMessage = "We've got your request"

// envelope is the wrapper of every JSON answer. Field order is the key
// order on the wire: data, error, code (errors only), status.
type envelope struct {
	Data   any     `json:"data"`
	Error  *string `json:"error"`
	Code   string  `json:"code,omitempty"`
	Status string  `json:"status"`
}

// writeJSON writes v with the given status. HTML escaping is off so that
// messages containing "<" or "&" read as written; the content type is JSON
// with nosniff, so no browser interprets it as markup.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, ok := encodeJSON(v)
	if !ok {
		status = http.StatusInternalServerError
	}
	writeBody(w, status, body)
}

// encodeJSON encodes v as writeJSON sends it; ok is false (and the body the
// internal_error envelope) for an unencodable value, a programming error.
func encodeJSON(v any) (body []byte, ok bool) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return []byte(`{"data":null,"error":"internal error","code":"internal_error","status":"error"}`), false
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), true
}

// writeBody sends an encoded JSON body with the headers of every answer.
func writeBody(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// writeData writes a success envelope around data.
func writeData(w http.ResponseWriter, status int, data any) {
	writeJSON(w, status, envelope{Data: data, Status: "success"})
}

// fmtTime and fmtTimePtr give every timestamp of the API its one form.
var (
	fmtTime    = store.FormatTime
	fmtTimePtr = store.FormatTimePtr
)

// JobJSON is a job as the API shows it (GET /jobs, GET /jobs/{id}, cancel).
type JobJSON struct {
	ID               int64   `json:"id"`
	Kind             string  `json:"kind"`
	State            string  `json:"state"`
	TokenName        string  `json:"token_name"`
	RemoteAddr       string  `json:"remote_addr"`
	Reason           string  `json:"reason"`
	ExpectedRecovery *string `json:"expected_recovery"`
	CurrentStep      string  `json:"current_step"`
	Error            string  `json:"error"`
	CancelRequested  bool    `json:"cancel_requested"`
	CreatedAt        string  `json:"created_at"`
	StartedAt        *string `json:"started_at"`
	FinishedAt       *string `json:"finished_at"`
	Deadline         *string `json:"deadline"` // null without a deadline
	OnTrack          *bool   `json:"on_track"` // null while unknown or without a deadline
}

// NewJobJSON converts a store job to its API shape.
func NewJobJSON(j store.Job) JobJSON {
	return JobJSON{
		ID:               j.ID,
		Kind:             string(j.Kind),
		State:            string(j.State),
		TokenName:        j.TokenName,
		RemoteAddr:       j.RemoteAddr,
		Reason:           j.Reason,
		ExpectedRecovery: fmtTimePtr(j.ExpectedRecovery),
		CurrentStep:      j.CurrentStep,
		Error:            j.Error,
		CancelRequested:  j.CancelRequested,
		CreatedAt:        fmtTime(j.CreatedAt),
		StartedAt:        fmtTimePtr(j.StartedAt),
		FinishedAt:       fmtTimePtr(j.FinishedAt),
		Deadline:         fmtTimePtr(j.Deadline),
		OnTrack:          j.OnTrack,
	}
}

// StepJSON is one step of a job.
type StepJSON struct {
	ID         int64   `json:"id"`
	JobID      int64   `json:"job_id"`
	Seq        int     `json:"seq"`
	Name       string  `json:"name"`
	State      string  `json:"state"`
	Detail     string  `json:"detail"`
	Error      string  `json:"error"`
	StartedAt  *string `json:"started_at"`
	FinishedAt *string `json:"finished_at"`
}

// NewStepJSON converts a store step to its API shape.
func NewStepJSON(s store.Step) StepJSON {
	return StepJSON{
		ID:         s.ID,
		JobID:      s.JobID,
		Seq:        s.Seq,
		Name:       s.Name,
		State:      string(s.State),
		Detail:     s.Detail,
		Error:      s.Error,
		StartedAt:  fmtTimePtr(s.StartedAt),
		FinishedAt: fmtTimePtr(s.FinishedAt),
	}
}

// ActionJSON is one target action (one VM stop, one BMC read, ...).
type ActionJSON struct {
	ID         int64   `json:"id"`
	JobID      int64   `json:"job_id"`
	StepID     int64   `json:"step_id"`
	TargetKind string  `json:"target_kind"`
	Target     string  `json:"target"`
	TargetID   string  `json:"target_id"`
	Operation  string  `json:"operation"`
	State      string  `json:"state"`
	Attempts   int     `json:"attempts"`
	Detail     string  `json:"detail"`
	Error      string  `json:"error"`
	StartedAt  *string `json:"started_at"`
	FinishedAt *string `json:"finished_at"`
	UpdatedAt  string  `json:"updated_at"`
}

// NewActionJSON converts a store action to its API shape.
func NewActionJSON(a store.Action) ActionJSON {
	return ActionJSON{
		ID:         a.ID,
		JobID:      a.JobID,
		StepID:     a.StepID,
		TargetKind: string(a.TargetKind),
		Target:     a.Target,
		TargetID:   a.TargetID,
		Operation:  string(a.Operation),
		State:      string(a.State),
		Attempts:   a.Attempts,
		Detail:     a.Detail,
		Error:      a.Error,
		StartedAt:  fmtTimePtr(a.StartedAt),
		FinishedAt: fmtTimePtr(a.FinishedAt),
		UpdatedAt:  fmtTime(a.UpdatedAt),
	}
}

// EventJSON is one entry of a job's event log; also the data of an SSE
// message.
type EventJSON struct {
	ID      int64  `json:"id"`
	JobID   int64  `json:"job_id"`
	At      string `json:"at"`
	Level   string `json:"level"`
	Message string `json:"message"`
	Detail  string `json:"detail"`
}

// NewEventJSON converts a store event to its API shape.
func NewEventJSON(e store.Event) EventJSON {
	return EventJSON{
		ID:      e.ID,
		JobID:   e.JobID,
		At:      fmtTime(e.At),
		Level:   string(e.Level),
		Message: e.Message,
		Detail:  e.Detail,
	}
}

// JobDetailJSON is the answer of GET /jobs/{id}: the job and everything
// recorded under it. Actions are flat (each names its step_id) so a client
// can group them as it likes. Warnings are the messages of the warn events
// that name what the request which created the job carried and could not be
// used (WarningPrefix); never null, so a client can check len() alone.
type JobDetailJSON struct {
	Job      JobJSON      `json:"job"`
	Steps    []StepJSON   `json:"steps"`
	Actions  []ActionJSON `json:"actions"`
	Events   []EventJSON  `json:"events"`
	Warnings []string     `json:"warnings"`
}

// StatusJSON is the answer of GET /simulate/status and GET /shutdown/status.
// The field order is the contract of the existing API: running, start_time,
// current_step, error; then the additions job_id and state. Go encodes
// struct fields in declaration order, which is why this is a struct and not
// a map.
//
// start_time is always present, null with no job of the kind ever: clients
// written against the existing API read it unconditionally.
type StatusJSON struct {
	Running     bool    `json:"running"`
	StartTime   *string `json:"start_time"`
	CurrentStep string  `json:"current_step,omitempty"`
	Error       string  `json:"error,omitempty"`
	JobID       int64   `json:"job_id,omitempty"`
	State       string  `json:"state,omitempty"`
	Deadline    string  `json:"deadline,omitempty"`
	OnTrack     *bool   `json:"on_track,omitempty"`
}

// EndJSON is the data of the final SSE message (event: end).
type EndJSON struct {
	JobID int64  `json:"job_id"`
	State string `json:"state"`
	Error string `json:"error"`
}
