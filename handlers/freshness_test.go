package handlers

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/edgeops/shutdownd/store"
)

// Tokens and the status endpoints are read from the database on every
// request. These tests check that every answer is what reading the database
// at the request's arrival gives, whoever changed it.

// runningShutdown creates and starts a shutdown job and keeps committing
// progress to it (current step and an event, as the runner does) until the
// test ends, so that data_version moves all the time, as during a real
// shutdown. Like the runner, it does something else between commits (here:
// a short sleep); a writer that never lets go of the lock would starve
// another process's write past its busy timeout, which is not what this
// simulates.
func runningShutdown(t *testing.T, st *store.Store) store.Job {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	job, _, err := st.CreateShutdown(ctx, store.NewJob{TokenName: "ups", Reason: "on battery"})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.StartJob(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			_ = setCurrentStep(ctx, st, job.ID, fmt.Sprintf("Stopping OpenStack VMs (%d/2000 off)", i))
			_ = st.AddEvent(ctx, job.ID, "info", "progress", "")
			time.Sleep(2 * time.Millisecond)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return job
}

// shutdowndBinary builds cmd/shutdownd (without cgo or the race detector,
// like cmd/shutdownd's own subprocess tests), so that a test can run the
// operator's CLI as a separate process.
func shutdowndBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "shutdownd")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/edgeops/shutdownd/cmd/shutdownd")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build shutdownd: %v\n%s", err, out)
	}
	return bin
}

// TestRevokeBySeparateProcess: `shutdownd token revoke`, run as its own
// process against the database of the running API while a shutdown
// commits progress, refuses the token from the very first request after
// the command returned, although that token had just been used.
// A token the CLI creates meanwhile works at once too.
func TestRevokeBySeparateProcess(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	bin := shutdowndBinary(t)
	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "SHUTDOWND_CONFIG=", "SHUTDOWND_DATABASE=")
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("shutdownd %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return strings.TrimSpace(stdout.String())
	}
	job := runningShutdown(t, e.st)

	secret := cli("token", "create", "--database", e.path, "--scopes", "read", "--name", "ops")
	if !strings.HasPrefix(secret, "sdt_") {
		t.Fatalf("token create printed %q, want a secret", secret)
	}
	for range 50 {
		resp, body := e.do(req{method: "GET", path: "/shutdown/status", token: secret})
		if resp.StatusCode != 200 || !strings.Contains(string(body), fmt.Sprintf(`"job_id":%d,"state":"running"`, job.ID)) {
			t.Fatalf("status before revocation: %d %s", resp.StatusCode, body)
		}
	}

	cli("token", "revoke", "--database", e.path, "ops")
	resp, body := e.do(req{method: "GET", path: "/shutdown/status", token: secret})
	wantError(t, resp, body, http.StatusForbidden, CodeInvalidToken)
	resp, body = e.do(req{method: "GET", path: "/jobs", token: secret})
	wantError(t, resp, body, http.StatusForbidden, CodeInvalidToken)

	fresh := cli("token", "create", "--database", e.path, "--scopes", "read", "--name", "ops2")
	if resp, body := e.do(req{method: "GET", path: "/shutdown/status", token: fresh}); resp.StatusCode != 200 {
		t.Fatalf("token created by another process: %d %s", resp.StatusCode, body)
	}
}

// TestExpiryExact: a token is accepted up to the last
// microsecond before its expiry and refused at it, by the request's time.
func TestExpiryExact(t *testing.T) {
	t.Parallel()
	expires := time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC)
	var now atomic.Int64
	now.Store(expires.Add(-time.Hour).UnixNano())
	e := newEnv(t, func(o *Options) { o.Now = func() time.Time { return time.Unix(0, now.Load()) } })
	secret := e.token("short", []string{ScopeRead}, nil, &expires)
	runningShutdown(t, e.st)
	for _, at := range []time.Time{expires.Add(-time.Hour), expires.Add(-time.Second), expires.Add(-time.Microsecond)} {
		now.Store(at.UnixNano())
		if resp, body := e.do(req{method: "GET", path: "/shutdown/status", token: secret}); resp.StatusCode != 200 {
			t.Fatalf("at %s (before expiry): %d %s", at, resp.StatusCode, body)
		}
	}
	for _, at := range []time.Time{expires, expires.Add(time.Microsecond)} {
		now.Store(at.UnixNano())
		resp, body := e.do(req{method: "GET", path: "/shutdown/status", token: secret})
		wantError(t, resp, body, http.StatusForbidden, CodeInvalidToken)
	}
}

// TestTokenScopesAndNetworks: scope and network checks apply to a
// token used a moment ago exactly as to a new one, and a change of
// either, by any connection, applies to the next request.
func TestTokenScopesAndNetworks(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	secret := e.token("ops", []string{ScopeRead}, []string{"127.0.0.0/8"}, nil)
	get := func() (*http.Response, []byte) {
		return e.do(req{method: "GET", path: "/shutdown/status", token: secret})
	}
	for range 3 {
		if resp, body := get(); resp.StatusCode != 200 {
			t.Fatalf("allowed network: %d %s", resp.StatusCode, body)
		}
		resp, body := e.do(req{method: "POST", path: "/shutdown", token: secret})
		wantError(t, resp, body, http.StatusForbidden, CodeScopeNotGranted)
	}
	// Narrow the token's networks through another connection, as an
	// operator's SQL would.
	if err := setTokenColumn(ctx, e.path, "ops", "cidrs", `["10.0.0.0/8"]`); err != nil {
		t.Fatal(err)
	}
	resp, body := get()
	wantError(t, resp, body, http.StatusForbidden, CodeUnauthorizedNetwork)
	if err := setTokenColumn(ctx, e.path, "ops", "cidrs", `[]`); err != nil {
		t.Fatal(err)
	}
	if resp, body := get(); resp.StatusCode != 200 {
		t.Fatalf("networks lifted: %d %s", resp.StatusCode, body)
	}
	if err := setTokenColumn(ctx, e.path, "ops", "scopes", `["simulate"]`); err != nil {
		t.Fatal(err)
	}
	resp, body = get()
	wantError(t, resp, body, http.StatusForbidden, CodeScopeNotGranted)
}

// TestStatusNeverStale: while other clients keep the status endpoint busy and a
// shutdown commits progress, a status request sent after a commit returned
// shows that commit, byte for byte as the spec shapes it, through the end
// of the job with its error.
func TestStatusNeverStale(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	read, _, shut := e.tokens()
	ctx := context.Background()
	resp, _ := e.do(req{method: "POST", path: "/shutdown", token: shut})
	id := jobIDFromLocation(t, resp)
	job, err := e.st.Job(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	start := job.CreatedAt.UTC().Format(statusTimeFormat)
	if err := e.st.StartJob(ctx, id); err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := e.srv.Client()
			for {
				select {
				case <-stop:
					return
				default:
				}
				hr, _ := http.NewRequest("GET", e.srv.URL+"/shutdown/status", nil)
				hr.Header.Set("auth-token", read)
				if r, err := client.Do(hr); err == nil {
					r.Body.Close()
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()

	for i := range 100 {
		text := fmt.Sprintf("Stopping OpenStack VMs (%d/100 off)", i)
		if err := setCurrentStep(ctx, e.st, id, text); err != nil {
			t.Fatal(err)
		}
		_, body := e.do(req{method: "GET", path: "/shutdown/status", token: read})
		want := fmt.Sprintf(`{"data":{"running":true,"start_time":%q,"current_step":%q,"job_id":%d,"state":"running"},"error":null,"status":"success"}`, start, text, id)
		if string(body) != want {
			t.Fatalf("after step %d\n got %s\nwant %s", i, body, want)
		}
	}
	if _, err := e.st.FinishJob(ctx, id, store.StateFailed, "3 hosts still on"); err != nil {
		t.Fatal(err)
	}
	_, body := e.do(req{method: "GET", path: "/shutdown/status", token: read})
	want := fmt.Sprintf(`{"data":{"running":false,"start_time":%q,"error":"3 hosts still on","job_id":%d,"state":"failed"},"error":null,"status":"success"}`, start, id)
	if string(body) != want {
		t.Fatalf("after the job failed\n got %s\nwant %s", body, want)
	}
}

// TestTouchOncePerInterval: last_used_at is written once per
// touchInterval of the request clock, however many requests use the token.
func TestTouchOncePerInterval(t *testing.T) {
	t.Parallel()
	var now atomic.Int64
	t0 := time.Now()
	now.Store(t0.UnixNano())
	e := newEnv(t, func(o *Options) { o.Now = func() time.Time { return time.Unix(0, now.Load()) } })
	secret := e.token("monitor", []string{ScopeRead}, nil, nil)
	ctx := context.Background()
	lastUsed := func() *time.Time {
		tok, err := e.st.TokenByHash(ctx, store.HashToken(secret))
		if err != nil {
			t.Fatal(err)
		}
		return tok.LastUsedAt
	}
	for range 5 {
		if resp, body := e.do(req{method: "GET", path: "/shutdown/status", token: secret}); resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	}
	first := lastUsed()
	if first == nil {
		t.Fatal("last_used_at not set by the first request")
	}
	// The store only moves last_used_at forward by its own clock when the
	// previous value is a minute old; make it so.
	if err := setTokenColumn(ctx, e.path, "monitor", "last_used_at", first.Add(-2*touchInterval).UTC().Format("2006-01-02T15:04:05.000000Z")); err != nil {
		t.Fatal(err)
	}
	aged := lastUsed()
	now.Store(t0.Add(touchInterval / 2).UnixNano())
	e.do(req{method: "GET", path: "/shutdown/status", token: secret})
	if got := lastUsed(); !got.Equal(*aged) {
		t.Fatalf("touched again after half the interval: %v, was %v", got, aged)
	}
	now.Store(t0.Add(touchInterval).UnixNano())
	e.do(req{method: "GET", path: "/shutdown/status", token: secret})
	if got := lastUsed(); got.Equal(*aged) {
		t.Fatalf("not touched after the interval: still %v", got)
	}
}

// setTokenColumn changes one column of a token through a connection of its
// own, as an operator's SQL on the live database would.
func setTokenColumn(ctx context.Context, path, name, column, value string) error {
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		return err
	}
	defer db.Close()
	res, err := db.ExecContext(ctx, `UPDATE tokens SET `+column+` = ? WHERE name = ?`, value, name)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return fmt.Errorf("update %s of token %s: %d rows, %v", column, name, n, err)
	}
	return nil
}
