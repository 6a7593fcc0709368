package web

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/handlers"
	"github.com/edgeops/shutdownd/store"
)

// testEnv is the API with the history pages on a real HTTP server over a
// real SQLite file.
type testEnv struct {
	st    *store.Store
	srv   *httptest.Server
	token string // read scope
}

func newEnv(t testing.TB, tune func(*Options)) *testEnv {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "shutdownd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	api := handlers.New(handlers.Options{Store: st, Logger: log})
	opts := Options{Store: st, API: api, Logger: log, PageSize: 5}
	if tune != nil {
		tune(&opts)
	}
	if _, err := Mount(api.Router(), opts); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	e := &testEnv{st: st, srv: srv}
	e.token = e.newToken(t, "viewer", []string{"read"})
	return e
}

func (e *testEnv) newToken(t testing.TB, name string, scopes []string) string {
	t.Helper()
	secret, err := store.NewTokenSecret()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.CreateToken(context.Background(), name, store.HashToken(secret), scopes, nil, nil); err != nil {
		t.Fatal(err)
	}
	return secret
}

// client returns an HTTP client with a cookie jar that does not follow
// redirects, so tests see each answer.
func (e *testEnv) client(t testing.TB) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// login posts the form and returns the answer.
func (e *testEnv) login(t testing.TB, c *http.Client, token, next string) *http.Response {
	t.Helper()
	form := url.Values{"token": {token}, "next": {next}}
	resp, err := c.PostForm(e.srv.URL+"/login", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// get fetches a path and returns status and body.
func (e *testEnv) get(t testing.TB, c *http.Client, path string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(e.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// loggedIn returns a client with a session.
func (e *testEnv) loggedIn(t testing.TB) *http.Client {
	t.Helper()
	c := e.client(t)
	if resp := e.login(t, c, e.token, ""); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	return c
}

// finishedJob records a simulation with one step, the given actions (target
// -> error, "" for success) and finishes it.
func finishedJob(t testing.TB, st *store.Store, reason string, targets map[string]string) store.Job {
	t.Helper()
	ctx := context.Background()
	job, err := st.CreateSimulation(ctx, store.NewJob{TokenName: "ups", RemoteAddr: "10.0.9.7", Reason: reason})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.StartJob(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	step, err := st.EnsureStep(ctx, job.ID, 1, "Checking hosts")
	if err != nil {
		t.Fatal(err)
	}
	failed := false
	for target, msg := range targets {
		state := store.ActionSucceeded
		if msg != "" {
			state, failed = store.ActionFailed, true
		}
		if _, err := st.RecordAction(ctx, store.ActionKey{JobID: job.ID, StepID: step.ID, TargetKind: "host",
			Target: target, Operation: "check-ssh"}, state, "", msg); err != nil {
			t.Fatal(err)
		}
	}
	final, stepState, msg := store.StateSucceeded, store.StepSucceeded, ""
	if failed {
		final, stepState, msg = store.StateFailed, store.StepFailed, "checks failed"
	}
	if err := st.FinishStep(ctx, step.ID, stepState, "", msg); err != nil {
		t.Fatal(err)
	}
	if _, err := st.FinishJob(ctx, job.ID, final, msg); err != nil {
		t.Fatal(err)
	}
	j, err := st.Job(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func mustContain(t testing.TB, body string, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(body, s) {
			t.Errorf("page lacks %q", s)
		}
	}
}
