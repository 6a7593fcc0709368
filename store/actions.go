package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// ActionState is where a target action is; the schema allows only these.
type ActionState string

// Action states. Succeeded, failed and skipped are final.
const (
	ActionPending   ActionState = "pending"
	ActionRunning   ActionState = "running"
	ActionSucceeded ActionState = "succeeded"
	ActionFailed    ActionState = "failed"
	ActionSkipped   ActionState = "skipped"
)

// Final reports whether an action in state s has ended.
func (s ActionState) Final() bool {
	return s == ActionSucceeded || s == ActionFailed || s == ActionSkipped
}

// ActionKey names one operation on one target within a step; the same key
// always finds the same row, which makes a resumed step idempotent.
type ActionKey struct {
	JobID      int64
	StepID     int64
	TargetKind TargetKind
	Target     string
	TargetID   string
	Operation  Operation
}

// Action is one operation on one target (a VM stop, a storage command, a
// host power-off, a BMC power-state read) with its outcome.
type Action struct {
	ID         int64
	JobID      int64
	StepID     int64
	TargetKind TargetKind
	Target     string
	TargetID   string
	Operation  Operation
	State      ActionState
	Attempts   int
	Detail     string
	Error      string
	StartedAt  *time.Time
	FinishedAt *time.Time
	UpdatedAt  time.Time
}

// ActionResult is the outcome of one action for FinishActions.
type ActionResult struct {
	ID     int64
	State  ActionState
	Detail string
	Error  string
}

const actionColumns = `id, job_id, step_id, target_kind, target, target_id, operation, state,
	attempts, detail, error, started_at, finished_at, updated_at`

func scanAction(sc scanner) (Action, error) {
	var (
		a                          Action
		started, finished, updated sql.NullString
	)
	err := sc.Scan(&a.ID, &a.JobID, &a.StepID, &a.TargetKind, &a.Target, &a.TargetID, &a.Operation, &a.State,
		&a.Attempts, &a.Detail, &a.Error, &started, &finished, &updated)
	if err != nil {
		return Action{}, err
	}
	if a.StartedAt, err = parseNullTime(started); err != nil {
		return Action{}, err
	}
	if a.FinishedAt, err = parseNullTime(finished); err != nil {
		return Action{}, err
	}
	if a.UpdatedAt, err = parseTime(updated.String); err != nil {
		return Action{}, err
	}
	return a, nil
}

// BeginActions finds or creates one action per key and marks each running
// with one more attempt, in one transaction, so that a batch of VM stops is
// recorded before any is sent. A first start time is kept on retries; the
// previous error is cleared.
func (s *Store) BeginActions(ctx context.Context, keys []ActionKey, detail string) ([]Action, error) {
	out := make([]Action, 0, len(keys))
	err := s.update(ctx, true, func(tx *sql.Tx, now time.Time) error {
		ts := formatTime(now)
		// One prepared statement for the batch: preparing the SQL per row
		// cost more than the insert itself (a batch of 2,000 VM stops).
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO actions
				(job_id, step_id, target_kind, target, target_id, operation, state, attempts, detail, started_at, updated_at)
				VALUES (?, ?, ?, ?, ?, ?, 'running', 1, ?, ?, ?)
				ON CONFLICT (step_id, target_kind, target_id, target, operation) DO UPDATE SET
					state = 'running', attempts = attempts + 1, detail = excluded.detail, error = '',
					started_at = COALESCE(started_at, excluded.started_at), finished_at = NULL,
					updated_at = excluded.updated_at
				RETURNING `+actionColumns)
		if err != nil {
			return fmt.Errorf("prepare: %w", err)
		}
		defer stmt.Close()
		for _, k := range keys {
			a, err := scanAction(stmt.QueryRowContext(ctx,
				k.JobID, k.StepID, k.TargetKind, k.Target, k.TargetID, k.Operation, detail, ts, ts))
			if err != nil {
				return fmt.Errorf("%s %s %s: %w", k.Operation, k.TargetKind, k.Target, notFoundIfFK(err))
			}
			out = append(out, a)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("begin actions: %w", err)
	}
	return out, nil
}

// FinishActions records the outcomes of a batch of actions in one
// transaction. Each state must be final.
func (s *Store) FinishActions(ctx context.Context, results []ActionResult) error {
	for _, r := range results {
		if !r.State.Final() {
			return fmt.Errorf("finish action %d: %q is not a final state", r.ID, r.State)
		}
	}
	err := s.update(ctx, true, func(tx *sql.Tx, now time.Time) error {
		ts := formatTime(now)
		stmt, err := tx.PrepareContext(ctx, `UPDATE actions SET state = ?, detail = ?, error = ?,
				started_at = COALESCE(started_at, ?), finished_at = ?, updated_at = ? WHERE id = ?`)
		if err != nil {
			return fmt.Errorf("prepare: %w", err)
		}
		defer stmt.Close()
		for _, r := range results {
			res, err := stmt.ExecContext(ctx, r.State, r.Detail, r.Error, ts, ts, ts, r.ID)
			if err != nil {
				return fmt.Errorf("action %d: %w", r.ID, err)
			}
			if err := affected(res); err != nil {
				return fmt.Errorf("action %d: %w", r.ID, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("finish actions: %w", err)
	}
	return nil
}

// ActionRecord is one action for RecordActions: a target recorded directly
// in a final state.
type ActionRecord struct {
	Key    ActionKey
	State  ActionState
	Detail string
	Error  string
}

// RecordAction creates or updates an action directly in a final state: a
// skipped target, or a check that takes no time to record separately. A
// skipped action does not count as an attempt.
func (s *Store) RecordAction(ctx context.Context, k ActionKey, state ActionState, detail, errMsg string) (Action, error) {
	as, err := s.RecordActions(ctx, []ActionRecord{{Key: k, State: state, Detail: detail, Error: errMsg}})
	if err != nil {
		return Action{}, err
	}
	return as[0], nil
}

// RecordActions is RecordAction for a batch, in one transaction, so that
// the hundreds of VMs a shutdown leaves alone (already SHUTOFF, skipped,
// excluded) cost one commit, not one each, before the first os-stop.
func (s *Store) RecordActions(ctx context.Context, recs []ActionRecord) ([]Action, error) {
	for _, r := range recs {
		if !r.State.Final() {
			return nil, fmt.Errorf("record action: %q is not a final state", r.State)
		}
	}
	var out []Action
	err := s.update(ctx, true, func(tx *sql.Tx, now time.Time) error {
		var err error
		out, err = recordActions(ctx, tx, now, recs)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// recordActions is RecordActions inside tx; the states are final (checked
// by the callers).
func recordActions(ctx context.Context, tx *sql.Tx, now time.Time, recs []ActionRecord) ([]Action, error) {
	ts := formatTime(now)
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO actions
		(job_id, step_id, target_kind, target, target_id, operation, state, attempts, detail, error,
		 started_at, finished_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (step_id, target_kind, target_id, target, operation) DO UPDATE SET
			state = excluded.state, attempts = attempts + excluded.attempts,
			detail = excluded.detail, error = excluded.error,
			started_at = COALESCE(started_at, excluded.started_at),
			finished_at = excluded.finished_at, updated_at = excluded.updated_at
		RETURNING `+actionColumns)
	if err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	defer stmt.Close()
	out := make([]Action, 0, len(recs))
	for _, r := range recs {
		attempt := 1
		if r.State == ActionSkipped {
			attempt = 0
		}
		k := r.Key
		a, err := scanAction(stmt.QueryRowContext(ctx,
			k.JobID, k.StepID, k.TargetKind, k.Target, k.TargetID, k.Operation, r.State, attempt, r.Detail, r.Error,
			ts, ts, ts))
		if err != nil {
			return nil, fmt.Errorf("record action %s %s %s: %w", k.Operation, k.TargetKind, k.Target, notFoundIfFK(err))
		}
		out = append(out, a)
	}
	return out, nil
}

// Actions returns every action of a job in creation order.
func (s *Store) Actions(ctx context.Context, jobID int64) ([]Action, error) {
	as, err := s.queryActions(ctx, `SELECT `+actionColumns+` FROM actions WHERE job_id = ? ORDER BY id`, jobID)
	if err != nil {
		return nil, fmt.Errorf("list actions of job %d: %w", jobID, err)
	}
	return as, nil
}

// StepActions returns the actions of one step in creation order.
func (s *Store) StepActions(ctx context.Context, stepID int64) ([]Action, error) {
	as, err := s.queryActions(ctx, `SELECT `+actionColumns+` FROM actions WHERE step_id = ? ORDER BY id`, stepID)
	if err != nil {
		return nil, fmt.Errorf("list actions of step %d: %w", stepID, err)
	}
	return as, nil
}

func (s *Store) queryActions(ctx context.Context, q string, args ...any) ([]Action, error) {
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	as := []Action{}
	for rows.Next() {
		a, err := scanAction(rows)
		if err != nil {
			return nil, err
		}
		as = append(as, a)
	}
	return as, rows.Err()
}
