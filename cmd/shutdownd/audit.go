package main

import (
	"context"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edgeops/shutdownd/store"
)

// cmdAudit runs the post-incident reports over the store: jobs, job ID (its
// timeline), failures, verify (the event hash chains), power (the power
// source's events). The database is
// opened read-only (store.OpenReadOnly), never migrated, so an audit never
// changes the record and works while the service runs.
func cmdAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"audit: expected jobs, job ID, failures, verify or power"}
	}
	report, rest := args[0], args[1:]
	fs := newFlags("audit "+report, stderr)
	dbPath := databaseFlags(fs)
	format := fs.String("format", "table", "output format: table, json or csv")
	kind := fs.String("kind", "", "only jobs of this kind (simulation, shutdown, startup)")
	state := fs.String("state", "", "only jobs in this state")
	limit := fs.Int("limit", 50, "at most this many jobs (max 500)")
	before := fs.Int64("before", 0, "only jobs with an id below this (paging)")
	// Flags may come before or after the job id.
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	var id int64
	if report == "job" {
		if fs.NArg() == 0 {
			return usageError{"audit job: expected a job id"}
		}
		n, err := strconv.ParseInt(fs.Arg(0), 10, 64)
		if err != nil || n <= 0 {
			return usageError{fmt.Sprintf("audit job: %q is not a job id", fs.Arg(0))}
		}
		id = n
		if err := parseFlags(fs, fs.Args()[1:]); err != nil {
			return err
		}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("audit %s: unexpected argument %q", report, fs.Arg(0))}
	}
	switch *format {
	case "table", "json", "csv":
	default:
		return usageError{fmt.Sprintf("audit: --format %q: want table, json or csv", *format)}
	}
	filter := store.JobFilter{Kind: store.Kind(*kind), State: store.State(*state), Limit: *limit, Before: *before}
	path, err := dbPath()
	if err != nil {
		return err
	}
	st, err := store.OpenReadOnly(ctx, path)
	if err != nil {
		return err
	}
	defer st.Close()
	switch report {
	case "jobs":
		return auditJobs(ctx, st, filter, *format, stdout)
	case "job":
		return auditJob(ctx, st, id, *format, stdout)
	case "failures":
		return auditFailures(ctx, st, filter, *format, stdout)
	case "verify":
		return auditVerify(ctx, st, *format, stdout)
	case "power":
		return auditPower(ctx, st, *limit, *format, stdout)
	}
	return usageError{fmt.Sprintf("audit: unknown report %q (want jobs, job, failures, verify or power)", report)}
}

func at(t *time.Time) string {
	if t == nil {
		return ""
	}
	// The store's own format, so report output can be pasted into audit
	// SQL (docs/audit.md) as is.
	return store.FormatTime(*t)
}

func seconds(start, end *time.Time) string {
	if start == nil || end == nil {
		return ""
	}
	return strconv.FormatFloat(end.Sub(*start).Seconds(), 'f', 3, 64)
}

// table is one report: a header and rows of text, written as an aligned
// table, CSV, or JSON objects keyed by the header.
type table struct {
	title  string
	header []string
	rows   [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) objects() []map[string]string {
	out := make([]map[string]string, 0, len(t.rows))
	for _, r := range t.rows {
		m := make(map[string]string, len(r))
		for i, c := range r {
			m[t.header[i]] = c
		}
		out = append(out, m)
	}
	return out
}

func writeTables(w io.Writer, format string, tables ...*table) error {
	switch format {
	case "json":
		var v any
		if len(tables) == 1 {
			v = tables[0].objects()
		} else {
			m := map[string]any{}
			for _, t := range tables {
				m[t.title] = t.objects()
			}
			v = m
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "csv":
		cw := csv.NewWriter(w)
		for i, t := range tables {
			if len(tables) > 1 {
				if i > 0 {
					cw.Write(nil)
				}
				cw.Write([]string{"# " + t.title})
			}
			cw.Write(t.header)
			cw.WriteAll(t.rows)
		}
		cw.Flush()
		return cw.Error()
	}
	for i, t := range tables {
		if len(tables) > 1 {
			if i > 0 {
				fmt.Fprintln(w)
			}
			fmt.Fprintf(w, "== %s ==\n", t.title)
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, strings.ToUpper(strings.Join(t.header, "\t")))
		for _, r := range t.rows {
			clean := make([]string, len(r))
			for j, c := range r {
				clean[j] = strings.NewReplacer("\t", " ", "\n", " ").Replace(c)
			}
			fmt.Fprintln(tw, strings.Join(clean, "\t"))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

func auditJobs(ctx context.Context, st *store.Store, f store.JobFilter, format string, w io.Writer) error {
	sums, err := st.JobSummaries(ctx, f)
	if err != nil {
		return err
	}
	t := &table{title: "jobs", header: []string{"id", "kind", "state", "token", "from", "reason", "created", "started",
		"finished", "seconds", "actions", "succeeded", "failed", "skipped", "error"}}
	for _, s := range sums {
		t.add(strconv.FormatInt(s.ID, 10), string(s.Kind), string(s.State), s.TokenName, s.RemoteAddr, s.Reason,
			at(&s.CreatedAt), at(s.StartedAt), at(s.FinishedAt), seconds(s.StartedAt, s.FinishedAt),
			strconv.Itoa(s.Actions), strconv.Itoa(s.Succeeded), strconv.Itoa(s.Failed), strconv.Itoa(s.Skipped), s.Error)
	}
	return writeTables(w, format, t)
}

func auditJob(ctx context.Context, st *store.Store, id int64, format string, w io.Writer) error {
	rep, err := st.Report(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("audit job: no job %d", id)
	}
	if err != nil {
		return err
	}
	chain, err := st.VerifyChain(ctx, id)
	if err != nil {
		return err
	}
	j := rep.Job
	job := &table{title: "job", header: []string{"id", "kind", "state", "token", "from", "reason", "expected_recovery",
		"created", "started", "finished", "seconds", "error", "chain"}}
	job.add(strconv.FormatInt(j.ID, 10), string(j.Kind), string(j.State), j.TokenName, j.RemoteAddr, j.Reason,
		at(j.ExpectedRecovery), at(&j.CreatedAt), at(j.StartedAt), at(j.FinishedAt), seconds(j.StartedAt, j.FinishedAt),
		j.Error, chainText(chain))
	steps := &table{title: "steps", header: []string{"seq", "step", "state", "started", "finished", "seconds", "detail", "error"}}
	names := map[int64]string{}
	for _, s := range rep.Steps {
		names[s.ID] = s.Name
		steps.add(strconv.Itoa(s.Seq), s.Name, string(s.State), at(s.StartedAt), at(s.FinishedAt),
			seconds(s.StartedAt, s.FinishedAt), s.Detail, s.Error)
	}
	actions := &table{title: "actions", header: []string{"id", "step", "target_kind", "target", "target_id", "operation",
		"state", "attempts", "started", "finished", "seconds", "detail", "error"}}
	for _, a := range rep.Actions {
		actions.add(strconv.FormatInt(a.ID, 10), names[a.StepID], string(a.TargetKind), a.Target, a.TargetID, string(a.Operation),
			string(a.State), strconv.Itoa(a.Attempts), at(a.StartedAt), at(a.FinishedAt),
			seconds(a.StartedAt, a.FinishedAt), a.Detail, a.Error)
	}
	events := &table{title: "events", header: []string{"id", "at", "level", "message", "detail"}}
	for _, e := range rep.Events {
		events.add(strconv.FormatInt(e.ID, 10), at(&e.At), string(e.Level), e.Message, e.Detail)
	}
	return writeTables(w, format, job, steps, actions, events)
}

func chainText(c store.ChainReport) string {
	if !c.OK {
		return "BROKEN: " + c.Problem
	}
	return "intact"
}

func auditFailures(ctx context.Context, st *store.Store, f store.JobFilter, format string, w io.Writer) error {
	fails, err := st.Failures(ctx, f)
	if err != nil {
		return err
	}
	t := &table{title: "failures", header: []string{"job", "kind", "job_state", "step", "target_kind", "target",
		"target_id", "operation", "attempts", "at", "error"}}
	for _, fl := range fails {
		attempts := ""
		if fl.TargetKind != "" {
			attempts = strconv.Itoa(fl.Attempts)
		}
		t.add(strconv.FormatInt(fl.JobID, 10), string(fl.Kind), string(fl.JobState), fl.Step, fl.TargetKind, fl.Target,
			fl.TargetID, fl.Operation, attempts, at(fl.At), fl.Error)
	}
	return writeTables(w, format, t)
}

// auditVerify checks every job's event chain and fails (exit status 1) when
// one is broken, so it can run from cron or a monitoring check. The head
// hashes it prints are worth keeping outside the machine: with them, even a
// rewrite of a whole chain is detectable.
func auditVerify(ctx context.Context, st *store.Store, format string, w io.Writer) error {
	ids, err := st.JobIDs(ctx)
	if err != nil {
		return err
	}
	t := &table{title: "verify", header: []string{"job", "events", "unchained", "result", "head", "problem"}}
	var broken []string
	for _, id := range ids {
		c, err := st.VerifyChain(ctx, id)
		if err != nil {
			return err
		}
		res := "ok"
		if !c.OK {
			res = "BROKEN"
			broken = append(broken, strconv.FormatInt(id, 10))
		}
		t.add(strconv.FormatInt(id, 10), strconv.Itoa(c.Events), strconv.Itoa(c.Legacy), res, hex.EncodeToString(c.Head), c.Problem)
	}
	if err := writeTables(w, format, t); err != nil {
		return err
	}
	if len(broken) > 0 {
		return fmt.Errorf("audit verify: event chain broken for job(s) %s", strings.Join(broken, ", "))
	}
	return nil
}
