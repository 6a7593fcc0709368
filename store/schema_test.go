package store

import (
	"context"
	"testing"

	sqlite3 "modernc.org/sqlite/lib"
)

const ts = "2025-06-24T07:47:04.065478Z"

// TestSchemaJobChecks inserts jobs with raw SQL: the schema alone must
// reject every impossible row.
func TestSchemaJobChecks(t *testing.T) {
	t.Parallel()
	_, path := newStore(t)
	db := rawDB(t, path)
	tests := []struct {
		name string
		sql  string
		ok   bool
	}{
		{"succeeded without finished_at", `INSERT INTO jobs (kind, state, created_at) VALUES ('shutdown', 'succeeded', '` + ts + `')`, false},
		{"valid succeeded", `INSERT INTO jobs (kind, state, created_at, started_at, finished_at) VALUES ('shutdown', 'succeeded', '` + ts + `', '` + ts + `', '` + ts + `')`, true},
		{"unknown kind", `INSERT INTO jobs (kind, state, created_at) VALUES ('reboot', 'pending', '` + ts + `')`, false},
		{"unknown state", `INSERT INTO jobs (kind, state, created_at) VALUES ('simulation', 'paused', '` + ts + `')`, false},
		{"pending with finished_at", `INSERT INTO jobs (kind, state, created_at, finished_at) VALUES ('simulation', 'pending', '` + ts + `', '` + ts + `')`, false},
		{"failed without finished_at", `INSERT INTO jobs (kind, state, created_at) VALUES ('simulation', 'failed', '` + ts + `')`, false},
		{"cancelled without finished_at", `INSERT INTO jobs (kind, state, created_at) VALUES ('simulation', 'cancelled', '` + ts + `')`, false},
		{"cancelled with finished_at", `INSERT INTO jobs (kind, state, created_at, finished_at) VALUES ('simulation', 'cancelled', '` + ts + `', '` + ts + `')`, true},
		{"running without started_at", `INSERT INTO jobs (kind, state, created_at) VALUES ('simulation', 'running', '` + ts + `')`, false},
		{"bad cancel flag", `INSERT INTO jobs (kind, state, created_at, finished_at, cancel_requested) VALUES ('simulation', 'failed', '` + ts + `', '` + ts + `', 2)`, false},
		{"missing created_at", `INSERT INTO jobs (kind, state, finished_at) VALUES ('simulation', 'failed', '` + ts + `')`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := db.Exec(tc.sql)
			if tc.ok && err != nil {
				t.Fatalf("rejected: %v", err)
			}
			if !tc.ok && sqliteCode(err)&0xff != sqlite3.SQLITE_CONSTRAINT {
				t.Fatalf("err %v, want a constraint violation", err)
			}
		})
	}
}

func TestSchemaOneActiveRawSQL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, path := newStore(t)
	db := rawDB(t, path)
	insert := `INSERT INTO jobs (kind, state, created_at, started_at) VALUES (?, ?, '` + ts + `', '` + ts + `')`
	if _, err := db.Exec(insert, "simulation", "pending"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ kind, state string }{
		{"simulation", "pending"}, {"shutdown", "pending"}, {"shutdown", "running"}, {"simulation", "running"},
	} {
		_, err := db.Exec(insert, tc.kind, tc.state)
		if sqliteCode(err) != sqlite3.SQLITE_CONSTRAINT_UNIQUE {
			t.Errorf("second active job %s/%s: err %v, want UNIQUE violation", tc.kind, tc.state, err)
		}
	}
	// Final jobs do not count.
	for range 3 {
		if _, err := db.Exec(`INSERT INTO jobs (kind, state, created_at, finished_at) VALUES ('shutdown', 'failed', ?, ?)`, ts, ts); err != nil {
			t.Fatal(err)
		}
	}
	// An UPDATE that would reactivate a final job is rejected as well.
	_, err := db.Exec(`UPDATE jobs SET state = 'running', finished_at = NULL, started_at = ? WHERE state = 'failed'`, ts)
	if sqliteCode(err) != sqlite3.SQLITE_CONSTRAINT_UNIQUE {
		t.Errorf("reactivating a final job: err %v, want UNIQUE violation", err)
	}
	// The store maps the same violation to ErrJobRunning.
	if _, err := s.CreateSimulation(ctx, NewJob{}); !isErr(err, ErrJobRunning) {
		t.Errorf("CreateSimulation with raw active row: %v, want ErrJobRunning", err)
	}
	// Once the active job is final, a new one is admitted.
	if _, err := db.Exec(`UPDATE jobs SET state = 'cancelled', finished_at = ? WHERE state = 'pending'`, ts); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateSimulation(ctx, NewJob{}); err != nil {
		t.Errorf("CreateSimulation after the active job ended: %v", err)
	}
}

func TestSchemaStepActionEventChecks(t *testing.T) {
	t.Parallel()
	_, path := newStore(t)
	db := rawDB(t, path)
	mustExec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.Exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	mustExec(`INSERT INTO jobs (id, kind, state, created_at, finished_at) VALUES (1, 'shutdown', 'failed', ?, ?)`, ts, ts)
	mustExec(`INSERT INTO jobs (id, kind, state, created_at, finished_at) VALUES (2, 'shutdown', 'failed', ?, ?)`, ts, ts)
	mustExec(`INSERT INTO steps (id, job_id, seq, name) VALUES (10, 1, 1, 'vms')`)
	mustExec(`INSERT INTO actions (id, job_id, step_id, target_kind, target, operation, updated_at) VALUES (100, 1, 10, 'vm', 'a', 'os-stop', ?)`, ts)
	mustExec(`INSERT INTO events (id, job_id, at, level, message, prev_hash, hash) VALUES (1000, 1, ?, 'info', 'hello', X'', zeroblob(32))`, ts)

	tests := []struct{ name, sql string }{
		{"step of missing job", `INSERT INTO steps (job_id, seq, name) VALUES (99, 1, 'x')`},
		{"step bad state", `INSERT INTO steps (job_id, seq, name, state) VALUES (1, 2, 'x', 'done')`},
		{"step final without finished_at", `INSERT INTO steps (job_id, seq, name, state) VALUES (1, 2, 'x', 'skipped')`},
		{"step running with finished_at", `UPDATE steps SET state = 'running', finished_at = '` + ts + `' WHERE id = 10`},
		{"step duplicate seq", `INSERT INTO steps (job_id, seq, name) VALUES (1, 1, 'again')`},
		{"action bad target kind", `INSERT INTO actions (job_id, step_id, target_kind, target, operation, updated_at) VALUES (1, 10, 'toaster', 'a', 'x', '` + ts + `')`},
		{"action bad state", `INSERT INTO actions (job_id, step_id, target_kind, target, operation, state, updated_at) VALUES (1, 10, 'vm', 'b', 'os-stop', 'cancelled', '` + ts + `')`},
		{"action final without finished_at", `UPDATE actions SET state = 'succeeded' WHERE id = 100`},
		{"action negative attempts", `UPDATE actions SET attempts = -1 WHERE id = 100`},
		{"action step of another job", `INSERT INTO actions (job_id, step_id, target_kind, target, operation, updated_at) VALUES (2, 10, 'vm', 'c', 'os-stop', '` + ts + `')`},
		{"action duplicate key", `INSERT INTO actions (job_id, step_id, target_kind, target, operation, updated_at) VALUES (1, 10, 'vm', 'a', 'os-stop', '` + ts + `')`},
		{"event bad level", `INSERT INTO events (job_id, at, level, message) VALUES (1, '` + ts + `', 'debug', 'x')`},
		{"event of missing job", `INSERT INTO events (job_id, at, level, message) VALUES (99, '` + ts + `', 'info', 'x')`},
		{"event update", `UPDATE events SET message = 'rewritten' WHERE id = 1000`},
		{"event delete", `DELETE FROM events WHERE id = 1000`},
		{"token short hash", `INSERT INTO tokens (name, hash, created_at) VALUES ('t', x'00', '` + ts + `')`},
		{"token scopes not an array", `INSERT INTO tokens (name, hash, scopes, created_at) VALUES ('t', zeroblob(32), '"read"', '` + ts + `')`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := db.Exec(tc.sql); sqliteCode(err)&0xff != sqlite3.SQLITE_CONSTRAINT {
				t.Fatalf("err %v, want a constraint violation", err)
			}
		})
	}
}
