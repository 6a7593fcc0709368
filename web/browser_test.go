package web

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/handlers"
	"github.com/edgeops/shutdownd/runner"
	"github.com/edgeops/shutdownd/sitesim"
	"github.com/edgeops/shutdownd/store"
)

// chromiumPath finds Debian's chromium, or skips (fails under CI=true).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/chromium", "chromium", "chromium-browser"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium not installed (apt-get install chromium)")
	}
	t.Skip("chromium not installed; skipping the browser test (apt-get install chromium)")
	return ""
}

// siteStack is the real service stack (store, runner, API, pages) on a real
// HTTP server, in front of a simulated site.
type siteStack struct {
	site  *sitesim.Site
	cfg   *config.Config
	st    *store.Store
	run   *runner.Runner
	srv   *httptest.Server
	token string // read scope
}

// startStack starts a simulated site shaped by opts and the service for it;
// tune adjusts the pages' options.
func startStack(t *testing.T, opts sitesim.Options, tune func(*Options)) *siteStack {
	t.Helper()
	ctx := context.Background()
	site, err := sitesim.Start(ctx, opts)
	if err != nil {
		t.Fatalf("start site: %v", err)
	}
	t.Cleanup(site.Close)
	cfgPath, err := site.WriteConfig("127.0.0.1:0", filepath.Join(opts.Dir, "shutdownd.db"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, cfg.Database)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	run := runner.New(cfg, st, runner.Options{Logger: log})
	runCtx, stopRunner := context.WithCancel(ctx)
	runDone := make(chan struct{})
	go func() { defer close(runDone); _ = run.Run(runCtx) }()
	t.Cleanup(func() { stopRunner(); <-runDone })
	api := handlers.New(handlers.Options{Store: st, Runner: run, Logger: log})
	wo := Options{Store: st, API: api, Logger: log, Hosts: cfg.Hosts, Forecaster: run}
	if tune != nil {
		tune(&wo)
	}
	if _, err := Mount(api.Router(), wo); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	token, err := store.NewTokenSecret()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateToken(ctx, "operator", store.HashToken(token), []string{"read"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	return &siteStack{site: site, cfg: cfg, st: st, run: run, srv: srv, token: token}
}

// newBrowser starts a headless Chromium; the returned context carries a
// timeout for the whole test.
func newBrowser(t *testing.T, chrome string, within time.Duration) context.Context {
	t.Helper()
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chrome),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(filepath.Join(t.TempDir(), "chromium")),
		chromedp.WindowSize(1280, 900),
	)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(alloc)
	t.Cleanup(cancelBrowser)
	// The first call starts the browser and must not carry a timeout.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	tctx, cancel := context.WithTimeout(bctx, within)
	t.Cleanup(cancel)
	return tctx
}

// artifact keeps a screenshot or PDF: in $SHUTDOWND_ARTIFACTS when set (to
// look at them), else in the test's temp dir.
func artifact(t *testing.T, name string, data []byte) {
	t.Helper()
	dir := os.Getenv("SHUTDOWND_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if len(data) < 1000 {
		t.Errorf("%s is only %d bytes", name, len(data))
	}
}

func evalJS[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// noOverflowAt checks that the page does not scroll sideways at a width.
func noOverflowAt(t *testing.T, ctx context.Context, width int64, what string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(width, 844)); err != nil {
		t.Fatal(err)
	}
	if evalJS[bool](t, ctx, `document.documentElement.scrollWidth > document.documentElement.clientWidth + 1`) {
		t.Errorf("%s scrolls sideways at %d px", what, width)
	}
}

// TestBrowser drives a real headless Chromium through the history pages
// against the real service stack (store, runner, API, pages) and a simulated
// site: log in, see a finished job, open it, watch a running shutdown
// progress without reloading, and keep a screenshot.
func TestBrowser(t *testing.T) {
	chrome := chromiumPath(t)
	ctx := context.Background()

	// A small site whose shutdown takes a few seconds, so there is progress
	// to watch. One VM is named like an XSS payload.
	opts := sitesim.DemoOptions(t.TempDir())
	opts.VMs = []sitesim.VM{{ID: "vm-xss", Name: xss, Project: "web", Status: "ACTIVE", StopDelay: 1500 * time.Millisecond}}
	for i := range 8 {
		opts.VMs = append(opts.VMs, sitesim.VM{ID: fmt.Sprintf("vm-%d", i), Name: fmt.Sprintf("web-%d", i),
			Project: "web", Status: "ACTIVE", StopDelay: time.Duration(300+i*250) * time.Millisecond})
	}
	opts.PowerOffDelay, opts.SoftOffDelay, opts.SSHLatency = 400*time.Millisecond, 200*time.Millisecond, 0
	opts.PollInterval, opts.BMCPollEvery = 200*time.Millisecond, 50*time.Millisecond
	opts.HostOff, opts.BMCSoftOff, opts.BMCHardOff = 3*time.Second, 2*time.Second, 2*time.Second
	s := startStack(t, opts, nil)
	st, run, srv, token := s.st, s.run, s.srv, s.token

	// A finished job: a simulation, run to its end before the browser starts.
	sim, err := st.CreateSimulation(ctx, store.NewJob{TokenName: "monitoring", RemoteAddr: "127.0.0.1", Reason: "weekly check"})
	if err != nil {
		t.Fatal(err)
	}
	run.Kick()
	waitJob(t, st, sim.ID, 20*time.Second)

	tctx := newBrowser(t, chrome, 45*time.Second)
	var dialogs atomic.Int32
	if err := chromedp.Listen(tctx, func(ev any) {
		if _, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			dialogs.Add(1)
			go chromedp.Run(tctx, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
				_, err := cdp.Call(ctx, t, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
				return err
			}))
		}
	}); err != nil {
		t.Fatalf("listen to chromium: %v", err)
	}

	// Log in: the history link redirects to the form and back.
	err = chromedp.Do(tctx,
		chromedp.Navigate(srv.URL+"/history"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Submit(chromedp.ID("token")),
		chromedp.WaitVisible(chromedp.CSS("table.jobs")),
	)
	if err != nil {
		t.Fatalf("log in: %v", err)
	}
	listText, err := chromedp.Run(tctx, chromedp.Text(chromedp.CSS("table.jobs")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(listText, "weekly check") || !strings.Contains(listText, "succeeded") || !strings.Contains(listText, "monitoring") {
		t.Fatalf("history list lacks the finished simulation: %q", listText)
	}

	// Open the finished job from the list.
	err = chromedp.Do(tctx,
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`a[href="/history/%d"]`, sim.ID))),
		chromedp.WaitVisible(chromedp.ID("live")),
	)
	if err != nil {
		t.Fatalf("open job: %v", err)
	}
	jobText, err := chromedp.Run(tctx, chromedp.Text(chromedp.ID("live")))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"succeeded", "compute-01", "check-ssh", "Event log", "intact"} {
		if !strings.Contains(jobText, want) {
			t.Errorf("job page lacks %q", want)
		}
	}

	// Start a shutdown, open its page, and watch it progress in place.
	sd, _, err := st.CreateShutdown(ctx, store.NewJob{TokenName: "ups-controller", RemoteAddr: "127.0.0.1", Reason: "utility power lost"})
	if err != nil {
		t.Fatal(err)
	}
	run.Kick()
	err = chromedp.Do(tctx,
		chromedp.Navigate(fmt.Sprintf("%s/history/%d", srv.URL, sd.ID)),
		chromedp.WaitVisible(chromedp.ID("live")),
	)
	if err != nil {
		t.Fatalf("open running job: %v", err)
	}
	if _, err := chromedp.Run(tctx, chromedp.Evaluate[bool](`window.__notReloaded = true`)); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	deadline := time.Now().Add(30 * time.Second)
	var state string
	for {
		state, err = chromedp.Run(tctx, chromedp.Evaluate[string](`document.getElementById("live").dataset.state`))
		if err != nil {
			t.Fatalf("read live state: %v", err)
		}
		line, err := chromedp.Run(tctx, chromedp.Evaluate[string](
			`document.querySelector("#live .state-line").textContent.trim().replace(/\s+/g, " ")`))
		if err != nil {
			t.Fatalf("read live state: %v", err)
		}
		seen[line] = true
		if state == "succeeded" || state == "failed" || state == "cancelled" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the page never showed the job ending; saw %v", seen)
		}
		time.Sleep(50 * time.Millisecond) // polling the page, not waiting for the job
	}
	notReloaded, err := chromedp.Run(tctx, chromedp.Evaluate[bool](`window.__notReloaded === true`))
	if err != nil {
		t.Fatal(err)
	}
	if !notReloaded {
		t.Fatal("the page reloaded instead of updating in place")
	}
	liveText, err := chromedp.Run(tctx, chromedp.Text(chromedp.ID("live")))
	if err != nil {
		t.Fatal(err)
	}
	if state != "succeeded" {
		t.Errorf("shutdown ended %s: %s", state, liveText)
	}
	if len(seen) < 3 {
		t.Errorf("saw %d distinct states while watching, want progress: %v", len(seen), seen)
	}
	if !strings.Contains(liveText, xss) || !strings.Contains(liveText, "os-stop") || !strings.Contains(liveText, "ssh-poweroff") {
		t.Errorf("live page lacks the VM named like a script (as text) or the host actions")
	}
	if n := dialogs.Load(); n != 0 {
		t.Fatalf("%d JavaScript dialogs opened: data was executed", n)
	}

	// Screenshot, then a phone-sized viewport without horizontal scrolling.
	shot, err := chromedp.Run(tctx, chromedp.FullScreenshot(80))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	artifact(t, "job.jpg", shot)
	noOverflowAt(t, tctx, 390, "the job page")
}

// waitJob polls the store until the job is final.
func waitJob(t *testing.T, st *store.Store, id int64, within time.Duration) store.Job {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		j, err := st.Job(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if j.State.Final() {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %d still %s after %s", id, j.State, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
