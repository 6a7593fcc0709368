package timeline

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/store"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) *time.Time { t := t0.Add(d); return &t }

func near(a, b float64) bool { return math.Abs(a-b) < 0.01 }

// job is a shutdown that started at t0 and ran for d (still running when
// d is 0).
func job(d time.Duration, deadline *time.Time) store.Job {
	j := store.Job{ID: 7, Kind: store.KindShutdown, State: store.StateSucceeded, CreatedAt: t0.Add(-time.Second),
		StartedAt: at(0), Deadline: deadline}
	if d == 0 {
		j.State = store.StateRunning
	} else {
		j.FinishedAt = at(d)
	}
	return j
}

func TestAxisAndLines(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		job       store.Job
		ups       *time.Time
		now       time.Time
		wantEnd   time.Duration
		wantTicks []string
		wantLines []Line // Kind, X, Label, Beyond compared
	}{
		{name: "finished job spans start to end",
			job: job(10*time.Second, nil), wantEnd: 10 * time.Second,
			wantTicks: []string{"0", "+2s", "+4s", "+6s", "+8s", "+10s"}},
		{name: "running job ends now",
			job: job(0, nil), now: t0.Add(90 * time.Second), wantEnd: 90 * time.Second,
			wantTicks: []string{"0", "+30s", "+1m", "+1m30s"}},
		{name: "a job shorter than a second still has a second of axis",
			job: job(300*time.Millisecond, nil), wantEnd: time.Second,
			wantTicks: []string{"0", "+200ms", "+400ms", "+600ms", "+800ms", "+1s"}},
		{name: "deadline within reach stretches the axis, with a margin",
			job: job(10*time.Second, at(30*time.Second)), wantEnd: 30*time.Second + 600*time.Millisecond,
			wantTicks: []string{"0", "+10s", "+20s", "+30s"},
			wantLines: []Line{{Kind: "deadline", X: 100 * 30 / 30.6, Label: "deadline +30s"}}},
		{name: "deadline far out stays at the edge, labelled",
			job: job(10*time.Second, at(time.Hour)), wantEnd: 10 * time.Second,
			wantTicks: []string{"0", "+2s", "+4s", "+6s", "+8s", "+10s"},
			wantLines: []Line{{Kind: "deadline", X: 100, Label: "deadline +1h →", Beyond: true}}},
		{name: "deadline before the start is at the left edge",
			job: job(10*time.Second, at(-5*time.Second)), wantEnd: 10 * time.Second,
			wantTicks: []string{"0", "+2s", "+4s", "+6s", "+8s", "+10s"},
			wantLines: []Line{{Kind: "deadline", X: 0, Label: "deadline −5s", Beyond: true}}},
		{name: "deadline and UPS both drawn; the later one sets the axis",
			job: job(20*time.Second, at(25*time.Second)), ups: at(40 * time.Second), wantEnd: 40*time.Second + 800*time.Millisecond,
			wantTicks: []string{"0", "+10s", "+20s", "+30s", "+40s"},
			wantLines: []Line{{Kind: "deadline", X: 100 * 25 / 40.8, Label: "deadline +25s"},
				{Kind: "ups", X: 100 * 40 / 40.8, Label: "UPS empty +40s"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := Build(Input{Job: tc.job, Now: tc.now, UPSEmpty: tc.ups})
			if got := c.End.Sub(c.Start); got != tc.wantEnd {
				t.Errorf("axis %s, want %s", got, tc.wantEnd)
			}
			var labels []string
			for _, tk := range c.Ticks {
				labels = append(labels, tk.Label)
			}
			if strings.Join(labels, " ") != strings.Join(tc.wantTicks, " ") {
				t.Errorf("ticks %q, want %q", labels, tc.wantTicks)
			}
			if n := len(c.Ticks); n > 0 && (c.Ticks[0].X != 0 || c.Ticks[0].Anchor != "start") {
				t.Errorf("first tick %+v, want at 0 anchored at its start", c.Ticks[0])
			}
			if len(c.Lines) != len(tc.wantLines) {
				t.Fatalf("lines %+v, want %+v", c.Lines, tc.wantLines)
			}
			for i, w := range tc.wantLines {
				g := c.Lines[i]
				if g.Kind != w.Kind || !near(g.X, w.X) || g.Label != w.Label || g.Beyond != w.Beyond {
					t.Errorf("line %d = %+v, want %+v", i, g, w)
				}
			}
			if len(c.Lines) > 0 && c.Height != AxisH+FooterH {
				t.Errorf("height %d, want axis and footer only", c.Height)
			}
		})
	}
}

// act is an action of step 3 (hosts) unless kind is vm.
func act(id int64, kind store.TargetKind, target string, op store.Operation, state store.ActionState, from, to time.Duration, errMsg string) store.Action {
	a := store.Action{ID: id, JobID: 7, StepID: 3, TargetKind: kind, Target: target, Operation: op, State: state,
		Attempts: 1, Error: errMsg, StartedAt: at(from)}
	if kind == "vm" {
		a.StepID = 1
	}
	if state.Final() {
		a.FinishedAt = at(to)
	}
	return a
}

func TestHostRows(t *testing.T) {
	t.Parallel()
	steps := []store.Step{{ID: 3, JobID: 7, Seq: 3, Name: "hosts", State: store.StepFailed, StartedAt: at(0), FinishedAt: at(10 * time.Second)}}
	actions := []store.Action{
		// Recorded in this order: compute-02 first, then compute-01.
		act(1, "host", "compute-02", "power-off", store.ActionSucceeded, 0, 4*time.Second, ""),
		act(2, "host", "compute-02", "ssh-poweroff", store.ActionSucceeded, 0, 100*time.Millisecond, ""),
		act(3, "host", "compute-01", "power-off", store.ActionFailed, time.Second, 10*time.Second, "still on after BMC hard off"),
		act(4, "host", "compute-01", "ssh-poweroff", store.ActionFailed, time.Second, 2*time.Second, "ssh: connection refused"),
		act(5, "bmc", "compute-01", "bmc-soft-off", store.ActionSucceeded, 5*time.Second, 5*time.Second, ""),
		act(6, "bmc", "compute-01", "bmc-hard-off", store.ActionFailed, 8*time.Second, 9*time.Second, "refused"),
		act(7, "bmc", "compute-02", "bmc-confirm-off", store.ActionSucceeded, 100*time.Millisecond, 4*time.Second, ""),
	}
	c := Build(Input{Job: job(10*time.Second, nil), Steps: steps, Actions: actions})
	if len(c.Rows) != 3 || c.Hosts != 2 {
		t.Fatalf("rows %+v, want the step and two hosts", c.Rows)
	}
	step, h2, h1 := c.Rows[0], c.Rows[1], c.Rows[2]
	if step.Kind != KindStep || step.Y != AxisH || !near(step.X, 0) || !near(step.W, 100) {
		t.Errorf("step row %+v", step)
	}
	if h2.Label != "compute-02" || h1.Label != "compute-01" {
		t.Errorf("host order %s, %s; want the order of the records", h2.Label, h1.Label)
	}
	if h2.Y != AxisH+RowH || h1.Y != AxisH+2*RowH || c.Height != AxisH+3*RowH {
		t.Errorf("rows at %d and %d, height %d", h2.Y, h1.Y, c.Height)
	}
	if !near(h2.X, 0) || !near(h2.W, 40) || h2.Failed() || len(h2.Marks) != 0 {
		t.Errorf("compute-02 bar %+v, want 0..40%% succeeded without marks (the confirm is no escalation)", h2)
	}
	if !near(h1.X, 10) || !near(h1.W, 90) || !h1.Failed() || h1.Reason != "still on after BMC hard off" {
		t.Errorf("compute-01 bar %+v, want 10..100%% failed with its reason", h1)
	}
	if !strings.Contains(h1.Title, "still on after BMC hard off") || !strings.Contains(h1.Title, "+1s → +10s (9s)") {
		t.Errorf("compute-01 title %q", h1.Title)
	}
	want := []struct {
		kind   string
		x      float64
		failed bool
	}{{"ssh-failed", 20, true}, {"soft-off", 50, false}, {"hard-off", 80, true}}
	if len(h1.Marks) != len(want) {
		t.Fatalf("marks %+v", h1.Marks)
	}
	for i, w := range want {
		m := h1.Marks[i]
		if m.Kind != w.kind || !near(m.X, w.x) || m.Failed != w.failed {
			t.Errorf("mark %d = %+v, want %+v", i, m, w)
		}
	}
	if !strings.Contains(h1.Note, "failed in 9s") || !strings.Contains(h1.Note, "BMC soft off, BMC hard off") {
		t.Errorf("compute-01 note %q", h1.Note)
	}
}

func TestSimulationHostSpansItsChecks(t *testing.T) {
	t.Parallel()
	steps := []store.Step{{ID: 3, Seq: 3, Name: "hosts", State: store.StepFailed, StartedAt: at(0), FinishedAt: at(4 * time.Second)}}
	actions := []store.Action{
		act(1, "host", "storage-01", "check-ssh", store.ActionSucceeded, time.Second, 2*time.Second, ""),
		act(2, "bmc", "storage-01", "check-bmc", store.ActionFailed, 1500*time.Millisecond, 3*time.Second, "power state is Off, expected On"),
	}
	j := job(4*time.Second, nil)
	j.Kind = store.KindSimulation
	c := Build(Input{Job: j, Steps: steps, Actions: actions})
	h := c.Rows[1]
	if !near(h.X, 25) || !near(h.W, 50) || !h.Failed() || h.Reason != "check-bmc: power state is Off, expected On" {
		t.Errorf("host row %+v, want 25..75%% failed with the failing check", h)
	}
}

func TestRunningHostBarEndsNow(t *testing.T) {
	t.Parallel()
	steps := []store.Step{{ID: 3, Seq: 3, Name: "hosts", State: store.StepRunning, StartedAt: at(0)}}
	actions := []store.Action{act(1, "host", "compute-01", "power-off", store.ActionRunning, 2*time.Second, 0, "")}
	c := Build(Input{Job: job(0, nil), Steps: steps, Actions: actions, Now: t0.Add(8 * time.Second)})
	h := c.Rows[1]
	if !c.Open || !near(h.X, 25) || !near(h.W, 75) || h.State != "running" || !strings.HasPrefix(h.Note, "running 6s") {
		t.Errorf("open chart %v, row %+v; want a running bar from 25%% to now", c.Open, h)
	}
	pending := Build(Input{Job: job(0, nil), Steps: []store.Step{{ID: 4, Seq: 1, Name: "openstack", State: store.StepPending}},
		Now: t0.Add(time.Second)})
	if r := pending.Rows[0]; r.Bar || r.Note != "pending" {
		t.Errorf("pending step %+v, want no bar", r)
	}
}

func TestVMCurve(t *testing.T) {
	t.Parallel()
	steps := []store.Step{{ID: 1, Seq: 1, Name: "openstack", State: store.StepFailed, StartedAt: at(0), FinishedAt: at(10 * time.Second)}}
	already := act(9, "vm", "old", "os-stop", store.ActionSucceeded, 0, 0, "")
	already.Detail = "already SHUTOFF"
	excluded := act(10, "vm", "keep", "os-stop", store.ActionSkipped, 0, 0, "")
	excluded.Attempts = 0
	actions := []store.Action{
		act(1, "vm", "a", "os-stop", store.ActionSucceeded, 0, time.Second, ""),
		act(2, "vm", "b", "os-stop", store.ActionSucceeded, 0, 2*time.Second, ""),
		// c stops within the same drawing step as b: one step of two.
		act(3, "vm", "c", "os-stop", store.ActionSucceeded, 0, 2*time.Second+time.Millisecond, ""),
		act(4, "vm", "d", "os-stop", store.ActionFailed, 0, 10*time.Second, "not SHUTOFF after 5m"),
		already, excluded,
	}
	c := Build(Input{Job: job(10*time.Second, nil), Steps: steps, Actions: actions})
	if len(c.Rows) != 2 {
		t.Fatalf("rows %+v, want the step and the curve", c.Rows)
	}
	r := c.Rows[1]
	cv := r.Curve
	if r.Kind != KindVMs || cv == nil || cv.Max != 4 || cv.Left != 1 || !r.Failed() {
		t.Fatalf("curve row %+v (curve %+v), want 4 running at the start, 1 left, failed", r, cv)
	}
	// y = (CurveH-2) * (1 - left/max): 4 → 0, 3 → 13.5, 1 → 40.5.
	if want := "M0,0H100V13.5H200V40.5H1000"; cv.Line != want {
		t.Errorf("line %q, want %q", cv.Line, want)
	}
	if want := "M0,0H100V13.5H200V40.5H1000V56H0Z"; cv.Area != want {
		t.Errorf("area %q, want %q", cv.Area, want)
	}
	if r.Y != AxisH+RowH || cv.Y != r.Y+RowH-BarY || c.Height != r.Y+RowH-BarY+CurveH {
		t.Errorf("curve row at %d, curve at %d, height %d", r.Y, cv.Y, c.Height)
	}
	if r.Note != "4 at the start, 1 at the end (1 failed)" {
		t.Errorf("note %q", r.Note)
	}
}

func TestShort(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		850 * time.Millisecond: "850ms", 4200 * time.Millisecond: "4.2s", 2 * time.Second: "2s", 12 * time.Second: "12s",
		125 * time.Second: "2m05s", 62 * time.Minute: "1h02m", 2 * time.Minute: "2m", time.Hour: "1h",
	} {
		if got := Short(d); got != want {
			t.Errorf("Short(%s) = %q, want %q", d, got, want)
		}
	}
	if Offset(-5*time.Second) != "−5s" || Offset(0) != "0" || Offset(time.Second) != "+1s" {
		t.Error("Offset signs")
	}
	if count(1827) != "1,827" || count(12) != "12" || count(1000000) != "1,000,000" {
		t.Error("count separators")
	}
}

func TestForecastChart(t *testing.T) {
	t.Parallel()
	f := store.Forecast{Estimate: 40 * time.Second, WorstCase: 100 * time.Second, Steps: []store.StepForecast{
		{Name: "openstack", Estimate: 20 * time.Second, WorstCase: 60 * time.Second, Basis: store.BasisMeasured, Detail: "shutdown job 9 stopped 40 VMs"},
		{Name: "storage", Basis: store.BasisSkipped},
		{Name: "hosts", Estimate: 20 * time.Second, WorstCase: 40 * time.Second, Basis: store.BasisMixed},
	}}
	c := BuildForecast(f, nil)
	if c.Total != 102*time.Second || c.Runtime != nil || c.Height != AxisH+2*RowH || len(c.Rows) != 2 {
		t.Fatalf("chart %+v", c)
	}
	est, worst := c.Rows[0], c.Rows[1]
	if est.Label != "estimate 40s" || len(est.Segments) != 2 || !near(est.Segments[1].X, 100*20/102.0) || !near(est.Segments[1].W, 100*20/102.0) {
		t.Errorf("estimate row %+v: the skipped storage step takes no room", est)
	}
	if worst.Label != "worst case 1m40s" || !near(worst.Segments[1].X+worst.Segments[1].W, 100*100/102.0) {
		t.Errorf("worst case row %+v", worst)
	}
	if !strings.Contains(est.Segments[0].Title, "shutdown job 9 stopped 40 VMs") {
		t.Errorf("segment title %q lacks the basis detail", est.Segments[0].Title)
	}
	rt := 150 * time.Second
	c = BuildForecast(f, &rt)
	if c.Total != 153*time.Second || c.Runtime == nil || !near(c.Runtime.X, 100*150/153.0) || c.Runtime.Label != "UPS runtime 2m30s" ||
		c.Height != AxisH+2*RowH+FooterH {
		t.Errorf("with a runtime longer than the worst case: %+v, line %+v", c, c.Runtime)
	}
}
