package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestIdempotencyKeyFollowsItsJob: a key reports its job's current state
// (the API replays only an active one), is moved to a new job by the next
// record, and rows of ended jobs older than the window are deleted while a
// row of a job still active is kept whatever its age.
func TestIdempotencyKeyFollowsItsJob(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	clock := time.Date(2025, 6, 24, 7, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return clock }
	j1, err := s.CreateSimulation(ctx, NewJob{TokenName: "ups"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RecordIdempotencyKey(ctx, "ups", "k1", "simulation", j1.ID); err != nil {
		t.Fatal(err)
	}
	k, err := s.IdempotencyKey(ctx, "ups", "k1")
	if err != nil || k.JobID != j1.ID || k.Kind() != KindSimulation || k.JobState != StatePending || !k.CreatedAt.Equal(clock) {
		t.Fatalf("lookup = %+v, %v", k, err)
	}
	if _, err := s.IdempotencyKey(ctx, "other-token", "k1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("other token: %v, want ErrNotFound", err)
	}
	if err := s.RecordIdempotencyKey(ctx, "ups", "k2", "simulation", 999); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown job: %v, want ErrNotFound", err)
	}
	// A row written before bodies stopped counting still names its kind.
	if k := (IdempotencyKey{Fingerprint: "shutdown:9f86d081"}); k.Kind() != KindShutdown {
		t.Errorf("kind of an old fingerprint = %q", k.Kind())
	}

	// Active for longer than the window: a record (of another key) cleans
	// up, and k1 stays, since its job is still active.
	clock = clock.Add(IdempotencyWindow + time.Hour)
	if err := s.RecordIdempotencyKey(ctx, "ups", "k-other", "simulation", j1.ID); err != nil {
		t.Fatal(err)
	}
	if k, err := s.IdempotencyKey(ctx, "ups", "k1"); err != nil || k.JobID != j1.ID || k.JobState.Final() {
		t.Fatalf("k1 of a job active for more than the window = %+v, %v", k, err)
	}
	// The job ends: the key reports it, and then starts (and names) a new job.
	if _, err := s.RequestCancel(ctx, j1.ID); err != nil {
		t.Fatal(err)
	}
	if k, err := s.IdempotencyKey(ctx, "ups", "k1"); err != nil || k.JobState != StateCancelled {
		t.Fatalf("k1 after its job ended = %+v, %v", k, err)
	}
	clock = clock.Add(IdempotencyWindow + time.Hour)
	j2, _, err := s.CreateShutdown(ctx, NewJob{TokenName: "ups"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RecordIdempotencyKey(ctx, "ups", "k1", "shutdown", j2.ID); err != nil {
		t.Fatalf("key moved to a new job: %v", err)
	}
	if k, err := s.IdempotencyKey(ctx, "ups", "k1"); err != nil || k.JobID != j2.ID || k.Kind() != KindShutdown ||
		k.JobState != StatePending || !k.CreatedAt.Equal(clock) {
		t.Fatalf("moved key = %+v, %v", k, err)
	}
	// k-other (its job ended, recorded more than the window ago) is gone.
	if _, err := s.IdempotencyKey(ctx, "ups", "k-other"); !errors.Is(err, ErrNotFound) {
		t.Errorf("expired key of an ended job: %v, want ErrNotFound", err)
	}
	var n int
	if err := s.r.QueryRow(`SELECT count(*) FROM idempotency_keys`).Scan(&n); err != nil || n != 1 {
		t.Errorf("%d rows (%v), want 1", n, err)
	}
}

// TestDeadlineAndOnTrack: the deadline is stored with the job; on_track
// starts unknown, and SetOnTrack reports only changes.
func TestDeadlineAndOnTrack(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	dl := time.Date(2025, 6, 24, 9, 30, 0, 123456789, time.FixedZone("CEST", 7200))
	j, _, err := s.CreateShutdown(ctx, NewJob{Deadline: &dl})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Job(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Deadline == nil || !got.Deadline.Equal(dl.Truncate(time.Microsecond)) || got.OnTrack != nil {
		t.Fatalf("deadline %v on_track %v", got.Deadline, got.OnTrack)
	}
	for i, c := range []struct{ set, changed bool }{{true, true}, {true, false}, {false, true}} {
		changed, err := s.SetOnTrack(ctx, j.ID, c.set)
		if err != nil || changed != c.changed {
			t.Errorf("%d: SetOnTrack(%v) = %v, %v; want %v", i, c.set, changed, err, c.changed)
		}
	}
	if got, _ := s.Job(ctx, j.ID); got.OnTrack == nil || *got.OnTrack {
		t.Errorf("on_track = %v, want false", got.OnTrack)
	}
	// Without a deadline there is nothing to be on track for.
	if _, err := s.FinishJob(ctx, j.ID, StateSucceeded, ""); err != nil {
		t.Fatal(err)
	}
	j2, err := s.CreateSimulation(ctx, NewJob{})
	if err != nil {
		t.Fatal(err)
	}
	if changed, err := s.SetOnTrack(ctx, j2.ID, true); err != nil || changed {
		t.Errorf("no deadline: changed=%v err=%v", changed, err)
	}
}
