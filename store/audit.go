package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"
)

// This file holds the read-only queries of the history pages and of
// `shutdownd audit`. They only SELECT; OpenReadOnly gives them a database
// handle that SQLite itself refuses to write through.

// minAuditVersion is the schema version the audit queries need (the event
// hash chain of migration 2).
const minAuditVersion = 2

// OpenReadOnly opens an existing database for reading only, without
// migrating it: SQLite opens the file read-only (mode=ro) and every
// connection has query_only set, so an audit can never change the record,
// and it works beside a running service (WAL readers do not block the
// writer). Every write method of the returned Store fails inside SQLite
// ("attempt to write a readonly database"); Close closes its one pool.
//
// A WAL database needs its -shm file to be read; SQLite creates it beside
// the database when it is missing. Where that cannot be done (an auditor's
// account that may read the database but not write its directory, or an
// incident copy on read-only media) and no -wal file shows a writer at
// work, the database is opened immutable instead: read as a plain file,
// without the WAL machinery.
func OpenReadOnly(ctx context.Context, path string) (*Store, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("open database %s read-only: %w", path, err)
	}
	s, v, err := openRO(ctx, path, "mode=ro")
	if err != nil {
		if _, walErr := os.Stat(path + "-wal"); !errors.Is(walErr, os.ErrNotExist) {
			return nil, fmt.Errorf("open database %s read-only: %w", path, err)
		}
		if s, v, err = openRO(ctx, path, "mode=ro&immutable=1"); err != nil {
			return nil, fmt.Errorf("open database %s read-only: %w", path, err)
		}
	}
	if v < minAuditVersion {
		s.Close()
		return nil, fmt.Errorf("open database %s read-only: schema version %d is older than %d: start the service or run `shutdownd migrate up` first", path, v, minAuditVersion)
	}
	if err := s.prepareReads(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("open database %s read-only: %w", path, err)
	}
	return s, nil
}

// openRO opens path with the given SQLite URI parameters, query_only on
// every connection, and reads its schema version.
func openRO(ctx context.Context, path, params string) (*Store, int64, error) {
	u := url.URL{Scheme: "file", Path: path, RawQuery: params + "&_pragma=busy_timeout(5000)&_pragma=query_only(1)"}
	db, err := sql.Open("sqlite", u.String())
	if err != nil {
		return nil, 0, err
	}
	db.SetMaxOpenConns(4)
	var v int64
	err = db.QueryRowContext(ctx, `SELECT coalesce(max(version_id), 0) FROM goose_db_version WHERE is_applied`).Scan(&v)
	if err != nil {
		db.Close()
		return nil, 0, fmt.Errorf("read schema version: %w", err)
	}
	return &Store{path: path, w: db, r: db, subs: newBroadcaster(), now: time.Now}, v, nil
}

// JobSummary is a job with the counts the history list and `audit jobs`
// show: how many target actions ended in each state.
type JobSummary struct {
	Job
	Actions   int // all target actions
	Succeeded int
	Failed    int
	Skipped   int
	Active    int // pending or running
}

// Duration is how long the job ran (until now for a running job, zero
// before it started).
func (j JobSummary) Duration(now time.Time) time.Duration {
	return jobDuration(j.Job, now)
}

func jobDuration(j Job, now time.Time) time.Duration {
	if j.StartedAt == nil {
		return 0
	}
	end := now
	if j.FinishedAt != nil {
		end = *j.FinishedAt
	}
	return end.Sub(*j.StartedAt)
}

// JobSummaries lists jobs newest first (as ListJobs, same filter) with their
// action counts.
func (s *Store) JobSummaries(ctx context.Context, f JobFilter) ([]JobSummary, error) {
	jobs, err := s.ListJobs(ctx, f)
	if err != nil {
		return nil, err
	}
	out := make([]JobSummary, 0, len(jobs))
	if len(jobs) == 0 {
		return out, nil
	}
	counts := map[int64]*JobSummary{}
	for _, j := range jobs {
		out = append(out, JobSummary{Job: j})
	}
	for i := range out {
		counts[out[i].ID] = &out[i]
	}
	rows, err := s.r.QueryContext(ctx, `SELECT job_id, state, count(*) FROM actions
		WHERE job_id BETWEEN ? AND ? GROUP BY job_id, state`, jobs[len(jobs)-1].ID, jobs[0].ID)
	if err != nil {
		return nil, fmt.Errorf("count actions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id    int64
			state ActionState
			n     int
		)
		if err := rows.Scan(&id, &state, &n); err != nil {
			return nil, fmt.Errorf("count actions: %w", err)
		}
		js := counts[id]
		if js == nil {
			continue // a job of the id range filtered out by kind or state
		}
		js.Actions += n
		switch state {
		case ActionSucceeded:
			js.Succeeded += n
		case ActionFailed:
			js.Failed += n
		case ActionSkipped:
			js.Skipped += n
		default:
			js.Active += n
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count actions: %w", err)
	}
	return out, nil
}

// Failure is one thing that went wrong: a failed target action, or a failed
// or cancelled job's own error.
type Failure struct {
	JobID      int64
	Kind       Kind
	JobState   State
	Step       string // empty for a job-level failure
	TargetKind string // empty for a job-level failure
	Target     string
	TargetID   string
	Operation  string
	Attempts   int
	Error      string
	At         *time.Time // when it ended
}

// Failures returns failed target actions and the errors of failed or
// cancelled jobs, newest job first, at most limit jobs' worth (0: 50).
func (s *Store) Failures(ctx context.Context, f JobFilter) ([]Failure, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = defaultJobLimit
	}
	var (
		where = []string{`j.state IN ('failed', 'cancelled') OR EXISTS (SELECT 1 FROM actions x WHERE x.job_id = j.id AND x.state = 'failed')`}
		args  []any
	)
	if f.Kind != "" {
		where, args = append(where, "j.kind = ?"), append(args, f.Kind)
	}
	if f.Before > 0 {
		where, args = append(where, "j.id < ?"), append(args, f.Before)
	}
	args = append(args, min(limit, maxJobLimit))
	q := `WITH picked AS (SELECT j.id FROM jobs j WHERE (` + strings.Join(where, ") AND (") + `) ORDER BY j.id DESC LIMIT ?)
		SELECT j.id, j.kind, j.state, '', '', '', '', '', 0, j.error, j.finished_at, 0 AS ord
			FROM jobs j JOIN picked p ON p.id = j.id WHERE j.state IN ('failed', 'cancelled')
		UNION ALL
		SELECT j.id, j.kind, j.state, st.name, a.target_kind, a.target, a.target_id, a.operation, a.attempts,
			a.error, a.finished_at, a.id
			FROM actions a JOIN picked p ON p.id = a.job_id JOIN jobs j ON j.id = a.job_id
			JOIN steps st ON st.id = a.step_id WHERE a.state = 'failed'
		ORDER BY 1 DESC, 12`
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list failures: %w", err)
	}
	defer rows.Close()
	out := []Failure{}
	for rows.Next() {
		var (
			fl  Failure
			at  sql.NullString
			ord int64
		)
		if err := rows.Scan(&fl.JobID, &fl.Kind, &fl.JobState, &fl.Step, &fl.TargetKind, &fl.Target, &fl.TargetID,
			&fl.Operation, &fl.Attempts, &fl.Error, &at, &ord); err != nil {
			return nil, fmt.Errorf("list failures: %w", err)
		}
		if fl.At, err = parseNullTime(at); err != nil {
			return nil, fmt.Errorf("list failures: %w", err)
		}
		out = append(out, fl)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list failures: %w", err)
	}
	return out, nil
}

// JobReport is everything recorded under one job, for the job page and
// `audit job ID`.
type JobReport struct {
	Job     Job
	Steps   []Step
	Actions []Action
	Events  []Event
}

// Report reads a job and everything under it. ErrNotFound for no such job.
func (s *Store) Report(ctx context.Context, id int64) (JobReport, error) {
	var (
		rep JobReport
		err error
	)
	if rep.Job, err = s.Job(ctx, id); err != nil {
		return JobReport{}, err
	}
	if rep.Steps, err = s.Steps(ctx, id); err != nil {
		return JobReport{}, err
	}
	if rep.Actions, err = s.Actions(ctx, id); err != nil {
		return JobReport{}, err
	}
	if rep.Events, err = s.Events(ctx, id, 0); err != nil {
		return JobReport{}, err
	}
	return rep, nil
}

// JobIDs returns the ids of every job, oldest first, for `audit verify`.
func (s *Store) JobIDs(ctx context.Context) ([]int64, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id FROM jobs ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list job ids: %w", err)
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("list job ids: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list job ids: %w", err)
	}
	return ids, nil
}
