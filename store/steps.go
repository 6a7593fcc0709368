package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// StepState is where a step is; the schema allows only these.
type StepState string

// Step states. Succeeded, failed, skipped and cancelled are final.
const (
	StepPending   StepState = "pending"
	StepRunning   StepState = "running"
	StepSucceeded StepState = "succeeded"
	StepFailed    StepState = "failed"
	StepSkipped   StepState = "skipped"
	StepCancelled StepState = "cancelled"
)

// Final reports whether a step in state s has ended.
func (s StepState) Final() bool {
	return s == StepSucceeded || s == StepFailed || s == StepSkipped || s == StepCancelled
}

// Step is one stage of a job (OpenStack VMs, storage, hosts, or a check),
// numbered by Seq so that a resumed job finds its steps again.
type Step struct {
	ID         int64
	JobID      int64
	Seq        int
	Name       string
	State      StepState
	Detail     string
	Error      string
	StartedAt  *time.Time
	FinishedAt *time.Time
}

const stepColumns = `id, job_id, seq, name, state, detail, error, started_at, finished_at`

func scanStep(sc scanner) (Step, error) {
	var (
		st                Step
		started, finished sql.NullString
	)
	err := sc.Scan(&st.ID, &st.JobID, &st.Seq, &st.Name, &st.State, &st.Detail, &st.Error, &started, &finished)
	if err != nil {
		return Step{}, err
	}
	if st.StartedAt, err = parseNullTime(started); err != nil {
		return Step{}, err
	}
	if st.FinishedAt, err = parseNullTime(finished); err != nil {
		return Step{}, err
	}
	return st, nil
}

// EnsureStep returns the step seq of a job, creating it (pending) if it does
// not exist yet, so that a resumed job reuses the steps it already has.
func (s *Store) EnsureStep(ctx context.Context, jobID int64, seq int, name string) (Step, error) {
	var st Step
	err := s.update(ctx, true, func(tx *sql.Tx, now time.Time) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO steps (job_id, seq, name) VALUES (?, ?, ?)
			ON CONFLICT (job_id, seq) DO NOTHING`, jobID, seq, name)
		if err != nil {
			return notFoundIfFK(err)
		}
		st, err = scanStep(tx.QueryRowContext(ctx, `SELECT `+stepColumns+` FROM steps WHERE job_id = ? AND seq = ?`, jobID, seq))
		return err
	})
	if err != nil {
		return Step{}, fmt.Errorf("ensure step %d of job %d: %w", seq, jobID, err)
	}
	return st, nil
}

// StartStep marks a step running; a step started again on resume keeps its
// first start time.
func (s *Store) StartStep(ctx context.Context, stepID int64) error {
	err := s.update(ctx, true, func(tx *sql.Tx, now time.Time) error {
		res, err := tx.ExecContext(ctx, `UPDATE steps SET state = 'running', error = '',
			started_at = COALESCE(started_at, ?), finished_at = NULL WHERE id = ?`, formatTime(now), stepID)
		if err != nil {
			return err
		}
		return affected(res)
	})
	if err != nil {
		return fmt.Errorf("start step %d: %w", stepID, err)
	}
	return nil
}

// FinishStep sets a step's final state, detail and error.
func (s *Store) FinishStep(ctx context.Context, stepID int64, state StepState, detail, errMsg string) error {
	if !state.Final() {
		return fmt.Errorf("finish step %d: %q is not a final state", stepID, state)
	}
	err := s.update(ctx, true, func(tx *sql.Tx, now time.Time) error {
		ts := formatTime(now)
		res, err := tx.ExecContext(ctx, `UPDATE steps SET state = ?, detail = ?, error = ?,
			started_at = COALESCE(started_at, ?), finished_at = ? WHERE id = ?`,
			state, detail, errMsg, ts, ts, stepID)
		if err != nil {
			return err
		}
		return affected(res)
	})
	if err != nil {
		return fmt.Errorf("finish step %d: %w", stepID, err)
	}
	return nil
}

// Steps returns a job's steps in order.
func (s *Store) Steps(ctx context.Context, jobID int64) ([]Step, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+stepColumns+` FROM steps WHERE job_id = ? ORDER BY seq`, jobID)
	if err != nil {
		return nil, fmt.Errorf("list steps of job %d: %w", jobID, err)
	}
	defer rows.Close()
	steps := []Step{}
	for rows.Next() {
		st, err := scanStep(rows)
		if err != nil {
			return nil, fmt.Errorf("list steps of job %d: %w", jobID, err)
		}
		steps = append(steps, st)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list steps of job %d: %w", jobID, err)
	}
	return steps, nil
}
