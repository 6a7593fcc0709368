package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

// The helper process of TestViewSeesOtherProcess: the test binary re-runs
// itself with these variables set and, instead of the tests, opens the
// database with Open (as `shutdownd token revoke` does), writes, and exits.
const (
	helperEnv   = "SHUTDOWND_STORE_TEST_HELPER"
	helperDBEnv = "SHUTDOWND_STORE_TEST_DB"
)

func TestMain(m *testing.M) {
	if what := os.Getenv(helperEnv); what != "" {
		if err := helper(what, os.Getenv(helperDBEnv)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func helper(what, path string) error {
	ctx := context.Background()
	s, err := Open(ctx, path)
	if err != nil {
		return err
	}
	defer s.Close()
	switch what {
	case "revoke":
		return s.RevokeToken(ctx, "ups")
	case "step":
		j, err := s.LatestJob(ctx, KindShutdown)
		if err != nil || j == nil {
			return fmt.Errorf("latest job: %v %v", j, err)
		}
		return s.SetCurrentStep(ctx, j.ID, "set by another process")
	}
	return fmt.Errorf("unknown helper %q", what)
}

// runHelper runs the test binary as a separate process that writes path.
func runHelper(t *testing.T, what, path string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+what, helperDBEnv+"="+path)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper %s: %v\n%s", what, err, out)
	}
}

func newToken(t *testing.T, s *Store, name string, expires *time.Time) (string, Token) {
	t.Helper()
	secret, err := NewTokenSecret()
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.CreateToken(context.Background(), name, HashToken(secret), []string{"read"}, nil, expires)
	if err != nil {
		t.Fatal(err)
	}
	return secret, tok
}

// cachedToken reads a token through a new View, checking that the View is a
// cached one: a test of the cache must not pass by reading the database.
func cachedToken(t *testing.T, s *Store, secret string) (Token, error) {
	t.Helper()
	v := s.View()
	if !v.Cached() {
		t.Fatal("View is not cached")
	}
	return v.TokenByHash(context.Background(), HashToken(secret))
}

// TestViewTokenChangesFromAnotherConnection: every kind of token change made
// through another connection (an operator's SQL, another Store) is seen by
// the first View taken after it, although the token is cached.
func TestViewTokenChangesFromAnotherConnection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, path := newStore(t)
	db := rawDB(t, path)
	secret, tok := newToken(t, s, "ups", nil)
	for range 3 { // cached from the first read on
		got, err := cachedToken(t, s, secret)
		if err != nil || got.ID != tok.ID || got.RevokedAt != nil {
			t.Fatalf("cached read: %+v %v", got, err)
		}
	}
	if s.cache.tok.entries[[32]byte(HashToken(secret))].ID != tok.ID {
		t.Fatal("token not in the cache after reads")
	}

	steps := []struct {
		name  string
		sql   string
		check func(Token, error) error
	}{
		{"scopes", `UPDATE tokens SET scopes = '["read","shutdown"]' WHERE name = 'ups'`, func(got Token, err error) error {
			if err != nil || len(got.Scopes) != 2 || got.Scopes[1] != "shutdown" {
				return fmt.Errorf("scopes %v, %v", got.Scopes, err)
			}
			return nil
		}},
		{"cidrs", `UPDATE tokens SET cidrs = '["10.0.0.0/8"]' WHERE name = 'ups'`, func(got Token, err error) error {
			if err != nil || len(got.CIDRs) != 1 || got.CIDRs[0] != "10.0.0.0/8" {
				return fmt.Errorf("cidrs %v, %v", got.CIDRs, err)
			}
			return nil
		}},
		{"expiry", `UPDATE tokens SET expires_at = '2020-01-01T00:00:00.000000Z' WHERE name = 'ups'`, func(got Token, err error) error {
			if err != nil || got.ExpiresAt == nil || got.ExpiresAt.Year() != 2020 {
				return fmt.Errorf("expires_at %v, %v", got.ExpiresAt, err)
			}
			return nil
		}},
		{"revocation", `UPDATE tokens SET revoked_at = '2024-01-01T00:00:00.000000Z' WHERE name = 'ups'`, func(got Token, err error) error {
			if err != nil || got.RevokedAt == nil {
				return fmt.Errorf("revoked_at %v, %v", got.RevokedAt, err)
			}
			return nil
		}},
		{"delete", `DELETE FROM tokens WHERE name = 'ups'`, func(_ Token, err error) error {
			if !errors.Is(err, ErrNotFound) {
				return fmt.Errorf("deleted token: %v, want ErrNotFound", err)
			}
			return nil
		}},
	}
	for _, st := range steps {
		// Warm the cache, change the row elsewhere, read again.
		if _, err := cachedToken(t, s, secret); err != nil {
			t.Fatalf("%s: warm: %v", st.name, err)
		}
		if _, err := db.ExecContext(ctx, st.sql); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if err := st.check(cachedToken(t, s, secret)); err != nil {
			t.Errorf("after %s: %v", st.name, err)
		}
	}
}

// TestViewTokenSurvivesUnrelatedCommits: commits that do not change a token
// (job progress, last_used_at) keep the token cache, which is what makes it
// worth having during a shutdown; the generation counter proves it.
func TestViewTokenSurvivesUnrelatedCommits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, path := newStore(t)
	db := rawDB(t, path)
	secret, tok := newToken(t, s, "monitor", nil)
	gen := func() int64 {
		var g int64
		if err := db.QueryRow(`SELECT gen FROM token_generation`).Scan(&g); err != nil {
			t.Fatal(err)
		}
		return g
	}
	if _, err := cachedToken(t, s, secret); err != nil {
		t.Fatal(err)
	}
	before, epoch := gen(), s.cache.tok.epoch
	job, _, err := s.CreateShutdown(ctx, NewJob{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetCurrentStep(ctx, job.ID, "Stopping OpenStack VMs (1/2 off)"); err != nil {
		t.Fatal(err)
	}
	if err := s.TouchToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if got, err := cachedToken(t, s, secret); err != nil || got.ID != tok.ID {
		t.Fatalf("after unrelated commits: %+v %v", got, err)
	}
	if g := gen(); g != before {
		t.Errorf("token generation moved from %d to %d on commits that change no token", before, g)
	}
	if s.cache.tok.epoch != epoch {
		t.Errorf("token cache dropped (epoch %d -> %d) on commits that change no token", epoch, s.cache.tok.epoch)
	}
	if _, err := s.CreateToken(ctx, "other", HashToken("x"), nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if g := gen(); g != before+1 {
		t.Errorf("token generation %d after creating a token, want %d", g, before+1)
	}
}

// TestViewSeesOtherProcess: a revocation and a job change committed by a
// separate process (the test binary re-run as a helper, opening the file
// with Open as the CLI does) are seen by the first View taken after that
// process exited, with both the token and the latest job cached before.
func TestViewSeesOtherProcess(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, path := newStore(t)
	secret, _ := newToken(t, s, "ups", nil)
	job, _, err := s.CreateShutdown(ctx, NewJob{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.StartJob(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if tok, err := cachedToken(t, s, secret); err != nil || tok.RevokedAt != nil {
			t.Fatalf("before: %+v %v", tok, err)
		}
		if j, err := s.View().LatestJob(ctx, KindShutdown); err != nil || j.CurrentStep != "" {
			t.Fatalf("before: %+v %v", j, err)
		}
	}

	runHelper(t, "revoke", path)
	if tok, err := cachedToken(t, s, secret); err != nil || tok.RevokedAt == nil {
		t.Fatalf("first read after another process revoked: %+v %v, want revoked", tok, err)
	}
	runHelper(t, "step", path)
	if j, err := s.View().LatestJob(ctx, KindShutdown); err != nil || j.CurrentStep != "set by another process" {
		t.Fatalf("first read after another process wrote: %+v %v", j, err)
	}
}

// TestViewLatestJobAfterEveryCommit: the latest job read through a new View
// reflects every commit that returned before it, through every store method
// that changes a job, while a reader keeps the cache hot.
func TestViewLatestJobAfterEveryCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, path := newStore(t)
	db := rawDB(t, path)
	latest := func() *Job {
		t.Helper()
		v := s.View()
		if !v.Cached() {
			t.Fatal("View is not cached")
		}
		j, err := v.LatestJob(ctx, KindShutdown)
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	if j := latest(); j != nil {
		t.Fatalf("no job yet, got %+v", j)
	}
	// A hot reader, as the status endpoint under load.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				_, _ = s.View().LatestJob(ctx, KindShutdown)
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	job, _, err := s.CreateShutdown(ctx, NewJob{Reason: "ups"})
	if err != nil {
		t.Fatal(err)
	}
	if j := latest(); j == nil || j.ID != job.ID || j.State != StatePending {
		t.Fatalf("after create: %+v", j)
	}
	if err := s.StartJob(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	if j := latest(); j.State != StateRunning {
		t.Fatalf("after start: %+v", j)
	}
	for i := range 50 {
		text := fmt.Sprintf("Stopping OpenStack VMs (%d/50 off)", i)
		if err := s.SetCurrentStep(ctx, job.ID, text); err != nil {
			t.Fatal(err)
		}
		if j := latest(); j.CurrentStep != text {
			t.Fatalf("after step %d: current_step %q", i, j.CurrentStep)
		}
	}
	if _, err := db.ExecContext(ctx, `UPDATE jobs SET current_step = 'operator SQL' WHERE id = ?`, job.ID); err != nil {
		t.Fatal(err)
	}
	if j := latest(); j.CurrentStep != "operator SQL" {
		t.Fatalf("after raw SQL: current_step %q", j.CurrentStep)
	}
	if _, err := s.RequestCancel(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	if j := latest(); !j.CancelRequested {
		t.Fatalf("after cancel request: %+v", j)
	}
	if _, err := s.FinishJob(ctx, job.ID, StateFailed, "2 hosts unreachable"); err != nil {
		t.Fatal(err)
	}
	if j := latest(); j.State != StateFailed || j.Error != "2 hosts unreachable" {
		t.Fatalf("after finish: %+v", j)
	}
	sim, err := s.CreateSimulation(ctx, NewJob{})
	if err != nil {
		t.Fatal(err)
	}
	if j, err := s.View().LatestJob(ctx, KindSimulation); err != nil || j.ID != sim.ID {
		t.Fatalf("simulation: %+v %v", j, err)
	}
	if j := latest(); j.ID != job.ID {
		t.Fatalf("shutdown after a simulation was created: %+v", j)
	}
}

// TestViewRevocationRace: while readers keep loading and reading the token
// through Views, a revocation from another Store (another connection) is
// seen by every View taken after RevokeToken returned. This exercises the
// path where a token row read before the revocation arrives in the cache
// after it (the epoch check).
func TestViewRevocationRace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, path := newStore(t)
	other, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for round := range 20 {
		name := fmt.Sprintf("t%d", round)
		secret, _ := newToken(t, other, name, nil)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
						_, _ = s.View().TokenByHash(ctx, HashToken(secret))
					}
				}
			}()
		}
		if err := other.RevokeToken(ctx, name); err != nil {
			t.Fatal(err)
		}
		for range 20 {
			if tok, err := cachedToken(t, s, secret); err != nil || tok.RevokedAt == nil {
				close(stop)
				wg.Wait()
				t.Fatalf("round %d: read after revocation returned: %+v %v", round, tok, err)
			}
		}
		close(stop)
		wg.Wait()
	}
}

// TestViewStaleLoadNotCached: a token row read before a revocation, whose
// reader is overtaken by a View that notices the revocation, must not land
// in the cache afterwards (it would be served as current until the next
// commit). The hook makes the interleaving deterministic.
func TestViewStaleLoadNotCached(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, path := newStore(t)
	db := rawDB(t, path)
	secret, _ := newToken(t, s, "ups", nil)
	otherSecret, _ := newToken(t, s, "monitor", nil)
	if _, err := cachedToken(t, s, otherSecret); err != nil {
		t.Fatal(err)
	}
	hooked := false
	s.cache.tokenLoaded = func() {
		if hooked {
			return
		}
		hooked = true
		// The revocation commits after the row was read, and another
		// request notices it before the row is stored.
		if _, err := db.ExecContext(ctx, `UPDATE tokens SET revoked_at = '2024-01-01T00:00:00.000000Z' WHERE name = 'ups'`); err != nil {
			t.Error(err)
		}
		if _, err := cachedToken(t, s, otherSecret); err != nil {
			t.Error(err)
		}
	}
	// This request arrived before the revocation: the unrevoked row is a
	// correct answer for it.
	if tok, err := cachedToken(t, s, secret); err != nil || tok.RevokedAt != nil {
		t.Fatalf("read racing the revocation: %+v %v", tok, err)
	}
	if !hooked {
		t.Fatal("the token was not loaded from the database")
	}
	if tok, err := cachedToken(t, s, secret); err != nil || tok.RevokedAt == nil {
		t.Fatalf("read after the revocation: %+v %v, want revoked", tok, err)
	}
}

// TestViewWithoutCache: a read-only store has no cache; its Views read the
// database and give the same answers.
func TestViewWithoutCache(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, path := newStore(t)
	secret, tok := newToken(t, s, "ups", nil)
	ro, err := OpenReadOnly(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	v := ro.View()
	if v.Cached() {
		t.Fatal("read-only store gave a cached View")
	}
	if got, err := v.TokenByHash(ctx, HashToken(secret)); err != nil || got.ID != tok.ID {
		t.Fatalf("token: %+v %v", got, err)
	}
	if j, err := v.LatestJob(ctx, KindShutdown); err != nil || j != nil {
		t.Fatalf("latest job: %+v %v", j, err)
	}
	if s.DirectView().Cached() {
		t.Fatal("DirectView is cached")
	}
}

// TestViewHeaderFastPath: on Linux the View reads the -shm header instead of
// running PRAGMA data_version while nothing is committed; the version it
// returns is the one data_version returns, before and after commits of
// another process.
func TestViewHeaderFastPath(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, path := newStore(t)
	if runtime.GOOS == "linux" && s.cache.shm == nil {
		t.Fatal("header fast path off on Linux")
	}
	newToken(t, s, "ups", nil)
	sqlVersion := func() int64 {
		v, err := s.cache.readInt(s.cache.dvStmt)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	v1 := s.View().version
	if v2 := s.View().version; v2 != v1 || sqlVersion() != v1 {
		t.Fatalf("no commit: versions %d, %d, data_version %d", v1, v2, sqlVersion())
	}
	runHelper(t, "revoke", path)
	v3 := s.View().version
	if v3 == v1 || v3 != sqlVersion() {
		t.Fatalf("after another process committed: version %d (was %d), data_version %d", v3, v1, sqlVersion())
	}
	if _, _, err := s.CreateShutdown(ctx, NewJob{}); err != nil {
		t.Fatal(err)
	}
	if v4 := s.View().version; v4 == v3 || v4 != sqlVersion() {
		t.Fatalf("after this process committed: version %d (was %d), data_version %d", v4, v3, sqlVersion())
	}
}

// TestViewSymlinkedDatabase: opened through a symlink, with a stray -shm
// file beside the link that SQLite does not use, the cache reads the real
// -shm (never the stray one) and sees a revocation from another process at
// once.
func TestViewSymlinkedDatabase(t *testing.T) {
	t.Parallel()
	dir, linkDir := t.TempDir(), t.TempDir()
	real := filepath.Join(dir, "shutdownd.db")
	link := filepath.Join(linkDir, "shutdownd.db")
	s0, err := Open(context.Background(), real)
	if err != nil {
		t.Fatal(err)
	}
	s0.Close()
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(link+"-shm", make([]byte, 32768), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), link)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if openSQLiteShm(link+"-shm") != nil {
		t.Fatal("a -shm file SQLite does not use was accepted")
	}
	if runtime.GOOS == "linux" && s.cache.shm == nil {
		t.Fatal("header fast path off with a symlinked database")
	}
	secret, _ := newToken(t, s, "ups", nil)
	for range 3 {
		if tok, err := cachedToken(t, s, secret); err != nil || tok.RevokedAt != nil {
			t.Fatalf("before: %+v %v", tok, err)
		}
	}
	runHelper(t, "revoke", real)
	if tok, err := cachedToken(t, s, secret); err != nil || tok.RevokedAt == nil {
		t.Fatalf("after another process revoked: %+v %v, want revoked", tok, err)
	}
}
