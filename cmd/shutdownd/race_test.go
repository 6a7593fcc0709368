package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/sitesim"
	"github.com/edgeops/shutdownd/store"
)

// raceService is the service in-process against a small simulated site.
type raceService struct {
	t      *testing.T
	m      *Main
	site   *sitesim.Site
	token  string
	url    string
	client *http.Client
}

func startRaceService(t *testing.T, tune func(*sitesim.Options)) *raceService {
	t.Helper()
	// startE2E applies e2eFast first; every field it sets is set again here.
	e := startE2E(t, func(o *sitesim.Options) {
		o.Projects, o.VMsPerProject = []string{"web", "db"}, 3
		o.VMStopMin, o.VMStopMax = 20*time.Millisecond, 80*time.Millisecond
		o.NovaLatency, o.SSHLatency = 0, 0
		o.Hosts = []sitesim.HostSpec{
			{Name: "compute-01", Role: "compute"},
			{Name: "storage-01", Role: "storage"},
			{Name: "control-01", Role: "control"},
		}
		o.PowerOffDelay, o.SoftOffDelay = 50*time.Millisecond, 50*time.Millisecond
		o.PollInterval, o.BMCPollEvery = 30*time.Millisecond, 20*time.Millisecond
		o.HostOff, o.BMCSoftOff, o.BMCHardOff = 3*time.Second, 3*time.Second, 3*time.Second
		if tune != nil {
			tune(o)
		}
	})
	tr := &http.Transport{MaxIdleConnsPerHost: 600}
	t.Cleanup(tr.CloseIdleConnections)
	return &raceService{t: t, m: e.main, site: e.demo.Site, token: e.token, url: e.url, client: &http.Client{Transport: tr, Timeout: 60 * time.Second}}
}

type raceAnswer struct {
	path     string
	code     int
	location string
	errCode  string
	data     json.RawMessage
}

func (s *raceService) post(path string) raceAnswer {
	req, _ := http.NewRequest(http.MethodPost, s.url+path, nil)
	req.Header.Set("auth-token", s.token)
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Errorf("POST %s: %v", path, err)
		return raceAnswer{path: path}
	}
	defer resp.Body.Close()
	var env struct {
		Data json.RawMessage `json:"data"`
		Code string          `json:"code"`
	}
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &env); err != nil {
		s.t.Errorf("POST %s: %d, body not JSON: %q", path, resp.StatusCode, b)
	}
	return raceAnswer{path: path, code: resp.StatusCode, location: resp.Header.Get("Location"), errCode: env.Code, data: env.Data}
}

// waitFinal waits for a job to reach a final state, woken by every store
// write.
func waitFinal(t *testing.T, st *store.Store, id int64, within time.Duration) store.Job {
	t.Helper()
	ch, unsub := st.Subscribe()
	defer unsub()
	deadline := time.After(within)
	for {
		j, err := st.Job(context.Background(), id)
		if err != nil {
			t.Fatalf("read job %d: %v", id, err)
		}
		if j.State.Final() {
			return j
		}
		select {
		case <-ch:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("job %d still %s after %s (%s)", id, j.State, within, j.CurrentStep)
		}
	}
}

// TestRace500SimulateAndShutdown fires 500 POSTs at once, a third of them
// /shutdown, and checks the spec's outcome on the store: one shutdown job
// that every /shutdown answer points at, at most one simulation, which the
// shutdown preempted and which never overlapped it, and 409 job_running for
// every other /simulate.
func TestRace500SimulateAndShutdown(t *testing.T) {
	s := startRaceService(t, func(o *sitesim.Options) {
		// A simulation that outlasts the burst, so a second one could only
		// start if the store let two jobs be active.
		o.SSHLatency = 200 * time.Millisecond
	})
	const n = 500
	answers := make([]raceAnswer, n)
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		path := "/simulate"
		if i%3 == 2 {
			path = "/shutdown"
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			answers[i] = s.post(path)
		}()
	}
	start := time.Now()
	close(gate)
	wg.Wait()
	burst := time.Since(start)

	ctx := context.Background()
	jobs, err := s.m.Store.ListJobs(ctx, store.JobFilter{Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	var shutdowns, sims []store.Job
	for _, j := range jobs {
		if j.Kind == store.KindShutdown {
			shutdowns = append(shutdowns, j)
		} else {
			sims = append(sims, j)
		}
	}
	if len(shutdowns) != 1 {
		t.Fatalf("%d shutdown jobs, want exactly 1", len(shutdowns))
	}
	shut := shutdowns[0]
	if len(sims) > 1 {
		t.Errorf("%d simulation jobs, want at most 1", len(sims))
	}
	counts := map[string]int{}
	shutLoc := fmt.Sprintf("/jobs/%d", shut.ID)
	for _, a := range answers {
		counts[fmt.Sprintf("%s %d %s", a.path, a.code, a.errCode)]++
		switch {
		case a.path == "/shutdown" && (a.code != http.StatusAccepted || a.location != shutLoc):
			t.Errorf("POST /shutdown = %d %s %q, want 202 at %s", a.code, a.errCode, a.location, shutLoc)
		case a.path == "/simulate" && a.code == http.StatusAccepted:
			if len(sims) != 1 || a.location != fmt.Sprintf("/jobs/%d", sims[0].ID) {
				t.Errorf("POST /simulate 202 at %s, not the one simulation job", a.location)
			}
		case a.path == "/simulate" && (a.code != http.StatusConflict || a.errCode != "job_running"):
			t.Errorf("POST /simulate = %d %s, want 202 or 409 job_running", a.code, a.errCode)
		}
	}
	if got := counts["/simulate 202 "]; got != len(sims) {
		t.Errorf("%d simulations accepted, %d in the store", got, len(sims))
	}
	for _, sim := range sims {
		sj := waitFinal(t, s.m.Store, sim.ID, 30*time.Second)
		if sj.ID > shut.ID {
			t.Errorf("simulation %d created after the shutdown %d", sj.ID, shut.ID)
		}
		if sj.State != store.StateCancelled || sj.Error != fmt.Sprintf("preempted by shutdown job %d", shut.ID) {
			t.Errorf("simulation %d: %s %q, want cancelled, preempted by shutdown job %d", sj.ID, sj.State, sj.Error, shut.ID)
		}
		if sj.FinishedAt == nil || shut.StartedAt != nil && sj.FinishedAt.After(*shut.StartedAt) {
			t.Errorf("simulation %d finished at %v, after the shutdown started at %v", sj.ID, sj.FinishedAt, shut.StartedAt)
		}
	}
	sj := waitFinal(t, s.m.Store, shut.ID, 60*time.Second)
	if sj.State != store.StateSucceeded {
		t.Errorf("shutdown %s %q, want succeeded", sj.State, sj.Error)
	}
	if sj.StartedAt == nil || len(sims) == 1 && sims[0].FinishedAt != nil && sims[0].FinishedAt.After(*sj.StartedAt) {
		t.Errorf("the shutdown started before the simulation ended")
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var summary []string
	for _, k := range keys {
		summary = append(summary, fmt.Sprintf("%s: %d", k, counts[k]))
	}
	t.Logf("500 POSTs in %s: %s", burst.Round(time.Millisecond), strings.Join(summary, ", "))
}

// TestRaceCancelVersusCompletion cancels small jobs at random moments, many
// of them right as they complete, and checks that no job is ever both
// cancelled and succeeded: one final state, one final event, a cancelled
// job really left work undone, and an API answer saying "cancelled" is what
// the store ends with.
func TestRaceCancelVersusCompletion(t *testing.T) {
	s := startRaceService(t, func(o *sitesim.Options) {
		o.Projects, o.VMsPerProject = []string{"web"}, 2
		o.Storage = "none"
		o.Hosts = []sitesim.HostSpec{{Name: "compute-01", Role: "compute"}}
	})
	ctx := context.Background()

	// Learn how long a simulation takes, so cancels are spread over its
	// whole life, the end included.
	var dur time.Duration
	for range 3 {
		a := s.post("/simulate")
		id := jobID(t, a)
		j := waitFinal(t, s.m.Store, id, 30*time.Second)
		if j.State != store.StateSucceeded {
			t.Fatalf("simulation %s %q", j.State, j.Error)
		}
		dur = max(dur, j.FinishedAt.Sub(j.CreatedAt))
	}
	const rounds = 100
	rng := rand.New(rand.NewPCG(7, 7))
	outcomes := map[string]int{}
	for i := range rounds {
		a := s.post("/simulate")
		if a.code != http.StatusAccepted {
			t.Fatalf("round %d: POST /simulate = %d %s", i, a.code, a.errCode)
		}
		id := jobID(t, a)
		// The jitter places the cancel; it is not a wait for the job.
		time.Sleep(time.Duration(rng.Int64N(int64(dur) * 6 / 5)))
		c := s.post(fmt.Sprintf("/jobs/%d/cancel", id))
		var answered struct{ State string }
		json.Unmarshal(c.data, &answered)
		j := waitFinal(t, s.m.Store, id, 30*time.Second)
		outcomes[string(j.State)]++
		checkCancelRace(t, s.m.Store, j, c.code, answered.State)
		if t.Failed() {
			t.Fatalf("round %d failed", i)
		}
	}
	jobs, err := s.m.Store.ListJobs(ctx, store.JobFilter{Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != rounds+3 {
		t.Errorf("%d jobs, want %d", len(jobs), rounds+3)
	}
	t.Logf("%d rounds (simulation takes about %s): %v", rounds, dur.Round(time.Millisecond), outcomes)
	if outcomes["cancelled"] == 0 || outcomes["succeeded"] == 0 {
		t.Errorf("outcomes %v: the race was not exercised on both sides", outcomes)
	}
}

func jobID(t *testing.T, a raceAnswer) int64 {
	t.Helper()
	var id int64
	if _, err := fmt.Sscanf(a.location, "/jobs/%d", &id); err != nil {
		t.Fatalf("%s answered %d without a job Location %q", a.path, a.code, a.location)
	}
	return id
}

func checkCancelRace(t *testing.T, st *store.Store, j store.Job, cancelCode int, answered string) {
	t.Helper()
	ctx := context.Background()
	if j.State != store.StateSucceeded && j.State != store.StateCancelled {
		t.Errorf("job %d: %s %q, want succeeded or cancelled", j.ID, j.State, j.Error)
	}
	if cancelCode != http.StatusAccepted && cancelCode != http.StatusOK {
		t.Errorf("job %d: cancel answered %d", j.ID, cancelCode)
	}
	if answered == "cancelled" && j.State != store.StateCancelled {
		t.Errorf("job %d: cancel answered cancelled, store says %s", j.ID, j.State)
	}
	if answered == "succeeded" && j.State != store.StateSucceeded {
		t.Errorf("job %d: cancel answered succeeded, store says %s", j.ID, j.State)
	}
	events, err := st.Events(ctx, j.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	var finals []string
	for _, e := range events {
		if slices.Contains([]string{"job succeeded", "job failed", "job cancelled", "job cancelled before start"}, e.Message) {
			finals = append(finals, e.Message)
		}
	}
	if len(finals) != 1 {
		t.Errorf("job %d (%s): final events %q, want exactly one", j.ID, j.State, finals)
	}
	steps, err := st.Steps(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	done := 0
	for _, s := range steps {
		if s.State == store.StepSucceeded || s.State == store.StepSkipped {
			done++
		}
	}
	switch j.State {
	case store.StateSucceeded:
		if done != 3 {
			t.Errorf("job %d succeeded with %d/3 steps done", j.ID, done)
		}
	case store.StateCancelled:
		// Cancelled means the cancel stopped something: a job whose every
		// step completed succeeded, whatever arrived after its last step.
		if done == 3 {
			t.Errorf("job %d cancelled (%q) although all 3 steps completed", j.ID, j.Error)
		}
	}
}
