package openstack_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/edgeops/shutdownd/runner/openstack"
	"github.com/edgeops/shutdownd/sitesim"
)

// startCloud starts a simulated Keystone+Nova and writes its clouds.yaml
// (cloud "edge") into a temp dir.
func startCloud(t *testing.T, opts sitesim.NovaOptions) (*sitesim.Nova, string) {
	t.Helper()
	if opts.RetryAfter == "" {
		opts.RetryAfter = "0"
	}
	n := sitesim.NewNova(opts)
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	path := filepath.Join(t.TempDir(), "clouds.yaml")
	if err := os.WriteFile(path, []byte(n.CloudsYAML("edge")), 0o600); err != nil {
		t.Fatal(err)
	}
	return n, path
}

// fastOptions retries quickly so fault tests finish in milliseconds.
func fastOptions(path string) openstack.Options {
	return openstack.Options{
		Cloud: "edge", CloudsFile: path, RequestTimeout: 5 * time.Second,
		MaxRetries: 50, BaseBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond,
	}
}

func newClient(t *testing.T, opts openstack.Options) *openstack.Client {
	t.Helper()
	c, err := openstack.New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestNewAuthenticates(t *testing.T) {
	t.Parallel()
	const password = "correct-horse-battery"
	_, good := startCloud(t, sitesim.NovaOptions{Password: password})
	wrong, _ := startCloud(t, sitesim.NovaOptions{Password: "something-else"})
	badPath := filepath.Join(t.TempDir(), "clouds.yaml")
	// The same clouds.yaml (password "correct-horse-battery") pointed at a
	// cloud whose password differs.
	yaml := strings.Replace(wrong.CloudsYAML("edge"), "something-else", password, 1)
	if err := os.WriteFile(badPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		opts    openstack.Options
		wantErr []string // substrings; nil means success
	}{
		{"ok", openstack.Options{Cloud: "edge", CloudsFile: good}, nil},
		{"wrong password", openstack.Options{Cloud: "edge", CloudsFile: badPath}, []string{"openstack auth:", "authentication failed", "HTTP 401"}},
		{"unknown cloud", openstack.Options{Cloud: "nope", CloudsFile: good}, []string{"openstack config", `"nope"`}},
		{"missing file", openstack.Options{Cloud: "edge", CloudsFile: filepath.Join(t.TempDir(), "absent.yaml")}, []string{"openstack config", "not found"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var retries int
			tc.opts.OnRetry = func(string, int, error, time.Duration) { retries++ }
			c, err := openstack.New(context.Background(), tc.opts)
			if tc.wantErr == nil {
				if err != nil || c == nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("New succeeded, want an error")
			}
			for _, s := range tc.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			if strings.Contains(err.Error(), password) {
				t.Errorf("error leaks the password: %q", err)
			}
			if retries != 0 {
				t.Errorf("a permanent auth failure was retried %d times", retries)
			}
		})
	}
}

// TestNewUsesOSClientConfigFile checks the standard lookup: no CloudsFile,
// OS_CLIENT_CONFIG_FILE points at clouds.yaml, OS_CLOUD names the cloud.
func TestNewUsesOSClientConfigFile(t *testing.T) {
	n, path := startCloud(t, sitesim.NovaOptions{VMs: []sitesim.VM{{ID: "a", Name: "a"}}})
	t.Setenv("OS_CLIENT_CONFIG_FILE", path)
	t.Setenv("OS_CLOUD", "edge")
	c := newClient(t, openstack.Options{})
	got, err := c.ListServers(context.Background())
	if err != nil || len(got) != 1 || n.ListRequests() != 1 {
		t.Fatalf("list via OS_CLIENT_CONFIG_FILE: %v %v", got, err)
	}
}

func TestListServersAllPages(t *testing.T) {
	t.Parallel()
	vms := sitesim.GenerateVMs([]string{"admin", "edge", "ci", "iot", "web"}, 500, 3, time.Millisecond, time.Millisecond)
	tests := []struct {
		pageSize  int
		wantPages int
	}{
		{1000, 3}, // 1000 + 1000 + 500
		{500, 6},  // five full pages, and Nova links a full last page to an empty one
		{2500, 2},
	}
	for _, tc := range tests {
		n, path := startCloud(t, sitesim.NovaOptions{VMs: vms, PageSize: tc.pageSize})
		c := newClient(t, fastOptions(path))
		got, err := c.ListServers(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(vms) {
			t.Fatalf("page size %d: listed %d servers, want %d", tc.pageSize, len(got), len(vms))
		}
		if n.ListRequests() != tc.wantPages {
			t.Errorf("page size %d: %d list requests, want %d", tc.pageSize, n.ListRequests(), tc.wantPages)
		}
		tenants := map[string]bool{}
		for i, s := range got {
			want := vms[i]
			if s.ID != want.ID || s.Name != want.Name || s.Status != want.Status || s.TenantID != n.ProjectID(want.Project) {
				t.Fatalf("server %d = %+v, want %+v", i, s, want)
			}
			tenants[s.TenantID] = true
		}
		if len(tenants) != 5 {
			t.Fatalf("servers of %d projects, want 5 (all_tenants)", len(tenants))
		}
	}
}

func TestStop(t *testing.T) {
	t.Parallel()
	n, path := startCloud(t, sitesim.NovaOptions{VMs: []sitesim.VM{
		{ID: "web", Name: "web-1", StopDelay: 20 * time.Millisecond},
		{ID: "slow", Name: "db-1", StopDelay: time.Hour},
		{ID: "off", Name: "old", Status: "SHUTOFF"},
	}})
	var retries int
	opts := fastOptions(path)
	opts.OnRetry = func(string, int, error, time.Duration) { retries++ }
	c := newClient(t, opts)
	ctx := context.Background()

	if err := c.Stop(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if n.StopRequestsFor("web") != 1 {
		t.Fatalf("os-stop requests for web: %d", n.StopRequestsFor("web"))
	}
	waitFor(t, "web SHUTOFF in the listing", func() bool {
		list, err := c.ListServers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return list[0].Status == "SHUTOFF" && list[0].TaskState == ""
	})

	if err := c.Stop(ctx, "slow"); err != nil {
		t.Fatal(err)
	}
	list, err := c.ListServers(ctx)
	if err != nil || list[1].TaskState != "powering-off" || list[1].Status != "ACTIVE" {
		t.Fatalf("slow during stop: %+v %v", list[1], err)
	}

	tests := []struct {
		id      string
		want    error
		message string
	}{
		{"web", openstack.ErrConflict, "vm_state stopped"},
		{"off", openstack.ErrConflict, "vm_state stopped"},
		{"slow", openstack.ErrConflict, "task_state powering-off"},
		{"ghost", openstack.ErrNotFound, "could not be found"},
	}
	for _, tc := range tests {
		before := n.StopRequestsFor(tc.id)
		err := c.Stop(ctx, tc.id)
		if !errors.Is(err, tc.want) {
			t.Errorf("Stop(%s) = %v, want %v", tc.id, err, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), "stop vm "+tc.id) || !strings.Contains(err.Error(), tc.message) {
			t.Errorf("Stop(%s) error %q lacks context %q", tc.id, err, tc.message)
		}
		if n.StopRequestsFor(tc.id)-before != 1 {
			t.Errorf("Stop(%s) sent %d requests, want 1 (4xx is not retried)", tc.id, n.StopRequestsFor(tc.id)-before)
		}
	}
	if retries != 0 {
		t.Fatalf("OnRetry called %d times on a healthy cloud", retries)
	}
}

func TestRetriesThroughFaults(t *testing.T) {
	t.Parallel()
	vms := sitesim.GenerateVMs([]string{"edge", "ci"}, 20, 9, time.Millisecond, 3*time.Millisecond)
	n, path := startCloud(t, sitesim.NovaOptions{VMs: vms, PageSize: 15, FailRate: 0.3, RateLimit429: 0.2, Seed: 11})

	var mu sync.Mutex
	retriesByOp := map[string]int{}
	var problems []string
	opts := fastOptions(path)
	opts.OnRetry = func(op string, attempt int, err error, wait time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		retriesByOp[op]++
		is429 := gophercloud.ResponseCodeIs(err, 429)
		switch {
		case is429 && wait != 0:
			problems = append(problems, "429 with Retry-After 0 waited "+wait.String())
		case !is429 && (wait < opts.BaseBackoff/2 || wait > opts.MaxBackoff):
			problems = append(problems, "backoff "+wait.String()+" outside [base/2, max]")
		case attempt < 1:
			problems = append(problems, "attempt < 1")
		}
	}
	c := newClient(t, opts)
	ctx := context.Background()

	list, err := c.ListServers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != len(vms) {
		t.Fatalf("listed %d, want %d", len(list), len(vms))
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(list))
	var toStop []string
	for _, s := range list {
		if s.Status != "ACTIVE" && s.Status != "ERROR" {
			continue
		}
		toStop = append(toStop, s.ID)
		wg.Go(func() { errs <- c.Stop(ctx, s.ID) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Stop: %v", err)
		}
	}
	for _, id := range toStop {
		waitFor(t, id+" SHUTOFF", func() bool { return n.Status(id) == "SHUTOFF" })
	}
	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Fatalf("retry waits: %v", problems)
	}
	// Every injected fault must have been answered by exactly one retry.
	total := retriesByOp["list-servers"] + retriesByOp["os-stop"]
	if total != n.Faults() || retriesByOp["list-servers"] == 0 || retriesByOp["os-stop"] == 0 {
		t.Fatalf("retries %v, faults %d", retriesByOp, n.Faults())
	}
}

func TestRetryGivesUp(t *testing.T) {
	t.Parallel()
	n, path := startCloud(t, sitesim.NovaOptions{VMs: []sitesim.VM{{ID: "a"}}, FailRate: 1})
	opts := fastOptions(path)
	opts.MaxRetries = 3
	var retries int
	opts.OnRetry = func(string, int, error, time.Duration) { retries++ }
	c := newClient(t, opts)
	err := c.Stop(context.Background(), "a")
	if err == nil || errors.Is(err, openstack.ErrConflict) || !strings.Contains(err.Error(), "giving up after 4 attempts") {
		t.Fatalf("Stop = %v", err)
	}
	if !gophercloud.ResponseCodeIs(err, 500) && !gophercloud.ResponseCodeIs(err, 503) {
		t.Fatalf("error does not carry the HTTP status: %v", err)
	}
	if retries != 3 || n.StopRequestsFor("a") != 4 {
		t.Fatalf("retries %d, requests %d; want 3 and 4", retries, n.StopRequestsFor("a"))
	}
}

func TestContextCancelStopsRetries(t *testing.T) {
	t.Parallel()
	n, path := startCloud(t, sitesim.NovaOptions{VMs: []sitesim.VM{{ID: "a"}}, FailRate: 1})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := fastOptions(path)
	opts.MaxRetries = 1000
	opts.BaseBackoff, opts.MaxBackoff = time.Hour, time.Hour
	var retries int
	opts.OnRetry = func(_ string, _ int, _ error, wait time.Duration) {
		retries++
		if wait < 30*time.Minute {
			t.Errorf("wait %v, want about an hour", wait)
		}
		time.AfterFunc(10*time.Millisecond, cancel) // cancel during the wait
	}
	c := newClient(t, opts)
	start := time.Now()
	err := c.Stop(ctx, "a")
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "last error: HTTP 50") {
		t.Fatalf("Stop = %v, want context.Canceled with the last error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("cancel did not interrupt the backoff wait: %v", d)
	}
	if retries != 1 || n.StopRequestsFor("a") != 1 {
		t.Fatalf("retries %d, requests %d; want 1 and 1", retries, n.StopRequestsFor("a"))
	}
	_, err = c.ListServers(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("ListServers on a cancelled context = %v", err)
	}
	if n.ListRequests() != 0 {
		t.Fatalf("a cancelled listing reached Nova %d times", n.ListRequests())
	}
}

func TestTimeoutIsRetried(t *testing.T) {
	t.Parallel()
	n, path := startCloud(t, sitesim.NovaOptions{VMs: []sitesim.VM{{ID: "a", StopDelay: time.Millisecond}}})
	opts := fastOptions(path)
	opts.RequestTimeout = 50 * time.Millisecond
	var timeouts int
	opts.OnRetry = func(op string, _ int, err error, _ time.Duration) {
		var ne net.Error
		if op == "os-stop" && errors.As(err, &ne) && ne.Timeout() {
			timeouts++
		}
		n.SetLatency(0) // the API recovers
	}
	c := newClient(t, opts)
	n.SetLatency(time.Second)
	if err := c.Stop(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	if timeouts != 1 {
		t.Fatalf("timeouts retried: %d, want 1", timeouts)
	}
	waitFor(t, "a SHUTOFF", func() bool { return n.Status("a") == "SHUTOFF" })
}

func TestReauthenticatesOnExpiredToken(t *testing.T) {
	t.Parallel()
	n, path := startCloud(t, sitesim.NovaOptions{VMs: []sitesim.VM{{ID: "a"}, {ID: "b"}}})
	c := newClient(t, fastOptions(path))
	n.ExpireTokens()
	got, err := c.ListServers(context.Background())
	if err != nil || len(got) != 2 {
		t.Fatalf("list after token expiry: %v %v", got, err)
	}
	if n.Auths() != 2 {
		t.Fatalf("Auths = %d, want 2 (initial + re-authentication)", n.Auths())
	}
}
