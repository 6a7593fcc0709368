package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/sitesim"
)

// lockedBuffer collects the service's log output from many goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestSecretsNeverLeak runs a simulation and a full shutdown of the demo
// site in-process, with a failing BMC and an unreachable SSH host so error
// paths run too, and searches every output for the secrets the service
// holds: the BMC password, the OpenStack password, the SSH private key and
// the API token. Outputs searched: the debug-level log, every API answer
// (status, job list, job detail, event stream, errors), the history page,
// metrics, and the raw SQLite file with its WAL.
func TestSecretsNeverLeak(t *testing.T) {
	ctx := context.Background()
	d, err := startDemo(ctx, "127.0.0.1:0", "", func(o *sitesim.Options) {
		e2eFast(o)
		o.Hosts = []sitesim.HostSpec{
			{Name: "compute-01", Role: "compute"},
			{Name: "compute-02", Role: "compute", SSHDown: true},
			{Name: "storage-01", Role: "storage", IgnoreSoftOff: true, IgnorePowerOff: true},
			{Name: "control-01", Role: "control", BMCDown: true},
		}
		o.HostOff, o.BMCSoftOff, o.BMCHardOff = 500*time.Millisecond, 500*time.Millisecond, time.Second
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	logs := &lockedBuffer{}
	m := &Main{Config: d.Config, Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if err := m.Run(ctx); err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			m.Close()
		}
	}()
	token, err := createDemoToken(ctx, m.Store)
	if err != nil {
		t.Fatal(err)
	}
	s := &e2eService{t: t, main: m, demo: d, token: token, url: m.URL()}

	key, err := os.ReadFile(d.Site.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{
		"BMC password":       sitesim.BMCPassword(),
		"OpenStack password": "sim-secret",
		"API token":          token,
		"API token body":     strings.TrimPrefix(token, "sdt_"),
	}
	// The key file's base64 lines: any one of them in an output is a leak.
	for i, line := range strings.Split(string(key), "\n") {
		if len(line) >= 16 && !strings.HasPrefix(line, "-----") {
			secrets[fmt.Sprintf("SSH key line %d", i)] = line
		}
	}
	if !strings.Contains(mustRead(t, filepath.Join(filepath.Dir(d.Site.KeyFile), "clouds.yaml")), "sim-secret") {
		t.Fatal("the demo's clouds.yaml does not hold the password this test looks for")
	}

	var answers strings.Builder
	record := func(method, path, body string, hdr map[string]string) int {
		code, h, b := s.do(method, path, body, hdr)
		fmt.Fprintf(&answers, "%s %s -> %d %v\n%s\n", method, path, code, h, b)
		return code
	}
	sim := s.post("/simulate", `{"reason":"secrets test"}`)
	s.waitJob(sim, 60*time.Second)
	shut := s.post("/shutdown", `{"reason":"secrets test","expected_recovery":"2030-01-01T00:00:00Z"}`)
	job := s.waitJob(shut, 90*time.Second)
	t.Logf("shutdown job %d ended %s (%s)", shut, job.State, job.Error)

	for _, p := range []string{
		"/simulate/status", "/shutdown/status", "/jobs", fmt.Sprintf("/jobs/%d", sim), fmt.Sprintf("/jobs/%d", shut),
		fmt.Sprintf("/jobs/%d/events", sim), fmt.Sprintf("/jobs/%d/events", shut),
		"/healthz", "/metrics", "/openapi.yaml", "/", "/history", fmt.Sprintf("/history/%d", shut), "/nope",
	} {
		record("GET", p, "", nil)
	}
	// Error paths: wrong tokens, bad bodies, wrong methods.
	record("GET", "/jobs", "", map[string]string{"auth-token": token + "x"})
	record("GET", "/jobs", "", map[string]string{"auth-token": "", "Authorization": "Bearer " + sitesim.BMCPassword()})
	// A body is never refused (its usable reason is stored, by design), but
	// what it carries and cannot use is never stored or echoed: the job's
	// warnings name an unknown field, not its value, and a reason of the
	// wrong type by its type.
	badBody := `{"reason":{"text":"` + sitesim.BMCPassword() + `"},"bogus":"` + sitesim.BMCPassword() + `"}`
	code, h, b := s.do("POST", "/simulate", badBody, nil)
	fmt.Fprintf(&answers, "POST /simulate -> %d %v\n%s\n", code, h, b)
	var id int64
	if _, err := fmt.Sscanf(h.Get("Location"), "/jobs/%d", &id); err != nil || code != http.StatusAccepted {
		t.Fatalf("POST /simulate with an unusable body: %d %q %s, want 202", code, h.Get("Location"), b)
	}
	s.waitJob(id, 60*time.Second)
	record("GET", h.Get("Location"), "", nil)
	record("DELETE", "/shutdown", "", nil)
	// The history page with a browser session (login form, cookie).
	if code := recordLogin(t, s, &answers); code >= 500 {
		t.Errorf("history login answered %d", code)
	}

	// The database files are read while the service runs (the WAL holds
	// recent writes) and again after Close (checkpointed into the file).
	outputs := map[string]string{}
	readDB := func(when string) {
		for _, suffix := range []string{"", "-wal", "-shm"} {
			p := d.Config.Database + suffix
			b, err := os.ReadFile(p)
			if err != nil {
				continue
			}
			outputs[when+" "+filepath.Base(p)] = string(b)
			if fi, err := os.Stat(p); err == nil && fi.Mode().Perm() != 0o600 {
				t.Errorf("%s mode %04o, want 0600", p, fi.Mode().Perm())
			}
		}
	}
	readDB("running")
	closed = true
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	readDB("closed")
	outputs["log"], outputs["API answers"] = logs.String(), answers.String()
	if !strings.Contains(outputs["log"], "compute-02") || !strings.Contains(outputs["API answers"], "control-01") {
		t.Fatal("outputs do not mention the failing hosts: the test did not exercise the error paths")
	}
	for where, out := range outputs {
		for what, secret := range secrets {
			if strings.Contains(out, secret) {
				i := strings.Index(out, secret)
				t.Errorf("%s leaks the %s: ...%s...", where, what, out[max(0, i-120):min(len(out), i+len(secret)+40)])
			}
		}
	}
	t.Logf("searched %d bytes of log, %d bytes of API answers, %d database file snapshots for %d secrets",
		len(outputs["log"]), len(outputs["API answers"]), len(outputs)-2, len(secrets))
}

// recordLogin logs into the history pages with the token through the form
// and records the pages the browser session is then served.
func recordLogin(t *testing.T, s *e2eService, answers *strings.Builder) int {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	resp, err := c.PostForm(s.url+"/login", url.Values{"token": {s.token}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Fprintf(answers, "POST /login -> %d %v\n%s\n", resp.StatusCode, resp.Header, b)
	if !strings.Contains(string(b), "control-01") {
		t.Errorf("history page after login does not show the job's hosts (status %d)", resp.StatusCode)
	}
	code := resp.StatusCode
	for _, p := range []string{"/", "/history/1", "/history/2"} {
		resp, err := c.Get(s.url + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Fprintf(answers, "GET %s (session) -> %d %v\n%s\n", p, resp.StatusCode, resp.Header, b)
		code = max(code, resp.StatusCode)
	}
	return code
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
