package handlers

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// handleEvents answers GET /jobs/{id}/events with Server-Sent Events:
//
//   - every event of the job's log as a default ("message") event with
//     `id: <event id>` and EventJSON data, first the existing ones (after
//     Last-Event-ID when the client reconnects), then new ones as the store
//     commits them;
//   - `event: job` with JobJSON data whenever the job row changed (state,
//     current_step, cancel_requested), without an id so that it does not
//     move the client's Last-Event-ID;
//   - a final `event: end` with EndJSON data once the job is final, after
//     which the server closes the stream;
//   - a comment line every 15 s so proxies keep the connection open.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	job, err := s.jobFromPath(r)
	if err != nil {
		s.WriteError(w, r, err)
		return
	}
	var after int64
	if v := strings.TrimSpace(r.Header.Get("Last-Event-ID")); v != "" {
		after, err = strconv.ParseInt(v, 10, 64)
		if err != nil || after < 0 {
			s.WriteError(w, r, Errorf(CodeInvalidRequest, "Last-Event-ID: %q is not an event id", v))
			return
		}
	}
	s.StreamJob(w, r, job.ID, after, s.heartbeat, func(r *http.Request) error {
		_, err := s.authenticate(r)
		return err
	})
}

// streamRecheck is how often an open event stream asks again whether its
// caller may still read it: a shutdown commits many times a second, and
// one check a second bounds both the cost and how long a revoked token
// keeps streaming.
const streamRecheck = time.Second

// StreamJob writes job id's event stream, in the format handleEvents
// describes, from the event after `after` until the job is final or the
// client goes away. The caller has authenticated the request; allowed is
// asked again at most once a second (streamRecheck) as the stream wakes,
// and the stream ends as soon as it fails: a token revoked or expired, or
// a browser session ended, while its stream is open stops receiving events
// within a second while the job writes, and at the next heartbeat (15 s)
// when it is idle. The history page's
// stream (web) uses it with its session check.
func (s *Server) StreamJob(w http.ResponseWriter, r *http.Request, id, after int64, heartbeat time.Duration, allowed func(*http.Request) error) {
	// Subscribe before the first read: a write committed between the read
	// and the wait still rings the (buffered) channel, so nothing is missed.
	wake, unsubscribe := s.store.Subscribe()
	defer unsubscribe()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()

	ctx := r.Context()
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	var lastJob []byte
	checked := time.Now()
	for {
		if time.Since(checked) >= streamRecheck {
			if allowed(r) != nil {
				return // the stream's credentials ended
			}
			checked = time.Now()
		}
		// Read the job before its events: when the job is seen final, every
		// event written before it went final is in the read that follows.
		job, err := s.store.Job(ctx, id)
		if err != nil {
			s.streamFailed(r, id, err)
			return
		}
		events, err := s.store.Events(ctx, id, after)
		if err != nil {
			s.streamFailed(r, id, err)
			return
		}
		var buf bytes.Buffer
		for _, e := range events {
			writeSSE(&buf, strconv.FormatInt(e.ID, 10), "", NewEventJSON(e))
			after = e.ID
		}
		jj, _ := json.Marshal(NewJobJSON(job))
		if !bytes.Equal(jj, lastJob) {
			lastJob = jj
			writeSSE(&buf, "", "job", json.RawMessage(jj))
		}
		final := job.State.Final()
		if final {
			writeSSE(&buf, "", "end", EndJSON{JobID: id, State: string(job.State), Error: job.Error})
		}
		if buf.Len() > 0 {
			if _, err := w.Write(buf.Bytes()); err != nil {
				return // client gone
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
		case <-tick.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		}
	}
}

// streamFailed logs a store error in the middle of a stream: the 200 status
// line is out, so the only honest answer left is closing the stream (the
// client reconnects with Last-Event-ID).
func (s *Server) streamFailed(r *http.Request, id int64, err error) {
	if r.Context().Err() != nil {
		return // client went away; the store call was cancelled with it
	}
	s.logger.LogAttrs(r.Context(), slog.LevelError, "event stream",
		slog.Int64("job", id), slog.Any("err", err))
}

// writeSSE appends one SSE message. data is JSON, which never contains a
// raw newline, so one data line suffices.
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
