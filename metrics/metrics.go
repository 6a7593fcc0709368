// Package metrics exposes shutdownd in the Prometheus text format at
// /metrics: jobs, step durations, target actions, the last job of each kind,
// requests to the site's peers (Nova, SSH, BMC) and the HTTP API. It is a
// runner.Observer, so the engine carries no metrics code; the metric names
// are documented in docs/metrics.md.
package metrics

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/runner"
	"github.com/edgeops/shutdownd/store"
)

// namespace prefixes every metric name.
const namespace = "shutdownd"

// jobStates are the values of the result label of last_job_result; all are
// exported (0 or 1) so that a query never depends on a series appearing.
var jobStates = []store.State{store.StatePending, store.StateRunning, store.StateSucceeded, store.StateFailed, store.StateCancelled}

// stepBuckets span a step of a small test site (a fraction of a second) to
// the longest a UPS allows (half an hour).
var stepBuckets = []float64{0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800}

// Metrics holds every collector in its own registry (not the global one, so
// that tests and several Mains in one process do not collide).
type Metrics struct {
	reg   *prometheus.Registry
	store *store.Store
	log   *slog.Logger

	jobsStarted  *prometheus.CounterVec
	jobs         *prometheus.CounterVec
	stepDuration *prometheus.HistogramVec
	targets      *prometheus.CounterVec
	lastJobs     *lastJobs
	peerRequests *prometheus.CounterVec
	peerErrors   *prometheus.CounterVec
	httpRequests *prometheus.CounterVec
	// storeFailures and unsaved follow a store that cannot be written (a
	// full disk): the runner goes on and holds its records in memory.
	storeFailures prometheus.Counter
	unsaved       prometheus.Gauge

	// Memos of Instrument, which runs on every request: the route of a
	// method and exact path whose route template is that path (no
	// variables, so the set is bounded by the routes), and the counter of
	// each label set.
	staticRoutes sync.Map // routeKey -> string
	httpCounters sync.Map // httpLabels -> prometheus.Counter
}

type routeKey struct{ method, path string }

type httpLabels struct {
	route, method string
	code          int
}

var (
	_ runner.Observer      = (*Metrics)(nil)
	_ runner.StoreObserver = (*Metrics)(nil)
)

// New creates the collectors. st is read at the end of each job to count its
// target actions; logger may be nil.
func New(st *store.Store, logger *slog.Logger) *Metrics {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m := &Metrics{
		reg:   prometheus.NewRegistry(),
		store: st,
		log:   logger,
		jobsStarted: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "jobs_started_total",
			Help: "Jobs started (a shutdown resumed after a restart counts again), by kind."}, []string{"kind"}),
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "jobs_total",
			Help: "Jobs finished, by kind and result (succeeded, failed, cancelled)."}, []string{"kind", "result"}),
		stepDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "step_duration_seconds",
			Help: "Duration of finished steps, by job kind, step and result.", Buckets: stepBuckets}, []string{"kind", "step", "result"}),
		targets: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "target_actions_total",
			Help: "Target actions of finished jobs, by job kind, target kind (vm, storage, host, bmc, openstack) and result."},
			[]string{"kind", "target_kind", "result"}),
		lastJobs: newLastJobs(st),
		peerRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "peer_requests_total",
			Help: "Requests to the site's peers, by peer (nova, ssh, bmc) and operation."}, []string{"peer", "op"}),
		peerErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "peer_errors_total",
			Help: "Failed requests to the site's peers, by peer, operation and error kind."}, []string{"peer", "op", "kind"}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "http_requests_total",
			Help: "HTTP requests served, by route template, method and status code."}, []string{"route", "method", "code"}),
		storeFailures: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "store_write_failures_total",
			Help: "Writes of the runner's records the database refused (disk full, I/O error, read-only), retries included."}),
		unsaved: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "records_unsaved",
			Help: "Records of jobs held in memory (and in the service log) because the database refused them; 0 when all are saved."}),
	}
	m.reg.MustRegister(m.jobsStarted, m.jobs, m.stepDuration, m.targets, m.lastJobs,
		m.peerRequests, m.peerErrors, m.httpRequests, m.storeFailures, m.unsaved,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is the registry of these metrics, for tests and extra collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// JobStarted implements runner.Observer.
func (m *Metrics) JobStarted(_ context.Context, j store.Job) {
	m.jobsStarted.WithLabelValues(string(j.Kind)).Inc()
}

// StepFinished implements runner.Observer.
func (m *Metrics) StepFinished(_ context.Context, j store.Job, s store.Step) {
	if s.StartedAt == nil || s.FinishedAt == nil {
		return // skipped before it started: no duration to tell
	}
	m.stepDuration.WithLabelValues(string(j.Kind), s.Name, string(s.State)).Observe(s.FinishedAt.Sub(*s.StartedAt).Seconds())
}

// JobFinished implements runner.Observer. It reads the job's actions once
// (one indexed query on the read pool) to count targets by result.
func (m *Metrics) JobFinished(ctx context.Context, j store.Job) {
	m.jobs.WithLabelValues(string(j.Kind), string(j.State)).Inc()
	actions, err := m.store.Actions(ctx, j.ID)
	if err != nil {
		m.log.Warn("metrics: read actions", "job_id", j.ID, "err", err)
		return
	}
	for _, a := range actions {
		m.targets.WithLabelValues(string(j.Kind), string(a.TargetKind), string(a.State)).Inc()
	}
}

// PeerCall implements runner.Observer.
func (m *Metrics) PeerCall(peer, op string, err error) {
	m.peerRequests.WithLabelValues(peer, op).Inc()
	if err != nil {
		m.peerErrors.WithLabelValues(peer, op, runner.ErrorKind(err)).Inc()
	}
}

// StoreWriteFailed implements runner.StoreObserver.
func (m *Metrics) StoreWriteFailed() { m.storeFailures.Inc() }

// RecordsUnsaved implements runner.StoreObserver.
func (m *Metrics) RecordsUnsaved(n int) { m.unsaved.Set(float64(n)) }

// Handler serves the registry in the Prometheus text format. Collection
// errors are answered 500 by promhttp.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(m.log.Handler(), slog.LevelWarn)})
}

// Mount adds GET /metrics to the API router according to access: open
// (no token), read (requireRead wraps the handler, a read token), or off
// (no route: the router's JSON 404).
func (m *Metrics) Mount(r *mux.Router, access string, requireRead func(http.Handler) http.Handler) error {
	switch access {
	case config.MetricsOff:
		return nil
	case config.MetricsOpen:
		r.Handle("/metrics", m.Handler()).Methods(http.MethodGet)
	case config.MetricsRead, "":
		r.Handle("/metrics", requireRead(m.Handler())).Methods(http.MethodGet)
	default:
		return fmt.Errorf("metrics access %q: want open, read or off", access)
	}
	return nil
}

// Instrument counts every request served by next, labelled with the route
// template it matches on router ("/jobs/{id:[0-9]+}", so ids do not make
// new series), or "unmatched" for the 404/405 answers.
//
// Status endpoints are polled thousands of times a second during a
// shutdown, so the two costly steps are memoized: matching the route (a
// regexp per route tried) for a method and path whose template is the path
// itself, and finding the counter of a label set (hashing three strings).
// Both memos are bounded by the routes, the standard methods and the codes
// the service answers with; a path with variables, or a request with an
// unusual method, is matched every time. This assumes,
// as is true of every route shutdownd registers, that routes match on
// method and path only and are all added before serving.
func (m *Metrics) Instrument(router *mux.Router, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rk := routeKey{r.Method, r.URL.Path}
		route, ok := "", false
		if v, hit := m.staticRoutes.Load(rk); hit {
			route, ok = v.(string), true
		}
		if !ok {
			route = "unmatched"
			var rm mux.RouteMatch
			if router.Match(r, &rm) && rm.Route != nil && rm.MatchErr == nil {
				if t, err := rm.Route.GetPathTemplate(); err == nil {
					route = t
					if t == r.URL.Path && method(r.Method) == r.Method {
						m.staticRoutes.Store(rk, t)
					}
				}
			}
		}
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		defer func() {
			m.httpCounter(route, method(r.Method), sw.code).Inc()
		}()
		next.ServeHTTP(sw, r)
	})
}

// httpCounter is httpRequests.WithLabelValues(route, method, code), memoized.
func (m *Metrics) httpCounter(route, method string, code int) prometheus.Counter {
	k := httpLabels{route, method, code}
	if c, ok := m.httpCounters.Load(k); ok {
		return c.(prometheus.Counter)
	}
	c := m.httpRequests.WithLabelValues(route, method, strconv.Itoa(code))
	m.httpCounters.Store(k, c)
	return c
}

// method bounds the method label: a client may send any token as a method.
func method(s string) string {
	switch s {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return s
	}
	return "other"
}

// statusWriter remembers the status code.
type statusWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (s *statusWriter) WriteHeader(code int) {
	if !s.wrote {
		s.code, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush (event streams).
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
