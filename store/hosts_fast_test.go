package store

import (
	"context"
	"testing"
)

// WriteBatch records actions exactly as BeginActions and FinishActions do,
// appends events to the job's hash chain in order, and sets the current
// step, all in one transaction.
func TestWriteBatchMatchesBeginAndFinish(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	job, step := newRunningJob(t, s)
	key := func(target string) ActionKey {
		return ActionKey{JobID: job.ID, StepID: step.ID, TargetKind: "host", Target: target, Operation: "power-off"}
	}

	// The same life, once through the old calls and once through batches.
	old, err := beginAction(ctx, s, key("a"), "first")
	if err != nil {
		t.Fatal(err)
	}
	if err := finishAction(ctx, s, old.ID, ActionFailed, "", "boom"); err != nil {
		t.Fatal(err)
	}
	if old, err = beginAction(ctx, s, key("a"), "second"); err != nil {
		t.Fatal(err)
	}
	if err := finishAction(ctx, s, old.ID, ActionSucceeded, "off", ""); err != nil {
		t.Fatal(err)
	}

	as, err := s.WriteBatch(ctx, Batch{JobID: job.ID, Begin: []ActionBegin{{Key: key("b"), Detail: "first"}}})
	if err != nil || len(as) != 1 || as[0].State != ActionRunning || as[0].Attempts != 1 || as[0].Detail != "first" {
		t.Fatalf("first begin = %+v, %v", as, err)
	}
	step1 := "Powering off hosts (0/2 off)"
	if _, err := s.WriteBatch(ctx, Batch{JobID: job.ID, Finish: []ActionResult{{ID: as[0].ID, State: ActionFailed, Error: "boom"}},
		Events: []EventRecord{{"warn", "host b failed", "boom"}}, CurrentStep: &step1}); err != nil {
		t.Fatal(err)
	}
	again, err := s.WriteBatch(ctx, Batch{JobID: job.ID, Begin: []ActionBegin{{Key: key("b"), Detail: "second"}}})
	if err != nil || again[0].ID != as[0].ID || again[0].Attempts != 2 || again[0].Error != "" || again[0].FinishedAt != nil {
		t.Fatalf("second begin = %+v, %v; want the same row, attempt 2, error and end cleared", again, err)
	}
	step2 := "Powering off hosts (2/2 off)"
	if _, err := s.WriteBatch(ctx, Batch{JobID: job.ID, Finish: []ActionResult{{ID: again[0].ID, State: ActionSucceeded, Detail: "off"}},
		Events: []EventRecord{{"info", "host b off", "off"}, {"info", "group done", ""}}, CurrentStep: &step2}); err != nil {
		t.Fatal(err)
	}

	all, err := s.StepActions(ctx, step.ID)
	if err != nil || len(all) != 2 {
		t.Fatalf("actions %+v, %v", all, err)
	}
	a, b := all[0], all[1]
	if a.State != b.State || a.Attempts != b.Attempts || a.Detail != b.Detail || a.Error != b.Error ||
		(a.StartedAt == nil) != (b.StartedAt == nil) || (a.FinishedAt == nil) != (b.FinishedAt == nil) {
		t.Errorf("batch row differs from the BeginActions/FinishActions row:\n old %+v\n new %+v", a, b)
	}
	if j, _ := s.Job(ctx, job.ID); j.CurrentStep != step2 {
		t.Errorf("current step %q, want %q", j.CurrentStep, step2)
	}
	evs, err := s.Events(ctx, job.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, e := range evs {
		switch e.Message {
		case "host b failed", "host b off", "group done":
			msgs = append(msgs, e.Message)
		}
	}
	if len(msgs) != 3 || msgs[0] != "host b failed" || msgs[1] != "host b off" || msgs[2] != "group done" {
		t.Errorf("batch events %v, want them in order", msgs)
	}
	if rep, err := s.VerifyChain(ctx, job.ID); err != nil || !rep.OK {
		t.Errorf("event chain after batches: %+v, %v", rep, err)
	}
}

// A batch is one transaction: one bad write (here an action that does not
// exist) leaves nothing of the batch behind.
func TestWriteBatchIsAllOrNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	job, step := newRunningJob(t, s)
	before, _ := s.Events(ctx, job.ID, 0)
	text := "should not stick"
	_, err := s.WriteBatch(ctx, Batch{
		JobID:       job.ID,
		Begin:       []ActionBegin{{Key: ActionKey{JobID: job.ID, StepID: step.ID, TargetKind: "host", Target: "x", Operation: "power-off"}}},
		Finish:      []ActionResult{{ID: 424242, State: ActionSucceeded}},
		Events:      []EventRecord{{"info", "lost", ""}},
		CurrentStep: &text,
	})
	if err == nil {
		t.Fatal("batch with an unknown action succeeded")
	}
	if as, _ := s.StepActions(ctx, step.ID); len(as) != 0 {
		t.Errorf("%d actions left by a failed batch", len(as))
	}
	if after, _ := s.Events(ctx, job.ID, 0); len(after) != len(before) {
		t.Errorf("events %d -> %d after a failed batch", len(before), len(after))
	}
	if j, _ := s.Job(ctx, job.ID); j.CurrentStep == text {
		t.Error("current step set by a failed batch")
	}
	if _, err := s.WriteBatch(ctx, Batch{JobID: job.ID, Finish: []ActionResult{{ID: 1, State: ActionRunning}}}); err == nil {
		t.Error("batch finishing an action in a non-final state succeeded")
	}
}
