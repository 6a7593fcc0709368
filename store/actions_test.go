package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

// newRunningJob returns a running shutdown with one step.
func newRunningJob(t *testing.T, s *Store) (Job, Step) {
	t.Helper()
	ctx := context.Background()
	job, _, err := s.CreateShutdown(ctx, NewJob{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.StartJob(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	step, err := s.EnsureStep(ctx, job.ID, 1, "Stopping OpenStack VMs")
	if err != nil {
		t.Fatal(err)
	}
	return job, step
}

func TestSteps(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	job, step := newRunningJob(t, s)
	if step.State != StepPending || step.Seq != 1 || step.JobID != job.ID {
		t.Fatalf("new step %+v", step)
	}
	again, err := s.EnsureStep(ctx, job.ID, 1, "renamed")
	if err != nil || again.ID != step.ID || again.Name != "Stopping OpenStack VMs" {
		t.Errorf("EnsureStep again = %+v, %v; want the same row", again, err)
	}
	second, err := s.EnsureStep(ctx, job.ID, 2, "Stopping storage")
	if err != nil || second.ID == step.ID {
		t.Fatalf("second step %+v, %v", second, err)
	}
	if _, err := s.EnsureStep(ctx, 999, 1, "x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("step of missing job: %v, want ErrNotFound", err)
	}

	if err := s.StartStep(ctx, step.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishStep(ctx, step.ID, StepRunning, "", ""); err == nil {
		t.Error("FinishStep accepted a non-final state")
	}
	if err := s.FinishStep(ctx, step.ID, StepSucceeded, "200 VMs off", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishStep(ctx, second.ID, StepSkipped, "storage type none", ""); err != nil {
		t.Fatal(err)
	}
	steps, err := s.Steps(ctx, job.ID)
	if err != nil || len(steps) != 2 {
		t.Fatalf("steps %+v, %v", steps, err)
	}
	if st := steps[0]; st.State != StepSucceeded || st.Detail != "200 VMs off" || st.StartedAt == nil || st.FinishedAt == nil {
		t.Errorf("step 1: %+v", st)
	}
	if st := steps[1]; st.State != StepSkipped || st.StartedAt == nil || st.FinishedAt == nil {
		t.Errorf("step 2: %+v", st)
	}
	// A resumed step runs again: finished_at cleared, first start kept.
	firstStart := *steps[0].StartedAt
	s.now = func() time.Time { return firstStart.Add(time.Hour) }
	if err := s.StartStep(ctx, step.ID); err != nil {
		t.Fatal(err)
	}
	steps, _ = s.Steps(ctx, job.ID)
	if st := steps[0]; st.State != StepRunning || st.FinishedAt != nil || !st.StartedAt.Equal(firstStart) {
		t.Errorf("restarted step: %+v", st)
	}
	if err := s.StartStep(ctx, 999); !errors.Is(err, ErrNotFound) {
		t.Errorf("StartStep missing: %v", err)
	}
	if err := s.FinishStep(ctx, 999, StepFailed, "", ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("FinishStep missing: %v", err)
	}
}

func TestBeginActionsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	job, step := newRunningJob(t, s)
	keys := []ActionKey{
		{JobID: job.ID, StepID: step.ID, TargetKind: "vm", Target: "web-1", TargetID: "uuid-1", Operation: "os-stop"},
		{JobID: job.ID, StepID: step.ID, TargetKind: "vm", Target: "web-2", TargetID: "uuid-2", Operation: "os-stop"},
	}
	t0 := time.Date(2025, 6, 24, 7, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return t0 }
	first, err := s.BeginActions(ctx, keys, "sending os-stop")
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != 2 || first[0].ID == first[1].ID {
		t.Fatalf("first %+v", first)
	}
	for _, a := range first {
		if a.State != ActionRunning || a.Attempts != 1 || a.Detail != "sending os-stop" || a.StartedAt == nil ||
			!a.StartedAt.Equal(t0) || a.FinishedAt != nil || !a.UpdatedAt.Equal(t0) {
			t.Errorf("begun action %+v", a)
		}
	}
	if err := finishAction(ctx, s, first[0].ID, ActionFailed, "", "HTTP 500"); err != nil {
		t.Fatal(err)
	}

	// The resumed step begins the same keys again: same rows, one more attempt.
	t1 := t0.Add(time.Minute)
	s.now = func() time.Time { return t1 }
	second, err := s.BeginActions(ctx, keys, "retry")
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range second {
		if a.ID != first[i].ID || a.Attempts != 2 || a.State != ActionRunning || a.Error != "" ||
			a.FinishedAt != nil || !a.StartedAt.Equal(t0) || !a.UpdatedAt.Equal(t1) || a.Detail != "retry" {
			t.Errorf("re-begun action %d: %+v", i, a)
		}
	}
	// The same target under another operation is another row.
	other, err := beginAction(ctx, s, ActionKey{JobID: job.ID, StepID: step.ID, TargetKind: "vm", Target: "web-1", TargetID: "uuid-1", Operation: "os-stop-wait"}, "")
	if err != nil || other.ID == first[0].ID || other.Attempts != 1 {
		t.Errorf("other operation %+v, %v", other, err)
	}
	all, err := s.Actions(ctx, job.ID)
	if err != nil || len(all) != 3 {
		t.Errorf("actions %d, %v; want 3", len(all), err)
	}

}

func TestActionStepMustBelongToJob(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	old, err := s.CreateSimulation(ctx, NewJob{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.FinishJob(ctx, old.ID, StateSucceeded, ""); err != nil {
		t.Fatal(err)
	}
	_, step := newRunningJob(t, s)
	for _, jobID := range []int64{old.ID, 999} {
		bad := ActionKey{JobID: jobID, StepID: step.ID, TargetKind: "vm", Target: "x", Operation: "os-stop"}
		if _, err := beginAction(ctx, s, bad, ""); !errors.Is(err, ErrNotFound) {
			t.Errorf("action of job %d on step of another job: %v, want ErrNotFound", jobID, err)
		}
		if _, err := s.RecordAction(ctx, bad, ActionSkipped, "", ""); !errors.Is(err, ErrNotFound) {
			t.Errorf("recorded action of job %d on step of another job: %v, want ErrNotFound", jobID, err)
		}
	}
}

func TestBeginActionsAtomic(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	job, step := newRunningJob(t, s)
	keys := []ActionKey{
		{JobID: job.ID, StepID: step.ID, TargetKind: "vm", Target: "ok", Operation: "os-stop"},
		{JobID: job.ID, StepID: step.ID, TargetKind: "toaster", Target: "bad", Operation: "os-stop"},
	}
	if _, err := s.BeginActions(ctx, keys, ""); err == nil {
		t.Fatal("batch with an invalid target kind succeeded")
	}
	if all, _ := s.Actions(ctx, job.ID); len(all) != 0 {
		t.Errorf("partial batch written: %+v", all)
	}
}

func TestFinishActionsBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	job, step := newRunningJob(t, s)
	var keys []ActionKey
	for _, name := range []string{"a", "b", "c"} {
		keys = append(keys, ActionKey{JobID: job.ID, StepID: step.ID, TargetKind: "vm", Target: name, TargetID: "id-" + name, Operation: "os-stop"})
	}
	begun, err := s.BeginActions(ctx, keys, "")
	if err != nil {
		t.Fatal(err)
	}
	err = s.FinishActions(ctx, []ActionResult{
		{ID: begun[0].ID, State: ActionSucceeded, Detail: "SHUTOFF"},
		{ID: begun[1].ID, State: ActionFailed, Error: "still ACTIVE at stop timeout"},
		{ID: begun[2].ID, State: ActionSkipped, Detail: "excluded"},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.StepActions(ctx, step.ID)
	if err != nil || len(got) != 3 {
		t.Fatalf("step actions %+v, %v", got, err)
	}
	want := []ActionState{ActionSucceeded, ActionFailed, ActionSkipped}
	for i, a := range got {
		if a.State != want[i] || a.FinishedAt == nil {
			t.Errorf("action %s: %+v, want %s", a.Target, a, want[i])
		}
	}
	if got[1].Error != "still ACTIVE at stop timeout" || got[0].Detail != "SHUTOFF" {
		t.Errorf("details lost: %+v", got)
	}

	// One bad result rolls back the whole batch.
	err = s.FinishActions(ctx, []ActionResult{
		{ID: begun[0].ID, State: ActionFailed, Error: "should not stick"},
		{ID: 9999, State: ActionFailed},
	})
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("batch with a missing id: %v, want ErrNotFound", err)
	}
	if a, _ := s.StepActions(ctx, step.ID); a[0].State != ActionSucceeded {
		t.Errorf("partial batch applied: %+v", a[0])
	}
	if err := s.FinishActions(ctx, []ActionResult{{ID: begun[0].ID, State: ActionRunning}}); err == nil {
		t.Error("FinishActions accepted a non-final state")
	}
}

func TestRecordAction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	job, step := newRunningJob(t, s)
	key := ActionKey{JobID: job.ID, StepID: step.ID, TargetKind: "vm", Target: "db-1", TargetID: "u1", Operation: "os-stop"}
	a, err := s.RecordAction(ctx, key, ActionSkipped, "status PAUSED", "")
	if err != nil {
		t.Fatal(err)
	}
	if a.State != ActionSkipped || a.Attempts != 0 || a.FinishedAt == nil || a.Detail != "status PAUSED" {
		t.Errorf("skipped: %+v", a)
	}
	b, err := s.RecordAction(ctx, key, ActionSucceeded, "already SHUTOFF", "")
	if err != nil || b.ID != a.ID || b.Attempts != 1 || b.State != ActionSucceeded {
		t.Errorf("recorded again: %+v, %v", b, err)
	}
	if _, err := s.RecordAction(ctx, key, ActionRunning, "", ""); err == nil {
		t.Error("RecordAction accepted a non-final state")
	}
}

func TestEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	job, _ := newRunningJob(t, s)
	base, err := s.Events(ctx, job.ID, 0)
	if err != nil || len(base) == 0 {
		t.Fatalf("events of a new job: %+v, %v", base, err)
	}
	last := base[len(base)-1].ID
	for _, m := range []string{"one", "two", "three"} {
		if err := s.AddEvent(ctx, job.ID, "warn", m, "d-"+m); err != nil {
			t.Fatal(err)
		}
	}
	evs, err := s.Events(ctx, job.ID, last)
	if err != nil || len(evs) != 3 {
		t.Fatalf("events after %d: %+v, %v", last, evs, err)
	}
	if evs[0].Message != "one" || evs[2].Message != "three" || evs[1].Detail != "d-two" || evs[0].Level != "warn" || evs[0].At.IsZero() {
		t.Errorf("events %+v", evs)
	}
	if more, _ := s.Events(ctx, job.ID, evs[2].ID); len(more) != 0 {
		t.Errorf("events after the last: %+v", more)
	}
	if err := s.AddEvent(ctx, job.ID, "debug", "x", ""); err == nil {
		t.Error("AddEvent accepted level debug")
	}
	if err := s.AddEvent(ctx, 999, "info", "x", ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("event for missing job: %v, want ErrNotFound", err)
	}
}
