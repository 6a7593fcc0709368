package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestIdempotencyKeyWindow: a key is found and unique within 24 h, then
// expires and can be recorded again for a new job.
func TestIdempotencyKeyWindow(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	clock := time.Date(2025, 6, 24, 7, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return clock }
	j1, err := s.CreateSimulation(ctx, NewJob{TokenName: "ups"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RecordIdempotencyKey(ctx, "ups", "k1", "simulation:aa", j1.ID); err != nil {
		t.Fatal(err)
	}
	k, err := s.IdempotencyKey(ctx, "ups", "k1")
	if err != nil || k.JobID != j1.ID || k.Fingerprint != "simulation:aa" || !k.CreatedAt.Equal(clock) {
		t.Fatalf("lookup = %+v, %v", k, err)
	}
	if _, err := s.IdempotencyKey(ctx, "other-token", "k1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("other token: %v, want ErrNotFound", err)
	}
	if err := s.RecordIdempotencyKey(ctx, "ups", "k1", "simulation:bb", j1.ID); !errors.Is(err, ErrNameTaken) {
		t.Errorf("second record within the window: %v, want ErrNameTaken", err)
	}
	if err := s.RecordIdempotencyKey(ctx, "ups", "k2", "simulation:aa", 999); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown job: %v, want ErrNotFound", err)
	}

	clock = clock.Add(IdempotencyWindow - time.Second)
	if _, err := s.IdempotencyKey(ctx, "ups", "k1"); err != nil {
		t.Errorf("just inside the window: %v", err)
	}
	clock = clock.Add(2 * time.Second)
	if _, err := s.IdempotencyKey(ctx, "ups", "k1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after the window: %v, want ErrNotFound", err)
	}
	if _, err := s.RequestCancel(ctx, j1.ID); err != nil {
		t.Fatal(err)
	}
	j2, err := s.CreateSimulation(ctx, NewJob{TokenName: "ups"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RecordIdempotencyKey(ctx, "ups", "k1", "simulation:cc", j2.ID); err != nil {
		t.Fatalf("expired key recorded again: %v", err)
	}
	var n int
	if err := s.r.QueryRow(`SELECT count(*) FROM idempotency_keys`).Scan(&n); err != nil || n != 1 {
		t.Errorf("%d rows (%v), want 1: expired rows are deleted", n, err)
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
