// Package timeline lays out one job's records as a picture: a common time
// axis from the job's start, one row per step and one per host, the VMs
// still running as a curve, BMC escalations as marks, and the job's
// deadline and the UPS's runtime as vertical lines.
//
// It computes geometry only: horizontal positions in percent of the width
// and vertical ones in pixels. The web package's templates draw it as SVG,
// so every name and error message is escaped by html/template, and the
// picture scales to any width (a phone, a printed A4 page) without a
// script and without shrinking its text: percent coordinates stretch the
// bars, not the letters.
//
// What is drawn, and from which records (store actions and steps):
//   - a step row spans the step's start to its end (or now, while it runs);
//   - the VMs curve counts the os-stop actions that were sent (attempts >
//     0, not "already SHUTOFF"): all running at the step's start, each
//     leaving the curve when its os-stop ends succeeded; failed or skipped
//     ones stay to the end of the step, since nothing confirmed them off;
//   - a host row spans its "power-off" action (SSH command sent to Off
//     confirmed), or its "self-poweroff", or else all of its host and BMC
//     actions (a simulation's checks); it is failed when that action is;
//   - marks: "bmc-soft-off" and "bmc-hard-off" where they started, and a
//     failed "ssh-poweroff" where it ended (why the BMC had to act);
//   - the deadline is the job's own (the caller's deadline, see
//     docs/forecast.md); the UPS line is when the battery was expected to
//     run out, given by the caller of Build when it knows.
package timeline

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgeops/shutdownd/store"
)

// Layout in pixels. A row is a line of text above its bar, so labels never
// overlap bars and stay readable at any width.
const (
	AxisH   = 18 // tick labels at the top
	RowH    = 26 // one step or host
	BarY    = 14 // bar top within a row
	BarH    = 9
	CurveH  = 56 // the VMs curve's drawing area
	FooterH = 18 // labels of the vertical lines
	// MaxStretch bounds how far a deadline or UPS line may stretch the
	// axis past the job's own span (as a multiple of it): further out,
	// the line is drawn at the right edge, labelled with its offset, so
	// the bars do not shrink to slivers.
	MaxStretch = 4
	// minBar keeps a bar of an instant action visible (percent).
	minBar = 0.4
	// curveScale is the width of the curve's own coordinate system; its
	// nested SVG stretches it to the chart's width.
	curveScale = 1000
)

// Input is what a chart is built from.
type Input struct {
	Job     store.Job
	Steps   []store.Step
	Actions []store.Action
	// Now is the right edge while the job runs.
	Now time.Time
	// UPSEmpty is when the UPS battery was expected to run out, when a
	// power source said so (nil: no power source, or no reading).
	UPSEmpty *time.Time
}

// Chart is a laid-out timeline.
type Chart struct {
	Start, End time.Time
	Open       bool // the job runs: End is now
	Height     int
	Rows       []Row
	Ticks      []Tick
	Lines      []Line
	// Hosts counts the host rows (one bar each).
	Hosts int
}

// LinesBottom is where the vertical lines and the grid end: above the
// footer that holds the lines' labels.
func (c Chart) LinesBottom() int {
	if len(c.Lines) > 0 {
		return c.Height - FooterH
	}
	return c.Height
}

// Failed counts the rows drawn in red.
func (c Chart) Failed() int {
	n := 0
	for _, r := range c.Rows {
		if r.Failed() {
			n++
		}
	}
	return n
}

// Row kinds.
const (
	KindStep = "step"
	KindVMs  = "vms"
	KindHost = "host"
)

// Row is one line of the chart and of its text table.
type Row struct {
	Kind  string
	Label string
	// Note is the short text after the label: duration, outcome.
	Note string
	Y    int // top of the row
	// X and W place the bar, in percent; Bar is false for a step that
	// never started.
	X, W  float64
	Bar   bool
	State string // succeeded, failed, running, pending, skipped, cancelled
	// Title is the hover text of the bar: what, when, outcome, reason.
	Title string
	// From and To are offsets from the chart's start, for the table.
	From, To time.Duration
	// Reason is the error of a failed row (or its detail otherwise).
	Reason string
	Marks  []Mark
	Curve  *Curve // KindVMs only
}

// Failed reports a row drawn in red.
func (r Row) Failed() bool { return r.State == string(store.ActionFailed) }

// Height is the row's height in pixels.
func (r Row) Height() int {
	if r.Curve != nil {
		return RowH - BarY + CurveH
	}
	return RowH
}

// BarTop is the y of the row's bar.
func (r Row) BarTop() int { return r.Y + BarY }

// BarHeight is the height of every bar.
func (Row) BarHeight() int { return BarH }

// Timed reports a row with a start: a bar or a curve.
func (r Row) Timed() bool { return r.Bar || r.Curve != nil }

// Took is how long the row's bar lasts.
func (r Row) Took() time.Duration { return r.To - r.From }

// TextY is the baseline of the row's label.
func (r Row) TextY() int { return r.Y + 11 }

// Mark is an escalation or a failure at one moment of a host's row.
type Mark struct {
	Kind   string // soft-off, hard-off, ssh-failed
	X      float64
	At     time.Duration
	Label  string
	Title  string
	Failed bool
}

// Curve is the VMs still running over time. Its paths are in a coordinate
// system curveScale wide and H high, drawn in a nested SVG stretched to
// the chart's width.
type Curve struct {
	Y, H       int
	Line, Area string
	// Max is how many VMs were running at the step's start; Left how many
	// still were at its end (or now).
	Max, Left int
}

// ViewBox is the curve's coordinate system for its nested SVG.
func (c Curve) ViewBox() string { return fmt.Sprintf("0 0 %d %d", curveScale, c.H) }

// Tick is a label on the time axis.
type Tick struct {
	X      float64
	Label  string
	Anchor string // start, middle, end: keeps the label inside the chart
}

// Line is a vertical line across the rows.
type Line struct {
	Kind   string // deadline, ups
	X      float64
	At     time.Duration // offset from the chart's start (may be negative)
	Label  string
	Title  string
	Anchor string
	// Beyond is true when the moment is off the axis, and the line is
	// drawn at the edge.
	Beyond bool
}

// Build lays out a job's records.
func Build(in Input) Chart {
	c := Chart{Open: !in.Job.State.Final()}
	c.Start, c.End = span(in)
	c.addLines(in)
	c.Ticks = ticks(c.End.Sub(c.Start))
	c.rows(in)
	return c
}

// span is the time axis: from the job's start (its creation before it
// started) to its end or now, stretched to the last record (a self host
// finishes after the job) and to a deadline or UPS line not too far out.
func span(in Input) (time.Time, time.Time) {
	start := in.Job.CreatedAt
	if in.Job.StartedAt != nil {
		start = *in.Job.StartedAt
	}
	end := in.Now
	if in.Job.FinishedAt != nil {
		end = *in.Job.FinishedAt
	}
	for _, a := range in.Actions {
		if a.FinishedAt != nil && a.FinishedAt.After(end) {
			end = *a.FinishedAt
		}
	}
	for _, s := range in.Steps {
		if s.FinishedAt != nil && s.FinishedAt.After(end) {
			end = *s.FinishedAt
		}
	}
	if end.Sub(start) < time.Second {
		end = start.Add(time.Second)
	}
	own := end.Sub(start)
	for _, t := range []*time.Time{in.Job.Deadline, in.UPSEmpty} {
		if t != nil && t.After(end) && t.Sub(start) <= MaxStretch*own {
			end = *t
		}
	}
	// A line exactly at the edge would be half hidden.
	if end.Sub(start) > own {
		end = end.Add(end.Sub(start) / 50)
	}
	return start, end
}

// pct places a moment on the axis, in percent, clamped to the chart.
func (c *Chart) pct(t time.Time) float64 {
	total := c.End.Sub(c.Start)
	p := 100 * float64(t.Sub(c.Start)) / float64(total)
	return min(max(p, 0), 100)
}

func (c *Chart) addLines(in Input) {
	add := func(kind, name string, t *time.Time) {
		if t == nil {
			return
		}
		l := Line{Kind: kind, At: t.Sub(c.Start), X: c.pct(*t)}
		l.Beyond = t.After(c.End) || t.Before(c.Start)
		l.Label = name + " " + Offset(l.At)
		if l.Beyond && t.After(c.End) {
			l.Label += " →"
		}
		l.Title = fmt.Sprintf("%s at %s (%s from the start)", name, t.UTC().Format("2006-01-02 15:04:05Z"), Offset(l.At))
		l.Anchor = anchor(l.X)
		c.Lines = append(c.Lines, l)
	}
	add("deadline", "deadline", in.Job.Deadline)
	add("ups", "UPS empty", in.UPSEmpty)
}

// anchor keeps a label near an edge inside the chart.
func anchor(x float64) string {
	switch {
	case x > 85:
		return "end"
	case x < 15:
		return "start"
	default:
		return "middle"
	}
}

// rows adds each step's row, then what happened under it: the VMs curve
// and the host rows, in the order their first record was written.
func (c *Chart) rows(in Input) {
	y := AxisH
	byStep := map[int64][]store.Action{}
	for _, a := range in.Actions {
		byStep[a.StepID] = append(byStep[a.StepID], a)
	}
	for _, s := range in.Steps {
		r := c.stepRow(s, in.Now)
		r.Y = y
		y += r.Height()
		c.Rows = append(c.Rows, r)
		acts := byStep[s.ID]
		if r, ok := c.vmRow(s, acts, in.Now); ok {
			r.Y = y
			r.Curve.Y = y + RowH - BarY
			y += r.Height()
			c.Rows = append(c.Rows, r)
		}
		for _, r := range c.hostRows(acts, in.Now) {
			r.Y = y
			y += r.Height()
			c.Rows = append(c.Rows, r)
			c.Hosts++
		}
	}
	c.Height = y
	if len(c.Lines) > 0 {
		c.Height += FooterH
	}
}

// bar sets a row's bar and offsets from a start and an optional end (now
// while open).
func (c *Chart) bar(r *Row, start, end *time.Time, now time.Time) {
	if start == nil {
		return
	}
	to := now
	if end != nil {
		to = *end
	}
	if to.Before(*start) {
		to = *start
	}
	r.Bar = true
	r.X = c.pct(*start)
	r.W = max(c.pct(to)-r.X, minBar)
	if r.X+r.W > 100 {
		r.X = 100 - r.W
	}
	r.From, r.To = start.Sub(c.Start), to.Sub(c.Start)
}

func (c *Chart) stepRow(s store.Step, now time.Time) Row {
	r := Row{Kind: KindStep, Label: stepLabel(s.Name), State: string(s.State), Reason: s.Error}
	if r.Reason == "" {
		r.Reason = s.Detail
	}
	c.bar(&r, s.StartedAt, s.FinishedAt, now)
	r.Note = note(r, "")
	r.Title = title(r, s.Detail, s.Error)
	return r
}

// stepLabel names the runner's steps in words.
func stepLabel(name string) string {
	switch name {
	case "openstack":
		return "Step: OpenStack VMs"
	case "storage":
		return "Step: storage"
	case "hosts":
		return "Step: hosts"
	}
	return "Step: " + name
}

// note is the short text after a row's label.
func note(r Row, extra string) string {
	var parts []string
	switch {
	case !r.Bar:
		parts = append(parts, r.State)
	case r.State == string(store.ActionRunning) || r.State == string(store.StepPending):
		parts = append(parts, "running "+Short(r.To-r.From))
	default:
		parts = append(parts, r.State+" in "+Short(r.To-r.From))
	}
	if extra != "" {
		parts = append(parts, extra)
	}
	return strings.Join(parts, ", ")
}

// title is the hover text of a bar.
func title(r Row, detail, errMsg string) string {
	var b strings.Builder
	b.WriteString(r.Label)
	b.WriteString(": ")
	b.WriteString(r.State)
	if r.Bar {
		fmt.Fprintf(&b, ", %s → %s (%s)", Offset(r.From), Offset(r.To), Short(r.To-r.From))
	}
	if errMsg != "" {
		b.WriteString("; error: ")
		b.WriteString(errMsg)
	}
	if detail != "" {
		b.WriteString("; ")
		b.WriteString(detail)
	}
	return b.String()
}

// stillRunning reports whether a VM counts in the curve: an os-stop was
// sent to it (a VM found SHUTOFF or left alone never ran during the job).
func stillRunning(a store.Action) bool {
	return a.TargetKind == store.TargetVM && a.Operation == store.OpOSStop && a.Attempts > 0 && !strings.HasPrefix(a.Detail, "already SHUTOFF")
}

// vmRow draws the VMs still running during a step that stopped VMs.
func (c *Chart) vmRow(s store.Step, acts []store.Action, now time.Time) (Row, bool) {
	var offAt []time.Time
	n, failed := 0, 0
	for _, a := range acts {
		if !stillRunning(a) {
			continue
		}
		n++
		switch {
		case a.State == store.ActionSucceeded && a.FinishedAt != nil:
			offAt = append(offAt, *a.FinishedAt)
		case a.State == store.ActionFailed:
			failed++
		}
	}
	if n == 0 || s.StartedAt == nil {
		return Row{}, false
	}
	slices.SortFunc(offAt, func(a, b time.Time) int { return a.Compare(b) })
	end := now
	if s.FinishedAt != nil {
		end = *s.FinishedAt
	}
	r := Row{Kind: KindVMs, Label: "VMs still running", State: string(s.State)}
	c.bar(&r, s.StartedAt, s.FinishedAt, now)
	r.Bar = false // drawn as a curve
	cv := &Curve{H: CurveH, Max: n, Left: n - len(offAt)}
	cv.Line, cv.Area = c.curvePaths(*s.StartedAt, end, offAt, n)
	r.Curve = cv
	r.Note = fmt.Sprintf("%s at the start, %s at %s", count(n), count(cv.Left), map[bool]string{true: "now", false: "the end"}[s.FinishedAt == nil])
	if failed > 0 {
		r.Note += fmt.Sprintf(" (%s failed)", count(failed))
		r.State = string(store.ActionFailed)
		r.Reason = fmt.Sprintf("%s not confirmed stopped; the hosts going down stop them", count(failed))
	}
	r.Title = fmt.Sprintf("VMs still running: %s at %s, %s at %s", count(n), Offset(r.From), count(cv.Left), Offset(r.To))
	return r, true
}

// curvePaths draws a step function from n VMs at start, one fewer at each
// time in offAt (sorted), to end. Steps closer than the drawing's
// resolution merge into one, so 2,000 VMs stay a small path.
func (c *Chart) curvePaths(start, end time.Time, offAt []time.Time, n int) (line, area string) {
	xOf := func(t time.Time) float64 { return c.pct(t) * curveScale / 100 }
	yOf := func(left int) float64 { return float64(CurveH-2) * (1 - float64(left)/float64(n)) }
	var b []byte
	b = append(b, 'M')
	x0 := xOf(start)
	b = num(b, x0)
	b = append(b, ',')
	b = num(b, yOf(n))
	left := n
	for i := 0; i < len(offAt); {
		x := xOf(offAt[i])
		j := i
		for j < len(offAt) && xOf(offAt[j])-x < 0.5 {
			j++
		}
		left -= j - i
		b = append(b, 'H')
		b = num(b, x)
		b = append(b, 'V')
		b = num(b, yOf(left))
		i = j
	}
	b = append(b, 'H')
	b = num(b, max(xOf(end), x0))
	line = string(b)
	b = append(b, 'V')
	b = num(b, float64(CurveH))
	b = append(b, 'H')
	b = num(b, x0)
	b = append(b, 'Z')
	return line, string(b)
}

// num appends a coordinate with one decimal, without a trailing ".0".
func num(b []byte, v float64) []byte {
	v = float64(int64(v*10+0.5)) / 10
	return strconv.AppendFloat(b, v, 'f', -1, 64)
}

// count writes 1827 as 1,827.
func count(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// hostRows groups a step's host and BMC actions by host, in the order of
// each host's first record.
func (c *Chart) hostRows(acts []store.Action, now time.Time) []Row {
	var order []string
	by := map[string][]store.Action{}
	for _, a := range acts {
		if a.TargetKind != store.TargetHost && a.TargetKind != store.TargetBMC {
			continue
		}
		if _, ok := by[a.Target]; !ok {
			order = append(order, a.Target)
		}
		by[a.Target] = append(by[a.Target], a)
	}
	rows := make([]Row, 0, len(order))
	for _, name := range order {
		rows = append(rows, c.hostRow(name, by[name], now))
	}
	return rows
}

func (c *Chart) hostRow(name string, acts []store.Action, now time.Time) Row {
	r := Row{Kind: KindHost, Label: name}
	main := slices.IndexFunc(acts, func(a store.Action) bool { return a.TargetKind == store.TargetHost && a.Operation == store.OpPowerOff })
	if main < 0 {
		main = slices.IndexFunc(acts, func(a store.Action) bool {
			return a.TargetKind == store.TargetHost && a.Operation == store.OpSelfPowerOff
		})
	}
	var detail, errMsg string
	if main >= 0 {
		a := acts[main]
		r.State, detail, errMsg = string(a.State), a.Detail, a.Error
		c.bar(&r, a.StartedAt, a.FinishedAt, now)
	} else {
		var first, last *time.Time
		open := false
		r.State = string(store.ActionSucceeded)
		for _, a := range acts {
			if a.StartedAt != nil && (first == nil || a.StartedAt.Before(*first)) {
				first = a.StartedAt
			}
			if a.FinishedAt != nil && (last == nil || a.FinishedAt.After(*last)) {
				last = a.FinishedAt
			}
			switch {
			case !a.State.Final():
				open = true
			case a.State == store.ActionFailed && errMsg == "":
				r.State, errMsg = string(store.ActionFailed), string(a.Operation)+": "+a.Error
			}
		}
		if open {
			r.State, last = string(store.ActionRunning), nil
		}
		c.bar(&r, first, last, now)
	}
	r.Reason = errMsg
	if r.Reason == "" {
		r.Reason = detail
	}
	var esc []string
	for _, a := range acts {
		if m, ok := c.mark(a); ok {
			r.Marks = append(r.Marks, m)
			esc = append(esc, m.Label)
		}
	}
	r.Note = note(r, strings.Join(esc, ", "))
	r.Title = title(r, detail, errMsg)
	return r
}

// mark turns an escalation (or the failed SSH command that led to one)
// into a mark on its host's row.
func (c *Chart) mark(a store.Action) (Mark, bool) {
	var m Mark
	at := a.StartedAt
	switch {
	case a.TargetKind == store.TargetBMC && a.Operation == store.OpBMCSoftOff:
		m.Kind, m.Label = "soft-off", "BMC soft off"
	case a.TargetKind == store.TargetBMC && a.Operation == store.OpBMCHardOff:
		m.Kind, m.Label = "hard-off", "BMC hard off"
	case a.TargetKind == store.TargetHost && a.Operation == store.OpSSHPowerOff && a.State == store.ActionFailed:
		m.Kind, m.Label, at = "ssh-failed", "SSH failed", a.FinishedAt
	default:
		return Mark{}, false
	}
	if at == nil {
		return Mark{}, false
	}
	m.X, m.At, m.Failed = c.pct(*at), at.Sub(c.Start), a.State == store.ActionFailed
	m.Title = fmt.Sprintf("%s: %s at %s", a.Target, m.Label, Offset(m.At))
	switch {
	case a.Error != "":
		m.Title += ", failed: " + a.Error
	case a.Detail != "":
		m.Title += ": " + a.Detail
	}
	return m, true
}
