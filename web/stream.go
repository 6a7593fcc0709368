package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/edgeops/shutdownd/handlers"
	"github.com/edgeops/shutdownd/store"
)

// stream serves GET /history/{id}/events for a logged-in browser: the same
// Server-Sent Events, in the same format, as the API's GET /jobs/{id}/events
// (EventSource cannot send the API's token header, so the browser
// authenticates with its session cookie instead):
//
//   - each event of the job's log, `id: <event id>`, EventJSON data;
//   - `event: job` with JobJSON whenever the job row changed;
//   - `event: end` with EndJSON once the job is final, then the stream ends;
//   - a keep-alive comment every heartbeat.
//
// Errors before the stream starts are the API's JSON errors.
func (w *Web) stream() http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if _, err := w.session(r); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				w.api.WriteError(rw, r, handlers.Errorf(handlers.CodeMissingToken, "log in at /login first"))
				return
			}
			w.api.WriteError(rw, r, err)
			return
		}
		id, _ := strconv.ParseInt(mux.Vars(r)["id"], 10, 64)
		if _, err := w.store.Job(r.Context(), id); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				err = handlers.Errorf(handlers.CodeNotFound, "job %d not found", id)
			}
			w.api.WriteError(rw, r, err)
			return
		}
		var after int64
		if v := strings.TrimSpace(r.Header.Get("Last-Event-ID")); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				w.api.WriteError(rw, r, handlers.Errorf(handlers.CodeInvalidRequest, "Last-Event-ID: %q is not an event id", v))
				return
			}
			after = n
		}
		w.serveStream(rw, r, id, after)
	})
}

func (w *Web) serveStream(rw http.ResponseWriter, r *http.Request, id, after int64) {
	// Subscribe before the first read, so a commit between the read and the
	// wait still rings the buffered channel.
	wake, unsubscribe := w.store.Subscribe()
	defer unsubscribe()
	h := rw.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	rw.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(rw)
	_ = rc.Flush()

	ctx := r.Context()
	heartbeat := time.NewTicker(w.heartbeat)
	defer heartbeat.Stop()
	var lastJob []byte
	for {
		// The job before its events: once the job reads final, every event
		// written before that is in the read that follows.
		job, err := w.store.Job(ctx, id)
		if err != nil {
			w.streamFailed(r, id, err)
			return
		}
		events, err := w.store.Events(ctx, id, after)
		if err != nil {
			w.streamFailed(r, id, err)
			return
		}
		var buf bytes.Buffer
		for _, e := range events {
			writeSSE(&buf, strconv.FormatInt(e.ID, 10), "", handlers.NewEventJSON(e))
			after = e.ID
		}
		jj, _ := json.Marshal(handlers.NewJobJSON(job))
		if !bytes.Equal(jj, lastJob) {
			lastJob = jj
			writeSSE(&buf, "", "job", json.RawMessage(jj))
		}
		final := job.State.Final()
		if final {
			writeSSE(&buf, "", "end", handlers.EndJSON{JobID: id, State: string(job.State), Error: job.Error})
		}
		if buf.Len() > 0 {
			if _, err := rw.Write(buf.Bytes()); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		}
		if final {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-heartbeat.C:
			if _, err := fmt.Fprint(rw, ": keep-alive\n\n"); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		}
	}
}

func (w *Web) streamFailed(r *http.Request, id int64, err error) {
	if r.Context().Err() != nil {
		return
	}
	w.log.LogAttrs(r.Context(), slog.LevelError, "history event stream", slog.Int64("job", id), slog.Any("err", err))
}

// writeSSE appends one message; JSON data has no raw newline, so one data
// line suffices.
func writeSSE(buf *bytes.Buffer, id, event string, data any) {
	if id != "" {
		fmt.Fprintf(buf, "id: %s\n", id)
	}
	if event != "" {
		fmt.Fprintf(buf, "event: %s\n", event)
	}
	b, err := json.Marshal(data)
	if err != nil {
		b = []byte(`null`)
	}
	fmt.Fprintf(buf, "data: %s\n\n", b)
}
