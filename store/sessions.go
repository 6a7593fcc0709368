package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// sessionTouchInterval limits last_seen_at writes: a page that refreshes or
// streams must not queue an fsync'd write per request behind a running
// shutdown. Idle expiry is therefore exact to within this interval.
const sessionTouchInterval = time.Minute

// Session is a browser login to the history pages. It is bound to the token
// used to log in: revoking or expiring the token ends the session.
type Session struct {
	ID         int64
	TokenID    int64
	TokenName  string
	Scopes     []string // the token's scopes, read at lookup
	RemoteAddr string   // where the login came from
	CreatedAt  time.Time
	LastSeenAt time.Time
	ExpiresAt  time.Time // absolute limit
}

// NewSessionSecret returns a new random session id for a cookie: 32 random
// bytes, base64url. Only its HashToken is stored.
func NewSessionSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate session id: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// CreateSession stores a session for tokenID that ends after maxAge at the
// latest. Expired sessions are purged in the same transaction, so the table
// never grows without bound.
func (s *Store) CreateSession(ctx context.Context, hash []byte, tokenID int64, remoteAddr string, maxAge time.Duration) (Session, error) {
	var sess Session
	err := s.update(ctx, false, func(tx *sql.Tx, now time.Time) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE expires_at <= ?`, formatTime(now)); err != nil {
			return fmt.Errorf("purge sessions: %w", err)
		}
		exp := now.Add(maxAge)
		res, err := tx.ExecContext(ctx, `INSERT INTO sessions (hash, token_id, remote_addr, created_at, last_seen_at, expires_at)
			VALUES (?, ?, ?, ?, ?, ?)`, hash, tokenID, remoteAddr, formatTime(now), formatTime(now), formatTime(exp))
		if err != nil {
			return fmt.Errorf("insert session: %w", notFoundIfFK(err))
		}
		id, err := res.LastInsertId()
		if err != nil {
			return fmt.Errorf("insert session: %w", err)
		}
		sess = Session{ID: id, TokenID: tokenID, RemoteAddr: remoteAddr, CreatedAt: now, LastSeenAt: now, ExpiresAt: exp}
		return nil
	})
	if err != nil {
		return Session{}, fmt.Errorf("create session: %w", err)
	}
	return sess, nil
}

// SessionByHash returns the live session with that id hash: not past its
// absolute expiry, seen within idle, and whose token is neither revoked nor
// expired. Anything else is ErrNotFound, so a caller cannot tell why (and
// neither can a visitor). It marks the session seen at most once a minute.
func (s *Store) SessionByHash(ctx context.Context, hash []byte, idle time.Duration) (Session, error) {
	now := s.now().UTC()
	var (
		sess                   Session
		scopes                 string
		created, seen, expires string
		tokExpires, tokRevoked sql.NullString
	)
	err := s.r.QueryRowContext(ctx, `SELECT s.id, s.token_id, t.name, t.scopes, s.remote_addr, s.created_at,
			s.last_seen_at, s.expires_at, t.expires_at, t.revoked_at
		FROM sessions s JOIN tokens t ON t.id = s.token_id WHERE s.hash = ?`, hash).Scan(
		&sess.ID, &sess.TokenID, &sess.TokenName, &scopes, &sess.RemoteAddr, &created, &seen, &expires,
		&tokExpires, &tokRevoked)
	if errors.Is(err, sql.ErrNoRows) {
		return Session{}, ErrNotFound
	}
	if err != nil {
		return Session{}, fmt.Errorf("look up session: %w", err)
	}
	if sess.CreatedAt, err = parseTime(created); err != nil {
		return Session{}, fmt.Errorf("look up session: %w", err)
	}
	if sess.LastSeenAt, err = parseTime(seen); err != nil {
		return Session{}, fmt.Errorf("look up session: %w", err)
	}
	if sess.ExpiresAt, err = parseTime(expires); err != nil {
		return Session{}, fmt.Errorf("look up session: %w", err)
	}
	te, err := parseNullTime(tokExpires)
	if err != nil {
		return Session{}, fmt.Errorf("look up session: %w", err)
	}
	if tokRevoked.Valid || (te != nil && !now.Before(*te)) ||
		!now.Before(sess.ExpiresAt) || now.Sub(sess.LastSeenAt) >= idle {
		return Session{}, ErrNotFound
	}
	if err := json.Unmarshal([]byte(scopes), &sess.Scopes); err != nil {
		return Session{}, fmt.Errorf("look up session: scopes: %w", err)
	}
	if now.Sub(sess.LastSeenAt) >= sessionTouchInterval {
		err := s.update(ctx, false, func(tx *sql.Tx, now time.Time) error {
			_, err := tx.ExecContext(ctx, `UPDATE sessions SET last_seen_at = ? WHERE id = ?`, formatTime(now), sess.ID)
			return err
		})
		if err != nil {
			return Session{}, fmt.Errorf("touch session: %w", err)
		}
		sess.LastSeenAt = now
	}
	return sess, nil
}

// DeleteSession ends a session (logout). An unknown hash is not an error:
// logging out twice is fine.
func (s *Store) DeleteSession(ctx context.Context, hash []byte) error {
	err := s.update(ctx, false, func(tx *sql.Tx, _ time.Time) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE hash = ?`, hash)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	return nil
}
