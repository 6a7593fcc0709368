package handlers

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/edgeops/shutdownd/store"
)

// IdempotencyHeader is the request header that makes a POST /simulate or
// POST /shutdown safe to retry: while the job that a key started is pending
// or running, the same key from the same token answers with that job (202
// and the same Location) instead of creating another. Once the job has
// ended, the same key starts a new job: a UPS controller that sends a fixed
// key must get the next power event's shutdown, not the last one's
// finished job.
const IdempotencyHeader = "Idempotency-Key"

// maxIdempotencyKey bounds a key; UUIDs and ULIDs fit easily.
const maxIdempotencyKey = 255

// idempotencyMu serialises keyed requests between the lookup and the
// recording of a key, so that two concurrent requests with one key cannot
// both create a job. One process owns the database (one writer), so a
// process-wide lock is enough; requests without the header never take it.
var idempotencyMu sync.Mutex

// idempotent wraps a job-creating handler. Without the header it is a
// no-op. With it, a key recorded for this token whose job is still active
// and of this endpoint's kind is answered from the record, whatever the
// body: the retry of a trigger is a retry, and its body is not used (the
// active job keeps its reason). Anything else goes to the handler as a new
// request, and the key is recorded for the job it answers with. A key is
// never a reason to refuse a trigger: a malformed key is ignored (and named
// on the job as a warning), a key last used on the other endpoint starts
// this endpoint's job (a shutdown is never answered with a simulation), and
// a store that cannot read keys lets the request through without one.
func (s *Server) idempotent(kind store.Kind, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get(IdempotencyHeader)
		if key == "" {
			next.ServeHTTP(w, r)
			return
		}
		if err := validKey(key); err != nil {
			next.ServeHTTP(w, withWarning(r, IdempotencyHeader+" ignored: "+err.Error()))
			return
		}
		c, _ := CallerFrom(r.Context())
		ctx := r.Context()

		idempotencyMu.Lock()
		defer idempotencyMu.Unlock()
		rec, err := s.store.IdempotencyKey(ctx, c.Token.Name, key)
		switch {
		case err == nil && rec.Kind() == kind && !rec.JobState.Final():
			s.logger.LogAttrs(ctx, slog.LevelInfo, "idempotent replay",
				slog.Int64("job", rec.JobID), slog.String("token", c.Token.Name))
			w.Header().Set("Idempotent-Replayed", "true")
			writeAccepted(w, rec.JobID)
			return
		case err != nil && !errors.Is(err, store.ErrNotFound):
			s.logger.LogAttrs(ctx, slog.LevelError, "idempotency: read key; going on without it", slog.Any("err", err))
			next.ServeHTTP(w, withWarning(r, IdempotencyHeader+" ignored: the key could not be read"))
			return
		}
		next.ServeHTTP(&keyRecorder{ResponseWriter: w, s: s, r: r, token: c.Token.Name, key: key, fp: string(kind)}, r)
	})
}

// validKey accepts printable ASCII without spaces, as the IETF draft on
// the header (a structured string) and common practice do.
func validKey(key string) error {
	if len(key) > maxIdempotencyKey {
		return fmt.Errorf("%d characters, at most %d allowed", len(key), maxIdempotencyKey)
	}
	for i := 0; i < len(key); i++ {
		if key[i] <= ' ' || key[i] > '~' {
			return errors.New("only printable ASCII without spaces is allowed")
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
