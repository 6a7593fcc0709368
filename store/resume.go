package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// SetBootID tells the store this machine's boot id
// (/proc/sys/kernel/random/boot_id), recorded with every job created or
// started from now on, so that a restart can tell an interrupted job of this
// boot from one of a boot before (the runner's resume rule). "" means not
// known: jobs then get none.
func (s *Store) SetBootID(id string) { s.boot.Store(&id) }

// bootID is the boot id to record, NULL when not known.
func (s *Store) bootID() sql.NullString {
	p := s.boot.Load()
	if p == nil || *p == "" {
		return sql.NullString{}
	}
	return sql.NullString{String: *p, Valid: true}
}

// TouchJob records that the service working on a running job is alive
// (touched_at), without waking subscribers: nothing anyone shows changes. The
// runner calls it periodically, so a job's last record says when the service
// last worked on it even in a step that waits minutes without a state change.
func (s *Store) TouchJob(ctx context.Context, id int64) error {
	err := s.update(ctx, false, func(tx *sql.Tx, now time.Time) error {
		_, err := tx.ExecContext(ctx, `UPDATE jobs SET touched_at = ? WHERE id = ? AND state = 'running'`, formatTime(now), id)
		return err
	})
	if err != nil {
		return fmt.Errorf("touch job %d: %w", id, err)
	}
	return nil
}

// LastRecord returns when the newest record of a job was written: the
// latest of its own row's times (created, started, touched), its events,
// its actions and its steps. After a restart this is about when the service
// that ran it stopped. It returns ErrNotFound for a missing job.
func (s *Store) LastRecord(ctx context.Context, id int64) (time.Time, error) {
	var last sql.NullString
	err := s.r.QueryRowContext(ctx, `SELECT max(t) FROM (
			SELECT max(created_at, coalesce(started_at, ''), coalesce(touched_at, '')) AS t FROM jobs WHERE id = ?1
			UNION ALL SELECT at FROM events WHERE job_id = ?1 AND id = (SELECT max(id) FROM events WHERE job_id = ?1)
			UNION ALL SELECT max(updated_at) FROM actions WHERE job_id = ?1
			UNION ALL SELECT max(max(coalesce(started_at, '')), max(coalesce(finished_at, ''))) FROM steps WHERE job_id = ?1)`,
		id).Scan(&last)
	if err != nil {
		return time.Time{}, fmt.Errorf("read last record of job %d: %w", id, err)
	}
	if !last.Valid || last.String == "" {
		return time.Time{}, fmt.Errorf("read last record of job %d: %w", id, ErrNotFound)
	}
	t, err := parseTime(last.String)
	if err != nil {
		return time.Time{}, fmt.Errorf("read last record of job %d: %w", id, err)
	}
	return t, nil
}

// EndNotResumed ends an interrupted job that a restart decided not to
// resume: the job failed with msg, its open steps failed with msg, its open
// actions skipped (whether they got through is not known, and they are not
// tried again), and an error event with why (detail) before the state
// change's own event. Like FinishJob it changes nothing and returns false
// when the job is no longer active.
func (s *Store) EndNotResumed(ctx context.Context, id int64, msg, detail string) (bool, error) {
	var done bool
	err := s.update(ctx, true, func(tx *sql.Tx, now time.Time) error {
		st, err := jobState(ctx, tx, id)
		if err != nil {
			return err
		}
		if st.Final() {
			return nil
		}
		if err := addEvent(ctx, tx, id, now, LevelError, "not resumed after restart", detail); err != nil {
			return err
		}
		if err := failOpenStepsTx(ctx, tx, id, msg, now); err != nil {
			return err
		}
		ts := formatTime(now)
		if _, err := tx.ExecContext(ctx, `UPDATE actions SET state = 'skipped', detail = ?, finished_at = ?, updated_at = ?
			WHERE job_id = ? AND state IN ('pending', 'running')`, "outcome not recorded; "+msg, ts, ts, id); err != nil {
			return fmt.Errorf("close actions of job %d: %w", id, err)
		}
		if err := finishJobTx(ctx, tx, id, StateFailed, msg, now); err != nil {
			return err
		}
		done = true
		return addEvent(ctx, tx, id, now, LevelError, "job failed", msg)
	})
	if err != nil {
		return false, fmt.Errorf("end job %d not resumed: %w", id, err)
	}
	return done, nil
}
