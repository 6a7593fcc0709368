package store

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// newStore opens a store on a fresh file and returns it with its path.
func newStore(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "shutdownd.db")
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

// rawDB opens the store's file with its own pool, as an operator running SQL
// would, to check that the schema itself enforces the invariants.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?"+dsnParams)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// sqliteCode returns the extended SQLite result code of err, or 0.
func sqliteCode(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()
	}
	return 0
}

func TestOpenCreatesPrivateFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "db.sqlite")
	// A file left world-readable by an older install is tightened too.
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Force the WAL and shared-memory files into existence.
	if _, err := s.CreateSimulation(context.Background(), NewJob{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("stat %s: %v", p, err)
		}
		if m := fi.Mode().Perm(); m != 0o600 {
			t.Errorf("%s mode %o, want 600", filepath.Base(p), m)
		}
	}
}

func TestOpenFreshFileMode(t *testing.T) {
	t.Parallel()
	_, path := newStore(t)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o600 {
		t.Errorf("mode %o, want 600", m)
	}
}

func TestPragmas(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := context.Background()
	for _, db := range []*sql.DB{s.w, s.r} {
		var mode string
		var fk, sync int
		if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
			t.Fatal(err)
		}
		if mode != "wal" || fk != 1 || sync != 2 {
			t.Errorf("journal_mode=%s foreign_keys=%d synchronous=%d, want wal 1 2", mode, fk, sync)
		}
	}
	// The reader pool cannot write.
	if _, err := s.r.ExecContext(ctx, "DELETE FROM tokens"); err == nil {
		t.Error("reader pool accepted a write")
	}
}

func TestReopenAndMigrationStatus(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, path := newStore(t)
	job, err := s.CreateSimulation(ctx, NewJob{Reason: "kept"})
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.MigrationStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) == 0 {
		t.Fatal("no migrations reported")
	}
	for _, m := range st {
		if !m.Applied || m.AppliedAt.IsZero() || m.Name == "" || m.Version == 0 {
			t.Errorf("migration %+v not reported applied", m)
		}
	}
	s.Close()

	// Opening again migrates nothing and keeps the data.
	s2, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	got, err := s2.Job(ctx, job.ID)
	if err != nil || got.Reason != "kept" {
		t.Fatalf("job after reopen: %+v, %v", got, err)
	}
	st2, err := ReadMigrationStatus(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if len(st2) != len(st) || !st2[0].Applied {
		t.Errorf("ReadMigrationStatus = %+v", st2)
	}
}

func TestReadMigrationStatusPending(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	if _, err := ReadMigrationStatus(ctx, path); err == nil {
		t.Fatal("status of a missing file succeeded")
	}
	if err := createFile(path); err != nil {
		t.Fatal(err)
	}
	st, err := ReadMigrationStatus(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) == 0 || st[0].Applied {
		t.Errorf("fresh file reported %+v, want pending migrations", st)
	}
}

func TestSubscribe(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	ch, cancel := s.Subscribe()
	defer cancel()
	other, cancelOther := s.Subscribe()

	select {
	case <-ch:
		t.Fatal("notified before any write")
	default:
	}
	job, err := s.CreateSimulation(ctx, NewJob{})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no notification after CreateSimulation")
	}

	// The other subscriber got the same wake-up; after cancel it gets no more.
	select {
	case <-other:
	default:
		t.Fatal("second subscriber not notified")
	}
	cancelOther()

	// Wake-ups coalesce: two writes, one pending signal, and no write blocks.
	if err := setCurrentStep(ctx, s, job.ID, "a"); err != nil {
		t.Fatal(err)
	}
	if err := s.AddEvent(ctx, job.ID, "info", "b", ""); err != nil {
		t.Fatal(err)
	}
	<-ch
	select {
	case <-ch:
		t.Fatal("second signal not coalesced")
	default:
	}
	select {
	case <-other:
		t.Fatal("cancelled subscriber still notified")
	default:
	}
}

func TestSubscribeConcurrent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	job, err := s.CreateSimulation(ctx, NewJob{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch, cancel := s.Subscribe()
			defer cancel()
			if err := s.AddEvent(ctx, job.ID, "info", "tick", ""); err != nil {
				t.Error(err)
				return
			}
			select {
			case <-ch:
			case <-time.After(5 * time.Second):
				t.Errorf("subscriber %d not notified", i)
			}
		}()
	}
	wg.Wait()
}

func TestUniqueCodeConstant(t *testing.T) {
	t.Parallel()
	// isUnique relies on the extended code being reported by the driver.
	_, path := newStore(t)
	db := rawDB(t, path)
	_, err := db.Exec(`INSERT INTO tokens (name, hash, created_at) VALUES ('a', zeroblob(32), 'x'), ('a', randomblob(32), 'x')`)
	if sqliteCode(err) != sqlite3.SQLITE_CONSTRAINT_UNIQUE || !isUnique(err) {
		t.Fatalf("err = %v (code %d), want UNIQUE constraint", err, sqliteCode(err))
	}
}

func isErr(err, target error) bool { return errors.Is(err, target) }
