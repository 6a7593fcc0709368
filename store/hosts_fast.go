package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// ActionBegin is one action to start in a Batch, with its own detail.
type ActionBegin struct {
	Key    ActionKey
	Detail string
}

// EventRecord is one event to append in a Batch.
type EventRecord struct {
	Level           Level
	Message, Detail string
}

// Batch is writes of one job that several goroutines asked for at about the
// same time (the hosts of a group powering off in parallel): one transaction,
// one fsync, instead of one each behind the single writer.
type Batch struct {
	JobID int64
	// At is when the records were made; zero means now. Records the store
	// refused for a while (a full disk) are written later with their own
	// time, so the audit shows when each thing happened.
	At     time.Time
	Finish []ActionResult
	Begin  []ActionBegin
	// Record creates or updates actions directly in a final state, as
	// RecordActions does.
	Record []ActionRecord
	Events []EventRecord
	// CurrentStep, when set, replaces the job's current_step. It counts
	// as a record of the job for the resume rule (touched_at), like any
	// other write of the job.
	CurrentStep *string
}

// Empty reports whether b writes nothing.
func (b Batch) Empty() bool {
	return len(b.Finish) == 0 && len(b.Begin) == 0 && len(b.Record) == 0 && len(b.Events) == 0 && b.CurrentStep == nil
}

// WriteBatch writes b in one transaction: the finished actions, the begun
// ones (as BeginActions does: created or marked running with one more
// attempt), the recorded ones (as RecordActions), the events in order, then
// the current step. It returns the begun actions in b.Begin's order. Any
// failure rolls the whole batch back.
func (s *Store) WriteBatch(ctx context.Context, b Batch) ([]Action, error) {
	for _, r := range b.Finish {
		if !r.State.Final() {
			return nil, fmt.Errorf("write batch: action %d: %q is not a final state", r.ID, r.State)
		}
	}
	for _, r := range b.Record {
		if !r.State.Final() {
			return nil, fmt.Errorf("write batch: record action: %q is not a final state", r.State)
		}
	}
	out := make([]Action, 0, len(b.Begin))
	err := s.updateAt(ctx, b.At, true, func(tx *sql.Tx, now time.Time) error {
		ts := formatTime(now)
		if len(b.Finish) > 0 {
			stmt, err := tx.PrepareContext(ctx, finishActionSQL)
			if err != nil {
				return fmt.Errorf("prepare: %w", err)
			}
			defer stmt.Close()
			for _, r := range b.Finish {
				res, err := stmt.ExecContext(ctx, r.State, r.Detail, r.Error, ts, ts, ts, r.ID)
				if err != nil {
					return fmt.Errorf("finish action %d: %w", r.ID, err)
				}
				if err := affected(res); err != nil {
					return fmt.Errorf("finish action %d: %w", r.ID, err)
				}
			}
		}
		if len(b.Begin) > 0 {
			stmt, err := tx.PrepareContext(ctx, beginActionSQL)
			if err != nil {
				return fmt.Errorf("prepare: %w", err)
			}
			defer stmt.Close()
			for _, a := range b.Begin {
				k := a.Key
				act, err := scanAction(stmt.QueryRowContext(ctx,
					k.JobID, k.StepID, k.TargetKind, k.Target, k.TargetID, k.Operation, a.Detail, ts, ts))
				if err != nil {
					return fmt.Errorf("begin action %s %s %s: %w", k.Operation, k.TargetKind, k.Target, notFoundIfFK(err))
				}
				out = append(out, act)
			}
		}
		if len(b.Record) > 0 {
			if _, err := recordActions(ctx, tx, now, b.Record); err != nil {
				return err
			}
		}
		for _, ev := range b.Events {
			if err := addEvent(ctx, tx, b.JobID, now, ev.Level, ev.Message, ev.Detail); err != nil {
				return err
			}
		}
		if b.CurrentStep != nil {
			res, err := tx.ExecContext(ctx, `UPDATE jobs SET current_step = ?, touched_at = ? WHERE id = ?`, *b.CurrentStep, ts, b.JobID)
			if err != nil {
				return fmt.Errorf("set current step: %w", err)
			}
			if err := affected(res); err != nil {
				return fmt.Errorf("set current step: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("write batch of job %d: %w", b.JobID, err)
	}
	return out, nil
}

// The statements of BeginActions and FinishActions, for WriteBatch; a test
// checks that the three behave alike.
const (
	beginActionSQL = `INSERT INTO actions
		(job_id, step_id, target_kind, target, target_id, operation, state, attempts, detail, started_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, 'running', 1, ?, ?, ?)
		ON CONFLICT (step_id, target_kind, target_id, target, operation) DO UPDATE SET
			state = 'running', attempts = attempts + 1, detail = excluded.detail, error = '',
			started_at = COALESCE(started_at, excluded.started_at), finished_at = NULL,
			updated_at = excluded.updated_at
		RETURNING ` + actionColumns
	finishActionSQL = `UPDATE actions SET state = ?, detail = ?, error = ?,
		started_at = COALESCE(started_at, ?), finished_at = ?, updated_at = ? WHERE id = ?`
)
