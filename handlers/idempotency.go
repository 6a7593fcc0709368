package handlers

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/edgeops/shutdownd/store"
)

// IdempotencyHeader is the request header that makes a POST /simulate or
// POST /shutdown safe to retry: the same key, from the same token, within
// store.IdempotencyWindow, answers with the job of the first request (202
// and the same Location) instead of creating another.
const IdempotencyHeader = "Idempotency-Key"

// maxIdempotencyKey bounds a key; UUIDs and ULIDs fit easily.
const maxIdempotencyKey = 255

// idempotencyMu serialises keyed requests between the lookup and the
// recording of a key, so that two concurrent requests with one key cannot
// both create a job. One process owns the database (one writer), so a
// process-wide lock is enough; requests without the header never take it.
var idempotencyMu sync.Mutex

// idempotent wraps a job-creating handler. Without the header it is a
// no-op. With it: a key already recorded for this token is answered from
// the record, if the request is the same (same endpoint, same body); a key
// reused for a different request is refused (400), since answering with
// another request's job, a simulation for a shutdown above all, would be
// wrong. A new key is recorded when the handler answers 202.
func (s *Server) idempotent(kind store.Kind, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get(IdempotencyHeader)
		if key == "" {
			next.ServeHTTP(w, r)
			return
		}
		if err := validKey(key); err != nil {
			s.WriteError(w, r, err)
			return
		}
		// Read the body once (bounded) to fingerprint it, then hand the
		// same bytes to the handler, whose own limit still answers 413.
		body, err := io.ReadAll(io.LimitReader(r.Body, s.maxBodyBytes+1))
		if err != nil {
			s.WriteError(w, r, Errorf(CodeInvalidRequest, "read body: %v", err))
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		sum := sha256.Sum256(body)
		fp := string(kind) + ":" + hex.EncodeToString(sum[:])
		c, _ := CallerFrom(r.Context())
		ctx := r.Context()

		idempotencyMu.Lock()
		defer idempotencyMu.Unlock()
		rec, err := s.store.IdempotencyKey(ctx, c.Token.Name, key)
		switch {
		case err == nil:
			if rec.Fingerprint != fp {
				s.WriteError(w, r, Errorf(CodeInvalidRequest,
					"%s %q was used within 24 h for a different request (job %d); use a new key", IdempotencyHeader, key, rec.JobID))
				return
			}
			s.logger.LogAttrs(ctx, slog.LevelInfo, "idempotent replay",
				slog.Int64("job", rec.JobID), slog.String("token", c.Token.Name))
			w.Header().Set("Idempotent-Replayed", "true")
			writeAccepted(w, rec.JobID)
			return
		case !errors.Is(err, store.ErrNotFound):
			s.WriteError(w, r, fmt.Errorf("read idempotency key: %w", err))
			return
		}
		next.ServeHTTP(&keyRecorder{ResponseWriter: w, s: s, r: r, token: c.Token.Name, key: key, fp: fp}, r)
	})
}

// validKey accepts printable ASCII without spaces, as the IETF draft on
// the header (a structured string) and common practice do.
func validKey(key string) error {
	if len(key) > maxIdempotencyKey {
		return Errorf(CodeInvalidRequest, "%s: %d characters, at most %d allowed", IdempotencyHeader, len(key), maxIdempotencyKey)
	}
	for i := 0; i < len(key); i++ {
		if key[i] <= ' ' || key[i] > '~' {
			return Errorf(CodeInvalidRequest, "%s: only printable ASCII without spaces is allowed", IdempotencyHeader)
		}
	}
	return nil
}

// keyRecorder records the key when the handler answers 202, before the
// answer leaves: a client that saw 202 can rely on its key.
type keyRecorder struct {
	http.ResponseWriter
	s              *Server
	r              *http.Request
	token, key, fp string
	wroteHeader    bool
}

func (k *keyRecorder) WriteHeader(code int) {
	if !k.wroteHeader {
		k.wroteHeader = true
		if code == http.StatusAccepted {
			k.record()
		}
	}
	k.ResponseWriter.WriteHeader(code)
}

func (k *keyRecorder) Write(b []byte) (int, error) {
	if !k.wroteHeader {
		k.WriteHeader(http.StatusOK)
	}
	return k.ResponseWriter.Write(b)
}

// Unwrap exposes the underlying writer to http.ResponseController.
func (k *keyRecorder) Unwrap() http.ResponseWriter { return k.ResponseWriter }

func (k *keyRecorder) record() {
	loc := k.Header().Get("Location")
	id, err := strconv.ParseInt(strings.TrimPrefix(loc, "/jobs/"), 10, 64)
	if err != nil {
		k.s.logger.LogAttrs(k.r.Context(), slog.LevelError, "idempotency: no job in Location", slog.String("location", loc))
		return
	}
	// The job exists whatever happens here; failing to record the key only
	// loses the replay, so the 202 still goes out.
	if err := k.s.store.RecordIdempotencyKey(k.r.Context(), k.token, k.key, k.fp, id); err != nil {
		k.s.logger.LogAttrs(k.r.Context(), slog.LevelError, "idempotency: record key", slog.Int64("job", id), slog.Any("err", err))
	}
}
