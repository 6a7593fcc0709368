package notify_test

import (
	"context"
	"encoding/json"
	"io"
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
	"github.com/edgeops/shutdownd/store"
)

const secret = "s3cret-webhook-key"

type received struct {
	header http.Header
	body   []byte
}

// recorder is a webhook receiver on 127.0.0.1 that answers with status and
// keeps every request.
type recorder struct {
	srv      *httptest.Server
	attempts atomic.Int64
	mu       sync.Mutex
	got      []received
}

func newRecorder(t *testing.T, h func(w http.ResponseWriter, r *http.Request)) *recorder {
	t.Helper()
	rec := &recorder{}
	rec.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.attempts.Add(1)
		b, _ := io.ReadAll(r.Body)
		rec.mu.Lock()
		rec.got = append(rec.got, received{r.Header.Clone(), b})
		rec.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(rec.srv.Close)
	return rec
}

func (r *recorder) requests() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.got...)
}

func openStore(t *testing.T) (*store.Store, store.Job) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "n.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rec := time.Date(2025, 6, 24, 12, 0, 0, 0, time.UTC)
	job, err := st.CreateSimulation(ctx, store.NewJob{TokenName: "ups", Reason: "utility power lost", ExpectedRecovery: &rec})
	if err != nil {
		t.Fatal(err)
	}
	return st, job
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func events(t *testing.T, st *store.Store, jobID int64, contains string) []store.Event {
	t.Helper()
	evs, err := st.Events(context.Background(), jobID, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []store.Event
	for _, e := range evs {
		if strings.Contains(e.Message, contains) {
			out = append(out, e)
		}
	}
	return out
}

// TestSlowAndFailingWebhooksNeverDelay sends a job's three notifications to
// a good webhook, one that hangs and one that fails with 500: enqueueing
// returns at once, the good one gets every message in order and signed, and
// the others are retried, then given up, all recorded in the job's events.
func TestSlowAndFailingWebhooksNeverDelay(t *testing.T) {
	t.Parallel()
	st, job := openStore(t)
	good := newRecorder(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	release := make(chan struct{})
	hang := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		select { // hangs until the client gives up (or the test ends)
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	fail := newRecorder(t, func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", http.StatusInternalServerError) })

	n := notify.New(notify.Options{
		Webhooks: []config.Webhook{
			{URL: hang.srv.URL + "/hook/T0K3N-hang"},
			{URL: fail.srv.URL + "/hook/T0K3N-fail", Secret: secret},
			{URL: good.srv.URL + "/hook", Secret: secret},
		},
		Store: st, Timeout: 150 * time.Millisecond, MaxAttempts: 3, Backoff: 10 * time.Millisecond,
	})
	defer n.Close()

	ctx := context.Background()
	j := job
	start := time.Now()
	n.JobStarted(ctx, j)
	now := time.Now().UTC()
	n.StepFinished(ctx, j, store.Step{Seq: 1, Name: "openstack", State: store.StepSucceeded, Detail: "60 servers", StartedAt: &now, FinishedAt: &now})
	j.State = store.StateSucceeded
	j.FinishedAt = &now
	n.JobFinished(ctx, j)
	if el := time.Since(start); el > 50*time.Millisecond {
		t.Errorf("enqueueing 3 notifications took %s; the runner must never wait on webhooks", el)
	}

	waitFor(t, "3 deliveries to the good webhook", 5*time.Second, func() bool { return len(good.requests()) == 3 })
	var order []string
	for _, r := range good.requests() {
		if err := notify.Verify([]byte(secret), r.header.Get(notify.SignatureHeader), r.body, time.Now(), time.Minute); err != nil {
			t.Errorf("signature: %v", err)
		}
		if err := notify.Verify([]byte("wrong"), r.header.Get(notify.SignatureHeader), r.body, time.Now(), time.Minute); err == nil {
			t.Error("signature verified with the wrong secret")
		}
		var p notify.Payload
		if err := json.Unmarshal(r.body, &p); err != nil {
			t.Fatalf("payload: %v: %s", err, r.body)
		}
		if p.Event != r.header.Get("X-Shutdownd-Event") || p.DeliveryID != r.header.Get("X-Shutdownd-Delivery") {
			t.Errorf("headers %v do not match payload %+v", r.header, p)
		}
		if p.Job.ID != job.ID || p.Job.Reason != "utility power lost" || p.Job.ExpectedRecovery == nil ||
			*p.Job.ExpectedRecovery != "2025-06-24T12:00:00.000000Z" || p.Job.URL == "" {
			t.Errorf("job payload = %+v", p.Job)
		}
		if (p.Step != nil) != (p.Event == notify.EventStepFinished) {
			t.Errorf("%s: step = %+v", p.Event, p.Step)
		}
		order = append(order, p.Event)
	}
	if want := "job.started step.finished job.finished"; strings.Join(order, " ") != want {
		t.Errorf("order %v, want %s", order, want)
	}

	// 3 messages x 3 attempts each, then given up, for both bad webhooks.
	waitFor(t, "give-up events", 10*time.Second, func() bool {
		return len(events(t, st, job.ID, "not delivered after 3 attempts")) == 6
	})
	if got := fail.attempts.Load(); got != 9 {
		t.Errorf("failing webhook got %d attempts, want 9", got)
	}
	if got := hang.attempts.Load(); got != 9 {
		t.Errorf("hanging webhook got %d attempts, want 9", got)
	}
	if got := len(events(t, st, job.ID, "retrying")); got != 12 {
		t.Errorf("%d retry events, want 12 (2 per message and bad webhook)", got)
	}
	all, _ := st.Events(ctx, job.ID, 0)
	for _, e := range all {
		if strings.Contains(e.Message+e.Detail, "T0K3N") || strings.Contains(e.Message+e.Detail, secret) {
			t.Errorf("event leaks the URL path or secret: %+v", e)
		}
	}
	if len(events(t, st, job.ID, "HTTP 500")) == 0 && len(eventsDetail(t, st, job.ID, "HTTP 500")) == 0 {
		t.Error("no event says HTTP 500")
	}
}

func eventsDetail(t *testing.T, st *store.Store, jobID int64, contains string) []store.Event {
	evs, _ := st.Events(context.Background(), jobID, 0)
	var out []store.Event
	for _, e := range evs {
		if strings.Contains(e.Detail, contains) {
			out = append(out, e)
		}
	}
	return out
}

// TestClientErrorNotRetried: a 4xx other than 408/429 will not change by
// asking again, so it is recorded after one attempt.
func TestClientErrorNotRetried(t *testing.T) {
	t.Parallel()
	st, job := openStore(t)
	bad := newRecorder(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusUnauthorized) })
	n := notify.New(notify.Options{Webhooks: []config.Webhook{{URL: bad.srv.URL}}, Store: st, MaxAttempts: 5, Backoff: time.Millisecond})
	defer n.Close()
	n.JobStarted(context.Background(), job)
	waitFor(t, "give-up event", 5*time.Second, func() bool {
		return len(events(t, st, job.ID, "not delivered after 1 attempts")) == 1
	})
	if got := bad.attempts.Load(); got != 1 {
		t.Errorf("%d attempts, want 1", got)
	}
	if r := bad.requests(); r[0].header.Get(notify.SignatureHeader) != "" {
		t.Error("unsigned webhook got a signature header")
	}
}

// TestRetryThenSuccess: a webhook failing twice gets the message at the
// third attempt, and the job's events say so.
func TestRetryThenSuccess(t *testing.T) {
	t.Parallel()
	st, job := openStore(t)
	var calls atomic.Int64
	flaky := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	n := notify.New(notify.Options{Webhooks: []config.Webhook{{URL: flaky.srv.URL}}, Store: st, Backoff: time.Millisecond})
	defer n.Close()
	n.JobFinished(context.Background(), job)
	waitFor(t, "delivered event", 5*time.Second, func() bool {
		return len(events(t, st, job.ID, "job.finished delivered at attempt 3")) == 1
	})
	if got := len(events(t, st, job.ID, "retrying")); got != 2 {
		t.Errorf("%d retry events, want 2", got)
	}
}

// TestCloseDoesNotWaitForHangingWebhook: stopping the service is not held
// up by a webhook that never answers.
func TestCloseDoesNotWaitForHangingWebhook(t *testing.T) {
	t.Parallel()
	st, job := openStore(t)
	arrived := make(chan struct{}, 1)
	hang := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-r.Context().Done()
	})
	n := notify.New(notify.Options{Webhooks: []config.Webhook{{URL: hang.srv.URL}}, Store: st, Timeout: time.Minute})
	n.JobStarted(context.Background(), job)
	select {
	case <-arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("request never arrived")
	}
	start := time.Now()
	n.Close()
	if el := time.Since(start); el > time.Second {
		t.Errorf("Close took %s", el)
	}
}

func TestVerifyRejectsStaleAndMalformed(t *testing.T) {
	t.Parallel()
	body := []byte(`{"event":"job.started"}`)
	at := time.Unix(1750000000, 0)
	h := notify.Sign([]byte(secret), at, body)
	if !strings.HasPrefix(h, "t=1750000000,v1=") || len(h) != len("t=1750000000,v1=")+64 {
		t.Fatalf("header %q", h)
	}
	for name, c := range map[string]struct {
		header string
		body   []byte
		now    time.Time
		ok     bool
	}{
		"valid":      {h, body, at.Add(time.Minute), true},
		"stale":      {h, body, at.Add(10 * time.Minute), false},
		"other body": {h, []byte(`{"event":"job.finished"}`), at, false},
		"malformed":  {"v1=abc", body, at, false},
		"empty":      {"", body, at, false},
		"shifted ts": {strings.Replace(h, "t=1750000000", "t=1750000001", 1), body, at, false},
	} {
		err := notify.Verify([]byte(secret), c.header, c.body, c.now, 5*time.Minute)
		if (err == nil) != c.ok {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

// TestDrainWaitsForDeliveryIncludingRetries: Drain returns once every
// queued message has been delivered, retries included, and not before.
func TestDrainWaitsForDeliveryIncludingRetries(t *testing.T) {
	t.Parallel()
	st, job := openStore(t)
	var calls atomic.Int64
	flaky := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	n := notify.New(notify.Options{Webhooks: []config.Webhook{{URL: flaky.srv.URL}}, Store: st, Backoff: 100 * time.Millisecond})
	defer n.Close()
	if p := n.Drain(context.Background()); p != 0 {
		t.Fatalf("Drain with nothing queued: %d pending", p)
	}
	n.StepFinished(context.Background(), job, store.Step{Name: "hosts"})
	n.JobFinished(context.Background(), job)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if p := n.Drain(ctx); p != 0 {
		t.Fatalf("Drain: %d pending", p)
	}
	got := flaky.requests()
	if len(got) != 3 || got[2].header.Get("X-Shutdownd-Event") != notify.EventJobFinished {
		t.Fatalf("Drain returned after %d requests; want 3 (a failed attempt, its retry, job.finished)", len(got))
	}
}

// TestDrainGivesUpWithTheCountPending: a webhook that never answers holds
// Drain only until its context ends, and Drain says what is left.
func TestDrainGivesUpWithTheCountPending(t *testing.T) {
	t.Parallel()
	st, job := openStore(t)
	hang := newRecorder(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	n := notify.New(notify.Options{Webhooks: []config.Webhook{{URL: hang.srv.URL}}, Store: st, Timeout: time.Minute})
	defer n.Close()
	n.JobStarted(context.Background(), job)
	n.JobFinished(context.Background(), job)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if p := n.Drain(ctx); p != 2 {
		t.Fatalf("Drain: %d pending, want 2", p)
	}
}
