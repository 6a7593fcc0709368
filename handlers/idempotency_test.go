package handlers

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/store"
)

// TestIdempotencyKey: a retried POST with the same key returns the same
// job (202, same Location) and creates nothing, even after the job ended;
// the key is per token and per request.
func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	_, sim, shut := e.tokens()
	both := e.token("ops", []string{ScopeSimulate, ScopeShutdown, ScopeRead}, nil, nil)
	key := map[string]string{IdempotencyHeader: "0c8f6a3e-retry-1"}
	body := `{"reason":"ups test"}`

	resp, b := e.do(req{method: "POST", path: "/simulate", token: sim, body: body, header: key})
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("first: %d %s", resp.StatusCode, b)
	}
	id := jobIDFromLocation(t, resp)
	// The job ends; a plain retry would now create a second simulation.
	if _, err := e.st.RequestCancel(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	resp, b = e.do(req{method: "POST", path: "/simulate", token: sim, body: body, header: key})
	if resp.StatusCode != http.StatusAccepted || string(b) != acceptedBody || jobIDFromLocation(t, resp) != id ||
		resp.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay: %d %v %s", resp.StatusCode, resp.Header, b)
	}
	if n := len(e.jobs()); n != 1 {
		t.Fatalf("%d jobs after replay, want 1", n)
	}

	// Same key, same token, different body: refused, not answered with the
	// first job.
	resp, b = e.do(req{method: "POST", path: "/simulate", token: sim, body: `{"reason":"other"}`, header: key})
	if msg := wantError(t, resp, b, http.StatusBadRequest, CodeInvalidRequest); !strings.Contains(msg, "different request") {
		t.Errorf("message %q", msg)
	}
	// Same key on /shutdown with the same body, from a token that may do
	// both: a shutdown must never be answered with a simulation.
	resp, b = e.do(req{method: "POST", path: "/simulate", token: both, body: body, header: key})
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("ops simulate: %d %s", resp.StatusCode, b)
	}
	resp, b = e.do(req{method: "POST", path: "/shutdown", token: both, body: body, header: key})
	wantError(t, resp, b, http.StatusBadRequest, CodeInvalidRequest)
	if j, _ := e.st.ActiveJob(context.Background()); j == nil || j.Kind != store.KindSimulation {
		t.Fatalf("active job %+v: the refused shutdown must not have preempted anything", j)
	}
	if _, err := e.st.RequestCancel(context.Background(), jobIDFromLocation(t, resp0(t, e, both))); err != nil {
		t.Fatal(err)
	}

	// The same key from another token is another key.
	resp, b = e.do(req{method: "POST", path: "/shutdown", token: shut, body: body, header: key})
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("other token: %d %s", resp.StatusCode, b)
	}
	shutID := jobIDFromLocation(t, resp)
	if shutID == id {
		t.Fatal("key leaked across tokens")
	}

	// Bad keys.
	for _, k := range []string{strings.Repeat("k", 256), "has space", "tab\tkey", "é"} {
		resp, b = e.do(req{method: "POST", path: "/shutdown", token: shut, header: map[string]string{IdempotencyHeader: k}})
		wantError(t, resp, b, http.StatusBadRequest, CodeInvalidRequest)
	}
	// An oversized body is still 413 with a key.
	resp, b = e.do(req{method: "POST", path: "/shutdown", token: shut, body: `{"reason":"` + strings.Repeat("x", DefaultMaxBodyBytes) + `"}`,
		header: map[string]string{IdempotencyHeader: "big"}})
	wantError(t, resp, b, http.StatusRequestEntityTooLarge, CodeRequestTooLarge)
}

// TestIdempotencyKeyConcurrent: ten simultaneous requests with one key
// create one job and all get its Location.
func TestIdempotencyKeyConcurrent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	_, sim, _ := e.tokens()
	var wg sync.WaitGroup
	locs := make([]string, 10)
	codes := make([]int, 10)
	for i := range locs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hr, _ := http.NewRequest("POST", e.srv.URL+"/simulate", nil)
			hr.Header.Set("auth-token", sim)
			hr.Header.Set(IdempotencyHeader, "same")
			resp, err := e.srv.Client().Do(hr)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			codes[i], locs[i] = resp.StatusCode, resp.Header.Get("Location")
		}()
	}
	wg.Wait()
	for i := range locs {
		if codes[i] != http.StatusAccepted || locs[i] != locs[0] {
			t.Errorf("request %d: %d %q, want 202 %q", i, codes[i], locs[i], locs[0])
		}
	}
	if n := len(e.jobs()); n != 1 {
		t.Errorf("%d jobs, want 1", n)
	}
}

// TestDeadline: deadline is validated like expected_recovery on both
// endpoints, stored, and shown in job JSON and the status answer.
func TestDeadline(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	read, sim, shut := e.tokens()
	for _, c := range []struct{ path, token string }{{"/simulate", sim}, {"/shutdown", shut}} {
		resp, b := e.do(req{method: "POST", path: c.path, token: c.token, body: `{"deadline":"in ten minutes"}`})
		if msg := wantError(t, resp, b, http.StatusBadRequest, CodeInvalidRequest); !strings.Contains(msg, "deadline") {
			t.Errorf("%s: %q", c.path, msg)
		}
	}
	resp, b := e.do(req{method: "POST", path: "/shutdown", token: shut, body: `{"reason":"ups","deadline":"2025-06-24T09:30:00+02:00"}`})
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	id := jobIDFromLocation(t, resp)
	if _, err := e.st.SetOnTrack(context.Background(), id, false); err != nil {
		t.Fatal(err)
	}
	_, b = e.do(req{method: "GET", path: "/jobs", token: read})
	var list struct{ Data []JobJSON }
	if err := json.Unmarshal(b, &list); err != nil || len(list.Data) != 1 {
		t.Fatalf("%v %s", err, b)
	}
	j := list.Data[0]
	if j.Deadline == nil || *j.Deadline != "2025-06-24T07:30:00.000000Z" || j.OnTrack == nil || *j.OnTrack {
		t.Errorf("job JSON deadline %v on_track %v", j.Deadline, j.OnTrack)
	}
	_, b = e.do(req{method: "GET", path: "/shutdown/status", token: read})
	if !strings.Contains(string(b), `"deadline":"2025-06-24T07:30:00.000000Z","on_track":false`) ||
		!strings.HasPrefix(string(b), `{"data":{"running":true,"start_time":`) {
		t.Errorf("status %s", b)
	}
	// A job without a deadline shows null / nothing.
	_, b = e.do(req{method: "GET", path: "/simulate/status", token: read})
	if strings.Contains(string(b), "deadline") {
		t.Errorf("status without job: %s", b)
	}
}

type fixedForecast struct{ f store.Forecast }

func (f fixedForecast) Forecast(context.Context) (store.Forecast, error) { return f.f, nil }

// TestPlan: GET /plan needs read and answers the documented shape.
func TestPlan(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	read, sim, _ := e.tokens()
	at := time.Date(2025, 6, 24, 7, 0, 0, 0, time.UTC)
	e.api.MountPlan(fixedForecast{store.Forecast{
		Estimate: 95500 * time.Millisecond, WorstCase: 10 * time.Minute, VMsToStop: 40, SimulationJobID: 3,
		SimulatedAt: &at, ComputedAt: at,
		Steps: []store.StepForecast{{Name: "openstack", Estimate: 95500 * time.Millisecond, WorstCase: 10 * time.Minute, Basis: store.BasisMeasured, Detail: "d"}},
	}})
	resp, b := e.do(req{method: "GET", path: "/plan"})
	wantError(t, resp, b, http.StatusUnauthorized, CodeMissingToken)
	resp, b = e.do(req{method: "GET", path: "/plan", token: sim})
	if resp.StatusCode != http.StatusOK { // ups-sim has read as well
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	resp, b = e.do(req{method: "GET", path: "/plan", token: read})
	want := `{"data":{"estimate_seconds":95.5,"worst_case_seconds":600,"vms_to_stop":40,"simulation_job_id":3,` +
		`"simulated_at":"2025-06-24T07:00:00.000000Z","computed_at":"2025-06-24T07:00:00.000000Z",` +
		`"steps":[{"name":"openstack","estimate_seconds":95.5,"worst_case_seconds":600,"basis":"measured","detail":"d"}]},"error":null,"status":"success"}`
	if resp.StatusCode != http.StatusOK || string(b) != want {
		t.Errorf("plan:\n got %s\nwant %s", b, want)
	}
}

// resp0 replays the ops simulation to learn its job id.
func resp0(t *testing.T, e *env, token string) *http.Response {
	t.Helper()
	resp, b := e.do(req{method: "POST", path: "/simulate", token: token, body: `{"reason":"ups test"}`,
		header: map[string]string{IdempotencyHeader: "0c8f6a3e-retry-1"}})
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("replay: %d %s", resp.StatusCode, b)
	}
	return resp
}
