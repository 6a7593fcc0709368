package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/handlers"
	"github.com/edgeops/shutdownd/metrics"
	"github.com/edgeops/shutdownd/runner/hostctl"
	"github.com/edgeops/shutdownd/store"
)

type rig struct {
	st      *store.Store
	m       *metrics.Metrics
	srv     *httptest.Server
	readTok string
	simTok  string
}

// newRig serves the real API with /metrics mounted as access says, on a
// loopback listener, exactly as cmd/shutdownd wires it.
func newRig(t *testing.T, access string) *rig {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	api := handlers.New(handlers.Options{Store: st})
	m := metrics.New(st, nil)
	if err := m.Mount(api.Router(), access, func(h http.Handler) http.Handler { return api.RequireScope(handlers.ScopeRead, h) }); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m.Instrument(api.Router(), api))
	t.Cleanup(srv.Close)
	r := &rig{st: st, m: m, srv: srv}
	r.readTok = r.token(t, "reader", handlers.ScopeRead)
	r.simTok = r.token(t, "sim", handlers.ScopeSimulate)
	return r
}

func (r *rig) token(t *testing.T, name string, scopes ...string) string {
	sec, _ := store.NewTokenSecret()
	if _, err := r.st.CreateToken(context.Background(), name, store.HashToken(sec), scopes, nil, nil); err != nil {
		t.Fatal(err)
	}
	return sec
}

func (r *rig) get(t *testing.T, path, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, r.srv.URL+path, nil)
	if token != "" {
		req.Header.Set("auth-token", token)
	}
	resp, err := r.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAccess(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		access                 string
		anon, read, noReadCode int
	}{
		{config.MetricsOpen, 200, 200, 200},
		{config.MetricsRead, 401, 200, 403},
		{config.MetricsOff, 404, 404, 404},
	} {
		r := newRig(t, c.access)
		code, body := r.get(t, "/metrics", "")
		if code != c.anon {
			t.Errorf("%s: anonymous %d, want %d: %.200s", c.access, code, c.anon, body)
		}
		if code != 200 && !strings.HasPrefix(body, `{"data":null`) {
			t.Errorf("%s: error is not the JSON envelope: %.200s", c.access, body)
		}
		if code, _ := r.get(t, "/metrics", r.readTok); code != c.read {
			t.Errorf("%s: read token %d, want %d", c.access, code, c.read)
		}
		if code, _ := r.get(t, "/metrics", r.simTok); code != c.noReadCode {
			t.Errorf("%s: token without read %d, want %d", c.access, code, c.noReadCode)
		}
	}
	if err := metrics.New(nil, nil).Mount(nil, "sometimes", nil); err == nil {
		t.Error("unknown access accepted")
	}
}

// TestJobMetrics drives the observer with a job recorded in the store and
// reads the metrics back through HTTP, as Prometheus does.
func TestJobMetrics(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRig(t, config.MetricsOpen)
	st := r.st
	job, _, err := st.CreateShutdown(ctx, store.NewJob{TokenName: "ups"})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.StartJob(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	job, _ = st.Job(ctx, job.ID)
	r.m.JobStarted(ctx, job)
	step, err := st.EnsureStep(ctx, job.ID, 1, "openstack")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.StartStep(ctx, step.ID); err != nil {
		t.Fatal(err)
	}
	for i, state := range []store.ActionState{store.ActionSucceeded, store.ActionSucceeded, store.ActionFailed} {
		key := store.ActionKey{JobID: job.ID, StepID: step.ID, TargetKind: "vm", Target: fmt.Sprint("vm-", i), TargetID: fmt.Sprint(i), Operation: "os-stop"}
		if _, err := st.RecordAction(ctx, key, state, "", ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.FinishStep(ctx, step.ID, store.StepFailed, "2 off, 1 failed", "1 VMs not stopped"); err != nil {
		t.Fatal(err)
	}
	steps, _ := st.Steps(ctx, job.ID)
	r.m.StepFinished(ctx, job, steps[0])

	_, body := r.get(t, "/metrics", "")
	for _, want := range []string{
		`shutdownd_jobs_started_total{kind="shutdown"} 1`,
		`shutdownd_last_job_result{kind="shutdown",result="running"} 1`,
		`shutdownd_last_job_end_timestamp_seconds{kind="shutdown"} 0`,
		`shutdownd_step_duration_seconds_count{kind="shutdown",result="failed",step="openstack"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %s", want)
		}
	}

	if _, err := st.FinishJob(ctx, job.ID, store.StateFailed, "1 failed"); err != nil {
		t.Fatal(err)
	}
	job, _ = st.Job(ctx, job.ID)
	r.m.JobFinished(ctx, job)
	r.m.PeerCall("nova", "stop", nil)
	r.m.PeerCall("nova", "stop", errors.New("HTTP 500"))
	r.m.PeerCall("ssh", "dial", fmt.Errorf("dial compute-01: %w", hostctl.ErrUnreachable))
	r.m.PeerCall("bmc", "power-state", context.DeadlineExceeded)
	r.get(t, "/jobs/1", r.readTok)
	r.get(t, "/jobs/2", r.readTok)
	r.get(t, "/nope", "")

	_, body = r.get(t, "/metrics", "")
	for _, want := range []string{
		`shutdownd_jobs_total{kind="shutdown",result="failed"} 1`,
		`shutdownd_last_job_result{kind="shutdown",result="failed"} 1`,
		`shutdownd_last_job_result{kind="shutdown",result="running"} 0`,
		fmt.Sprintf(`shutdownd_last_job_end_timestamp_seconds{kind="shutdown"} %g`, float64(job.FinishedAt.UnixNano())/1e9),
		`shutdownd_target_actions_total{kind="shutdown",result="succeeded",target_kind="vm"} 2`,
		`shutdownd_target_actions_total{kind="shutdown",result="failed",target_kind="vm"} 1`,
		`shutdownd_peer_requests_total{op="stop",peer="nova"} 2`,
		`shutdownd_peer_errors_total{kind="other",op="stop",peer="nova"} 1`,
		`shutdownd_peer_errors_total{kind="unreachable",op="dial",peer="ssh"} 1`,
		`shutdownd_peer_errors_total{kind="timeout",op="power-state",peer="bmc"} 1`,
		`shutdownd_http_requests_total{code="200",method="GET",route="/jobs/{id:[0-9]+}"} 1`,
		`shutdownd_http_requests_total{code="404",method="GET",route="/jobs/{id:[0-9]+}"} 1`,
		`shutdownd_http_requests_total{code="404",method="GET",route="unmatched"} 1`,
		`shutdownd_http_requests_total{code="200",method="GET",route="/metrics"} 1`,
		`go_goroutines `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %s", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", body)
	}

	// A restarted service knows the last job at once: the gauges read the
	// store, they are not remembered from the runner's reports.
	m2 := metrics.New(st, nil)
	srv2 := httptest.NewServer(m2.Handler())
	defer srv2.Close()
	resp, err := http.Get(srv2.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `shutdownd_last_job_result{kind="shutdown",result="failed"} 1`) {
		t.Errorf("after a restart:\n%s", b)
	}
}

// TestHTTPRequestsRepeated: the route and counter memos of Instrument count
// repeated requests exactly as matching every time would: by route
// template, method and code, unmatched paths and methods as "unmatched",
// and never memoize a path with variables as a route of its own.
func TestHTTPRequestsRepeated(t *testing.T) {
	t.Parallel()
	r := newRig(t, "open")
	for range 5 {
		if code, body := r.get(t, "/shutdown/status", r.readTok); code != 200 {
			t.Fatalf("status: %d %s", code, body)
		}
		r.get(t, "/shutdown/status", "")
		r.get(t, "/jobs/7", r.readTok)
		r.get(t, "/jobs/8", r.readTok)
		r.get(t, "/nope", "")
	}
	for range 2 {
		req, _ := http.NewRequest(http.MethodPost, r.srv.URL+"/shutdown/status", nil)
		resp, err := r.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		req, _ = http.NewRequest("FROB", r.srv.URL+"/shutdown/status", nil)
		if resp, err = r.srv.Client().Do(req); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	_, body := r.get(t, "/metrics", "")
	for _, want := range []string{
		`shutdownd_http_requests_total{code="200",method="GET",route="/shutdown/status"} 5`,
		`shutdownd_http_requests_total{code="401",method="GET",route="/shutdown/status"} 5`,
		`shutdownd_http_requests_total{code="404",method="GET",route="/jobs/{id:[0-9]+}"} 10`,
		`shutdownd_http_requests_total{code="404",method="GET",route="unmatched"} 5`,
		`shutdownd_http_requests_total{code="405",method="POST",route="unmatched"} 2`,
		`shutdownd_http_requests_total{code="405",method="other",route="unmatched"} 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %s", want)
		}
	}
	if strings.Contains(body, `route="/jobs/7"`) || strings.Contains(body, `route="/jobs/8"`) {
		t.Error("a path with an id became a route label")
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", body)
	}
}

// TestLastJobIsWhatTheStoreHolds: the last-job gauges follow the store,
// also for changes the runner never reports (a simulation settled as
// "interrupted by restart" at start-up).
func TestLastJobIsWhatTheStoreHolds(t *testing.T) {
	t.Parallel()
	r := newRig(t, "open")
	ctx := context.Background()
	if _, body := r.get(t, "/metrics", ""); strings.Contains(body, "shutdownd_last_job_result") {
		t.Errorf("last_job_result exported before any job:\n%s", body)
	}
	job, err := r.st.CreateSimulation(ctx, store.NewJob{Kind: store.KindSimulation})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.st.StartJob(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	if _, body := r.get(t, "/metrics", ""); !strings.Contains(body, `shutdownd_last_job_result{kind="simulation",result="running"} 1`) {
		t.Errorf("running simulation not shown:\n%s", body)
	}
	if n, err := r.st.FailInterruptedSimulations(ctx); err != nil || n != 1 {
		t.Fatalf("settle: %d, %v", n, err)
	}
	_, body := r.get(t, "/metrics", "")
	for _, want := range []string{
		`shutdownd_last_job_result{kind="simulation",result="failed"} 1`,
		`shutdownd_last_job_result{kind="simulation",result="running"} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("after the restart's settle, missing %s", want)
		}
	}
	if strings.Contains(body, `shutdownd_last_job_end_timestamp_seconds{kind="simulation"} 0`) {
		t.Error("the settled simulation still has no end time")
	}
}
