package web

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/store"
)

func TestPowerFrom(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	a := func(kind store.TargetKind, op store.Operation, state store.ActionState, errMsg string) store.Action {
		return store.Action{TargetKind: kind, Target: "c1", Operation: op, State: state, Error: errMsg, Detail: "", StartedAt: &at, FinishedAt: &at}
	}
	shutdown := store.Job{ID: 9, Kind: store.KindShutdown}
	sim := store.Job{ID: 8, Kind: store.KindSimulation}
	startup := store.Job{ID: 10, Kind: store.KindStartup}
	off := a("host", "power-off", store.ActionSucceeded, "")
	off.Detail = "off via SSH after 4s"
	back := a("host", "power-on", store.ActionSucceeded, "")
	back.Detail = "SSH answers with its known host key after 3s"
	cases := []struct {
		name   string
		job    store.Job
		acts   []store.Action
		state  string // "" when the job does not decide
		source string
	}{
		{"shutdown confirmed off", shutdown, []store.Action{off, a("bmc", "bmc-confirm-off", store.ActionSucceeded, "")},
			PowerOff, "shutdown job 9: off via SSH after 4s"},
		{"shutdown not confirmed", shutdown, []store.Action{a("host", "power-off", store.ActionFailed, "still on after BMC hard off")},
			PowerUnknown, "shutdown job 9: not confirmed off: still on after BMC hard off"},
		{"shutdown in progress", shutdown, []store.Action{a("host", "power-off", store.ActionRunning, "")},
			PowerUnknown, "shutdown job 9: power-off in progress"},
		{"shutdown without a power-off for the host", shutdown, []store.Action{a("host", "self-poweroff", store.ActionSucceeded, "")}, "", ""},
		{"no records", shutdown, nil, "", ""},
		{"simulation: BMC read On", sim, []store.Action{a("host", "check-ssh", store.ActionSucceeded, ""), a("bmc", "check-bmc", store.ActionSucceeded, "")},
			PowerOn, "simulation job 8: the BMC read On"},
		{"simulation: BMC read Off", sim, []store.Action{a("host", "check-ssh", store.ActionFailed, "ssh: connection refused"), a("bmc", "check-bmc", store.ActionFailed, "power state is Off, expected On")},
			PowerOff, "simulation job 8: the BMC read Off"},
		{"simulation: BMC unreachable, SSH answered", sim, []store.Action{a("host", "check-ssh", store.ActionSucceeded, ""), a("bmc", "check-bmc", store.ActionFailed, "dial tcp: i/o timeout")},
			PowerOn, "simulation job 8: answered SSH"},
		{"simulation: nothing answered", sim, []store.Action{a("host", "check-ssh", store.ActionFailed, "ssh: no route to host"), a("bmc", "check-bmc", store.ActionFailed, "dial tcp: i/o timeout")},
			PowerUnknown, "simulation job 8: check-bmc failed: dial tcp: i/o timeout"},
		{"simulation still checking", sim, []store.Action{a("host", "check-ssh", store.ActionRunning, "")}, "", ""},
		{"startup brought it back", startup, []store.Action{a("bmc", "bmc-power-on", store.ActionSucceeded, ""), a("host", "wait-ssh", store.ActionSucceeded, "")},
			PowerOn, "startup job 10: back up (wait-ssh succeeded)"},
		{"startup: SSH back although the BMC read failed", startup, []store.Action{a("bmc", "bmc-power-state", store.ActionFailed, "BMC unreachable"), back},
			PowerOn, "startup job 10: SSH answers with its known host key after 3s"},
		{"startup: not back", startup, []store.Action{a("bmc", "bmc-power-on", store.ActionSucceeded, ""), a("host", "power-on", store.ActionFailed, "SSH does not answer after 10m")},
			PowerUnknown, "startup job 10: not back: SSH does not answer after 10m"},
		{"startup failed for it", startup, []store.Action{a("bmc", "bmc-power-on", store.ActionFailed, "BMC unreachable")},
			PowerUnknown, "startup job 10: bmc-power-on failed: BMC unreachable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, ok := powerFrom(tc.job, tc.acts)
			if ok != (tc.state != "") {
				t.Fatalf("decided %v (%+v), want %v", ok, p, tc.state != "")
			}
			if !ok {
				return
			}
			if p.State != tc.state || p.Source != tc.source || p.JobID != tc.job.ID || p.At == nil {
				t.Errorf("got %+v, want %s from %q", p, tc.state, tc.source)
			}
		})
	}
}

func TestForecastVerdict(t *testing.T) {
	t.Parallel()
	f := store.Forecast{Estimate: time.Minute, WorstCase: 5 * time.Minute}
	for runtime, want := range map[time.Duration]string{
		10 * time.Minute: "covered", 5 * time.Minute: "covered", 2 * time.Minute: "estimate", 30 * time.Second: "short",
	} {
		v := newForecastView(f, &PowerReading{Runtime: runtime})
		if v.Verdict != want || v.Margin != runtime-time.Minute || v.Chart.Runtime == nil {
			t.Errorf("runtime %s: verdict %q margin %s, want %q", runtime, v.Verdict, v.Margin, want)
		}
	}
	if v := newForecastView(f, nil); v.Verdict != "" || v.Chart.Runtime != nil {
		t.Errorf("without a reading: %+v", v)
	}
}

// TestOverview reads the overview over HTTP from a real store: the hosts
// by role with the power their last records say, the self host On, the
// simulation's age turning into a warning past simulation_max_age, and
// "never" for what never ran.
func TestOverview(t *testing.T) {
	var clock time.Time
	hosts := []config.Host{
		{Name: "mgmt-01", Role: config.RoleControl, Self: true},
		{Name: "compute-01", Role: config.RoleCompute},
		{Name: "storage-01", Role: config.RoleStorage},
		{Name: "compute-02", Role: config.RoleCompute},
	}
	e := newEnv(t, func(o *Options) {
		o.Hosts = hosts
		o.Now = func() time.Time {
			if clock.IsZero() {
				return time.Now()
			}
			return clock
		}
	})
	c := e.client(t)
	resp, _ := e.get(t, c, "/")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login?next=%2F" {
		t.Fatalf("GET / without a session: %d %s, want the login form", resp.StatusCode, resp.Header.Get("Location"))
	}
	c = e.loggedIn(t)
	_, body := e.get(t, c, "/")
	mustContain(t, body, "No job is running.", "No simulation has succeeded yet", `class="last-shutdown">never`, `class="last-startup">never`,
		`data-host="mgmt-01"`, "this machine runs shutdownd", "no record in the last 20 jobs")
	// Role order: compute, storage, control; file order within a role.
	order := []string{`data-host="compute-01"`, `data-host="compute-02"`, `data-host="storage-01"`, `data-host="mgmt-01"`}
	last := -1
	for _, h := range order {
		i := strings.Index(body, h)
		if i < last {
			t.Errorf("%s out of role order", h)
		}
		last = i
	}

	sim := finishedJob(t, e.st, "weekly check", map[string]string{"compute-01": "", "storage-01": ""})
	finishedJob(t, e.st, "after the change", map[string]string{"storage-01": "ssh: connection refused"})
	_, body = e.get(t, c, "/")
	mustContain(t, body, `<a href="/history/1">Job 1</a> finished <strong>just now</strong>`, `<span class="power power-On">On</span>`,
		"simulation job 1: answered SSH", "simulation job 2: check-ssh failed: ssh: connection refused",
		`Newest simulation: <a href="/history/2">job 2</a>`)
	if strings.Contains(body, `role="alert"`) {
		t.Error("a fresh simulation is shown as a warning")
	}

	clock = sim.FinishedAt.Add(8 * 24 * time.Hour)
	_, body = e.get(t, c, "/")
	mustContain(t, body, "finished <strong>8 days ago</strong>", "older than 7 days. Run a simulation", `role="alert"`)
	if strings.Contains(body, "\n<meta http-equiv=\"refresh\"") {
		t.Error("the overview reloads itself with no job running")
	}

	resp, body = e.get(t, c, "/history")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "weekly check") {
		t.Errorf("/history: %d", resp.StatusCode)
	}

	// A running job: its progress, and the page reloads itself.
	clock = time.Time{}
	run, _, err := e.st.CreateShutdown(context.Background(), store.NewJob{TokenName: "ups", Reason: "utility power lost"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.st.StartJob(context.Background(), run.ID); err != nil {
		t.Fatal(err)
	}
	if err := setCurrentStep(context.Background(), e.st, run.ID, "Stopping OpenStack VMs (3/9 off)"); err != nil {
		t.Fatal(err)
	}
	_, body = e.get(t, c, "/")
	mustContain(t, body, `<a href="/history/3"><strong>Job 3: shutdown</strong></a> running: <span class="current">Stopping OpenStack VMs (3/9 off)</span>`,
		`<progress id="active-progress"`, "\n<meta http-equiv=\"refresh\" content=\"5\">", `class="last-shutdown"><a href="/history/3">job 3</a>`)
}

// TestJobPageTimeline reads the timeline of a recorded shutdown from the
// job page and from its live part: one bar per host in the records'
// order, escalations marked, failures with their reason escaped in the
// hover title and in the table.
func TestJobPageTimeline(t *testing.T) {
	e := newEnv(t, nil)
	job, order := recordShutdown(t, e.st, bigShutdown{VMs: 40, Hosts: 6, FailedVMs: 2, SoftOff: 3, HardOff: 2, FailedHosts: 1})
	c := e.loggedIn(t)
	for _, path := range []string{fmt.Sprintf("/history/%d", job.ID), fmt.Sprintf("/history/%d/live", job.ID)} {
		resp, body := e.get(t, c, path)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
		mustContain(t, body, `<svg class="jobchart"`, `data-hosts="6"`, `data-failed="4"`, // hosts step, host-001, the VMs, the VM step
			`class="mark mark-soft-off"`, `class="mark mark-hard-off failed"`, "VMs still running",
			"40 at the start, 2 at the end (2 failed)", `<table class="chart-data cards">`,
			"host-001: failed", "error: still on after BMC hard off",
			"BMC hard off at &#43;", // html/template writes + so
			"BMC refused: &lt;script&gt;alert(1)&lt;/script&gt;")
		if strings.Contains(body, "<script>alert") {
			t.Errorf("%s: a record's text is markup", path)
		}
		last := -1
		for _, h := range order {
			i := strings.Index(body, `data-label="`+h+`"`)
			if i < last {
				t.Errorf("%s: host %s missing or out of the records' order", path, h)
			}
			last = i
		}
	}
}
