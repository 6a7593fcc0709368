package handlers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/edgeops/shutdownd/store"
)

// handleStartup starts a startup job restoring the latest shutdown, or the
// one named by {"shutdown_job": N}. Unlike the other triggers' fields, a
// shutdown_job that cannot be read refuses the request (400): guessing
// would restore another shutdown than the operator named, and start VMs
// that one stopped. The rest of the body is read as the other triggers
// read theirs (reason, expected_recovery; never a refusal).
func (s *Server) handleStartup(w http.ResponseWriter, r *http.Request) {
	shutdownJob, err := s.takeShutdownJob(r)
	if err != nil {
		s.WriteError(w, r, err)
		return
	}
	t := s.decodeTrigger(r)
	if id, down := s.poweringOffSelf(); down {
		s.WriteError(w, r, Errorf(CodeServiceUnavailable, "this machine is being powered off by shutdown job %d", id))
		return
	}
	job, err := s.store.CreateStartup(r.Context(), s.newJob(r, store.KindStartup, t), shutdownJob)
	switch {
	case errors.Is(err, store.ErrJobRunning):
		s.WriteError(w, r, Errorf(CodeJobRunning, "another job is active; see GET /jobs?state=running"))
		return
	case errors.Is(err, store.ErrNoShutdown):
		s.WriteError(w, r, Errorf(CodeNoShutdown, "nothing to restore: %s", errors.Unwrap(err).Error()))
		return
	case err != nil:
		s.WriteError(w, r, fmt.Errorf("create startup: %w", err))
		return
	}
	s.started(w, r, slog.LevelWarn, job, t.warnings)
}

// takeShutdownJob reads shutdown_job from the body, if there is one, and
// puts the body back without it for decodeTrigger. A body that is not a
// JSON object is left to decodeTrigger, which records why it was ignored.
func (s *Server) takeShutdownJob(r *http.Request) (int64, error) {
	if r.Body == nil {
		return 0, nil
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, s.maxBodyBytes+1))
	r.Body = io.NopCloser(bytes.NewReader(raw))
	if err != nil || int64(len(raw)) > s.maxBodyBytes {
		return 0, nil
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(raw, &fields) != nil {
		return 0, nil
	}
	v, ok := fields["shutdown_job"]
	if !ok {
		return 0, nil
	}
	var id int64
	if err := json.Unmarshal(v, &id); err != nil || id <= 0 {
		return 0, Errorf(CodeInvalidRequest, "shutdown_job: %s is not a job id (a positive integer)", quoteShort(string(v)))
	}
	delete(fields, "shutdown_job")
	rest, err := json.Marshal(fields)
	if err != nil {
		return 0, fmt.Errorf("re-encode startup body: %w", err)
	}
	r.Body = io.NopCloser(bytes.NewReader(rest))
	return id, nil
}
