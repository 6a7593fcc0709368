package main

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// streamBreaker is a proxy in front of the service that cuts the first
// event stream it carries after a few events, as a NAT or a restarting
// load balancer would, and records the Last-Event-ID of every stream
// request.
type streamBreaker struct {
	mu       sync.Mutex
	lastIDs  []string
	upstream *url.URL
}

func (b *streamBreaker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasSuffix(r.URL.Path, "/events") {
		httputil.NewSingleHostReverseProxy(b.upstream).ServeHTTP(w, r)
		return
	}
	b.mu.Lock()
	b.lastIDs = append(b.lastIDs, r.Header.Get("Last-Event-ID"))
	first := len(b.lastIDs) == 1
	b.mu.Unlock()
	if !first {
		rp := httputil.NewSingleHostReverseProxy(b.upstream)
		rp.FlushInterval = -1
		rp.ServeHTTP(w, r)
		return
	}
	req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, b.upstream.String()+r.URL.Path, nil)
	req.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	sc := bufio.NewScanner(resp.Body)
	events := 0
	for sc.Scan() && events < 3 {
		line := sc.Text()
		w.Write([]byte(line + "\n"))
		if line == "" {
			events++
		}
	}
	w.(http.Flusher).Flush()
	// Returning ends the stream without its end message.
}

// TestClientWaitSurvivesABrokenEventStream: `client shutdown --wait` whose
// event stream is cut mid-job reconnects with the last event id it saw,
// shows every event of the job exactly once, and exits 0 when it succeeds.
func TestClientWaitSurvivesABrokenEventStream(t *testing.T) {
	svc := startE2E(t, nil)
	up, err := url.Parse(svc.url)
	if err != nil {
		t.Fatal(err)
	}
	b := &streamBreaker{upstream: up}
	proxy := httptest.NewServer(b)
	defer proxy.Close()
	tf := writeTokenFile(t, svc.token)
	out, errOut, err := runCLI("client", "shutdown", "--wait", "--url", proxy.URL, "--token-file", tf)
	if err != nil {
		t.Fatalf("shutdown --wait through a broken stream: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
	}
	if !strings.Contains(out, "event stream lost") || !strings.Contains(out, "job 1 succeeded") {
		t.Errorf("output does not show the reconnect and the success:\n%s", out)
	}
	b.mu.Lock()
	ids := append([]string(nil), b.lastIDs...)
	b.mu.Unlock()
	if len(ids) != 2 || ids[0] != "" || ids[1] == "" {
		t.Fatalf("stream requests with Last-Event-ID %q: want a first without and a second with one", ids)
	}
	evs, err := svc.main.Store.Events(context.Background(), 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	shown := regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d (info |warn |error) `).FindAllString(out, -1)
	if len(shown) != len(evs) {
		t.Errorf("%d event lines shown, the job has %d events: a reconnect must neither repeat nor lose one\n%s", len(shown), len(evs), out)
	}
}

// TestClientExitStatus runs the real binary: 0 for a job that succeeded,
// 1 for an API error or a failed job, 2 for a bad command line.
func TestClientExitStatus(t *testing.T) {
	svc := startE2E(t, nil)
	tf := writeTokenFile(t, svc.token)
	bin := shutdowndBinary(t)
	status := func(args ...string) int {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"client"}, args...)...)
		cmd.Env = []string{"SHUTDOWND_URL=" + svc.url, "SHUTDOWND_TOKEN_FILE=" + tf}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return 0
		case errors.As(err, &ee):
			return ee.ExitCode()
		}
		t.Fatalf("client %v: %v\n%s", args, err, out)
		return -1
	}
	if got := status("simulate", "--wait"); got != 0 {
		t.Errorf("simulate --wait (succeeds): exit %d, want 0", got)
	}
	h := svc.demo.Site.Host("compute-02")
	h.SSH.SetReachable(false)
	if got := status("simulate", "--wait"); got != 1 {
		t.Errorf("simulate --wait (fails): exit %d, want 1", got)
	}
	h.SSH.SetReachable(true)
	if got := status("job", "99"); got != 1 {
		t.Errorf("job 99 (not found): exit %d, want 1", got)
	}
	if got := status("frobnicate"); got != 2 {
		t.Errorf("unknown action: exit %d, want 2", got)
	}
	if got := status("job"); got != 2 {
		t.Errorf("job without an id: exit %d, want 2", got)
	}
}
