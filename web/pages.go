package web

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"

	"github.com/edgeops/shutdownd/handlers"
	"github.com/edgeops/shutdownd/store"
	"github.com/edgeops/shutdownd/web/timeline"
)

// parsePages parses each page with the shared layout.
func parsePages() (map[string]*template.Template, error) {
	pages := map[string]*template.Template{}
	for _, name := range []string{"history", "job", "login", "live", "overview"} {
		files := []string{"templates/layout.html", "templates/parts.html", "templates/chart.html", "templates/" + name + ".html"}
		if name == "job" {
			files = append(files, "templates/live.html")
		}
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, files...)
		if err != nil {
			return nil, fmt.Errorf("parse template %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

var funcs = template.FuncMap{
	"ts": func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return tsText(*t)
	},
	"iso": func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return t.UTC().Format(time.RFC3339Nano)
	},
	"ptr": func(t time.Time) *time.Time { return &t },
	// deref reads an optional flag (a job's on_track) that the template has
	// already checked for nil.
	"deref": func(b *bool) bool { return b != nil && *b },
	"tsv":   func(t time.Time) string { return t.UTC().Format("15:04:05.000") },
	"isov":  func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) },
	"dur":   fmtDuration,
	// pc places a timeline coordinate: percent of the chart's width.
	"pc":     func(x float64) string { return strconv.FormatFloat(x, 'f', 2, 64) + "%" },
	"ago":    fmtAgo,
	"age":    fmtAge,
	"short":  timeline.Short,
	"offset": timeline.Offset,
	"neg":    func(d time.Duration) time.Duration { return -d },
	"add":    func(a, b int) int { return a + b },
	"icon":   icon,
}

func tsText(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") }

// icon is the sign beside a state's name, so that state is never told by
// colour alone.
func icon(state any) string {
	switch fmt.Sprint(state) {
	case "succeeded":
		return "✔"
	case "failed":
		return "✖"
	case "cancelled":
		return "⊘"
	case "skipped":
		return "↷"
	case "running":
		return "▶"
	default:
		return "…"
	}
}

// fmtDuration is short and human: 850ms, 12.3s, 4m05s, 1h02m.
func fmtDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return ""
	case d < time.Second:
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	case d < time.Minute:
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	default:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
}

// span is the duration between two optional times, up to now while open.
func span(start, end *time.Time, now time.Time) time.Duration {
	if start == nil {
		return 0
	}
	if end == nil {
		return now.Sub(*start)
	}
	return end.Sub(*start)
}

// render executes a page into a buffer first, so that a template error
// becomes a clean 500 instead of half a page.
func (w *Web) render(rw http.ResponseWriter, r *http.Request, status int, page string, data any) {
	var buf bytes.Buffer
	if err := w.pages[page].ExecuteTemplate(&buf, page, data); err != nil {
		w.serverError(rw, r, fmt.Errorf("render %s: %w", page, err))
		return
	}
	rw.Header().Set("Content-Type", "text/html; charset=utf-8")
	rw.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = rw.Write(buf.Bytes())
	}
}

// serverError logs err and answers the API's 500 envelope, which reveals
// nothing of it.
func (w *Web) serverError(rw http.ResponseWriter, r *http.Request, err error) {
	w.log.LogAttrs(r.Context(), slog.LevelError, "history page failed",
		slog.String("path", r.URL.Path), slog.Any("err", err))
	w.api.WriteError(rw, r, handlers.Errorf(handlers.CodeInternal, "internal error"))
}

func (w *Web) notFound(rw http.ResponseWriter, r *http.Request, what string) {
	w.render(rw, r, http.StatusNotFound, "history", historyData{
		base: w.base(r, "Not found"), Missing: what,
	})
}

// base is what the layout needs on every page.
type base struct {
	Title   string
	User    string // token name of the session
	From    string
	Refresh bool // a running job: refresh every few seconds without JavaScript
	// Reload refreshes the page every few seconds, script or not: the
	// overview while a job runs (it has no live stream of its own).
	Reload bool
}

func (w *Web) base(r *http.Request, title string) base {
	s := sessionFrom(r.Context())
	return base{Title: title, User: s.TokenName, From: s.RemoteAddr}
}

// jobRow is one line of the history list.
type jobRow struct {
	store.JobSummary
	Duration time.Duration
	Result   string
}

type historyData struct {
	base
	Jobs    []jobRow
	Older   int64 // before= of the next page, 0 when none
	Newer   bool  // not the first page
	Missing string
}

func (w *Web) handleHistory(rw http.ResponseWriter, r *http.Request) {
	var before int64
	if v := r.URL.Query().Get("before"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			w.notFound(rw, r, "page "+v)
			return
		}
		before = n
	}
	sums, err := w.store.JobSummaries(r.Context(), store.JobFilter{Before: before, Limit: w.pageSize + 1})
	if err != nil {
		w.serverError(rw, r, err)
		return
	}
	d := historyData{base: w.base(r, "Job history"), Newer: before > 0}
	if len(sums) > w.pageSize {
		sums = sums[:w.pageSize]
		d.Older = sums[len(sums)-1].ID
	}
	now := w.now()
	for _, s := range sums {
		row := jobRow{JobSummary: s, Duration: s.Duration(now), Result: result(s.Job)}
		d.Jobs = append(d.Jobs, row)
		if !s.State.Final() {
			d.Refresh = true
		}
	}
	w.render(rw, r, http.StatusOK, "history", d)
}

// result is the one-line outcome of a job.
func result(j store.Job) string {
	switch {
	case j.Error != "":
		return j.Error
	case j.State.Final():
		return string(j.State)
	case j.CurrentStep != "":
		return j.CurrentStep
	default:
		return string(j.State)
	}
}

// stepView is a step with its actions, for the timeline.
type stepView struct {
	store.Step
	Duration time.Duration
	Actions  []actionView
	Failed   int
}

// actionView is one row of an actions table, flat and with its cells
// already formatted: a 2,000-VM shutdown has 2,000 rows, and a template
// that looks each field up through an embedded struct and calls a
// function per cell spent most of the job page's time doing so.
type actionView struct {
	ID                                      int64
	Target, TargetKind, TargetID, Operation string
	State                                   store.ActionState
	Icon                                    string
	Attempts                                int
	Detail, Error                           string
	Started, StartedISO, Took               string // "" before the start
}

func newActionView(a store.Action, now time.Time) actionView {
	v := actionView{ID: a.ID, Target: a.Target, TargetKind: string(a.TargetKind), TargetID: a.TargetID, Operation: string(a.Operation),
		State: a.State, Icon: icon(a.State), Attempts: a.Attempts, Detail: a.Detail, Error: a.Error,
		Took: fmtDuration(span(a.StartedAt, a.FinishedAt, now))}
	if a.StartedAt != nil {
		v.Started, v.StartedISO = tsText(*a.StartedAt), a.StartedAt.UTC().Format(time.RFC3339Nano)
	}
	return v
}

// liveData is the part of the job page that changes while the job runs.
type liveData struct {
	Job       store.Job
	Duration  time.Duration
	Steps     []stepView
	Orphans   []actionView // actions whose step is unknown (should not happen)
	Failures  []actionView
	Events    []store.Event
	Active    bool
	Chain     store.ChainReport
	ChainErr  bool
	Actions   int
	Succeeded int
	// Chart is the timeline picture of the job.
	Chart timeline.Chart
}

type jobData struct {
	base
	Live liveData
}

func (w *Web) loadLive(r *http.Request) (liveData, error) {
	id, err := strconv.ParseInt(mux.Vars(r)["id"], 10, 64)
	if err != nil {
		return liveData{}, store.ErrNotFound
	}
	rep, err := w.store.Report(r.Context(), id)
	if err != nil {
		return liveData{}, err
	}
	now := w.now()
	d := liveData{Job: rep.Job, Duration: span(rep.Job.StartedAt, rep.Job.FinishedAt, now),
		Events: rep.Events, Active: !rep.Job.State.Final(), Actions: len(rep.Actions)}
	idx := map[int64]int{}
	for _, s := range rep.Steps {
		idx[s.ID] = len(d.Steps)
		d.Steps = append(d.Steps, stepView{Step: s, Duration: span(s.StartedAt, s.FinishedAt, now)})
	}
	for _, a := range rep.Actions {
		av := newActionView(a, now)
		if a.State == store.ActionFailed {
			d.Failures = append(d.Failures, av)
		}
		if a.State == store.ActionSucceeded {
			d.Succeeded++
		}
		i, ok := idx[a.StepID]
		if !ok {
			d.Orphans = append(d.Orphans, av)
			continue
		}
		d.Steps[i].Actions = append(d.Steps[i].Actions, av)
		if a.State == store.ActionFailed {
			d.Steps[i].Failed++
		}
	}
	in := timeline.Input{Job: rep.Job, Steps: rep.Steps, Actions: rep.Actions, Now: now}
	if d.Active && w.power != nil {
		// Only a running job: a reading now says nothing about a past job.
		if p, ok := w.power.PowerReading(r.Context()); ok {
			empty := p.Empty()
			in.UPSEmpty = &empty
		}
	}
	d.Chart = timeline.Build(in)
	d.Chain, err = w.store.VerifyChain(r.Context(), id)
	if err != nil {
		w.log.LogAttrs(r.Context(), slog.LevelWarn, "verify event chain", slog.Int64("job", id), slog.Any("err", err))
		d.ChainErr = true
	}
	return d, nil
}

func (w *Web) handleJob(rw http.ResponseWriter, r *http.Request) {
	live, err := w.loadLive(r)
	if errors.Is(err, store.ErrNotFound) {
		w.notFound(rw, r, "job "+mux.Vars(r)["id"])
		return
	}
	if err != nil {
		w.serverError(rw, r, err)
		return
	}
	b := w.base(r, fmt.Sprintf("Job %d (%s)", live.Job.ID, live.Job.Kind))
	b.Refresh = live.Active
	w.render(rw, r, http.StatusOK, "job", jobData{base: b, Live: live})
}

// handleLive answers the changing part of the job page alone, for the
// script that swaps it in on every stream message.
func (w *Web) handleLive(rw http.ResponseWriter, r *http.Request) {
	live, err := w.loadLive(r)
	if errors.Is(err, store.ErrNotFound) {
		w.api.WriteError(rw, r, handlers.Errorf(handlers.CodeNotFound, "job not found"))
		return
	}
	if err != nil {
		w.serverError(rw, r, err)
		return
	}
	w.render(rw, r, http.StatusOK, "live", live)
}
