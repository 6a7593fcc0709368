package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Event is one entry of a job's append-only log: every decision, with its
// time and detail, for the live view and the post-incident audit.
type Event struct {
	ID      int64
	JobID   int64
	At      time.Time
	Level   string // info, warn or error
	Message string
	Detail  string
}

// AddEvent appends an event to a job's log. Level is info, warn or error.
func (s *Store) AddEvent(ctx context.Context, jobID int64, level, message, detail string) error {
	err := s.update(ctx, true, func(tx *sql.Tx, now time.Time) error {
		return addEvent(ctx, tx, jobID, now, level, message, detail)
	})
	if err != nil {
		return fmt.Errorf("add event to job %d: %w", jobID, err)
	}
	return nil
}

func addEvent(ctx context.Context, tx *sql.Tx, jobID int64, now time.Time, level, message, detail string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO events (job_id, at, level, message, detail) VALUES (?, ?, ?, ?, ?)`,
		jobID, formatTime(now), level, message, detail)
	if err != nil {
		return fmt.Errorf("insert event: %w", notFoundIfFK(err))
	}
	return nil
}

// Events returns a job's events with id > afterID, oldest first, so that an
// SSE stream can resume from the last id it sent.
func (s *Store) Events(ctx context.Context, jobID, afterID int64) ([]Event, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id, job_id, at, level, message, detail FROM events
		WHERE job_id = ? AND id > ? ORDER BY id`, jobID, afterID)
	if err != nil {
		return nil, fmt.Errorf("list events of job %d: %w", jobID, err)
	}
	defer rows.Close()
	evs := []Event{}
	for rows.Next() {
		var (
			e  Event
			at string
		)
		if err := rows.Scan(&e.ID, &e.JobID, &at, &e.Level, &e.Message, &e.Detail); err != nil {
			return nil, fmt.Errorf("list events of job %d: %w", jobID, err)
		}
		if e.At, err = parseTime(at); err != nil {
			return nil, fmt.Errorf("list events of job %d: %w", jobID, err)
		}
		evs = append(evs, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list events of job %d: %w", jobID, err)
	}
	return evs, nil
}
