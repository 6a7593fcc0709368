// Package web serves the browser history pages of shutdownd: the site
// overview at /, the job list, each job's timeline picture, steps, target
// actions and event log, updated live while a job runs, behind a login
// form that takes a read token and keeps a server-side session in a cookie.
//
// The pictures (the job timeline, the forecast against the UPS runtime)
// are SVG written by the templates from the geometry of package
// web/timeline: no script draws them, nothing is fetched from elsewhere,
// and they print.
//
// Pages are server-rendered with html/template (every value is escaped by
// context), templates and CSS are embedded, and everything works without
// JavaScript: a small script only refreshes the job page from a
// Server-Sent Events stream, the same stream and format as the API's
// GET /jobs/{id}/events. The package only reads the store (plus sessions).
package web

import (
	"embed"
	"html/template"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/handlers"
	"github.com/edgeops/shutdownd/store"
)

// Defaults of Options.
const (
	DefaultIdleTimeout = 12 * time.Hour // an operator's shift
	DefaultMaxAge      = 24 * time.Hour // log in again every day, active or not
	DefaultPageSize    = 25
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Options configures Mount.
type Options struct {
	Store *store.Store
	// API checks login tokens exactly as the API checks request tokens
	// (revocation, expiry, allowed networks, trusted proxies) and writes
	// the JSON error answers of the event stream.
	API    *handlers.Server
	Logger *slog.Logger
	// TLS marks the session cookie Secure: set when the service serves
	// HTTPS (a cookie marked Secure is never sent over plain HTTP, which
	// would make login impossible on an HTTP-only site).
	TLS         bool
	IdleTimeout time.Duration // default DefaultIdleTimeout
	MaxAge      time.Duration // default DefaultMaxAge
	PageSize    int           // jobs per history page, default DefaultPageSize
	Now         func() time.Time
	Heartbeat   time.Duration // SSE keep-alive period, default 15 s
	// Hosts are the site's hosts, listed by role on the overview with
	// their last known power state.
	Hosts []config.Host
	// SimulationMaxAge: older than this, the last successful simulation
	// is a warning on the overview (default config.DefaultSimulationMaxAge).
	SimulationMaxAge time.Duration
	// Forecaster gives the overview the forecast of a shutdown now (the
	// runner; nil: not shown).
	Forecaster handlers.Forecaster
	// Power is the UPS reading, for the overview and a running job's
	// timeline; nil: no power source configured.
	Power PowerSource
}

// Web is the mounted history pages.
type Web struct {
	store     *store.Store
	api       *handlers.Server
	log       *slog.Logger
	tls       bool
	idle      time.Duration
	maxAge    time.Duration
	pageSize  int
	now       func() time.Time
	heartbeat time.Duration
	pages     map[string]*template.Template

	hosts      []config.Host
	simMaxAge  time.Duration
	forecaster handlers.Forecaster
	power      PowerSource
}

// Mount adds the history pages to the API's router: GET / (the overview)
// and /history, GET
// /history/{id} (with /live, the refreshable part, and /events, the
// stream), GET and POST /login, POST /logout and /static/. It must be called
// before the server starts.
func Mount(r *mux.Router, opts Options) (*Web, error) {
	w := &Web{
		store: opts.Store, api: opts.API, log: opts.Logger, tls: opts.TLS,
		idle: opts.IdleTimeout, maxAge: opts.MaxAge, pageSize: opts.PageSize, now: opts.Now,
		heartbeat: opts.Heartbeat, hosts: opts.Hosts, simMaxAge: opts.SimulationMaxAge,
		forecaster: opts.Forecaster, power: opts.Power,
	}
	if w.simMaxAge <= 0 {
		w.simMaxAge = config.DefaultSimulationMaxAge
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	if w.idle <= 0 {
		w.idle = DefaultIdleTimeout
	}
	if w.maxAge <= 0 {
		w.maxAge = DefaultMaxAge
	}
	if w.pageSize <= 0 {
		w.pageSize = DefaultPageSize
	}
	if w.now == nil {
		w.now = time.Now
	}
	if w.heartbeat <= 0 {
		w.heartbeat = 15 * time.Second
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	w.pages = pages

	get := []string{http.MethodGet, http.MethodHead}
	r.Handle("/", w.page(w.handleOverview)).Methods(get...)
	r.Handle("/history", w.page(w.handleHistory)).Methods(get...)
	r.Handle("/history/{id:[0-9]+}", w.page(w.handleJob)).Methods(get...)
	r.Handle("/history/{id:[0-9]+}/live", w.page(w.handleLive)).Methods(get...)
	r.Handle("/history/{id:[0-9]+}/events", w.stream()).Methods(http.MethodGet)
	r.Handle("/login", http.HandlerFunc(w.handleLoginForm)).Methods(get...)
	r.Handle("/login", http.HandlerFunc(w.handleLogin)).Methods(http.MethodPost)
	r.Handle("/logout", http.HandlerFunc(w.handleLogout)).Methods(http.MethodPost)
	r.PathPrefix("/static/").Handler(securityHeaders(w.static())).Methods(get...)
	return w, nil
}

// static serves the embedded files under /static/ and nothing else: a
// directory (/static/ itself included) or a missing file is the API's JSON
// 404, never Go's file server listing or its plain-text 404, and there are
// no redirects (http.FileServer sends one for index.html and for a
// directory without its slash). Files are served whole, without ranges:
// they are a few kilobytes, and ranges would bring back Go's plain-text 416.
// Browsers keep them for an hour: they change only with the binary.
func (w *Web) static() http.Handler {
	files, _ := fs.Sub(staticFS, "static")
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/static/")
		body, err := fs.ReadFile(files, name)
		if !fs.ValidPath(name) || err != nil {
			w.api.WriteError(rw, r, handlers.Errorf(handlers.CodeNotFound, "no such file: %s", r.URL.Path))
			return
		}
		h := rw.Header()
		ct := mime.TypeByExtension(path.Ext(name))
		if ct == "" {
			ct = "application/octet-stream"
		}
		h.Set("Content-Type", ct)
		h.Set("Content-Length", strconv.Itoa(len(body)))
		h.Set("Cache-Control", "public, max-age=3600")
		rw.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = rw.Write(body)
		}
	})
}

// securityHeaders are on every page: no inline script may run (the only
// script is /static/live.js), no framing (clickjacking of the logout
// button), no MIME sniffing, no referrer leaking job ids elsewhere.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "+
			"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "same-origin")
		h.ServeHTTP(w, r)
	})
}
