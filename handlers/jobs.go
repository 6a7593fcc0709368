package handlers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/edgeops/shutdownd/store"
)

// statusHandler answers GET /simulate/status and GET /shutdown/status from
// the latest job of kind.
//
// Decisions where the product contract is terse: a pending job counts as running (it is
// the active job and will start at once); current_step of an active job
// with no step yet reads "Waiting to start"; error is present for a failed
// job and also for a cancelled one (the cancel or preemption reason, e.g.
// "preempted by shutdown job 7"), because a caller checking only this
// endpoint must learn that its job did not complete.
//
// The job is read from the store on every request (one prepared, indexed
// query): a status is never older than the request.
func (s *Server) statusHandler(kind store.Kind) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		job, err := s.store.LatestJob(r.Context(), kind)
		if err != nil {
			s.WriteError(w, r, fmt.Errorf("latest %s job: %w", kind, err))
			return
		}
		st := statusOf(job)
		if text, ok := s.unsavedStep(job); ok {
			st.CurrentStep = text
		}
		writeData(w, http.StatusOK, st)
	})
}

// unsavedReporter is implemented by the runner: while the store refuses a
// job's records (a full disk), the current_step to show says so, since the
// store, which the status is read from, cannot.
type unsavedReporter interface {
	UnsavedStep(jobID int64, stored string) (text string, ok bool)
}

// unsavedStep is the runner's current_step for job while its records are
// not being saved; ok is false otherwise.
func (s *Server) unsavedStep(job *store.Job) (string, bool) {
	u, ok := s.runner.(unsavedReporter)
	if !ok || job == nil {
		return "", false
	}
	return u.UnsavedStep(job.ID, job.CurrentStep)
}

func statusOf(job *store.Job) StatusJSON {
	if job == nil {
		return StatusJSON{}
	}
	start := job.CreatedAt.UTC().Format(statusTimeFormat)
	st := StatusJSON{
		Running:   !job.State.Final(),
		StartTime: &start,
		JobID:     job.ID,
		State:     string(job.State),
		OnTrack:   job.OnTrack,
	}
	if job.Deadline != nil {
		st.Deadline = fmtTime(*job.Deadline)
	}
	if st.Running {
		st.CurrentStep = job.CurrentStep
		if st.CurrentStep == "" {
			st.CurrentStep = "Waiting to start"
		}
	}
	switch job.State {
	case store.StateFailed, store.StateCancelled:
		st.Error = job.Error
		if st.Error == "" {
			st.Error = string(job.State)
		}
	}
	return st
}

// handleListJobs answers GET /jobs?kind=&state=&limit=&before=, newest
// first. Paging: pass the smallest id seen as before.
func (s *Server) handleListJobs(w http.ResponseWriter, r *http.Request) {
	f, err := parseJobFilter(r)
	if err != nil {
		s.WriteError(w, r, err)
		return
	}
	jobs, err := s.store.ListJobs(r.Context(), f)
	if err != nil {
		s.WriteError(w, r, fmt.Errorf("list jobs: %w", err))
		return
	}
	out := make([]JobJSON, 0, len(jobs))
	for _, j := range jobs {
		out = append(out, NewJobJSON(j))
	}
	writeData(w, http.StatusOK, out)
}

// maxListLimit mirrors the store's cap; asking for more is an error rather
// than a silent truncation.
const maxListLimit = 500

func parseJobFilter(r *http.Request) (store.JobFilter, error) {
	q := r.URL.Query()
	for key := range q {
		switch key {
		case "kind", "state", "limit", "before":
		default:
			return store.JobFilter{}, Errorf(CodeInvalidRequest, "unknown query parameter %q (allowed: kind, state, limit, before)", key)
		}
	}
	var f store.JobFilter
	switch k := store.Kind(q.Get("kind")); k {
	case "", store.KindSimulation, store.KindShutdown, store.KindStartup:
		f.Kind = k
	default:
		return f, Errorf(CodeInvalidRequest, "kind: %q is not one of simulation, shutdown, startup", k)
	}
	switch st := store.State(q.Get("state")); st {
	case "", store.StatePending, store.StateRunning, store.StateSucceeded, store.StateFailed, store.StateCancelled:
		f.State = st
	default:
		return f, Errorf(CodeInvalidRequest, "state: %q is not one of pending, running, succeeded, failed, cancelled", st)
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLimit {
			return f, Errorf(CodeInvalidRequest, "limit: %q is not an integer from 1 to %d", v, maxListLimit)
		}
		f.Limit = n
	}
	if v := q.Get("before"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return f, Errorf(CodeInvalidRequest, "before: %q is not a positive job id", v)
		}
		f.Before = n
	}
	return f, nil
}

// jobFromPath loads the job named by the {id} route variable; unknown ids
// (and ids too large to be one) are not_found.
func (s *Server) jobFromPath(r *http.Request) (store.Job, error) {
	raw := mux.Vars(r)["id"]
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil {
		return store.Job{}, Errorf(CodeNotFound, "job %s not found", raw)
	}
	job, err := s.store.Job(r.Context(), id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return store.Job{}, Errorf(CodeNotFound, "job %d not found", id)
	case err != nil:
		return store.Job{}, fmt.Errorf("load job %d: %w", id, err)
	}
	return job, nil
}

// handleJob answers GET /jobs/{id} with the job, its steps, every target
// action and the event log.
func (s *Server) handleJob(w http.ResponseWriter, r *http.Request) {
	job, err := s.jobFromPath(r)
	if err != nil {
		s.WriteError(w, r, err)
		return
	}
	ctx := r.Context()
	steps, err := s.store.Steps(ctx, job.ID)
	if err != nil {
		s.WriteError(w, r, fmt.Errorf("steps of job %d: %w", job.ID, err))
		return
	}
	actions, err := s.store.Actions(ctx, job.ID)
	if err != nil {
		s.WriteError(w, r, fmt.Errorf("actions of job %d: %w", job.ID, err))
		return
	}
	events, err := s.store.Events(ctx, job.ID, 0)
	if err != nil {
		s.WriteError(w, r, fmt.Errorf("events of job %d: %w", job.ID, err))
		return
	}
	d := JobDetailJSON{
		Job:      NewJobJSON(job),
		Steps:    make([]StepJSON, 0, len(steps)),
		Actions:  make([]ActionJSON, 0, len(actions)),
		Events:   make([]EventJSON, 0, len(events)),
		Warnings: []string{},
	}
	if text, ok := s.unsavedStep(&job); ok {
		d.Job.CurrentStep = text
	}
	for _, st := range steps {
		d.Steps = append(d.Steps, NewStepJSON(st))
	}
	for _, a := range actions {
		d.Actions = append(d.Actions, NewActionJSON(a))
	}
	for _, e := range events {
		d.Events = append(d.Events, NewEventJSON(e))
		if e.Level == "warn" && strings.HasPrefix(e.Message, WarningPrefix) {
			d.Warnings = append(d.Warnings, e.Message)
		}
	}
	writeData(w, http.StatusOK, d)
}

// handleCancel answers POST /jobs/{id}/cancel. The scope required is the
// job's kind (simulate for a simulation, shutdown for a shutdown): a token
// that may only simulate must not be able to stop a real shutdown.
//
// Answers: 202 with the job when the cancel was recorded (a pending job is
// cancelled at once; a running one stops at its next safe point, see
// cancel_requested). A job that is already final is answered 200 with the
// job unchanged: the caller's wish, "this job must not go on", holds, and a
// retrying client must not see an error for it.
func (s *Server) handleCancel(w http.ResponseWriter, r *http.Request) {
	job, err := s.jobFromPath(r)
	if err != nil {
		s.WriteError(w, r, err)
		return
	}
	c, _ := CallerFrom(r.Context())
	scope := ScopeSimulate
	switch job.Kind {
	case store.KindShutdown:
		scope = ScopeShutdown
	case store.KindStartup:
		scope = ScopeStartup
	}
	if err := checkScope(c.Token, scope); err != nil {
		s.WriteError(w, r, err)
		return
	}
	if job.State.Final() {
		writeData(w, http.StatusOK, NewJobJSON(job))
		return
	}
	id := job.ID
	job, err = s.store.RequestCancel(r.Context(), id)
	if err != nil {
		s.WriteError(w, r, fmt.Errorf("cancel job %d: %w", id, err))
		return
	}
	// The store records that a cancel was asked for; the event below records
	// who asked, for the post-incident audit.
	if err := s.store.AddEvent(r.Context(), id, "info", "cancel requested via API",
		fmt.Sprintf("token %q from %s", c.Token.Name, c.RemoteAddr)); err != nil {
		s.logger.LogAttrs(r.Context(), slog.LevelWarn, "record cancel requester", slog.Int64("job", id), slog.Any("err", err))
	}
	s.logger.LogAttrs(r.Context(), slog.LevelWarn, "cancel requested",
		slog.Int64("job", job.ID), slog.String("kind", string(job.Kind)),
		slog.String("token", c.Token.Name), slog.String("remote", c.RemoteAddr))
	s.kick()
	writeData(w, http.StatusAccepted, NewJobJSON(job))
}

// healthTimeout bounds the store ping so a wedged database answers 503
// instead of hanging the health check.
const healthTimeout = 2 * time.Second

// handleHealthz answers GET /healthz without authentication: 200 when the
// store answers, 503 otherwise.
func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		s.logger.LogAttrs(r.Context(), slog.LevelError, "health check: store ping failed", slog.Any("err", err))
		s.WriteError(w, r, Errorf(CodeServiceUnavailable, "store unavailable"))
		return
	}
	writeData(w, http.StatusOK, "ok")
}
