package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// tokenPrefix marks shutdownd secrets so that secret scanners and people
// recognise a leaked one.
const tokenPrefix = "sdt_"

// touchInterval is how stale last_used_at may get: touching it on every
// request would queue a write per API call behind a running shutdown.
const touchInterval = time.Minute

// Token is an API token as stored: its name, what it may do and from where,
// never its secret.
type Token struct {
	ID         int64
	Name       string
	Scopes     []string
	CIDRs      []string
	CreatedAt  time.Time
	ExpiresAt  *time.Time
	RevokedAt  *time.Time
	LastUsedAt *time.Time
}

// NewTokenSecret returns a new random token secret: 32 random bytes,
// base64url, prefixed "sdt_". Only its HashToken is stored.
func NewTokenSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate token secret: %w", err)
	}
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// HashToken returns the SHA-256 of a secret, the form in which tokens are
// stored and looked up; a copy of the database does not reveal usable tokens.
func HashToken(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

const tokenColumns = `id, name, scopes, cidrs, created_at, expires_at, revoked_at, last_used_at`

func scanToken(sc scanner) (Token, error) {
	var (
		t                          Token
		scopes, cidrs, created     string
		expires, revoked, lastUsed sql.NullString
	)
	if err := sc.Scan(&t.ID, &t.Name, &scopes, &cidrs, &created, &expires, &revoked, &lastUsed); err != nil {
		return Token{}, err
	}
	if err := json.Unmarshal([]byte(scopes), &t.Scopes); err != nil {
		return Token{}, fmt.Errorf("token %s scopes: %w", t.Name, err)
	}
	if err := json.Unmarshal([]byte(cidrs), &t.CIDRs); err != nil {
		return Token{}, fmt.Errorf("token %s cidrs: %w", t.Name, err)
	}
	var err error
	if t.CreatedAt, err = parseTime(created); err != nil {
		return Token{}, err
	}
	if t.ExpiresAt, err = parseNullTime(expires); err != nil {
		return Token{}, err
	}
	if t.RevokedAt, err = parseNullTime(revoked); err != nil {
		return Token{}, err
	}
	if t.LastUsedAt, err = parseNullTime(lastUsed); err != nil {
		return Token{}, err
	}
	return t, nil
}

// jsonList encodes a string list as a JSON array, never null.
func jsonList(l []string) (string, error) {
	if l == nil {
		l = []string{}
	}
	b, err := json.Marshal(l)
	return string(b), err
}

// CreateToken stores a new token by the hash of its secret. It returns
// ErrNameTaken when the name is in use, revoked tokens included, so that a
// name in the audit trail always means one token.
func (s *Store) CreateToken(ctx context.Context, name string, hash []byte, scopes, cidrs []string, expiresAt *time.Time) (Token, error) {
	sj, err := jsonList(scopes)
	if err != nil {
		return Token{}, fmt.Errorf("create token %s: %w", name, err)
	}
	cj, err := jsonList(cidrs)
	if err != nil {
		return Token{}, fmt.Errorf("create token %s: %w", name, err)
	}
	var tok Token
	err = s.update(ctx, false, func(tx *sql.Tx, now time.Time) error {
		var err error
		tok, err = scanToken(tx.QueryRowContext(ctx, `INSERT INTO tokens (name, hash, scopes, cidrs, created_at, expires_at)
			VALUES (?, ?, ?, ?, ?, ?) RETURNING `+tokenColumns,
			name, hash, sj, cj, formatTime(now), nullTime(expiresAt)))
		if isUnique(err) {
			// The hash is unique too, but a collision of fresh 256-bit
			// secrets does not happen; the name is what clashes.
			return ErrNameTaken
		}
		return err
	})
	if err != nil {
		return Token{}, fmt.Errorf("create token %s: %w", name, err)
	}
	return tok, nil
}

// TokenByHash finds a token by the hash of its secret, revoked and expired
// ones included: the caller checks RevokedAt and ExpiresAt, so that it can
// answer invalid_api_token for all three. ErrNotFound when unknown.
func (s *Store) TokenByHash(ctx context.Context, hash []byte) (Token, error) {
	t, err := scanToken(s.tokenByHash.QueryRowContext(ctx, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return Token{}, fmt.Errorf("token: %w", ErrNotFound)
	}
	if err != nil {
		return Token{}, fmt.Errorf("read token: %w", err)
	}
	return t, nil
}

// ListTokens returns every token, revoked ones included, oldest first.
func (s *Store) ListTokens(ctx context.Context) ([]Token, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+tokenColumns+` FROM tokens ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	defer rows.Close()
	ts := []Token{}
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("list tokens: %w", err)
		}
		ts = append(ts, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return ts, nil
}

// RevokeToken revokes a token by name; revoking twice keeps the first time.
// ErrNotFound when no token has that name.
func (s *Store) RevokeToken(ctx context.Context, name string) error {
	err := s.update(ctx, false, func(tx *sql.Tx, now time.Time) error {
		res, err := tx.ExecContext(ctx, `UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE name = ?`,
			formatTime(now), name)
		if err != nil {
			return err
		}
		return affected(res)
	})
	if err != nil {
		return fmt.Errorf("revoke token %s: %w", name, err)
	}
	return nil
}

// TouchToken records that a token was used. It is best effort and writes at
// most once a minute per token.
func (s *Store) TouchToken(ctx context.Context, id int64) error {
	err := s.update(ctx, false, func(tx *sql.Tx, now time.Time) error {
		_, err := tx.ExecContext(ctx, `UPDATE tokens SET last_used_at = ?
			WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)`,
			formatTime(now), id, formatTime(now.Add(-touchInterval)))
		return err
	})
	if err != nil {
		return fmt.Errorf("touch token %d: %w", id, err)
	}
	return nil
}
