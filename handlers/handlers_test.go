package handlers

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/store"
)

// kickCounter is a Kicker that counts, so tests see the runner was told.
type kickCounter struct{ n atomic.Int64 }

func (k *kickCounter) Kick() { k.n.Add(1) }

type env struct {
	t     *testing.T
	path  string // the database file
	st    *store.Store
	srv   *httptest.Server
	api   *Server
	kicks *kickCounter
}

// newEnv starts the API on a real SQLite file and a real loopback listener.
func newEnv(t *testing.T, mod func(*Options)) *env {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "shutdownd.db")
	st, err := store.Open(ctx, path)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	k := &kickCounter{}
	opts := Options{Store: st, Runner: k}
	if mod != nil {
		mod(&opts)
	}
	api := New(opts)
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return &env{t: t, path: path, st: st, srv: srv, api: api, kicks: k}
}

// token creates a token and returns its secret.
func (e *env) token(name string, scopes, cidrs []string, expires *time.Time) string {
	e.t.Helper()
	secret, err := store.NewTokenSecret()
	if err != nil {
		e.t.Fatalf("token secret: %v", err)
	}
	if _, err := e.st.CreateToken(context.Background(), name, store.HashToken(secret), scopes, cidrs, expires); err != nil {
		e.t.Fatalf("create token %s: %v", name, err)
	}
	return secret
}

// tokens creates the usual trio of tokens: read, simulate, shutdown (each
// with read too where a test reads back).
func (e *env) tokens() (read, sim, shut string) {
	return e.token("reader", []string{ScopeRead}, nil, nil),
		e.token("ups-sim", []string{ScopeSimulate, ScopeRead}, nil, nil),
		e.token("ups", []string{ScopeShutdown, ScopeRead}, nil, nil)
}

type req struct {
	method, path, token, body string
	header                    map[string]string
}

func (e *env) do(r req) (*http.Response, []byte) {
	e.t.Helper()
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	hr, err := http.NewRequest(r.method, e.srv.URL+r.path, body)
	if err != nil {
		e.t.Fatalf("new request: %v", err)
	}
	if r.token != "" {
		hr.Header.Set("auth-token", r.token)
	}
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	resp, err := e.srv.Client().Do(hr)
	if err != nil {
		e.t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("read body: %v", err)
	}
	return resp, b
}

// wantError checks an error answer: status, code, and the exact envelope
// shape (key order data, error, code, status).
func wantError(t *testing.T, resp *http.Response, body []byte, status int, code string) string {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status = %d, want %d; body %s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var env struct {
		Data   any    `json:"data"`
		Error  string `json:"error"`
		Code   string `json:"code"`
		Status string `json:"status"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatalf("error body is not JSON: %v: %s", err, body)
	}
	if env.Code != code || env.Status != "error" || env.Data != nil || env.Error == "" {
		t.Fatalf("body = %s, want code %q in the error envelope", body, code)
	}
	want := fmt.Sprintf(`{"data":null,"error":%q,"code":%q,"status":"error"}`, env.Error, code)
	if string(body) != want {
		t.Fatalf("body = %s\nwant  %s", body, want)
	}
	return env.Error
}

func jobIDFromLocation(t *testing.T, resp *http.Response) int64 {
	t.Helper()
	var id int64
	if _, err := fmt.Sscanf(resp.Header.Get("Location"), "/jobs/%d", &id); err != nil {
		t.Fatalf("Location %q: %v", resp.Header.Get("Location"), err)
	}
	return id
}

func (e *env) jobs() []store.Job {
	e.t.Helper()
	jobs, err := e.st.ListJobs(context.Background(), store.JobFilter{})
	if err != nil {
		e.t.Fatalf("list jobs: %v", err)
	}
	return jobs
}

const acceptedBody = `{"data":"We've got your request","error":null,"status":"success"}`

func TestSimulateAccepted(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	_, sim, _ := e.tokens()
	resp, body := e.do(req{method: "POST", path: "/simulate", token: sim,
		body: `{"reason":"UPS on battery","expected_recovery":"2025-06-24T11:00:00+02:00"}`})
	if resp.StatusCode != http.StatusAccepted || string(body) != acceptedBody {
		t.Fatalf("got %d %s, want 202 %s", resp.StatusCode, body, acceptedBody)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	id := jobIDFromLocation(t, resp)
	job, err := e.st.Job(context.Background(), id)
	if err != nil {
		t.Fatalf("job %d: %v", id, err)
	}
	wantRec := time.Date(2025, 6, 24, 9, 0, 0, 0, time.UTC)
	if job.Kind != store.KindSimulation || job.TokenName != "ups-sim" || job.RemoteAddr != "127.0.0.1" ||
		job.Reason != "UPS on battery" || job.ExpectedRecovery == nil || !job.ExpectedRecovery.Equal(wantRec) {
		t.Errorf("stored job = %+v", job)
	}
	if n := e.kicks.n.Load(); n != 1 {
		t.Errorf("runner kicked %d times, want 1", n)
	}

	// Empty body and Bearer header work too (after the first job ends).
	if _, err := e.st.FinishJob(context.Background(), id, store.StateSucceeded, ""); err != nil {
		t.Fatal(err)
	}
	resp, body = e.do(req{method: "POST", path: "/simulate", header: map[string]string{"Authorization": "Bearer " + sim}})
	if resp.StatusCode != http.StatusAccepted || string(body) != acceptedBody {
		t.Fatalf("empty body: got %d %s", resp.StatusCode, body)
	}
}

func TestStatus(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	read, sim, _ := e.tokens()
	ctx := context.Background()

	for _, path := range []string{"/simulate/status", "/shutdown/status"} {
		resp, body := e.do(req{method: "GET", path: path, token: read})
		if want := `{"data":{"running":false,"start_time":null},"error":null,"status":"success"}`; resp.StatusCode != 200 || string(body) != want {
			t.Fatalf("%s: got %d %s, want %s", path, resp.StatusCode, body, want)
		}
	}

	resp, _ := e.do(req{method: "POST", path: "/simulate", token: sim})
	id := jobIDFromLocation(t, resp)
	job, _ := e.st.Job(ctx, id)
	start := job.CreatedAt.UTC().Format("2006-01-02T15:04:05.000000")

	_, body := e.do(req{method: "GET", path: "/simulate/status", token: read})
	want := fmt.Sprintf(`{"data":{"running":true,"start_time":%q,"current_step":"Waiting to start","job_id":%d,"state":"pending"},"error":null,"status":"success"}`, start, id)
	if string(body) != want {
		t.Fatalf("pending status\n got %s\nwant %s", body, want)
	}

	if err := e.st.StartJob(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := setCurrentStep(ctx, e.st, id, "Stopping OpenStack VMs (120/200 off)"); err != nil {
		t.Fatal(err)
	}
	_, body = e.do(req{method: "GET", path: "/simulate/status", token: read})
	want = fmt.Sprintf(`{"data":{"running":true,"start_time":%q,"current_step":"Stopping OpenStack VMs (120/200 off)","job_id":%d,"state":"running"},"error":null,"status":"success"}`, start, id)
	if string(body) != want {
		t.Fatalf("running status\n got %s\nwant %s", body, want)
	}

	if _, err := e.st.FinishJob(ctx, id, store.StateFailed, "2 hosts unreachable"); err != nil {
		t.Fatal(err)
	}
	_, body = e.do(req{method: "GET", path: "/simulate/status", token: read})
	want = fmt.Sprintf(`{"data":{"running":false,"start_time":%q,"error":"2 hosts unreachable","job_id":%d,"state":"failed"},"error":null,"status":"success"}`, start, id)
	if string(body) != want {
		t.Fatalf("failed status\n got %s\nwant %s", body, want)
	}

	// A succeeded job has neither current_step nor error.
	resp, _ = e.do(req{method: "POST", path: "/simulate", token: sim})
	id2 := jobIDFromLocation(t, resp)
	if _, err := e.st.FinishJob(ctx, id2, store.StateSucceeded, ""); err != nil {
		t.Fatal(err)
	}
	_, body = e.do(req{method: "GET", path: "/simulate/status", token: read})
	if bytes.Contains(body, []byte(`"error":"`)) || bytes.Contains(body, []byte("current_step")) ||
		!bytes.HasPrefix(body, []byte(`{"data":{"running":false,"start_time":`)) {
		t.Fatalf("succeeded status: %s", body)
	}
	// The shutdown status is unaffected by simulations.
	_, body = e.do(req{method: "GET", path: "/shutdown/status", token: read})
	if string(body) != `{"data":{"running":false,"start_time":null},"error":null,"status":"success"}` {
		t.Fatalf("shutdown status: %s", body)
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	read := e.token("reader", []string{ScopeRead}, nil, nil)
	past := time.Now().Add(-time.Minute)
	expired := e.token("expired", []string{ScopeRead, ScopeSimulate}, nil, &past)
	future := time.Now().Add(time.Hour)
	valid := e.token("not-expired", []string{ScopeRead}, nil, &future)
	revoked := e.token("revoked", []string{ScopeRead, ScopeSimulate}, nil, nil)
	if err := e.st.RevokeToken(ctx, "revoked"); err != nil {
		t.Fatal(err)
	}
	elsewhere := e.token("elsewhere", []string{ScopeRead, ScopeSimulate}, []string{"10.0.0.0/8"}, nil)
	local := e.token("local", []string{ScopeRead}, []string{"10.0.0.0/8", "127.0.0.1"}, nil)

	tests := []struct {
		name   string
		method string
		path   string
		header map[string]string
		status int
		code   string // "" for success
	}{
		{"no header", "GET", "/simulate/status", nil, 401, CodeMissingToken},
		{"empty auth-token", "GET", "/simulate/status", map[string]string{"auth-token": " "}, 401, CodeMissingToken},
		{"basic auth is not a token", "GET", "/simulate/status", map[string]string{"Authorization": "Basic " + read}, 401, CodeMissingToken},
		{"unknown auth-token", "GET", "/simulate/status", map[string]string{"auth-token": "sdt_nope"}, 403, CodeInvalidToken},
		{"unknown bearer", "GET", "/simulate/status", map[string]string{"Authorization": "Bearer sdt_nope"}, 403, CodeInvalidToken},
		{"expired auth-token", "GET", "/simulate/status", map[string]string{"auth-token": expired}, 403, CodeInvalidToken},
		{"expired bearer", "POST", "/simulate", map[string]string{"Authorization": "Bearer " + expired}, 403, CodeInvalidToken},
		{"revoked auth-token", "GET", "/simulate/status", map[string]string{"auth-token": revoked}, 403, CodeInvalidToken},
		{"revoked bearer", "POST", "/simulate", map[string]string{"Authorization": "Bearer " + revoked}, 403, CodeInvalidToken},
		{"read token cannot simulate", "POST", "/simulate", map[string]string{"auth-token": read}, 403, CodeScopeNotGranted},
		{"read token cannot shut down (bearer)", "POST", "/shutdown", map[string]string{"Authorization": "Bearer " + read}, 403, CodeScopeNotGranted},
		{"wrong network auth-token", "GET", "/simulate/status", map[string]string{"auth-token": elsewhere}, 403, CodeUnauthorizedNetwork},
		{"wrong network bearer", "POST", "/simulate", map[string]string{"Authorization": "Bearer " + elsewhere}, 403, CodeUnauthorizedNetwork},
		{"read auth-token", "GET", "/simulate/status", map[string]string{"auth-token": read}, 200, ""},
		{"read bearer", "GET", "/jobs", map[string]string{"Authorization": "Bearer " + read}, 200, ""},
		{"lower-case bearer", "GET", "/jobs", map[string]string{"Authorization": "bearer " + read}, 200, ""},
		{"not yet expired", "GET", "/jobs", map[string]string{"auth-token": valid}, 200, ""},
		{"right network", "GET", "/jobs", map[string]string{"auth-token": local}, 200, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := e.do(req{method: tc.method, path: tc.path, header: tc.header})
			if tc.code == "" {
				if resp.StatusCode != tc.status {
					t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
				}
				return
			}
			msg := wantError(t, resp, body, tc.status, tc.code)
			for _, secret := range []string{read, expired, revoked, elsewhere} {
				if strings.Contains(msg, secret) {
					t.Fatalf("error message leaks a token: %s", msg)
				}
			}
		})
	}
	if n := len(e.jobs()); n != 0 {
		t.Fatalf("%d jobs created by refused requests", n)
	}
	tok, err := e.st.TokenByHash(ctx, store.HashToken(read))
	if err != nil || tok.LastUsedAt == nil {
		t.Fatalf("read token last_used_at not set: %+v %v", tok, err)
	}
}

func TestNotFoundAndMethodNotAllowed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	read, sim, _ := e.tokens()
	tests := []struct {
		method, path, token string
		status              int
		code                string
		allow               string // the Allow header of a 405
	}{
		{"GET", "/nope", "", 404, CodeNotFound, ""},
		{"GET", "/", read, 404, CodeNotFound, ""},
		{"GET", "/jobs/abc", read, 404, CodeNotFound, ""},
		{"GET", "/jobs/999", read, 404, CodeNotFound, ""},
		{"GET", "/jobs/99999999999999999999", read, 404, CodeNotFound, ""},
		{"GET", "/jobs/999/events", read, 404, CodeNotFound, ""},
		{"POST", "/jobs/999/cancel", sim, 404, CodeNotFound, ""},
		{"DELETE", "/simulate", sim, 405, CodeMethodNotAllowed, "POST"},
		{"GET", "/simulate", sim, 405, CodeMethodNotAllowed, "POST"},
		{"POST", "/simulate/status", read, 405, CodeMethodNotAllowed, "GET"},
		{"HEAD", "/shutdown/status", read, 405, CodeMethodNotAllowed, "GET"},
		{"GET", "/jobs/7/cancel", read, 405, CodeMethodNotAllowed, "POST"},
		{"OPTIONS", "/openapi.yaml", "", 405, CodeMethodNotAllowed, "GET, HEAD"},
		{"PUT", "/jobs", read, 405, CodeMethodNotAllowed, "GET"},
		{"POST", "/healthz", "", 405, CodeMethodNotAllowed, "GET, HEAD"},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			resp, body := e.do(req{method: tc.method, path: tc.path, token: tc.token})
			if tc.method == http.MethodHead {
				// No body: the status and the header are the answer.
				if resp.StatusCode != tc.status || resp.Header.Get("Allow") != tc.allow {
					t.Fatalf("HEAD: %d, Allow %q; want %d, %q", resp.StatusCode, resp.Header.Get("Allow"), tc.status, tc.allow)
				}
				return
			}
			wantError(t, resp, body, tc.status, tc.code)
			if got := resp.Header.Get("Allow"); got != tc.allow {
				t.Errorf("Allow %q, want %q", got, tc.allow)
			}
		})
	}
}

func TestPanicIsJSON500(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.api.Router().HandleFunc("/boom", func(http.ResponseWriter, *http.Request) { panic("boom") })
	resp, body := e.do(req{method: "GET", path: "/boom"})
	msg := wantError(t, resp, body, 500, CodeInternal)
	if strings.Contains(msg, "boom") {
		t.Fatalf("panic value leaked to the client: %s", msg)
	}
}

func TestSimulateConflict(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	_, sim, _ := e.tokens()
	resp, _ := e.do(req{method: "POST", path: "/simulate", token: sim})
	if resp.StatusCode != 202 {
		t.Fatalf("first simulate: %d", resp.StatusCode)
	}
	resp, body := e.do(req{method: "POST", path: "/simulate", token: sim})
	wantError(t, resp, body, 409, CodeJobRunning)
	if n := e.kicks.n.Load(); n != 1 {
		t.Fatalf("kicks = %d, want 1", n)
	}
}

func TestConcurrentSimulate(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	_, sim, _ := e.tokens()
	const n = 100
	var wg sync.WaitGroup
	var accepted, conflict, other atomic.Int64
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			hr, _ := http.NewRequest("POST", e.srv.URL+"/simulate", nil)
			hr.Header.Set("auth-token", sim)
			resp, err := e.srv.Client().Do(hr)
			if err != nil {
				other.Add(1)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case resp.StatusCode == 202:
				accepted.Add(1)
			case resp.StatusCode == 409 && bytes.Contains(b, []byte(`"code":"job_running"`)):
				conflict.Add(1)
			default:
				other.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	if accepted.Load() != 1 || conflict.Load() != n-1 || other.Load() != 0 {
		t.Fatalf("accepted %d, conflict %d, other %d; want 1, %d, 0", accepted.Load(), conflict.Load(), other.Load(), n-1)
	}
	if jobs := e.jobs(); len(jobs) != 1 {
		t.Fatalf("%d jobs in the store, want 1", len(jobs))
	}
}

func TestShutdownPreemptsSimulation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	read, sim, shut := e.tokens()
	resp, _ := e.do(req{method: "POST", path: "/simulate", token: sim})
	simID := jobIDFromLocation(t, resp)

	resp, body := e.do(req{method: "POST", path: "/shutdown", token: shut, body: `{"reason":"mains lost"}`})
	if resp.StatusCode != 202 || string(body) != acceptedBody {
		t.Fatalf("shutdown: %d %s", resp.StatusCode, body)
	}
	shutID := jobIDFromLocation(t, resp)
	if shutID == simID {
		t.Fatalf("shutdown points at the simulation %d", simID)
	}

	_, body = e.do(req{method: "GET", path: "/simulate/status", token: read})
	var st struct{ Data StatusJSON }
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	if st.Data.Running || st.Data.State != "cancelled" || !strings.Contains(st.Data.Error, "preempted") || st.Data.JobID != simID {
		t.Fatalf("simulation status after preemption: %s", body)
	}
	_, body = e.do(req{method: "GET", path: "/shutdown/status", token: read})
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	if !st.Data.Running || st.Data.JobID != shutID {
		t.Fatalf("shutdown status: %s", body)
	}
	// While the shutdown runs, a simulation is refused.
	resp, body = e.do(req{method: "POST", path: "/simulate", token: sim})
	wantError(t, resp, body, 409, CodeJobRunning)
}

func TestShutdownIdempotent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	_, _, shut := e.tokens()
	resp1, body1 := e.do(req{method: "POST", path: "/shutdown", token: shut})
	resp2, body2 := e.do(req{method: "POST", path: "/shutdown", token: shut, body: `{"reason":"retry"}`})
	if resp1.StatusCode != 202 || resp2.StatusCode != 202 || string(body1) != acceptedBody || string(body2) != acceptedBody {
		t.Fatalf("got %d %s / %d %s", resp1.StatusCode, body1, resp2.StatusCode, body2)
	}
	if l1, l2 := resp1.Header.Get("Location"), resp2.Header.Get("Location"); l1 == "" || l1 != l2 {
		t.Fatalf("Location %q then %q, want the same job", l1, l2)
	}
	if n := len(e.jobs()); n != 1 {
		t.Fatalf("%d jobs, want 1", n)
	}
	if n := e.kicks.n.Load(); n != 1 {
		t.Fatalf("kicks = %d, want 1 (only the created job)", n)
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	read, sim, shut := e.tokens()

	resp, _ := e.do(req{method: "POST", path: "/simulate", token: sim})
	simID := jobIDFromLocation(t, resp)
	path := fmt.Sprintf("/jobs/%d/cancel", simID)

	resp, body := e.do(req{method: "POST", path: path, token: read})
	wantError(t, resp, body, 403, CodeScopeNotGranted)
	resp, body = e.do(req{method: "POST", path: path, token: shut})
	wantError(t, resp, body, 403, CodeScopeNotGranted)

	// Running: cancel is requested, the runner is told.
	if err := e.st.StartJob(ctx, simID); err != nil {
		t.Fatal(err)
	}
	kicks := e.kicks.n.Load()
	resp, body = e.do(req{method: "POST", path: path, token: sim})
	var got struct{ Data JobJSON }
	if err := json.Unmarshal(body, &got); err != nil || resp.StatusCode != 202 {
		t.Fatalf("cancel running: %d %s %v", resp.StatusCode, body, err)
	}
	if got.Data.ID != simID || !got.Data.CancelRequested || got.Data.State != "running" {
		t.Fatalf("cancel running answered %s", body)
	}
	if e.kicks.n.Load() != kicks+1 {
		t.Fatal("runner not kicked after cancel")
	}

	// Final: 200, unchanged.
	if _, err := e.st.FinishJob(ctx, simID, store.StateCancelled, "cancelled by ups-sim"); err != nil {
		t.Fatal(err)
	}
	resp, body = e.do(req{method: "POST", path: path, token: sim})
	if err := json.Unmarshal(body, &got); err != nil || resp.StatusCode != 200 || got.Data.State != "cancelled" {
		t.Fatalf("cancel final: %d %s", resp.StatusCode, body)
	}

	// Pending shutdown: needs the shutdown scope, cancelled at once.
	resp, _ = e.do(req{method: "POST", path: "/shutdown", token: shut})
	shutID := jobIDFromLocation(t, resp)
	path = fmt.Sprintf("/jobs/%d/cancel", shutID)
	resp, body = e.do(req{method: "POST", path: path, token: sim})
	wantError(t, resp, body, 403, CodeScopeNotGranted)
	resp, body = e.do(req{method: "POST", path: path, header: map[string]string{"Authorization": "Bearer " + shut}})
	if err := json.Unmarshal(body, &got); err != nil || resp.StatusCode != 202 || got.Data.State != "cancelled" {
		t.Fatalf("cancel pending shutdown: %d %s", resp.StatusCode, body)
	}
}

func TestJobsListAndDetail(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	read, sim, shut := e.tokens()

	resp, body := e.do(req{method: "GET", path: "/jobs", token: read})
	if resp.StatusCode != 200 || string(body) != `{"data":[],"error":null,"status":"success"}` {
		t.Fatalf("empty list: %d %s", resp.StatusCode, body)
	}

	resp, _ = e.do(req{method: "POST", path: "/simulate", token: sim, body: `{"reason":"drill"}`})
	simID := jobIDFromLocation(t, resp)
	resp, _ = e.do(req{method: "POST", path: "/shutdown", token: shut})
	shutID := jobIDFromLocation(t, resp)

	list := func(q string) []JobJSON {
		t.Helper()
		resp, body := e.do(req{method: "GET", path: "/jobs" + q, token: read})
		var out struct{ Data []JobJSON }
		if err := json.Unmarshal(body, &out); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET /jobs%s: %d %s", q, resp.StatusCode, body)
		}
		return out.Data
	}
	if got := list(""); len(got) != 2 || got[0].ID != shutID || got[1].ID != simID {
		t.Fatalf("list = %+v, want shutdown then simulation", got)
	}
	if got := list("?kind=simulation"); len(got) != 1 || got[0].ID != simID || got[0].Reason != "drill" || got[0].TokenName != "ups-sim" {
		t.Fatalf("kind filter = %+v", got)
	}
	if got := list("?state=cancelled"); len(got) != 1 || got[0].ID != simID {
		t.Fatalf("state filter = %+v", got)
	}
	if got := list("?limit=1"); len(got) != 1 || got[0].ID != shutID {
		t.Fatalf("limit = %+v", got)
	}
	if got := list(fmt.Sprintf("?before=%d", shutID)); len(got) != 1 || got[0].ID != simID {
		t.Fatalf("before = %+v", got)
	}
	for _, q := range []string{"?kind=reboot", "?state=done", "?limit=0", "?limit=501", "?limit=x", "?before=-1", "?before=x", "?sort=asc"} {
		resp, body := e.do(req{method: "GET", path: "/jobs" + q, token: read})
		wantError(t, resp, body, 400, CodeInvalidRequest)
	}

	// Detail with steps, actions and events.
	step, err := e.st.EnsureStep(ctx, shutID, 1, "Stopping OpenStack VMs")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.RecordAction(ctx, store.ActionKey{JobID: shutID, StepID: step.ID, TargetKind: "vm", Target: "web-1", TargetID: "uuid-1", Operation: "os-stop"},
		"succeeded", "SHUTOFF", ""); err != nil {
		t.Fatal(err)
	}
	if err := e.st.AddEvent(ctx, shutID, "info", "stopping VMs", "1 VM"); err != nil {
		t.Fatal(err)
	}
	resp, body = e.do(req{method: "GET", path: fmt.Sprintf("/jobs/%d", shutID), token: read})
	var d struct{ Data JobDetailJSON }
	if err := json.Unmarshal(body, &d); err != nil || resp.StatusCode != 200 {
		t.Fatalf("detail: %d %s", resp.StatusCode, body)
	}
	if d.Data.Job.ID != shutID || d.Data.Job.Kind != "shutdown" || len(d.Data.Steps) != 1 || d.Data.Steps[0].Name != "Stopping OpenStack VMs" ||
		len(d.Data.Actions) != 1 || d.Data.Actions[0].Target != "web-1" || d.Data.Actions[0].State != "succeeded" || d.Data.Actions[0].StepID != step.ID {
		t.Fatalf("detail = %s", body)
	}
	var sawEvent bool
	for _, ev := range d.Data.Events {
		sawEvent = sawEvent || ev.Message == "stopping VMs"
	}
	if !sawEvent {
		t.Fatalf("event missing from detail: %s", body)
	}
	// Timestamps: RFC 3339 UTC with microseconds; unset ones are null.
	if _, err := time.Parse(time.RFC3339Nano, d.Data.Job.CreatedAt); err != nil || !strings.HasSuffix(d.Data.Job.CreatedAt, "Z") || len(d.Data.Job.CreatedAt) != len("2006-01-02T15:04:05.000000Z") {
		t.Fatalf("created_at %q", d.Data.Job.CreatedAt)
	}
	if !bytes.Contains(body, []byte(`"finished_at":null`)) {
		t.Fatalf("unset finished_at is not null: %s", body)
	}
}

func TestHealthz(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	resp, body := e.do(req{method: "GET", path: "/healthz"})
	if resp.StatusCode != 200 || string(body) != `{"data":"ok","error":null,"status":"success"}` {
		t.Fatalf("healthz: %d %s", resp.StatusCode, body)
	}
	if err := e.st.Close(); err != nil {
		t.Fatal(err)
	}
	resp, body = e.do(req{method: "GET", path: "/healthz"})
	wantError(t, resp, body, 503, CodeServiceUnavailable)
}

// sseMsg is one parsed Server-Sent Events message.
type sseMsg struct {
	id, event, data string
	comment         bool
}

// readSSE parses the stream into msgs until EOF, then closes msgs.
func readSSE(r io.Reader, msgs chan<- sseMsg) {
	defer close(msgs)
	sc := bufio.NewScanner(r)
	var m sseMsg
	var has bool
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if has {
				msgs <- m
			}
			m, has = sseMsg{}, false
		case strings.HasPrefix(line, ":"):
			m.comment, has = true, true
		case strings.HasPrefix(line, "id: "):
			m.id, has = strings.TrimPrefix(line, "id: "), true
		case strings.HasPrefix(line, "event: "):
			m.event, has = strings.TrimPrefix(line, "event: "), true
		case strings.HasPrefix(line, "data: "):
			m.data, has = strings.TrimPrefix(line, "data: "), true
		}
	}
}

// openSSE connects to the event stream and returns its messages.
func (e *env) openSSE(ctx context.Context, id int64, token, lastID string) <-chan sseMsg {
	e.t.Helper()
	hr, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/jobs/%d/events", e.srv.URL, id), nil)
	hr.Header.Set("auth-token", token)
	if lastID != "" {
		hr.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := e.srv.Client().Do(hr)
	if err != nil {
		e.t.Fatalf("open events: %v", err)
	}
	e.t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		e.t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	msgs := make(chan sseMsg, 64)
	go readSSE(resp.Body, msgs)
	return msgs
}

// next waits for the next message matching ok, failing after a deadline.
func next(t *testing.T, msgs <-chan sseMsg, what string, ok func(sseMsg) bool) sseMsg {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m, open := <-msgs:
			if !open {
				t.Fatalf("stream ended while waiting for %s", what)
			}
			if ok(m) {
				return m
			}
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestEventsStream(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	read, sim, _ := e.tokens()
	resp, _ := e.do(req{method: "POST", path: "/simulate", token: sim})
	id := jobIDFromLocation(t, resp)

	msgs := e.openSSE(ctx, id, read, "")
	next(t, msgs, "job snapshot", func(m sseMsg) bool { return m.event == "job" && strings.Contains(m.data, `"state":"pending"`) })

	// An event committed after connecting arrives, with its id.
	if err := e.st.AddEvent(ctx, id, "warn", "host compute-01 unreachable", "dial timeout"); err != nil {
		t.Fatal(err)
	}
	m := next(t, msgs, "new event", func(m sseMsg) bool { return m.event == "" && strings.Contains(m.data, "host compute-01 unreachable") })
	var ev EventJSON
	if err := json.Unmarshal([]byte(m.data), &ev); err != nil || m.id != fmt.Sprint(ev.ID) || ev.JobID != id || ev.Level != "warn" {
		t.Fatalf("event message %+v (%v)", m, err)
	}

	// Progress shows as a job snapshot; the final state ends the stream.
	if err := e.st.StartJob(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := setCurrentStep(ctx, e.st, id, "Checking hosts (1/3)"); err != nil {
		t.Fatal(err)
	}
	next(t, msgs, "progress", func(m sseMsg) bool { return m.event == "job" && strings.Contains(m.data, "Checking hosts (1/3)") })
	if _, err := e.st.FinishJob(ctx, id, store.StateSucceeded, ""); err != nil {
		t.Fatal(err)
	}
	end := next(t, msgs, "end", func(m sseMsg) bool { return m.event == "end" })
	if end.data != fmt.Sprintf(`{"job_id":%d,"state":"succeeded","error":""}`, id) {
		t.Fatalf("end data %s", end.data)
	}
	select {
	case _, open := <-msgs:
		if open {
			t.Fatal("message after end")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stream not closed after end")
	}

	// Reconnecting with Last-Event-ID skips what was seen; a final job ends at once.
	msgs = e.openSSE(ctx, id, read, m.id)
	var sawEnd bool
	for got := range msgs {
		if got.id != "" && got.id <= m.id && len(got.id) <= len(m.id) {
			t.Fatalf("event %s resent after Last-Event-ID %s", got.id, m.id)
		}
		sawEnd = sawEnd || got.event == "end"
	}
	if !sawEnd {
		t.Fatal("reconnect to a final job: no end message")
	}
}

func TestEventsHeartbeatAndClientGone(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.api.heartbeat = 20 * time.Millisecond
	read, sim, _ := e.tokens()
	resp, _ := e.do(req{method: "POST", path: "/simulate", token: sim})
	id := jobIDFromLocation(t, resp)

	// Count handlers in flight to see the server side of the stream end.
	var inFlight atomic.Int64
	counted := *e
	counted.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inFlight.Add(1)
		defer inFlight.Add(-1)
		e.api.ServeHTTP(w, r)
	}))
	t.Cleanup(counted.srv.Close)

	ctx, cancel := context.WithCancel(context.Background())
	msgs := counted.openSSE(ctx, id, read, "")
	next(t, msgs, "heartbeat", func(m sseMsg) bool { return m.comment })
	if inFlight.Load() != 1 {
		t.Fatalf("%d handlers in flight, want the stream", inFlight.Load())
	}
	cancel()
	deadline := time.Now().Add(10 * time.Second)
	for inFlight.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("stream handler still running after the client went away")
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, not waiting for work
	}
}

func TestForwardedFor(t *testing.T) {
	t.Parallel()
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	trusted := newEnv(t, func(o *Options) { o.TrustedProxies = loopback })
	untrusted := newEnv(t, nil)
	tests := []struct {
		name   string
		e      *env
		xff    string
		status int
		remote string
	}{
		{"trusted proxy, client in token network", trusted, "192.0.2.7", 202, "192.0.2.7"},
		{"trusted proxy, right-most untrusted wins", trusted, "192.0.2.99, 198.51.100.9, 192.0.2.7", 202, "192.0.2.7"},
		{"trusted proxy, spoofed left entry ignored", trusted, "192.0.2.7, 198.51.100.9", 403, ""},
		{"untrusted peer, header ignored", untrusted, "192.0.2.7", 403, ""},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := tc.e.token(fmt.Sprintf("net-%d", i), []string{ScopeSimulate}, []string{"192.0.2.0/24"}, nil)
			resp, body := tc.e.do(req{method: "POST", path: "/simulate", token: tok, header: map[string]string{"X-Forwarded-For": tc.xff}})
			if tc.status == 403 {
				wantError(t, resp, body, 403, CodeUnauthorizedNetwork)
				return
			}
			if resp.StatusCode != 202 {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			id := jobIDFromLocation(t, resp)
			job, err := tc.e.st.Job(context.Background(), id)
			if err != nil || job.RemoteAddr != tc.remote {
				t.Fatalf("remote_addr = %q, want %q (%v)", job.RemoteAddr, tc.remote, err)
			}
			if _, err := tc.e.st.FinishJob(context.Background(), id, store.StateSucceeded, ""); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestClientIP(t *testing.T) {
	t.Parallel()
	s := New(Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("::1/128")}})
	tests := []struct {
		remote string
		xff    []string
		want   string
	}{
		{"203.0.113.5:4000", nil, "203.0.113.5"},
		{"203.0.113.5:4000", []string{"192.0.2.1"}, "203.0.113.5"}, // untrusted peer
		{"10.0.0.2:4000", nil, "10.0.0.2"},
		{"10.0.0.2:4000", []string{"192.0.2.1"}, "192.0.2.1"},
		{"10.0.0.2:4000", []string{"192.0.2.1, 10.0.0.3"}, "192.0.2.1"},      // chain of trusted proxies
		{"10.0.0.2:4000", []string{"192.0.2.1", "10.0.0.3"}, "192.0.2.1"},    // several header lines
		{"10.0.0.2:4000", []string{"10.0.0.4, 10.0.0.3"}, "10.0.0.4"},        // all trusted: left-most
		{"10.0.0.2:4000", []string{"192.0.2.1, junk, 10.0.0.3"}, "10.0.0.3"}, // garbage stops the walk
		{"[::1]:4000", []string{"2001:db8::1"}, "2001:db8::1"},
		{"[::ffff:10.0.0.2]:4000", []string{"::ffff:192.0.2.1"}, "192.0.2.1"}, // 4in6 unmapped
	}
	for _, tc := range tests {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.remote
		for _, v := range tc.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := s.clientIP(r).String(); got != tc.want {
			t.Errorf("clientIP(%s, %q) = %s, want %s", tc.remote, tc.xff, got, tc.want)
		}
	}
}

// TestEventsStreamEndsWhenTheTokenIsRevoked: a token revoked while its
// stream is open stops receiving events (within a second of the next
// write): the stream closes without an end message.
func TestEventsStreamEndsWhenTheTokenIsRevoked(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	_, sim, _ := e.tokens()
	watcher := e.token("watcher", []string{ScopeRead}, nil, nil)
	resp, _ := e.do(req{method: "POST", path: "/simulate", token: sim})
	id := jobIDFromLocation(t, resp)
	msgs := e.openSSE(ctx, id, watcher, "")
	next(t, msgs, "job snapshot", func(m sseMsg) bool { return m.event == "job" })
	if err := e.st.RevokeToken(ctx, "watcher"); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	after := 0
	for {
		select {
		case m, open := <-msgs:
			if !open {
				if after > 25 {
					t.Errorf("%d events arrived after the revocation; want the stream closed within about a second (events every 100 ms)", after)
				}
				return
			}
			if m.event == "end" {
				t.Fatal("stream of a revoked token ran to the job's end")
			}
			if m.event == "" && !m.comment {
				after++
			}
		case <-tick.C:
			// The job keeps writing, as a running shutdown does.
			if err := e.st.AddEvent(ctx, id, "info", "progress", ""); err != nil {
				t.Fatal(err)
			}
		case <-deadline:
			t.Fatal("stream still open 10 s after its token was revoked")
		}
	}
}
