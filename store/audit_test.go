package store

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

// chainedJob returns a finished job with a few events beyond the ones the
// store writes itself.
func chainedJob(t *testing.T, s *Store) Job {
	t.Helper()
	ctx := context.Background()
	job, _ := newRunningJob(t, s)
	for _, m := range []string{"one", "two", "three"} {
		if err := s.AddEvent(ctx, job.ID, "info", m, "detail "+m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.FinishJob(ctx, job.ID, StateSucceeded, ""); err != nil {
		t.Fatal(err)
	}
	return job
}

func TestEventHashChain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, path := newStore(t)
	a := chainedJob(t, s)
	b := chainedJob(t, s) // interleaved ids across jobs must not matter
	for _, j := range []Job{a, b} {
		rep, err := s.VerifyChain(ctx, j.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK || rep.Events < 5 || len(rep.Head) != 32 || rep.Legacy != 0 {
			t.Fatalf("job %d: %+v, want an intact chain of >= 5 events", j.ID, rep)
		}
	}
	evs, err := s.Events(ctx, a.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs[0].PrevHash) != 0 || string(evs[1].PrevHash) != string(evs[0].Hash) {
		t.Fatalf("chain links wrong: %x %x %x", evs[0].PrevHash, evs[0].Hash, evs[1].PrevHash)
	}

	db := rawDB(t, path)
	// The schema refuses a raw insert that does not continue the chain.
	_, err = db.Exec(`INSERT INTO events (id, job_id, at, level, message, prev_hash, hash)
		VALUES (100000, ?, '2025-01-01T00:00:00.000000Z', 'info', 'forged', X'', zeroblob(32))`, a.ID)
	if err == nil || !strings.Contains(err.Error(), "chain") {
		t.Fatalf("forged insert: %v, want refused", err)
	}

	// Tampering by someone who drops the triggers is detected.
	for _, q := range []string{
		`DROP TRIGGER events_append_only_update`,
		`DROP TRIGGER events_append_only_delete`,
		`UPDATE events SET message = 'nothing happened' WHERE id = ` + itoa(evs[2].ID),
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	rep, err := s.VerifyChain(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK || rep.BrokenAt != evs[2].ID || !strings.Contains(rep.Problem, "changed") {
		t.Fatalf("after an update: %+v, want broken at %d", rep, evs[2].ID)
	}
	bev, err := s.Events(ctx, b.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`DELETE FROM events WHERE id = ?`, bev[1].ID); err != nil {
		t.Fatal(err)
	}
	rep, err = s.VerifyChain(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK || rep.BrokenAt != bev[2].ID || !strings.Contains(rep.Problem, "prev_hash") {
		t.Fatalf("after a delete: %+v, want broken at %d", rep, bev[2].ID)
	}
}

func TestEventHashEncodingUnambiguous(t *testing.T) {
	t.Parallel()
	x := EventHash(1, 2, "t", "info", "ab", "c", nil)
	y := EventHash(1, 2, "t", "info", "a", "bc", nil)
	if string(x) == string(y) {
		t.Fatal("moving text between fields kept the hash")
	}
	if string(EventHash(1, 2, "t", "info", "a", "b", nil)) != string(EventHash(1, 2, "t", "info", "a", "b", []byte{})) {
		t.Fatal("nil and empty prev_hash must hash alike (both are the chain's start)")
	}
}

func TestSessions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	now := time.Date(2025, 6, 24, 8, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	tok, err := s.CreateToken(ctx, "viewer", HashToken("secret"), []string{"read"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	hash := HashToken("session-1")
	if _, err := s.CreateSession(ctx, hash, tok.ID, "127.0.0.1", 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	got, err := s.SessionByHash(ctx, hash, 12*time.Hour)
	if err != nil || got.TokenName != "viewer" || len(got.Scopes) != 1 || got.RemoteAddr != "127.0.0.1" {
		t.Fatalf("lookup: %+v %v", got, err)
	}
	if _, err := s.SessionByHash(ctx, HashToken("other"), 12*time.Hour); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown session: %v", err)
	}
	// Activity keeps it alive past the idle limit; silence ends it.
	now = now.Add(11 * time.Hour)
	if _, err := s.SessionByHash(ctx, hash, 12*time.Hour); err != nil {
		t.Fatalf("after 11h: %v", err)
	}
	now = now.Add(11 * time.Hour)
	if _, err := s.SessionByHash(ctx, hash, 12*time.Hour); err != nil {
		t.Fatalf("11h after last use: %v", err)
	}
	now = now.Add(3 * time.Hour) // 25h after creation: absolute limit
	if _, err := s.SessionByHash(ctx, hash, 12*time.Hour); !errors.Is(err, ErrNotFound) {
		t.Fatalf("past absolute expiry: %v", err)
	}
	// Idle expiry, revocation and logout.
	h2, h3 := HashToken("session-2"), HashToken("session-3")
	for _, h := range [][]byte{h2, h3} {
		if _, err := s.CreateSession(ctx, h, tok.ID, "", 24*time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(12 * time.Hour)
	if _, err := s.SessionByHash(ctx, h2, 12*time.Hour); !errors.Is(err, ErrNotFound) {
		t.Fatalf("idle 12h: %v", err)
	}
	now = now.Add(-12 * time.Hour)
	if err := s.DeleteSession(ctx, h3); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SessionByHash(ctx, h3, 12*time.Hour); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after logout: %v", err)
	}
	h4 := HashToken("session-4")
	if _, err := s.CreateSession(ctx, h4, tok.ID, "", 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeToken(ctx, "viewer"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SessionByHash(ctx, h4, 12*time.Hour); !errors.Is(err, ErrNotFound) {
		t.Fatalf("token revoked: %v", err)
	}
}

func TestOpenReadOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, path := newStore(t)
	job := chainedJob(t, s)
	step, err := s.EnsureStep(ctx, job.ID, 2, "Hosts")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RecordAction(ctx, ActionKey{JobID: job.ID, StepID: step.ID, TargetKind: "host", Target: "compute-01",
		Operation: "ssh-poweroff"}, ActionFailed, "", "connection refused"); err != nil {
		t.Fatal(err)
	}
	// Works while the service holds the database open.
	ro, err := OpenReadOnly(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	sums, err := ro.JobSummaries(ctx, JobFilter{})
	if err != nil || len(sums) != 1 || sums[0].Failed != 1 || sums[0].Actions != 1 {
		t.Fatalf("summaries: %+v %v", sums, err)
	}
	fails, err := ro.Failures(ctx, JobFilter{})
	if err != nil || len(fails) != 1 || fails[0].Target != "compute-01" || fails[0].Error != "connection refused" ||
		fails[0].Step != "Hosts" {
		t.Fatalf("failures: %+v %v", fails, err)
	}
	rep, err := ro.VerifyChain(ctx, job.ID)
	if err != nil || !rep.OK {
		t.Fatalf("verify: %+v %v", rep, err)
	}
	if err := ro.AddEvent(ctx, job.ID, "info", "sneaky", ""); err == nil {
		t.Fatal("a write through the read-only store succeeded")
	}
	if _, err := ro.CreateSimulation(ctx, NewJob{}); err == nil {
		t.Fatal("a job insert through the read-only store succeeded")
	}
	// And once the service is gone.
	s.Close()
	ro2, err := OpenReadOnly(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro2.Close()
	if _, err := ro2.Report(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenReadOnly(ctx, path+".missing"); err == nil {
		t.Fatal("a missing database opened")
	}
}

// TestAuditDocSQL runs every SQL block of docs/audit.md against a store with
// a job in it, so the documented queries cannot rot as the schema changes.
func TestAuditDocSQL(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../docs/audit.md")
	if err != nil {
		t.Fatal(err)
	}
	s, path := newStore(t)
	ctx := context.Background()
	job := chainedJob(t, s)
	steps, err := s.Steps(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []ActionKey{
		{JobID: job.ID, StepID: steps[0].ID, TargetKind: "vm", Target: "web-1", TargetID: "1", Operation: "os-stop"},
		{JobID: job.ID, StepID: steps[0].ID, TargetKind: "host", Target: "compute-01", Operation: "ssh-poweroff"},
	} {
		if _, err := s.RecordAction(ctx, k, ActionFailed, "", "refused"); err != nil {
			t.Fatal(err)
		}
	}
	ro, err := OpenReadOnly(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	blocks := strings.Split(string(doc), "```sql\n")[1:]
	if len(blocks) < 6 {
		t.Fatalf("only %d SQL blocks in docs/audit.md", len(blocks))
	}
	for _, b := range blocks {
		q := b[:strings.Index(b, "```")]
		rows, err := ro.r.QueryContext(ctx, q)
		if err != nil {
			t.Errorf("%s: %v", q, err)
			continue
		}
		n := 0
		for rows.Next() {
			n++
		}
		if err := rows.Err(); err != nil {
			t.Errorf("%s: %v", q, err)
		}
		rows.Close()
		if n == 0 && strings.Contains(q, "kind = 'shutdown'") {
			t.Errorf("%s: no rows for a store with a shutdown", q)
		}
	}
}
