package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Kind is what a job does; the names are those of /jobs?kind=.
type Kind string

// Job kinds.
const (
	KindSimulation Kind = "simulation"
	KindShutdown   Kind = "shutdown"
)

// State is where a job is in its life; the schema allows only these.
type State string

// Job states. Pending and running are active; the others are final.
const (
	StatePending   State = "pending"
	StateRunning   State = "running"
	StateSucceeded State = "succeeded"
	StateFailed    State = "failed"
	StateCancelled State = "cancelled"
)

// Final reports whether a job in state s is over and will never change.
func (s State) Final() bool {
	return s == StateSucceeded || s == StateFailed || s == StateCancelled
}

// Job is one simulation or shutdown request with who asked, why, and how far
// it got.
type Job struct {
	ID               int64
	Kind             Kind
	State            State
	TokenName        string
	RemoteAddr       string
	Reason           string
	ExpectedRecovery *time.Time
	CurrentStep      string // human progress text, e.g. "Stopping OpenStack VMs (120/200 off)"
	Error            string // set when failed or cancelled
	CancelRequested  bool
	CreatedAt        time.Time // the API's start_time
	StartedAt        *time.Time
	FinishedAt       *time.Time
	Deadline         *time.Time // when the caller needs the job done, if it said
	OnTrack          *bool      // nil while unknown; see SetOnTrack
	// BootID is this machine's boot id when the job was created, started
	// or last resumed ("" when not known); see Store.SetBootID.
	BootID string
}

// NewJob is what a request says about a job to create.
type NewJob struct {
	Kind             Kind
	TokenName        string
	RemoteAddr       string
	Reason           string
	ExpectedRecovery *time.Time
	Deadline         *time.Time
	// RestoresJob is the shutdown job a startup restores (0 for the
	// other kinds); see CreateStartup.
	RestoresJob int64
}

// JobFilter selects jobs for ListJobs; zero fields do not filter.
type JobFilter struct {
	Kind   Kind
	State  State
	Limit  int   // default 50, max 500
	Before int64 // only ids < Before, for paging
}

// Limits of ListJobs.
const (
	defaultJobLimit = 50
	maxJobLimit     = 500
)

const jobColumns = `id, kind, state, token_name, remote_addr, reason, expected_recovery,
	current_step, error, cancel_requested, created_at, started_at, finished_at, deadline, on_track,
	coalesce(boot_id, '')`

const activeStates = `('pending', 'running')`

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

func scanJob(sc scanner) (Job, error) {
	var (
		j                                    Job
		expected, created, started, finished sql.NullString
		deadline                             sql.NullString
		onTrack                              sql.NullBool
	)
	err := sc.Scan(&j.ID, &j.Kind, &j.State, &j.TokenName, &j.RemoteAddr, &j.Reason, &expected,
		&j.CurrentStep, &j.Error, &j.CancelRequested, &created, &started, &finished, &deadline, &onTrack,
		&j.BootID)
	if err != nil {
		return Job{}, err
	}
	if j.Deadline, err = parseNullTime(deadline); err != nil {
		return Job{}, err
	}
	if onTrack.Valid {
		j.OnTrack = &onTrack.Bool
	}
	if j.CreatedAt, err = parseTime(created.String); err != nil {
		return Job{}, err
	}
	if j.ExpectedRecovery, err = parseNullTime(expected); err != nil {
		return Job{}, err
	}
	if j.StartedAt, err = parseNullTime(started); err != nil {
		return Job{}, err
	}
	if j.FinishedAt, err = parseNullTime(finished); err != nil {
		return Job{}, err
	}
	return j, nil
}

// CreateSimulation inserts a pending simulation job. It returns ErrJobRunning
// when any job is pending or running: the unique index decides, so two racing
// requests cannot both win.
func (s *Store) CreateSimulation(ctx context.Context, nj NewJob) (Job, error) {
	nj.Kind = KindSimulation
	var job Job
	err := s.update(ctx, true, func(tx *sql.Tx, now time.Time) error {
		var err error
		job, err = insertJob(ctx, tx, nj, s.bootID(), now)
		return err
	})
	if err != nil {
		return Job{}, fmt.Errorf("create simulation: %w", err)
	}
	return job, nil
}

// CreateShutdown creates a pending shutdown job, in one transaction: if a
// shutdown is already active it returns that job with created=false (a UPS
// that retries must see success, not a conflict); if a simulation is active
// it is cancelled as preempted, with an event, before the shutdown is
// inserted. A shutdown whose cancel is pending is superseded the same way:
// a new request for a shutdown must not be answered with a job that is
// about to stop (the UPS would take the 202 for a shutdown under way).
func (s *Store) CreateShutdown(ctx context.Context, nj NewJob) (job Job, created bool, err error) {
	nj.Kind = KindShutdown
	err = s.update(ctx, true, func(tx *sql.Tx, now time.Time) error {
		active, err := activeJob(ctx, tx)
		if err != nil {
			return err
		}
		if active != nil && active.Kind == KindShutdown && !active.CancelRequested {
			job = *active
			return nil
		}
		if active != nil {
			// Free the one-active slot first; the message names the new job,
			// whose id is known only after the insert.
			if err := finishJobTx(ctx, tx, active.ID, StateCancelled, "preempted by shutdown", now); err != nil {
				return err
			}
		}
		if job, err = insertJob(ctx, tx, nj, s.bootID(), now); err != nil {
			return err
		}
		created = true
		if active == nil {
			return nil
		}
		msg := fmt.Sprintf("preempted by shutdown job %d", job.ID)
		newMsg := fmt.Sprintf("preempted %s job %d", active.Kind, active.ID)
		if active.Kind == KindShutdown {
			msg = fmt.Sprintf("cancelled by request; superseded by shutdown job %d, requested while the cancel was pending", job.ID)
			newMsg = fmt.Sprintf("supersedes shutdown job %d, whose cancel was pending", active.ID)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE jobs SET error = ? WHERE id = ?`, msg, active.ID); err != nil {
			return fmt.Errorf("mark job %d preempted: %w", active.ID, err)
		}
		if err := addEvent(ctx, tx, active.ID, now, LevelWarn, msg, ""); err != nil {
			return err
		}
		return addEvent(ctx, tx, job.ID, now, LevelWarn, newMsg, "")
	})
	if err != nil {
		return Job{}, false, fmt.Errorf("create shutdown: %w", err)
	}
	return job, created, nil
}

// insertJob inserts a pending job and records who asked and why, and the
// boot of this machine it was asked in.
func insertJob(ctx context.Context, tx *sql.Tx, nj NewJob, boot sql.NullString, now time.Time) (Job, error) {
	job := Job{
		Kind: nj.Kind, State: StatePending,
		TokenName: nj.TokenName, RemoteAddr: nj.RemoteAddr, Reason: nj.Reason,
		ExpectedRecovery: nj.ExpectedRecovery, CreatedAt: now, BootID: boot.String,
	}
	if job.ExpectedRecovery != nil {
		t := job.ExpectedRecovery.UTC().Truncate(time.Microsecond)
		job.ExpectedRecovery = &t
	}
	if nj.Deadline != nil {
		t := nj.Deadline.UTC().Truncate(time.Microsecond)
		job.Deadline = &t
	}
	restores := sql.NullInt64{Int64: nj.RestoresJob, Valid: nj.RestoresJob != 0}
	res, err := tx.ExecContext(ctx, `INSERT INTO jobs (kind, state, token_name, remote_addr, reason, expected_recovery, created_at, deadline, boot_id, restores_job)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		job.Kind, job.State, job.TokenName, job.RemoteAddr, job.Reason, nullTime(job.ExpectedRecovery), formatTime(now), nullTime(job.Deadline), boot, restores)
	if isUnique(err) {
		return Job{}, ErrJobRunning
	}
	if err != nil {
		return Job{}, fmt.Errorf("insert job: %w", err)
	}
	if job.ID, err = res.LastInsertId(); err != nil {
		return Job{}, fmt.Errorf("insert job: %w", err)
	}
	detail := fmt.Sprintf("token=%s remote=%s reason=%q", nj.TokenName, nj.RemoteAddr, nj.Reason)
	if nj.ExpectedRecovery != nil {
		detail += " expected_recovery=" + formatTime(*job.ExpectedRecovery)
	}
	if err := addEvent(ctx, tx, job.ID, now, LevelInfo, string(job.Kind)+" job created", detail); err != nil {
		return Job{}, err
	}
	return job, nil
}

// activeJob returns the pending or running job, or nil.
func activeJob(ctx context.Context, q querier) (*Job, error) {
	j, err := scanJob(q.QueryRowContext(ctx, `SELECT `+jobColumns+` FROM jobs WHERE state IN `+activeStates))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read active job: %w", err)
	}
	return &j, nil
}

// querier is a *sql.DB or *sql.Tx.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// ActiveJob returns the pending or running job, or nil when there is none.
func (s *Store) ActiveJob(ctx context.Context) (*Job, error) {
	return activeJob(ctx, s.r)
}

// Job returns one job, or ErrNotFound.
func (s *Store) Job(ctx context.Context, id int64) (Job, error) {
	j, err := scanJob(s.r.QueryRowContext(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Job{}, fmt.Errorf("job %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return Job{}, fmt.Errorf("read job %d: %w", id, err)
	}
	return j, nil
}

// LatestJob returns the newest job of a kind, for /simulate/status and
// /shutdown/status, or nil when there is none.
func (s *Store) LatestJob(ctx context.Context, kind Kind) (*Job, error) {
	j, err := scanJob(s.latestJob.QueryRowContext(ctx, kind))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read latest %s job: %w", kind, err)
	}
	return &j, nil
}

// ListJobs returns jobs newest first.
func (s *Store) ListJobs(ctx context.Context, f JobFilter) ([]Job, error) {
	var (
		where []string
		args  []any
	)
	if f.Kind != "" {
		where, args = append(where, "kind = ?"), append(args, f.Kind)
	}
	if f.State != "" {
		where, args = append(where, "state = ?"), append(args, f.State)
	}
	if f.Before > 0 {
		where, args = append(where, "id < ?"), append(args, f.Before)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = defaultJobLimit
	}
	limit = min(limit, maxJobLimit)
	q := `SELECT ` + jobColumns + ` FROM jobs`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY id DESC LIMIT ?`
	args = append(args, limit)
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	defer rows.Close()
	jobs := []Job{}
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, fmt.Errorf("list jobs: %w", err)
		}
		jobs = append(jobs, j)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	return jobs, nil
}

// StartJob moves a job from pending to running; on a running job (a
// resumed shutdown) it only records the boot it resumes in. Either way the
// job gets this machine's boot id (see SetBootID). It returns ErrJobFinished
// on a final job, ErrNotFound on a missing one.
func (s *Store) StartJob(ctx context.Context, id int64) error {
	err := s.update(ctx, true, func(tx *sql.Tx, now time.Time) error {
		state, err := jobState(ctx, tx, id)
		if err != nil {
			return err
		}
		switch {
		case state == StateRunning:
			_, err := tx.ExecContext(ctx, `UPDATE jobs SET boot_id = ?, touched_at = ? WHERE id = ?`,
				s.bootID(), formatTime(now), id)
			return err
		case state.Final():
			return fmt.Errorf("job is %s: %w", state, ErrJobFinished)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE jobs SET state = 'running', started_at = ?, boot_id = ?, touched_at = ? WHERE id = ?`,
			formatTime(now), s.bootID(), formatTime(now), id); err != nil {
			return err
		}
		return addEvent(ctx, tx, id, now, LevelInfo, "job started", "")
	})
	if err != nil {
		return fmt.Errorf("start job %d: %w", id, err)
	}
	return nil
}

// jobState reads a job's state inside a transaction.
func jobState(ctx context.Context, tx *sql.Tx, id int64) (State, error) {
	var st State
	err := tx.QueryRowContext(ctx, `SELECT state FROM jobs WHERE id = ?`, id).Scan(&st)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("read job state: %w", err)
	}
	return st, nil
}

// FinishJob sets a job's final state. The write is guarded: it returns false,
// and changes nothing, when the job is already final (cancelled or
// preempted), so a late runner never overwrites that decision.
func (s *Store) FinishJob(ctx context.Context, id int64, state State, errMsg string) (bool, error) {
	if !state.Final() {
		return false, fmt.Errorf("finish job %d: %q is not a final state", id, state)
	}
	var done bool
	err := s.update(ctx, true, func(tx *sql.Tx, now time.Time) error {
		st, err := jobState(ctx, tx, id)
		if err != nil {
			return err
		}
		if st.Final() {
			return nil
		}
		if err := finishJobTx(ctx, tx, id, state, errMsg, now); err != nil {
			return err
		}
		done = true
		level, msg := LevelInfo, "job "+string(state)
		if state != StateSucceeded {
			level = LevelError
			if state == StateCancelled {
				level = LevelWarn
			}
		}
		return addEvent(ctx, tx, id, now, level, msg, errMsg)
	})
	if err != nil {
		return false, fmt.Errorf("finish job %d: %w", id, err)
	}
	return done, nil
}

// finishJobTx moves an active job to a final state; the WHERE clause is the
// guard against overwriting a final state.
func finishJobTx(ctx context.Context, tx *sql.Tx, id int64, state State, errMsg string, now time.Time) error {
	_, err := tx.ExecContext(ctx, `UPDATE jobs SET state = ?, error = ?, finished_at = ?
		WHERE id = ? AND state IN `+activeStates, state, errMsg, formatTime(now), id)
	if err != nil {
		return fmt.Errorf("set job %d %s: %w", id, state, err)
	}
	return nil
}

// RequestCancel cancels a job: a pending job is cancelled at once, a running
// job gets cancel_requested and stops at its next safe point, a final job is
// left unchanged. It returns the job as it is afterwards.
func (s *Store) RequestCancel(ctx context.Context, id int64) (Job, error) {
	var job Job
	err := s.update(ctx, true, func(tx *sql.Tx, now time.Time) error {
		st, err := jobState(ctx, tx, id)
		if err != nil {
			return err
		}
		switch st {
		case StatePending:
			if err := finishJobTx(ctx, tx, id, StateCancelled, "cancelled before start", now); err != nil {
				return err
			}
			if err := addEvent(ctx, tx, id, now, LevelWarn, "job cancelled before start", ""); err != nil {
				return err
			}
		case StateRunning:
			if _, err := tx.ExecContext(ctx, `UPDATE jobs SET cancel_requested = 1 WHERE id = ?`, id); err != nil {
				return err
			}
			if err := addEvent(ctx, tx, id, now, LevelWarn, "cancel requested", "stops at the next safe point"); err != nil {
				return err
			}
		}
		job, err = scanJob(tx.QueryRowContext(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = ?`, id))
		return err
	})
	if err != nil {
		return Job{}, fmt.Errorf("cancel job %d: %w", id, err)
	}
	return job, nil
}

// CloseOpenActionsOfFinalJobs settles the actions a stopped process left
// open in jobs that were already final: above all the self power-off,
// recorded before the job's final state and finished only if the machine
// lets us, whose machine then went down. Their outcome was never recorded,
// so they end skipped with why (and an event on the job), never resumed:
// the machine was started again by hand. It returns how many it closed.
func (s *Store) CloseOpenActionsOfFinalJobs(ctx context.Context) (int, error) {
	const why = "outcome not recorded: the service stopped (this machine went down?) before it was written; not resumed"
	var n int
	err := s.update(ctx, true, func(tx *sql.Tx, now time.Time) error {
		ids, err := queryIDs(ctx, tx, `SELECT DISTINCT a.job_id FROM actions a JOIN jobs j ON j.id = a.job_id
			WHERE a.state IN ('pending', 'running') AND j.state NOT IN `+activeStates)
		if err != nil {
			return err
		}
		ts := formatTime(now)
		for _, id := range ids {
			res, err := tx.ExecContext(ctx, `UPDATE actions SET state = 'skipped', detail = ?, finished_at = ?, updated_at = ?
				WHERE job_id = ? AND state IN ('pending', 'running')`, why, ts, ts, id)
			if err != nil {
				return fmt.Errorf("close actions of job %d: %w", id, err)
			}
			k, _ := res.RowsAffected()
			n += int(k)
			if err := addEvent(ctx, tx, id, now, LevelWarn, fmt.Sprintf("%d actions left open at the last stop closed", k), why); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("close open actions of final jobs: %w", err)
	}
	return n, nil
}

// queryIDs returns the single integer column of a query's rows.
func queryIDs(ctx context.Context, q querier, query string, args ...any) ([]int64, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// FailInterruptedSimulations marks simulations that were active when the
// service stopped as failed "interrupted by restart", with their running
// steps and actions, since nobody will finish them; an interrupted shutdown is
// resumed instead. It returns how many jobs it failed.
func (s *Store) FailInterruptedSimulations(ctx context.Context) (int, error) {
	const msg = "interrupted by restart"
	var n int
	err := s.update(ctx, true, func(tx *sql.Tx, now time.Time) error {
		ids, err := queryIDs(ctx, tx, `SELECT id FROM jobs WHERE kind = 'simulation' AND state IN `+activeStates)
		if err != nil {
			return err
		}
		ts := formatTime(now)
		for _, id := range ids {
			if err := finishJobTx(ctx, tx, id, StateFailed, msg, now); err != nil {
				return err
			}
			if err := failOpenStepsTx(ctx, tx, id, msg, now); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE actions SET state = 'failed', error = ?, finished_at = ?, updated_at = ?
				WHERE job_id = ? AND state IN ('pending', 'running')`, msg, ts, ts, id); err != nil {
				return fmt.Errorf("fail actions of job %d: %w", id, err)
			}
			if err := addEvent(ctx, tx, id, now, LevelError, "job failed", msg); err != nil {
				return err
			}
		}
		n = len(ids)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("fail interrupted simulations: %w", err)
	}
	return n, nil
}

// failOpenStepsTx fails the steps of a job that nobody will finish (the
// job is being ended at start-up), with why.
func failOpenStepsTx(ctx context.Context, tx *sql.Tx, id int64, why string, now time.Time) error {
	if _, err := tx.ExecContext(ctx, `UPDATE steps SET state = 'failed', error = ?, finished_at = ?
		WHERE job_id = ? AND state IN ('pending', 'running')`, why, formatTime(now), id); err != nil {
		return fmt.Errorf("fail steps of job %d: %w", id, err)
	}
	return nil
}
