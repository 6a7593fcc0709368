package web

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

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
	w.api.StreamJob(rw, r, id, after, w.heartbeat, func(r *http.Request) error {
		_, err := w.session(r)
		return err
	})
}
