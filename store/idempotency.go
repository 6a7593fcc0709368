package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// IdempotencyWindow is how long the row of a key whose job has ended is
// kept. A key only replays while its job is active (see IdempotencyKey), so
// the window does not decide any answer: it only bounds the table.
const IdempotencyWindow = 24 * time.Hour

// IdempotencyKey is one recorded key: the job its latest request created,
// that job's state now, and the fingerprint of the request. The fingerprint
// starts with the job kind ("shutdown", or "kind:body-hash" in rows written
// before bodies stopped counting), so a shutdown is never answered with a
// simulation's job.
type IdempotencyKey struct {
	TokenName   string
	Key         string
	Fingerprint string
	JobID       int64
	JobState    State
	CreatedAt   time.Time
}

// Kind is the job kind the key was recorded for.
func (k IdempotencyKey) Kind() Kind {
	kind, _, _ := strings.Cut(k.Fingerprint, ":")
	return Kind(kind)
}

// IdempotencyKey returns the key recorded for token with the current state
// of its job, or ErrNotFound. Whether to replay is the caller's decision:
// the API replays only an active job, because a UPS controller that sends a
// fixed key must get a new shutdown at the next power event, not the last
// one's finished job.
func (s *Store) IdempotencyKey(ctx context.Context, token, key string) (IdempotencyKey, error) {
	k := IdempotencyKey{TokenName: token, Key: key}
	var created, state string
	err := s.r.QueryRowContext(ctx, `SELECT k.fingerprint, k.job_id, k.created_at, j.state
		FROM idempotency_keys k JOIN jobs j ON j.id = k.job_id
		WHERE k.token_name = ? AND k.key = ?`, token, key).Scan(&k.Fingerprint, &k.JobID, &created, &state)
	if errors.Is(err, sql.ErrNoRows) {
		return k, ErrNotFound
	}
	if err != nil {
		return k, fmt.Errorf("read idempotency key: %w", err)
	}
	k.JobState = State(state)
	if k.CreatedAt, err = parseTime(created); err != nil {
		return k, err
	}
	return k, nil
}

// RecordIdempotencyKey makes key of token name jobID, replacing what the
// key named before (a key whose job ended starts a new job, which the key
// then names). Rows older than IdempotencyWindow whose job has ended are
// deleted first, which keeps the table small without a background job; a
// row of a job still active is kept whatever its age.
func (s *Store) RecordIdempotencyKey(ctx context.Context, token, key, fingerprint string, jobID int64) error {
	err := s.update(ctx, false, func(tx *sql.Tx, now time.Time) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM idempotency_keys WHERE created_at <= ?
			AND job_id IN (SELECT id FROM jobs WHERE state IN (?, ?, ?))`,
			formatTime(now.Add(-IdempotencyWindow)), StateSucceeded, StateFailed, StateCancelled); err != nil {
			return fmt.Errorf("expire keys: %w", err)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO idempotency_keys (token_name, key, fingerprint, job_id, created_at)
			VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (token_name, key) DO UPDATE SET
				fingerprint = excluded.fingerprint, job_id = excluded.job_id, created_at = excluded.created_at`,
			token, key, fingerprint, jobID, formatTime(now))
		return notFoundIfFK(err)
	})
	if err != nil {
		return fmt.Errorf("record idempotency key: %w", err)
	}
	return nil
}
