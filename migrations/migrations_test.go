package migrations_test

import (
	"bytes"
	"context"
	"database/sql"
	"path/filepath"
	"slices"
	"testing"

	"github.com/pressly/goose/v3"
	_ "modernc.org/sqlite"

	"github.com/edgeops/shutdownd/migrations"
)

func tables(t *testing.T, db *sql.DB) []string {
	t.Helper()
	rows, err := db.Query(`SELECT name FROM sqlite_master WHERE type IN ('table', 'index', 'trigger')
		AND name NOT LIKE 'sqlite_%' AND name NOT LIKE 'goose_%' ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

// TestUpDownUp applies every migration, reverts all of them and applies them
// again, so that each Down really undoes its Up.
func TestUpDownUp(t *testing.T) {
	ctx := context.Background()
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "m.db")+"?_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectSQLite3, db, migrations.FS)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.ListSources()) == 0 {
		t.Fatal("no migrations embedded")
	}
	want := []string{"actions", "actions_job", "actions_key", "events", "events_append_only_delete",
		"events_append_only_update", "events_hash_chain", "events_job_id", "jobs", "jobs_kind_id", "jobs_one_active",
		"power_events", "power_events_append_only_delete", "power_events_append_only_update", "power_events_at",
		"sessions", "sessions_expires", "steps", "token_generation", "tokens", "tokens_generation_delete",
		"tokens_generation_insert", "tokens_generation_update"}

	for round := range 2 {
		if _, err := p.Up(ctx); err != nil {
			t.Fatalf("round %d: up: %v", round, err)
		}
		got := tables(t, db)
		for _, w := range want {
			if !slices.Contains(got, w) {
				t.Errorf("round %d: after up, %s missing (have %v)", round, w, got)
			}
		}
		if _, err := p.DownTo(ctx, 0); err != nil {
			t.Fatalf("round %d: down: %v", round, err)
		}
		if got := tables(t, db); len(got) != 0 {
			t.Errorf("round %d: after down, left over: %v", round, got)
		}
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("final up: %v", err)
	}
	v, err := p.GetDBVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if srcs := p.ListSources(); v != srcs[len(srcs)-1].Version {
		t.Errorf("db version %d, want %d", v, srcs[len(srcs)-1].Version)
	}
}

// TestStartupMigrationKeepsJobs runs 00007 over a database holding a
// shutdown with steps, actions and events: the jobs table is rebuilt for
// the new CHECK, so every row and every reference must survive it, up and
// down, and the down must take the startups (which the old CHECK forbids)
// with everything that hangs off them.
func TestStartupMigrationKeepsJobs(t *testing.T) {
	ctx := context.Background()
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "m.db")+"?_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	p, err := goose.NewProvider(goose.DialectSQLite3, db, migrations.FS)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 6); err != nil {
		t.Fatal(err)
	}
	const ts = "2025-06-24T07:47:04.065478Z"
	hash := func(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }
	mustExec(t, db, `INSERT INTO jobs (id, kind, state, created_at, started_at, finished_at, reason, boot_id)
		VALUES (7, 'shutdown', 'succeeded', ?, ?, ?, 'mains lost', 'b1')`, ts, ts, ts)
	mustExec(t, db, `INSERT INTO steps (id, job_id, seq, name, state, started_at, finished_at) VALUES (1, 7, 0, 'vms', 'succeeded', ?, ?)`, ts, ts)
	mustExec(t, db, `INSERT INTO actions (job_id, step_id, target_kind, target, operation, state, started_at, finished_at, updated_at)
		VALUES (7, 1, 'vm', 'web-1', 'os-stop', 'succeeded', ?, ?, ?)`, ts, ts, ts)
	mustExec(t, db, `INSERT INTO events (job_id, at, level, message, prev_hash, hash) VALUES (7, ?, 'info', 'created', X'', ?)`, ts, hash(1))
	// The power events of migration 6 refer to jobs too: the rebuild of
	// jobs must keep those references whole.
	mustExec(t, db, `INSERT INTO power_events (at, source, kind, level, job_id) VALUES (?, 'nut/ups1', 'shutdown_started', 'critical', 7)`, ts)

	if _, err := p.UpTo(ctx, 7); err != nil {
		t.Fatalf("up to 7: %v", err)
	}
	checkForeignKeys(t, db)
	if _, err := db.Exec(`INSERT INTO power_events (at, source, kind, level, job_id) VALUES (?, 'nut/ups1', 'shutdown_started', 'critical', 99)`, ts); err == nil {
		t.Error("a power event naming no job was accepted: its reference to jobs was lost in the rebuild")
	}
	var reason string
	if err := db.QueryRow(`SELECT reason FROM jobs WHERE id = 7 AND kind = 'shutdown' AND boot_id = 'b1'`).Scan(&reason); err != nil || reason != "mains lost" {
		t.Fatalf("shutdown after up: %q, %v", reason, err)
	}
	if _, err := db.Exec(`INSERT INTO jobs (kind, state, created_at) VALUES ('startup', 'pending', ?)`, ts); err == nil {
		t.Error("a startup without the shutdown it restores was accepted")
	}
	mustExec(t, db, `INSERT INTO jobs (id, kind, state, created_at, restores_job) VALUES (8, 'startup', 'pending', ?, 7)`, ts)
	if _, err := db.Exec(`INSERT INTO jobs (kind, state, created_at) VALUES ('shutdown', 'pending', ?)`, ts); err == nil {
		t.Error("a second active job was accepted: jobs_one_active lost in the rebuild")
	}
	mustExec(t, db, `INSERT INTO steps (id, job_id, seq, name) VALUES (2, 8, 0, 'hosts')`)
	mustExec(t, db, `INSERT INTO events (job_id, at, level, message, prev_hash, hash) VALUES (8, ?, 'info', 'created', X'', ?)`, ts, hash(2))

	if _, err := p.DownTo(ctx, 6); err != nil {
		t.Fatalf("down to 6: %v", err)
	}
	checkForeignKeys(t, db)
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM jobs`).Scan(&n); err != nil || n != 1 {
		t.Errorf("jobs after down: %d, %v; want the shutdown only", n, err)
	}
	if err := db.QueryRow(`SELECT count(*) FROM events`).Scan(&n); err != nil || n != 1 {
		t.Errorf("events after down: %d, %v; want the shutdown's only", n, err)
	}
	if _, err := db.Exec(`DELETE FROM events`); err == nil {
		t.Error("events deletable after down: the append-only trigger was not restored")
	}
}

func mustExec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// checkForeignKeys fails the test when any reference points nowhere.
func checkForeignKeys(t *testing.T, db *sql.DB) {
	t.Helper()
	rows, err := db.Query(`PRAGMA foreign_key_check`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	if rows.Next() {
		t.Error("foreign_key_check reports dangling references")
	}
}
