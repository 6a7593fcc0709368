package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// PowerEventKind says what a power event records.
type PowerEventKind string

// Power event kinds (the CHECK of the power_events table).
const (
	PowerOnBattery      PowerEventKind = "on_battery"
	PowerOnMains        PowerEventKind = "on_mains"
	PowerConnectionLost PowerEventKind = "connection_lost"
	PowerConnectionBack PowerEventKind = "connection_back"
	PowerShutdown       PowerEventKind = "shutdown_started"
	PowerStartup        PowerEventKind = "startup_started"
)

// Power event levels.
const (
	PowerInfo     = "info"
	PowerWarn     = "warn"
	PowerCritical = "critical"
)

// PowerEvent is one thing the power source watcher saw or did: the mains
// gone or back, the NUT server lost or back, a job it started.
type PowerEvent struct {
	ID     int64
	At     time.Time
	Source string // nut/<ups>
	Kind   PowerEventKind
	Level  string // info, warn, critical
	// Status is ups.status as read; empty when the server did not answer.
	Status string
	// Charge (percent) and Runtime are nil when the UPS did not report them.
	Charge  *float64
	Runtime *time.Duration
	// JobID is the job a shutdown_started or startup_started event names.
	JobID  *int64
	Detail string
}

// PowerEventFilter selects power events; zero fields do not filter.
type PowerEventFilter struct {
	// Since and Until bound At (Since inclusive, Until exclusive).
	Since, Until time.Time
	// Limit is the most returned, newest first (default 100, max 1000).
	Limit int
}

// AddPowerEvent appends a power event, stamped now. It does not wake job
// subscribers: a power event changes no job.
func (s *Store) AddPowerEvent(ctx context.Context, e PowerEvent) (PowerEvent, error) {
	err := s.update(ctx, false, func(tx *sql.Tx, now time.Time) error {
		e.At = now
		var runtime sql.NullFloat64
		if e.Runtime != nil {
			runtime = sql.NullFloat64{Float64: e.Runtime.Seconds(), Valid: true}
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO power_events (at, source, kind, level, status, charge, runtime_seconds, job_id, detail)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			formatTime(now), e.Source, e.Kind, e.Level, e.Status, e.Charge, runtime, e.JobID, e.Detail)
		if err != nil {
			return fmt.Errorf("insert power event: %w", notFoundIfFK(err))
		}
		e.ID, err = res.LastInsertId()
		return err
	})
	if err != nil {
		return PowerEvent{}, fmt.Errorf("add power event %s: %w", e.Kind, err)
	}
	return e, nil
}

// PowerEvents returns power events, newest first.
func (s *Store) PowerEvents(ctx context.Context, f PowerEventFilter) ([]PowerEvent, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	q := `SELECT id, at, source, kind, level, status, charge, runtime_seconds, job_id, detail FROM power_events WHERE 1=1`
	var args []any
	if !f.Since.IsZero() {
		q += ` AND at >= ?`
		args = append(args, formatTime(f.Since))
	}
	if !f.Until.IsZero() {
		q += ` AND at < ?`
		args = append(args, formatTime(f.Until))
	}
	q += ` ORDER BY id DESC LIMIT ?`
	args = append(args, limit)
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read power events: %w", err)
	}
	defer rows.Close()
	var out []PowerEvent
	for rows.Next() {
		var (
			e       PowerEvent
			at      string
			charge  sql.NullFloat64
			runtime sql.NullFloat64
			job     sql.NullInt64
		)
		if err := rows.Scan(&e.ID, &at, &e.Source, &e.Kind, &e.Level, &e.Status, &charge, &runtime, &job, &e.Detail); err != nil {
			return nil, fmt.Errorf("read power events: %w", err)
		}
		if e.At, err = parseTime(at); err != nil {
			return nil, fmt.Errorf("read power events: %w", err)
		}
		if charge.Valid {
			e.Charge = &charge.Float64
		}
		if runtime.Valid {
			d := time.Duration(runtime.Float64 * float64(time.Second))
			e.Runtime = &d
		}
		if job.Valid {
			e.JobID = &job.Int64
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read power events: %w", err)
	}
	return out, nil
}
