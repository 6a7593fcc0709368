package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/notify"
	"github.com/edgeops/shutdownd/sitesim"
	"github.com/edgeops/shutdownd/store"
)

// TestObservedShutdown runs a simulation and then a shutdown with a
// deadline and an Idempotency-Key against a small simulated site, with two
// webhooks (one answers, one hangs), and checks what operators see: the
// signed notifications, job events, on_track, GET /plan from the measured
// durations, and the Prometheus metrics.
func TestObservedShutdown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	ms := time.Millisecond
	site, err := sitesim.Start(ctx, sitesim.Options{
		Dir: dir, Projects: []string{"web"}, VMs: []sitesim.VM{
			{Name: "web-01", Project: "web", StopDelay: 100 * ms},
			{Name: "web-02", Project: "web", StopDelay: 150 * ms},
			{Name: "web-03", Project: "web", Status: "SHUTOFF"},
		},
		Hosts:         []sitesim.HostSpec{{Name: "compute-01", Role: "compute"}, {Name: "storage-01", Role: "storage"}},
		PowerOffDelay: 100 * ms, SoftOffDelay: 100 * ms, Storage: "ceph", Seed: 1,
		StopTimeout: 10 * time.Second, PollInterval: 30 * ms, HostOff: 5 * time.Second,
		BMCSoftOff: 2 * time.Second, BMCHardOff: 2 * time.Second, BMCPollEvery: 30 * ms,
	})
	if err != nil {
		t.Fatalf("start site: %v", err)
	}
	t.Cleanup(site.Close)
	path, err := site.WriteConfig("127.0.0.1:0", filepath.Join(dir, "shutdownd.db"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}

	// Webhooks: one that records, one that never answers.
	const secret = "hook-secret"
	var (
		mu   sync.Mutex
		got  []notify.Payload
		hung atomic.Int64
	)
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if err := notify.Verify([]byte(secret), r.Header.Get(notify.SignatureHeader), b, time.Now(), time.Minute); err != nil {
			t.Errorf("webhook signature: %v", err)
		}
		var p notify.Payload
		if err := json.Unmarshal(b, &p); err != nil {
			t.Errorf("payload: %v", err)
		}
		mu.Lock()
		got = append(got, p)
		mu.Unlock()
	}))
	t.Cleanup(good.Close)
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hung.Add(1)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(hang.Close)
	t.Cleanup(func() { close(release) })
	cfg.Notify.Webhooks = []config.Webhook{{URL: hang.URL + "/hang"}, {URL: good.URL + "/hook", Secret: secret}}
	cfg.Metrics.Access = config.MetricsRead

	m := &Main{Config: cfg, Logger: slog.New(slog.DiscardHandler)}
	if err := m.Run(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	tok, err := createDemoToken(ctx, m.Store)
	if err != nil {
		t.Fatal(err)
	}
	call := func(method, path, body string, hdr map[string]string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, m.URL()+path, strings.NewReader(body))
		req.Header.Set("auth-token", tok)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	wait := func(id int64) store.Job {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			j, err := m.Store.Job(ctx, id)
			if err == nil && j.State.Final() {
				return j
			}
			if time.Now().After(deadline) {
				t.Fatalf("job %d not final: %+v %v", id, j, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	jobID := func(resp *http.Response, body string) int64 {
		t.Helper()
		var id int64
		if _, err := fmt.Sscanf(resp.Header.Get("Location"), "/jobs/%d", &id); err != nil || resp.StatusCode != http.StatusAccepted {
			t.Fatalf("%d %q %s", resp.StatusCode, resp.Header.Get("Location"), body)
		}
		return id
	}

	// Before anything ran, /plan answers from the timeouts.
	_, body := call("GET", "/plan", "", nil)
	if !strings.Contains(body, `"vms_to_stop":null`) || !strings.Contains(body, `"basis":"timeouts"`) {
		t.Errorf("plan before any job: %s", body)
	}

	far := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	resp, body := call("POST", "/simulate", `{"reason":"monthly test","deadline":"`+far+`"}`, nil)
	sim := wait(jobID(resp, body))
	if sim.State != store.StateSucceeded || sim.OnTrack == nil || !*sim.OnTrack {
		t.Fatalf("simulation %s on_track %v: %s", sim.State, sim.OnTrack, sim.Error)
	}
	evs, _ := m.Store.Events(ctx, sim.ID, 0)
	if !hasEvent(evs, "shutdown forecast: about") {
		t.Errorf("simulation has no forecast event: %+v", evs)
	}

	key := map[string]string{"Idempotency-Key": "ups-7f3a"}
	reqBody := `{"reason":"utility power lost","expected_recovery":"2030-01-01T12:00:00Z","deadline":"` + far + `"}`
	resp, body = call("POST", "/shutdown", reqBody, key)
	id := jobID(resp, body)
	// The retry with the same key while the job is active gets the same
	// job, not a new shutdown (the job takes at least the VMs' 150 ms stop).
	// It is sent to "//shutdown", as a UPS script with a doubled slash in
	// its URL would: served (and counted below) as /shutdown, no redirect.
	resp, body = call("POST", "//shutdown", reqBody, key)
	if jobID(resp, body) != id || resp.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay points at %s (replayed %q)", resp.Header.Get("Location"), resp.Header.Get("Idempotent-Replayed"))
	}
	job := wait(id)
	if job.State != store.StateSucceeded || job.OnTrack == nil || !*job.OnTrack {
		t.Fatalf("shutdown %s on_track %v: %s", job.State, job.OnTrack, job.Error)
	}
	// The hanging webhook still holds its first request: the shutdown did
	// not wait for it.
	if n := hung.Load(); n != 1 {
		t.Errorf("hanging webhook saw %d requests while the jobs ran, want 1 (still hanging)", n)
	}
	// Every notification reached the good webhook, in order per job.
	waitCond(t, "10 notifications", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 10 })
	var seq []string
	for _, p := range got {
		if p.Job.ID == id {
			seq = append(seq, p.Event)
			if p.Job.Reason != "utility power lost" || p.Job.ExpectedRecovery == nil || p.Job.Deadline == nil {
				t.Errorf("payload job %+v", p.Job)
			}
		}
	}
	if want := "job.started step.finished step.finished step.finished job.finished"; strings.Join(seq, " ") != want {
		t.Errorf("shutdown notifications %v, want %s", seq, want)
	}
	if last := got[len(got)-1]; last.Job.State != "succeeded" || last.Job.OnTrack == nil || !*last.Job.OnTrack {
		t.Errorf("job.finished payload %+v", last.Job)
	}

	// The forecast now rests on what was measured.
	_, body = call("GET", "/plan", "", nil)
	var plan struct {
		Data struct {
			EstimateSeconds  float64 `json:"estimate_seconds"`
			WorstCaseSeconds float64 `json:"worst_case_seconds"`
			VMsToStop        *int    `json:"vms_to_stop"`
			Steps            []struct{ Name, Basis string }
		}
	}
	if err := json.Unmarshal([]byte(body), &plan); err != nil {
		t.Fatal(err)
	}
	took := job.FinishedAt.Sub(*job.StartedAt).Seconds()
	if plan.Data.VMsToStop == nil || *plan.Data.VMsToStop != 2 || plan.Data.EstimateSeconds <= 0 ||
		plan.Data.EstimateSeconds > 3*took+1 || plan.Data.WorstCaseSeconds < plan.Data.EstimateSeconds {
		t.Errorf("plan after a shutdown that took %.2fs: %s", took, body)
	}
	for _, s := range plan.Data.Steps {
		if s.Basis != "measured" {
			t.Errorf("step %s basis %s: %s", s.Name, s.Basis, body)
		}
	}

	// Metrics, with a read token.
	_, body = call("GET", "/metrics", "", nil)
	for _, want := range []string{
		`shutdownd_jobs_total{kind="simulation",result="succeeded"} 1`,
		`shutdownd_jobs_total{kind="shutdown",result="succeeded"} 1`,
		`shutdownd_last_job_result{kind="shutdown",result="succeeded"} 1`,
		`shutdownd_step_duration_seconds_count{kind="shutdown",result="succeeded",step="hosts"} 1`,
		`shutdownd_target_actions_total{kind="shutdown",result="succeeded",target_kind="vm"} 3`,
		`shutdownd_peer_requests_total{op="stop",peer="nova"} 2`,
		`shutdownd_peer_requests_total{op="poweroff",peer="ssh"} 2`,
		`shutdownd_http_requests_total{code="202",method="POST",route="/shutdown"} 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics: missing %s", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", body)
	}
}

func hasEvent(evs []store.Event, prefix string) bool {
	for _, e := range evs {
		if strings.HasPrefix(e.Message, prefix) {
			return true
		}
	}
	return false
}

func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
