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

// TestIdempotencyKey: a key replays its job only while that job is active,
// whatever the body; once the job has ended the same key starts a new job;
// a key never makes a trigger fail, and a shutdown is never answered with a
// simulation. Keys are per token.
func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	read, sim, shut := e.tokens()
	both := e.token("ops", []string{ScopeSimulate, ScopeShutdown, ScopeRead}, nil, nil)
	key := map[string]string{IdempotencyHeader: "0c8f6a3e-retry-1"}
	post := func(path, token, body string, hdr map[string]string) (id int64, replayed bool) {
		t.Helper()
		resp, b := e.do(req{method: "POST", path: path, token: token, body: body, header: hdr})
		if resp.StatusCode != http.StatusAccepted || string(b) != acceptedBody {
			t.Fatalf("POST %s: %d %s, want 202", path, resp.StatusCode, b)
		}
		return jobIDFromLocation(t, resp), resp.Header.Get("Idempotent-Replayed") == "true"
	}

	a, _ := post("/simulate", sim, `{"reason":"ups test"}`, key)
	// While the job is active: the same key replays it, with any body.
	for _, body := range []string{`{"reason":"ups test"}`, `{"reason":"other"}`, `not json`} {
		if id, replayed := post("/simulate", sim, body, key); id != a || !replayed {
			t.Fatalf("retry with body %q: job %d (replayed %v), want a replay of %d", body, id, replayed, a)
		}
	}
	if n := len(e.jobs()); n != 1 {
		t.Fatalf("%d jobs after replays, want 1", n)
	}
	// Once it has ended, the same key starts a new job.
	e.finish(a)
	b, replayed := post("/simulate", sim, `{"reason":"ups test"}`, key)
	if b == a || replayed {
		t.Fatalf("same key after the job ended: job %d (replayed %v), want a new job", b, replayed)
	}
	e.finish(b)

	// Same key, same token, other endpoint: a shutdown is never answered
	// with the simulation; it preempts it, and the key then names it.
	c, _ := post("/simulate", both, `{"reason":"ups test"}`, key)
	d, replayed := post("/shutdown", both, `{"reason":"ups test"}`, key)
	if d == c || replayed {
		t.Fatalf("shutdown with a simulation's key: job %d (replayed %v), want a new shutdown", d, replayed)
	}
	if j, _ := e.st.Job(context.Background(), c); j.State != store.StateCancelled {
		t.Errorf("simulation %d is %s, want preempted (cancelled)", c, j.State)
	}
	if id, replayed := post("/shutdown", both, `{"reason":"battery low"}`, key); id != d || !replayed {
		t.Fatalf("shutdown retry: job %d (replayed %v), want a replay of %d", id, replayed, d)
	}
	// The key last named a shutdown: a simulation with it is a new request
	// (refused while the shutdown runs, as any simulation would be).
	resp, body := e.do(req{method: "POST", path: "/simulate", token: both, header: key})
	wantError(t, resp, body, http.StatusConflict, CodeJobRunning)
	e.finish(d)
	// The UPS's next power event: same fixed key, a new shutdown.
	if f, replayed := post("/shutdown", both, ``, key); f == d || replayed {
		t.Fatalf("next power event with the same key: job %d (replayed %v), want a new shutdown", f, replayed)
	} else {
		e.finish(f)
	}

	// The same key from another token is another key.
	if g, replayed := post("/shutdown", shut, ``, key); replayed {
		t.Fatalf("key leaked across tokens: job %d replayed", g)
	} else {
		e.finish(g)
	}

	// A malformed key is ignored, named on the job, and the trigger starts.
	for _, k := range []string{strings.Repeat("k", 256), "has space", "tab\tkey", "é"} {
		for _, ep := range []struct{ path, token string }{{"/simulate", sim}, {"/shutdown", shut}} {
			id, replayed := post(ep.path, ep.token, `{"reason":"bad key"}`, map[string]string{IdempotencyHeader: k})
			if replayed {
				t.Errorf("%s with key %q replayed", ep.path, k)
			}
			d := e.detail(id, read)
			wantWarnings(t, d, IdempotencyHeader+" ignored: ")
			if d.Job.Reason != "bad key" {
				t.Errorf("reason %q, want the body kept", d.Job.Reason)
			}
			e.finish(id)
		}
	}
	// A key with an oversized body: the body is ignored, the key works.
	big := `{"reason":"` + strings.Repeat("x", DefaultMaxBodyBytes) + `"}`
	h, _ := post("/shutdown", shut, big, map[string]string{IdempotencyHeader: "big"})
	if id, replayed := post("/shutdown", shut, big, map[string]string{IdempotencyHeader: "big"}); id != h || !replayed {
		t.Errorf("oversized body with a key: job %d (replayed %v), want a replay of %d", id, replayed, h)
	}
	wantWarnings(t, e.detail(h, read), "body ignored: larger than")
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

// TestDeadline: deadline is stored, and shown in job JSON and the status
// answer.
func TestDeadline(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	read, _, shut := e.tokens()
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
		`"steps":[{"name":"openstack","estimate_seconds":95.5,"worst_case_seconds":600,"basis":"measured","detail":"d"}],` +
		`"startup_seconds":null,"startup_job_id":null},"error":null,"status":"success"}`
	if resp.StatusCode != http.StatusOK || string(b) != want {
		t.Errorf("plan:\n got %s\nwant %s", b, want)
	}

	// After a successful startup, the plan says how long it took.
	ctx := context.Background()
	sd, _, err := e.st.CreateShutdown(ctx, store.NewJob{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.FinishJob(ctx, sd.ID, store.StateSucceeded, ""); err != nil {
		t.Fatal(err)
	}
	su, err := e.st.CreateStartup(ctx, store.NewJob{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.st.StartJob(ctx, su.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.FinishJob(ctx, su.ID, store.StateSucceeded, ""); err != nil {
		t.Fatal(err)
	}
	_, b = e.do(req{method: "GET", path: "/plan", token: read})
	var got struct {
		Data struct {
			StartupSeconds *float64 `json:"startup_seconds"`
			StartupJobID   *int64   `json:"startup_job_id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &got); err != nil || got.Data.StartupJobID == nil || *got.Data.StartupJobID != su.ID ||
		got.Data.StartupSeconds == nil || *got.Data.StartupSeconds < 0 {
		t.Errorf("plan after a startup: %s", b)
	}
}
