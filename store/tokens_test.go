package store

import (
	"context"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestTokenSecret(t *testing.T) {
	t.Parallel()
	a, err := NewTokenSecret()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewTokenSecret()
	if !strings.HasPrefix(a, "sdt_") || len(a) != len("sdt_")+43 || a == b {
		t.Errorf("secrets %q %q", a, b)
	}
	if h := HashToken(a); len(h) != 32 || string(h) == string(HashToken(b)) {
		t.Errorf("hash %x", h)
	}
}

func TestTokens(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	secret, _ := NewTokenSecret()
	exp := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tok, err := s.CreateToken(ctx, "ups", HashToken(secret), []string{"read", "shutdown"}, []string{"10.0.0.0/8"}, &exp)
	if err != nil {
		t.Fatal(err)
	}
	if tok.ID == 0 || tok.Name != "ups" || !slices.Equal(tok.Scopes, []string{"read", "shutdown"}) ||
		!slices.Equal(tok.CIDRs, []string{"10.0.0.0/8"}) || tok.ExpiresAt == nil || !tok.ExpiresAt.Equal(exp) || tok.CreatedAt.IsZero() {
		t.Errorf("created %+v", tok)
	}
	if _, err := s.CreateToken(ctx, "ups", HashToken("other"), []string{"read"}, nil, nil); !errors.Is(err, ErrNameTaken) {
		t.Errorf("duplicate name: %v, want ErrNameTaken", err)
	}
	ro, err := s.CreateToken(ctx, "monitor", HashToken("sdt_monitor"), []string{"read"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ro.CIDRs == nil || len(ro.CIDRs) != 0 || ro.ExpiresAt != nil {
		t.Errorf("token without cidrs/expiry: %+v", ro)
	}

	got, err := s.TokenByHash(ctx, HashToken(secret))
	if err != nil || got.ID != tok.ID {
		t.Fatalf("TokenByHash = %+v, %v", got, err)
	}
	if _, err := s.TokenByHash(ctx, HashToken("wrong")); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown hash: %v, want ErrNotFound", err)
	}

	if err := s.TouchToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	got, _ = s.TokenByHash(ctx, HashToken(secret))
	if got.LastUsedAt == nil {
		t.Fatal("last_used_at not set")
	}
	// Touching again within a minute does not write.
	first := *got.LastUsedAt
	s.now = func() time.Time { return first.Add(30 * time.Second) }
	_ = s.TouchToken(ctx, tok.ID)
	got, _ = s.TokenByHash(ctx, HashToken(secret))
	if !got.LastUsedAt.Equal(first) {
		t.Errorf("touched again after 30s: %v", got.LastUsedAt)
	}
	s.now = func() time.Time { return first.Add(2 * time.Minute) }
	_ = s.TouchToken(ctx, tok.ID)
	got, _ = s.TokenByHash(ctx, HashToken(secret))
	if !got.LastUsedAt.Equal(first.Add(2 * time.Minute)) {
		t.Errorf("not touched after 2m: %v", got.LastUsedAt)
	}

	if err := s.RevokeToken(ctx, "ups"); err != nil {
		t.Fatal(err)
	}
	got, err = s.TokenByHash(ctx, HashToken(secret))
	if err != nil || got.RevokedAt == nil {
		t.Fatalf("revoked token lookup = %+v, %v; want it returned with RevokedAt", got, err)
	}
	revokedAt := *got.RevokedAt
	s.now = func() time.Time { return first.Add(time.Hour) }
	if err := s.RevokeToken(ctx, "ups"); err != nil {
		t.Errorf("second revoke: %v", err)
	}
	if got, _ = s.TokenByHash(ctx, HashToken(secret)); !got.RevokedAt.Equal(revokedAt) {
		t.Errorf("second revoke moved revoked_at to %v", got.RevokedAt)
	}
	if err := s.RevokeToken(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
		t.Errorf("revoke missing: %v, want ErrNotFound", err)
	}
	// A revoked name stays taken.
	if _, err := s.CreateToken(ctx, "ups", HashToken("new"), nil, nil, nil); !errors.Is(err, ErrNameTaken) {
		t.Errorf("reuse of revoked name: %v, want ErrNameTaken", err)
	}

	list, err := s.ListTokens(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "ups" || list[1].Name != "monitor" || list[0].RevokedAt == nil {
		t.Errorf("ListTokens = %+v, %v", list, err)
	}
}

// TestTokenErrorsHideSecrets makes sure no error carries the hash or the
// secret, since errors end up in logs.
func TestTokenErrorsHideSecrets(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	secret, _ := NewTokenSecret()
	h := HashToken(secret)
	if _, err := s.CreateToken(ctx, "a", h, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	_, err := s.CreateToken(ctx, "a", h, nil, nil, nil)
	if err == nil {
		t.Fatal("duplicate accepted")
	}
	_, err2 := s.TokenByHash(ctx, HashToken("x"))
	for _, e := range []error{err, err2} {
		if strings.Contains(e.Error(), secret) || strings.Contains(strings.ToLower(e.Error()), strings.ToLower(hex.EncodeToString(h))) {
			t.Errorf("error leaks the token: %v", e)
		}
	}
}
