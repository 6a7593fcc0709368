package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/edgeops/shutdownd/store"
)

// MaxReasonChars bounds the reason of a job: it travels into notifications
// and the history page, where a novel helps nobody. A longer reason is cut
// to this length, not refused.
const MaxReasonChars = 1000

// WarningPrefix starts the message of every warn event that records what a
// trigger request carried and could not be used; GET /jobs/{id} lists these
// events as warnings.
const WarningPrefix = "request: "

// maxQuoted bounds how much of a client's value a warning repeats: enough
// to recognise it, never a 64 KiB event.
const maxQuoted = 64

// maxNamedFields bounds how many unknown field names one warning lists.
const maxNamedFields = 10

// TriggerRequest is the optional JSON body of POST /simulate and
// POST /shutdown.
type TriggerRequest struct {
	Reason           string `json:"reason"`
	ExpectedRecovery string `json:"expected_recovery"` // RFC 3339
	Deadline         string `json:"deadline"`          // RFC 3339: when the job must be done
}

// trigger is what a trigger request asked for, as far as it could be used,
// and a warning for each part that could not.
type trigger struct {
	reason           string
	expectedRecovery *time.Time
	deadline         *time.Time
	warnings         []string
}

func (t *trigger) warnf(format string, args ...any) {
	t.warnings = append(t.warnings, WarningPrefix+fmt.Sprintf(format, args...))
}

// decodeTrigger reads the body of POST /simulate and POST /shutdown. It
// never fails: a trigger is never turned away because of its body (SPEC
// section 1). Whatever cannot be used (not JSON, unknown fields, a bad
// timestamp, too large, unreadable) is left out and named in a warning,
// recorded on the job. Both endpoints call it, so an integration proven
// against /simulate behaves the same on /shutdown. An empty body is the
// normal case: a UPS controller may send nothing at all.
//
// At most maxBodyBytes are read. A larger body is ignored whole, since a
// prefix of JSON is not JSON and a cut reason would read as the whole one;
// the rest is never read, so the size of a body cannot delay a shutdown.
func (s *Server) decodeTrigger(r *http.Request) trigger {
	t := trigger{warnings: slices.Clone(warningsFrom(r.Context()))}
	if r.Body == nil {
		return t
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, s.maxBodyBytes+1))
	switch {
	case err != nil:
		t.warnf("body ignored: it could not be read (%v)", err)
	case int64(len(raw)) > s.maxBodyBytes:
		t.warnf("body ignored: larger than %d bytes", s.maxBodyBytes)
	default:
		parseTrigger(raw, &t)
	}
	return t
}

// parseTrigger fills t from a body of at most the size limit, keeping every
// field it can use. Fields are decoded one by one, so a bad timestamp costs
// that timestamp and not the reason next to it. Known fields are matched by
// encoding/json itself (case-insensitively, the last of duplicates wins),
// exactly as the strict decoder of earlier versions matched them.
func parseTrigger(raw []byte, t *trigger) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return
	}
	var known struct {
		Reason           json.RawMessage `json:"reason"`
		ExpectedRecovery json.RawMessage `json:"expected_recovery"`
		Deadline         json.RawMessage `json:"deadline"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&known); err != nil {
		t.warnf("body ignored: %s", notAnObject(err))
		return
	}
	// Trailing data: the first object is complete and used; what follows
	// is named, since the client sent something other than it thinks.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		t.warnf("data after the JSON object ignored")
	}
	t.reason = triggerReason("reason", known.Reason, t)
	t.expectedRecovery = triggerTime("expected_recovery", known.ExpectedRecovery, t)
	// A deadline already past is kept: a shutdown must never be refused
	// over a clock; the job is simply not on track.
	t.deadline = triggerTime("deadline", known.Deadline, t)

	var all map[string]json.RawMessage
	_ = json.NewDecoder(bytes.NewReader(raw)).Decode(&all) // an object: it decoded above
	var unknown []string
	for name := range all {
		if !strings.EqualFold(name, "reason") && !strings.EqualFold(name, "expected_recovery") &&
			!strings.EqualFold(name, "deadline") {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		t.warnf("%s", unknownFields(unknown))
	}
}

// triggerString decodes one field as a string; an absent field and JSON
// null are no value.
func triggerString(name string, value json.RawMessage, t *trigger) (string, bool) {
	if len(value) == 0 {
		return "", false
	}
	var v string
	if err := json.Unmarshal(value, &v); err != nil {
		t.warnf("%s ignored: expected a string, got %s", name, jsonKind(value))
		return "", false
	}
	return v, v != ""
}

func triggerReason(name string, value json.RawMessage, t *trigger) string {
	v, ok := triggerString(name, value, t)
	if !ok {
		return ""
	}
	if n := utf8.RuneCountInString(v); n > MaxReasonChars {
		t.warnf("%s cut to its first %d characters (it had %d)", name, MaxReasonChars, n)
		v = string([]rune(v)[:MaxReasonChars])
	}
	return v
}

func triggerTime(name string, value json.RawMessage, t *trigger) *time.Time {
	v, ok := triggerString(name, value, t)
	if !ok {
		return nil
	}
	ts, err := time.Parse(time.RFC3339, v)
	if err != nil {
		t.warnf("%s ignored: %s is not an RFC 3339 timestamp (e.g. 2025-06-24T09:00:00Z)", name, quoteShort(v))
		return nil
	}
	ts = ts.UTC()
	return &ts
}

// notAnObject says why a body is not a usable JSON object.
func notAnObject(err error) string {
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &typeErr):
		return "a JSON " + typeErr.Value + ", not an object"
	case errors.As(err, &syntaxErr):
		return fmt.Sprintf("not JSON (%v at byte %d)", syntaxErr, syntaxErr.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "truncated JSON"
	default:
		return fmt.Sprintf("not JSON (%v)", err)
	}
}

// jsonKind names the JSON type of a value that decoded as a field.
func jsonKind(v json.RawMessage) string {
	switch b := bytes.TrimSpace(v); {
	case len(b) == 0:
		return "nothing"
	case b[0] == '{':
		return "object"
	case b[0] == '[':
		return "array"
	case b[0] == 't' || b[0] == 'f':
		return "bool"
	default:
		return "number"
	}
}

// unknownFields lists unknown field names, sorted and bounded.
func unknownFields(names []string) string {
	slices.Sort(names)
	shown := names[:min(len(names), maxNamedFields)]
	quoted := make([]string, len(shown))
	for i, n := range shown {
		quoted[i] = quoteShort(n)
	}
	msg := "unknown field"
	if len(names) > 1 {
		msg += "s"
	}
	msg += " ignored: " + strings.Join(quoted, ", ")
	if more := len(names) - len(shown); more > 0 {
		msg += fmt.Sprintf(" and %d more", more)
	}
	return msg + " (known: reason, expected_recovery, deadline)"
}

// quoteShort quotes a client's value, cut to maxQuoted characters.
func quoteShort(s string) string {
	if utf8.RuneCountInString(s) > maxQuoted {
		return strconv.Quote(string([]rune(s)[:maxQuoted])) + "..."
	}
	return strconv.Quote(s)
}

// warningsKey carries the warnings of the Idempotency-Key middleware to the
// handler, which records them with the body's on the job it creates.
type warningsKey struct{}

func withWarning(r *http.Request, msg string) *http.Request {
	ws := append(slices.Clone(warningsFrom(r.Context())), WarningPrefix+msg)
	return r.WithContext(context.WithValue(r.Context(), warningsKey{}, ws))
}

func warningsFrom(ctx context.Context) []string {
	ws, _ := ctx.Value(warningsKey{}).([]string)
	return ws
}

// warningTimeout bounds the recording of a job's warnings, which must not
// hold up the answer for long on a slow or full disk.
const warningTimeout = 5 * time.Second

// recordWarnings writes each warning as a warn event of the job the request
// created. It runs after the runner was told about the job, so bookkeeping
// never delays a shutdown; a failed write is logged, and the warning stays
// in the service log.
func (s *Server) recordWarnings(r *http.Request, jobID int64, warnings []string) {
	if len(warnings) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), warningTimeout)
	defer cancel()
	for _, w := range warnings {
		s.logger.LogAttrs(ctx, slog.LevelWarn, "trigger request partly ignored",
			slog.Int64("job", jobID), slog.String("warning", w))
		if err := s.store.AddEvent(ctx, jobID, "warn", w, ""); err != nil {
			s.logger.LogAttrs(ctx, slog.LevelError, "record request warning", slog.Int64("job", jobID), slog.Any("err", err))
		}
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
	t := s.decodeTrigger(r)
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
	s.started(w, r, slog.LevelInfo, job, t.warnings)
}

// handleShutdown always answers 202 to an authorised request, whatever its
// body: a new shutdown, or the one already active (a UPS that retries must
// never see a failure), or, once the shutdown that powers off this machine
// has sent that power-off (and until it has failed for good), that job. An
// active simulation is preempted by the store in the same transaction. The
// warnings of a request that joins an active shutdown are only logged: its
// body is not used, so they say nothing about that job.
func (s *Server) handleShutdown(w http.ResponseWriter, r *http.Request) {
	t := s.decodeTrigger(r)
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
		s.started(w, r, slog.LevelWarn, job, t.warnings)
		return
	}
	s.logger.LogAttrs(r.Context(), slog.LevelInfo, "shutdown requested again, already active",
		slog.Int64("job", job.ID), slog.String("token", s.newJob(r, store.KindShutdown, t).TokenName),
		slog.Any("ignored", t.warnings))
	writeAccepted(w, job.ID)
}

// started answers 202 for a job this request created, after logging it,
// waking the runner and recording on the job what its body carried and
// could not be used.
func (s *Server) started(w http.ResponseWriter, r *http.Request, level slog.Level, job store.Job, warnings []string) {
	s.logger.LogAttrs(r.Context(), level, string(job.Kind)+" requested",
		slog.Int64("job", job.ID), slog.String("token", job.TokenName), slog.String("remote", job.RemoteAddr))
	s.kick()
	s.recordWarnings(r, job.ID, warnings)
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
