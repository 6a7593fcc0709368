package web

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/sitesim"
	"github.com/edgeops/shutdownd/store"
)

// TestBrowserPictures drives Chromium through the overview and the job
// timeline (issue 15) against the real stack and the demo's six hosts:
// the overview lists them with the last simulation's age; a running
// shutdown's timeline grows in place; the finished one has one bar per
// host in the order of the records, an escalation mark and a failure with
// its reason; both pages fit a 390 px phone, print, and work with
// JavaScript off.
func TestBrowserPictures(t *testing.T) {
	chrome := chromiumPath(t)
	ctx := context.Background()
	opts := sitesim.DemoOptions(t.TempDir())
	opts.VMsPerProject = 4
	opts.VMStopMin, opts.VMStopMax = 300*time.Millisecond, 1500*time.Millisecond
	opts.PowerOffDelay, opts.SoftOffDelay, opts.SSHLatency = 400*time.Millisecond, 200*time.Millisecond, 0
	opts.PollInterval, opts.BMCPollEvery = 200*time.Millisecond, 50*time.Millisecond
	opts.HostOff, opts.BMCSoftOff, opts.BMCHardOff = 1500*time.Millisecond, time.Second, time.Second
	// storage-02 ignores its power-off (the BMC soft off takes it down);
	// control-01 ignores everything and fails.
	for i := range opts.Hosts {
		switch opts.Hosts[i].Name {
		case "storage-02":
			opts.Hosts[i].IgnorePowerOff = true
		case "control-01":
			opts.Hosts[i].IgnorePowerOff, opts.Hosts[i].IgnoreSoftOff, opts.Hosts[i].IgnoreHardOff = true, true, true
		}
	}
	s := startStack(t, opts, func(o *Options) { o.SimulationMaxAge = 24 * time.Hour })
	if len(s.cfg.Hosts) != 6 {
		t.Fatalf("the demo site has %d hosts, want 6", len(s.cfg.Hosts))
	}
	sim, err := s.st.CreateSimulation(ctx, store.NewJob{TokenName: "monitoring", RemoteAddr: "127.0.0.1", Reason: "weekly check"})
	if err != nil {
		t.Fatal(err)
	}
	s.run.Kick()
	if j := waitJob(t, s.st, sim.ID, 30*time.Second); j.State != store.StateSucceeded {
		t.Fatalf("simulation %s: %s", j.State, j.Error)
	}

	bctx := newBrowser(t, chrome, 90*time.Second)
	// Log in from the overview: / sends to the form, which comes back.
	err = chromedp.Do(bctx,
		chromedp.Navigate(s.srv.URL+"/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), s.token),
		chromedp.Submit(chromedp.ID("token")),
		chromedp.WaitVisible(chromedp.ID("overview")),
	)
	if err != nil {
		t.Fatalf("log in: %v", err)
	}
	s.checkOverview(t, bctx, "On", "just now")

	// A shutdown, watched from its page: the timeline grows in place.
	sd, _, err := s.st.CreateShutdown(ctx, store.NewJob{TokenName: "ups-controller", RemoteAddr: "127.0.0.1", Reason: "utility power lost"})
	if err != nil {
		t.Fatal(err)
	}
	s.run.Kick()
	if err := chromedp.Do(bctx, chromedp.Navigate(fmt.Sprintf("%s/history/%d", s.srv.URL, sd.ID)),
		chromedp.WaitVisible(chromedp.CSS("svg.jobchart"))); err != nil {
		t.Fatalf("open the running job: %v", err)
	}
	evalJS[bool](t, bctx, `window.__notReloaded = true`)
	var rows []int
	deadline := time.Now().Add(45 * time.Second)
	for {
		n := evalJS[int](t, bctx, `+document.querySelector("svg.jobchart").dataset.rows`)
		if len(rows) == 0 || rows[len(rows)-1] != n {
			rows = append(rows, n)
		}
		if st := evalJS[string](t, bctx, `document.getElementById("live").dataset.state`); st == "succeeded" || st == "failed" || st == "cancelled" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the job never ended on the page; timeline rows seen: %v", rows)
		}
		time.Sleep(50 * time.Millisecond) // polling the page, not waiting for the job
	}
	if !evalJS[bool](t, bctx, `window.__notReloaded === true`) {
		t.Fatal("the page reloaded instead of growing in place")
	}
	// Three steps, the VMs curve and six hosts at the end, fewer before.
	if len(rows) < 3 || rows[0] >= rows[len(rows)-1] || rows[len(rows)-1] != 3+1+6 {
		t.Errorf("timeline rows seen while the job ran: %v; want it to grow to 10 in several updates", rows)
	}
	waitJob(t, s.st, sd.ID, 10*time.Second)
	s.checkFinishedJob(t, bctx, sd.ID)

	shot, err := chromedp.Run(bctx, chromedp.Screenshot(chromedp.CSS("section.chart")))
	if err != nil {
		t.Fatal(err)
	}
	artifact(t, "timeline.png", shot)
	pdf, err := chromedp.Run(bctx, chromedp.PrintToPDF(chromedp.PDFPaper(chromedp.PaperA4)))
	if err != nil {
		t.Fatalf("print the job page: %v", err)
	}
	artifact(t, "job.pdf", pdf)
	noOverflowAt(t, bctx, 390, "the job page")
	shot, err = chromedp.Run(bctx, chromedp.Screenshot(chromedp.CSS("section.chart")))
	if err != nil {
		t.Fatal(err)
	}
	artifact(t, "timeline-390.png", shot)

	if err := chromedp.Do(bctx, chromedp.EmulateViewport(1280, 900), chromedp.Navigate(s.srv.URL+"/"),
		chromedp.WaitVisible(chromedp.ID("overview"))); err != nil {
		t.Fatal(err)
	}
	s.checkOverview(t, bctx, "Off", "")
	shot, err = chromedp.Run(bctx, chromedp.Screenshot(chromedp.ID("overview")))
	if err != nil {
		t.Fatal(err)
	}
	artifact(t, "overview.png", shot)
	noOverflowAt(t, bctx, 390, "the overview")
	shot, err = chromedp.Run(bctx, chromedp.Screenshot(chromedp.ID("overview")))
	if err != nil {
		t.Fatal(err)
	}
	artifact(t, "overview-390.png", shot)

	// JavaScript off: the same pages, drawn by the server alone.
	if _, err := chromedp.Call(bctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(bctx, chromedp.EmulateViewport(1280, 900), chromedp.Navigate(fmt.Sprintf("%s/history/%d", s.srv.URL, sd.ID)),
		chromedp.WaitVisible(chromedp.CSS("svg.jobchart"))); err != nil {
		t.Fatalf("job page without JavaScript: %v", err)
	}
	if evalJS[bool](t, bctx, `document.documentElement.classList.contains("live-on")`) {
		t.Error("the page script ran with JavaScript disabled")
	}
	s.checkFinishedJob(t, bctx, sd.ID)
	if err := chromedp.Do(bctx, chromedp.Navigate(s.srv.URL+"/"), chromedp.WaitVisible(chromedp.ID("overview"))); err != nil {
		t.Fatalf("overview without JavaScript: %v", err)
	}
	s.checkOverview(t, bctx, "Off", "")
}

// checkOverview reads the overview: the six hosts in role order with a
// power state (want for all but control-01, which failed to go off after
// the shutdown), the last simulation's age, and the last shutdown.
func (s *siteStack) checkOverview(t *testing.T, ctx context.Context, want, age string) {
	t.Helper()
	hosts := evalJS[[]string](t, ctx, `[...document.querySelectorAll("table.hosts tbody tr")].map(r => r.dataset.host + "=" + r.querySelector(".power").textContent)`)
	var wantHosts []string
	for _, role := range config.Roles {
		for _, h := range s.cfg.Hosts {
			if h.Role != role {
				continue
			}
			state := want
			if want == "Off" && h.Name == "control-01" {
				state = "Unknown"
			}
			wantHosts = append(wantHosts, h.Name+"="+state)
		}
	}
	if !slices.Equal(hosts, wantHosts) {
		t.Errorf("overview hosts %v, want %v", hosts, wantHosts)
	}
	simText := evalJS[string](t, ctx, `document.querySelector(".sim-age").textContent`)
	if !strings.Contains(simText, "Job 1") || (age != "" && !strings.Contains(simText, age)) || strings.Contains(simText, "older than") {
		t.Errorf("last simulation: %q, want job 1, %q, no warning", simText, age)
	}
	last := evalJS[string](t, ctx, `document.querySelector(".last-shutdown").textContent + " | " + document.querySelector(".last-startup").textContent`)
	if want == "On" && last != "never | never" {
		t.Errorf("last shutdown and startup before any: %q", last)
	}
	if want == "Off" && (!strings.Contains(last, "job 2") || !strings.Contains(last, "took") || !strings.HasSuffix(last, "| never")) {
		t.Errorf("last shutdown and startup: %q, want job 2 with its duration, startup never", last)
	}
	if f := evalJS[string](t, ctx, `document.querySelector(".forecast-line").textContent`); !strings.Contains(f, "About") {
		t.Errorf("forecast: %q", f)
	}
}

// checkFinishedJob compares the finished shutdown's timeline with its
// records: one bar per host, in the order the power-offs were recorded,
// the soft off marked, control-01 failed with its reason on hover and in
// the table.
func (s *siteStack) checkFinishedJob(t *testing.T, ctx context.Context, id int64) {
	t.Helper()
	acts, err := s.st.Actions(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, a := range acts { // in id order: the order of the records
		if a.TargetKind == "host" && a.Operation == "power-off" {
			want = append(want, a.Target)
		}
	}
	got := evalJS[[]string](t, ctx, `[...document.querySelectorAll("svg.jobchart g.row-host")].filter(g => g.querySelector("rect.tl-bar")).map(g => g.dataset.label)`)
	if len(want) != 6 || !slices.Equal(got, want) {
		t.Errorf("host bars %v, want one per host in the records' order %v", got, want)
	}
	marks := evalJS[[]string](t, ctx, `[...document.querySelectorAll("svg.jobchart g.row-host svg.mark")].map(m => m.closest("g").dataset.label + " " + m.classList[1])`)
	if !slices.Contains(marks, "storage-02 mark-soft-off") || !slices.Contains(marks, "control-01 mark-hard-off") {
		t.Errorf("escalation marks %v, want storage-02's soft off and control-01's hard off", marks)
	}
	failed := evalJS[string](t, ctx, `(document.querySelector('svg.jobchart g.row-host.state-failed') || {}).textContent || ""`)
	if !strings.Contains(failed, "control-01") || !strings.Contains(failed, "still on after BMC hard off") {
		t.Errorf("the failed host's row (with its hover title) reads %q", failed)
	}
	row := evalJS[string](t, ctx, `[...document.querySelectorAll("table.chart-data tr.row-failed")].map(r => r.textContent).join(" | ")`)
	if !strings.Contains(row, "control-01") || !strings.Contains(row, "still on after BMC hard off") {
		t.Errorf("the timeline table's failed rows read %q", row)
	}
}
