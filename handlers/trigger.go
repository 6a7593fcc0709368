package handlers

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/edgeops/shutdownd/store"
)

// MaxReasonChars bounds the reason of a job: it travels into notifications
// and the history page, where a novel helps nobody.
const MaxReasonChars = 1000

// TriggerRequest is the optional JSON body of POST /simulate and
// POST /shutdown.
type TriggerRequest struct {
	Reason           string `json:"reason"`
	ExpectedRecovery string `json:"expected_recovery"` // RFC 3339
	Deadline         string `json:"deadline"`          // RFC 3339: when the job must be done
}

// trigger is a validated TriggerRequest.
type trigger struct {
	reason           string
	expectedRecovery *time.Time
	deadline         *time.Time
}

// decodeTrigger reads and validates the body of POST /simulate and
// POST /shutdown. Both endpoints call it, so an integration proven against
// /simulate cannot fail validation on /shutdown. An empty body is valid:
// a UPS controller may send nothing at all.
func (s *Server) decodeTrigger(w http.ResponseWriter, r *http.Request) (trigger, error) {
	body := http.MaxBytesReader(w, r.Body, s.maxBodyBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	var req TriggerRequest
	if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		return trigger{}, bodyError(err)
	}
	// Exactly one JSON value: trailing data means the client sent something
	// other than what it thinks it sent.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return trigger{}, err
		}
		return trigger{}, Errorf(CodeInvalidRequest, "invalid JSON body: unexpected data after the JSON object")
	}
	return validateTrigger(req)
}

// validateTrigger checks the decoded fields.
func validateTrigger(req TriggerRequest) (trigger, error) {
	var t trigger
	if n := utf8.RuneCountInString(req.Reason); n > MaxReasonChars {
		return t, Errorf(CodeInvalidRequest, "reason: %d characters, at most %d allowed", n, MaxReasonChars)
	}
	t.reason = req.Reason
	if req.ExpectedRecovery != "" {
		er, err := time.Parse(time.RFC3339, req.ExpectedRecovery)
		if err != nil {
			return t, Errorf(CodeInvalidRequest, "expected_recovery: %q is not an RFC 3339 timestamp (e.g. 2025-06-24T09:00:00Z)", req.ExpectedRecovery)
		}
		er = er.UTC()
		t.expectedRecovery = &er
	}
	// A deadline already past is accepted, not refused: a shutdown must
	// never be rejected over a clock; the job is simply not on track.
	if req.Deadline != "" {
		dl, err := time.Parse(time.RFC3339, req.Deadline)
		if err != nil {
			return t, Errorf(CodeInvalidRequest, "deadline: %q is not an RFC 3339 timestamp (e.g. 2025-06-24T09:00:00Z)", req.Deadline)
		}
		dl = dl.UTC()
		t.deadline = &dl
	}
	return t, nil
}

// bodyError turns a JSON decoding error into a message that names the
// offending field, or passes on a size error (413).
func bodyError(err error) error {
	var tooLarge *http.MaxBytesError
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &tooLarge):
		return err
	case errors.As(err, &syntaxErr):
		return Errorf(CodeInvalidRequest, "invalid JSON body at byte %d: %v", syntaxErr.Offset, syntaxErr)
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return Errorf(CodeInvalidRequest, "invalid JSON body: expected an object, got %s", typeErr.Value)
		}
		return Errorf(CodeInvalidRequest, "%s: expected %s, got %s", typeErr.Field, typeErr.Type, typeErr.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return Errorf(CodeInvalidRequest, "invalid JSON body: truncated")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// encoding/json has no typed error for unknown fields.
		field := strings.TrimPrefix(err.Error(), "json: unknown field ")
		return Errorf(CodeInvalidRequest, "unknown field %s (allowed: reason, expected_recovery, deadline)", field)
	default:
		return Errorf(CodeInvalidRequest, "invalid JSON body: %v", err)
	}
}

func (s *Server) newJob(r *http.Request, kind store.Kind, t trigger) store.NewJob {
	c, _ := CallerFrom(r.Context())
	return store.NewJob{
		Kind:             kind,
		TokenName:        c.Token.Name,
		RemoteAddr:       c.RemoteAddr,
		Reason:           t.reason,
		ExpectedRecovery: t.expectedRecovery,
		Deadline:         t.deadline,
	}
}

func (s *Server) handleSimulate(w http.ResponseWriter, r *http.Request) {
	t, err := s.decodeTrigger(w, r)
	if err != nil {
		s.WriteError(w, r, err)
		return
	}
	if id, down := s.poweringOffSelf(); down {
		s.WriteError(w, r, Errorf(CodeServiceUnavailable, "this machine is being powered off by shutdown job %d", id))
		return
	}
	job, err := s.store.CreateSimulation(r.Context(), s.newJob(r, store.KindSimulation, t))
	switch {
	case errors.Is(err, store.ErrJobRunning):
		s.WriteError(w, r, Errorf(CodeJobRunning, "another job is active; see GET /jobs?state=running"))
		return
	case err != nil:
		s.WriteError(w, r, fmt.Errorf("create simulation: %w", err))
		return
	}
	s.logger.LogAttrs(r.Context(), slog.LevelInfo, "simulation requested",
		slog.Int64("job", job.ID), slog.String("token", job.TokenName), slog.String("remote", job.RemoteAddr))
	s.kick()
	writeAccepted(w, job.ID)
}

// handleShutdown always answers 202 to a valid request: a new shutdown, or
// the one already active (a UPS that retries must never see a failure), or,
// once the shutdown that powers off this machine has sent that power-off
// (and until it has failed for good), that job. An active simulation is preempted by the store in the same
// transaction.
func (s *Server) handleShutdown(w http.ResponseWriter, r *http.Request) {
	t, err := s.decodeTrigger(w, r)
	if err != nil {
		s.WriteError(w, r, err)
		return
	}
	if id, down := s.poweringOffSelf(); down {
		s.logger.LogAttrs(r.Context(), slog.LevelInfo, "shutdown requested again while this machine powers off",
			slog.Int64("job", id))
		writeAccepted(w, id)
		return
	}
	job, created, err := s.store.CreateShutdown(r.Context(), s.newJob(r, store.KindShutdown, t))
	if err != nil {
		s.WriteError(w, r, fmt.Errorf("create shutdown: %w", err))
		return
	}
	if created {
		s.logger.LogAttrs(r.Context(), slog.LevelWarn, "shutdown requested",
			slog.Int64("job", job.ID), slog.String("token", job.TokenName), slog.String("remote", job.RemoteAddr))
		s.kick()
	} else {
		s.logger.LogAttrs(r.Context(), slog.LevelInfo, "shutdown requested again, already active",
			slog.Int64("job", job.ID), slog.String("token", s.newJob(r, store.KindShutdown, t).TokenName))
	}
	writeAccepted(w, job.ID)
}

func writeAccepted(w http.ResponseWriter, id int64) {
	w.Header().Set("Location", fmt.Sprintf("/jobs/%d", id))
	writeData(w, http.StatusAccepted, acceptedMessage)
}

func (s *Server) kick() {
	if s.runner != nil {
		s.runner.Kick()
	}
}
