// Package handlers is the HTTP API of shutdownd (openapi.yaml): routes,
// token authentication, the JSON envelope and the one error vocabulary.
// It only calls the store; the runner is told about new work through Kicker.
package handlers

import (
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"

	"github.com/edgeops/shutdownd/store"
)

// DefaultMaxBodyBytes bounds request bodies when Options.MaxBodyBytes is 0.
// A valid body is a reason (at most 1000 characters) and a timestamp, so
// 64 KiB is generous and still stops a client from filling memory.
const DefaultMaxBodyBytes = 64 << 10

// Kicker is the runner's doorbell: called after a job was created or a
// cancel was requested so the runner acts at once instead of at its next
// poll of the store. It must not block.
type Kicker interface {
	Kick()
}

// selfDowner is implemented by the runner: it reports the shutdown job
// that is powering off the machine this service runs on. Until that
// power-off has failed for good (the runner then stops reporting it), a new
// job must not be created: the dying machine would leave it running.
type selfDowner interface {
	PoweringOffSelf() (jobID int64, ok bool)
}

// poweringOffSelf reports the job powering this machine off, if any.
func (s *Server) poweringOffSelf() (int64, bool) {
	if sd, ok := s.runner.(selfDowner); ok {
		return sd.PoweringOffSelf()
	}
	return 0, false
}

// Options configures New.
type Options struct {
	Store  *store.Store
	Runner Kicker // may be nil: the runner then notices at its next poll
	Logger *slog.Logger
	// TrustedProxies are the peers whose X-Forwarded-For is believed. Empty
	// means the header is ignored: anyone could write it.
	TrustedProxies []netip.Prefix
	MaxBodyBytes   int64            // default DefaultMaxBodyBytes
	Now            func() time.Time // default time.Now; tests move the clock
	// AuthLimit bounds failed authentications per source (zero: defaults).
	AuthLimit AuthLimit
}

// Server is the API's http.Handler.
type Server struct {
	store          *store.Store
	runner         Kicker
	logger         *slog.Logger
	trustedProxies []netip.Prefix
	maxBodyBytes   int64
	now            func() time.Time
	heartbeat      time.Duration // SSE keep-alive comment period
	router         *mux.Router
	authLimit      *authLimiter

	touchMu sync.Mutex
	touched map[int64]time.Time // token id -> last last_used_at write
}

// New builds the API server with all its routes.
func New(opts Options) *Server {
	s := &Server{
		store:          opts.Store,
		runner:         opts.Runner,
		logger:         opts.Logger,
		trustedProxies: opts.TrustedProxies,
		maxBodyBytes:   opts.MaxBodyBytes,
		now:            opts.Now,
		heartbeat:      15 * time.Second,
		router:         mux.NewRouter(),
		touched:        make(map[int64]time.Time),
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	if s.maxBodyBytes <= 0 {
		s.maxBodyBytes = DefaultMaxBodyBytes
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.authLimit = newAuthLimiter(opts.AuthLimit, s.now)
	s.routes()
	return s
}

func (s *Server) routes() {
	r := s.router
	// ServeHTTP cleans the path itself; the router's own cleaning answers
	// 301, which many clients follow with a GET (then a 405).
	r.SkipClean(true)
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.WriteError(w, r, Errorf(CodeNotFound, "no such path: %s", r.URL.Path))
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(s.methodNotAllowed)

	// The status routes come first: monitors poll them, and the router (and
	// the metrics middleware, which matches the route again) tries routes in
	// order. No other route matches these paths, so the order changes
	// nothing else.
	r.Handle("/shutdown/status", s.RequireScope(ScopeRead, s.statusHandler(store.KindShutdown))).Methods(http.MethodGet)
	r.Handle("/simulate/status", s.RequireScope(ScopeRead, s.statusHandler(store.KindSimulation))).Methods(http.MethodGet)
	r.Handle("/startup/status", s.RequireScope(ScopeRead, s.statusHandler(store.KindStartup))).Methods(http.MethodGet)

	r.Handle("/healthz", http.HandlerFunc(s.handleHealthz)).Methods(http.MethodGet, http.MethodHead)
	r.Handle("/openapi.yaml", http.HandlerFunc(s.handleOpenAPI)).Methods(http.MethodGet, http.MethodHead)

	r.Handle("/simulate", s.RequireScope(ScopeSimulate, s.idempotent(store.KindSimulation, http.HandlerFunc(s.handleSimulate)))).Methods(http.MethodPost)
	r.Handle("/shutdown", s.RequireScope(ScopeShutdown, s.idempotent(store.KindShutdown, http.HandlerFunc(s.handleShutdown)))).Methods(http.MethodPost)
	r.Handle("/startup", s.RequireScope(ScopeStartup, s.idempotent(store.KindStartup, http.HandlerFunc(s.handleStartup)))).Methods(http.MethodPost)

	r.Handle("/jobs", s.RequireScope(ScopeRead, http.HandlerFunc(s.handleListJobs))).Methods(http.MethodGet)
	r.Handle("/jobs/{id:[0-9]+}", s.RequireScope(ScopeRead, http.HandlerFunc(s.handleJob))).Methods(http.MethodGet)
	r.Handle("/jobs/{id:[0-9]+}/events", s.RequireScope(ScopeRead, http.HandlerFunc(s.handleEvents))).Methods(http.MethodGet)
	// The scope of a cancel depends on the job's kind, checked in the handler.
	r.Handle("/jobs/{id:[0-9]+}/cancel", s.Authenticate(http.HandlerFunc(s.handleCancel))).Methods(http.MethodPost)
}

// Router returns the router so that the program can mount the history
// pages, /metrics and /openapi.yaml beside the API, sharing its 404/405
// answers. Routes must be added before the server starts serving.
func (s *Server) Router() *mux.Router { return s.router }

// ServeHTTP serves the API. The recover wrapper sits outside the router so
// that it also covers the not-found and method-not-allowed handlers.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r = cleanPath(r)
	tw := &trackingWriter{ResponseWriter: w}
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		if v == http.ErrAbortHandler {
			panic(v) // the documented way to abort a response; net/http handles it
		}
		s.logger.LogAttrs(r.Context(), slog.LevelError, "panic in handler",
			slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.Any("panic", v))
		if !tw.wroteHeader {
			s.WriteError(tw, r, Errorf(CodeInternal, "internal error"))
		}
	}()
	s.router.ServeHTTP(tw, r)
}

// cleanPath serves a request for an unclean path (doubled slashes, "." or
// ".." segments, a trailing slash) as the clean path, instead of
// redirecting: a UPS script configured with "http://host:8080//shutdown"
// or ".../shutdown/" must shut the site down, and a 301 would turn its
// POST into a GET on many clients. Authentication and scopes apply to the
// clean path exactly as to a request that named it, so nothing opens up:
// every path reaches the same handler as its clean form.
func cleanPath(r *http.Request) *http.Request {
	p := r.URL.Path
	if p == "" {
		p = "/"
	} else if p[0] != '/' {
		p = "/" + p
	}
	clean := path.Clean(p)
	if clean == r.URL.Path {
		return r
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path = clean
	r2.URL.RawPath = ""
	return r2
}

// CleanPaths serves every request to next under its clean path, as the
// API's ServeHTTP does itself; the program wraps whatever sits in front of
// the API (the metrics middleware) with it, so that "//shutdown" is counted
// under the route it is served by.
func CleanPaths(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, cleanPath(r))
	})
}

// methodNotAllowed answers 405 with the Allow header (RFC 9110 requires
// it), listing the methods of every route whose path matches.
func (s *Server) methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	_ = s.router.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		var m mux.RouteMatch
		if route.Match(r, &m) || !errors.Is(m.MatchErr, mux.ErrMethodMismatch) {
			return nil
		}
		methods, err := route.GetMethods()
		if err == nil {
			allowed = append(allowed, methods...)
		}
		return nil
	})
	slices.Sort(allowed)
	w.Header().Set("Allow", strings.Join(slices.Compact(allowed), ", "))
	s.WriteError(w, r, Errorf(CodeMethodNotAllowed, "method %s not allowed on %s", r.Method, r.URL.Path))
}

// trackingWriter remembers whether the status line went out, so the
// recover wrapper knows whether it can still answer with a JSON 500.
type trackingWriter struct {
	http.ResponseWriter
	wroteHeader bool
}

func (t *trackingWriter) WriteHeader(code int) {
	t.wroteHeader = true
	t.ResponseWriter.WriteHeader(code)
}

func (t *trackingWriter) Write(b []byte) (int, error) {
	t.wroteHeader = true
	return t.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush on the real writer (SSE).
func (t *trackingWriter) Unwrap() http.ResponseWriter { return t.ResponseWriter }
