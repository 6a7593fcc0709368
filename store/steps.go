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
	return s.ChangeStep(ctx, StepChange{JobID: jobID, Seq: seq, Name: name})
}

// StartStep marks a step running; a step started again on resume keeps its
// first start time.
func (s *Store) StartStep(ctx context.Context, stepID int64) error {
	_, err := s.ChangeStep(ctx, StepChange{ID: stepID, State: StepRunning})
	return err
}

// FinishStep sets a step's final state, detail and error.
func (s *Store) FinishStep(ctx context.Context, stepID int64, state StepState, detail, errMsg string) error {
	if !state.Final() {
		return fmt.Errorf("finish step %d: %q is not a final state", stepID, state)
	}
	_, err := s.ChangeStep(ctx, StepChange{ID: stepID, State: state, Detail: detail, Error: errMsg})
	return err
}

// StepChange is one write to a step for ChangeStep: with ID 0, the step Seq
// (named Name) of job JobID is found or created pending (EnsureStep); with
// an ID, it is started (State running, StartStep) or finished (a final
// State, FinishStep).
type StepChange struct {
	JobID  int64
	ID     int64
	Seq    int
	Name   string
	State  StepState
	Detail string
	Error  string
	// At is when the change was made; zero means now (see Batch.At).
	At time.Time
}

// ChangeStep writes c and returns the step as it is afterwards (only for
// a step created or found; a start or finish returns the zero Step).
func (s *Store) ChangeStep(ctx context.Context, c StepChange) (Step, error) {
	var st Step
	err := s.updateAt(ctx, c.At, true, func(tx *sql.Tx, now time.Time) error {
		ts := formatTime(now)
		var (
			res sql.Result
			err error
		)
		switch {
		case c.ID == 0:
			_, err = tx.ExecContext(ctx, `INSERT INTO steps (job_id, seq, name) VALUES (?, ?, ?)
				ON CONFLICT (job_id, seq) DO NOTHING`, c.JobID, c.Seq, c.Name)
			if err != nil {
				return notFoundIfFK(err)
			}
			st, err = scanStep(tx.QueryRowContext(ctx, `SELECT `+stepColumns+` FROM steps WHERE job_id = ? AND seq = ?`, c.JobID, c.Seq))
			return err
		case c.State == StepRunning:
			res, err = tx.ExecContext(ctx, `UPDATE steps SET state = 'running', error = '',
				started_at = COALESCE(started_at, ?), finished_at = NULL WHERE id = ?`, ts, c.ID)
		case c.State.Final():
			res, err = tx.ExecContext(ctx, `UPDATE steps SET state = ?, detail = ?, error = ?,
				started_at = COALESCE(started_at, ?), finished_at = ? WHERE id = ?`,
				c.State, c.Detail, c.Error, ts, ts, c.ID)
		default:
			return fmt.Errorf("state %q is neither running nor final", c.State)
		}
		if err != nil {
			return err
		}
		return affected(res)
	})
	if err != nil {
		if c.ID == 0 {
			return Step{}, fmt.Errorf("ensure step %d of job %d: %w", c.Seq, c.JobID, err)
		}
		return Step{}, fmt.Errorf("change step %d to %s: %w", c.ID, c.State, err)
	}
	return st, nil
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
