package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// IdempotencyWindow is how long an Idempotency-Key names its first job. A
// UPS controller retries within minutes; 24 h also covers a retry queued
// over a night, and bounds the table.
const IdempotencyWindow = 24 * time.Hour

// IdempotencyKey is one recorded key: the job its first request created, and
// the fingerprint of that request (kind and body hash), so that a key reused
// for a different request is told apart from a retry.
type IdempotencyKey struct {
	TokenName   string
	Key         string
	Fingerprint string
	JobID       int64
	CreatedAt   time.Time
}

// IdempotencyKey returns the key recorded for token within the last
// IdempotencyWindow, or ErrNotFound.
func (s *Store) IdempotencyKey(ctx context.Context, token, key string) (IdempotencyKey, error) {
	k := IdempotencyKey{TokenName: token, Key: key}
	var created string
	cutoff := formatTime(s.now().Add(-IdempotencyWindow))
	err := s.r.QueryRowContext(ctx, `SELECT fingerprint, job_id, created_at FROM idempotency_keys
		WHERE token_name = ? AND key = ? AND created_at > ?`, token, key, cutoff).Scan(&k.Fingerprint, &k.JobID, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return k, ErrNotFound
	}
	if err != nil {
		return k, fmt.Errorf("read idempotency key: %w", err)
	}
	if k.CreatedAt, err = parseTime(created); err != nil {
		return k, err
	}
	return k, nil
}

// RecordIdempotencyKey remembers that key of token created jobID. Keys older
// than the window are deleted first (all of them, which keeps the table
// small without a background job), so an expired key can be used again. A
// key still live is ErrNameTaken: the caller lost a race and should read it.
func (s *Store) RecordIdempotencyKey(ctx context.Context, token, key, fingerprint string, jobID int64) error {
	err := s.update(ctx, false, func(tx *sql.Tx, now time.Time) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM idempotency_keys WHERE created_at <= ?`,
			formatTime(now.Add(-IdempotencyWindow))); err != nil {
			return fmt.Errorf("expire keys: %w", err)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO idempotency_keys (token_name, key, fingerprint, job_id, created_at)
			VALUES (?, ?, ?, ?, ?)`, token, key, fingerprint, jobID, formatTime(now))
		if isUnique(err) || isPrimaryKey(err) {
			return ErrNameTaken
		}
		return notFoundIfFK(err)
	})
	if err != nil {
		return fmt.Errorf("record idempotency key: %w", err)
	}
	return nil
}

// isPrimaryKey reports whether err is a PRIMARY KEY violation, which SQLite
// reports apart from UNIQUE on tables with a composite primary key.
func isPrimaryKey(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}
