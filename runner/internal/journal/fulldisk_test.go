package journal

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/store"
)

// A full disk holds every record in memory without blocking anyone: an
// action begun on the full disk gets a provisional ID that its finish uses,
// a step created then gets one its actions use, reads see all of it, and
// once space is freed everything reaches the store in order, with the time
// it was made, the provisional IDs mapped to the rows, and the event chain
// whole.
func TestFullDiskHoldsRecordsAndWritesThemLater(t *testing.T) {
	d := newSmallDisk(t)
	ctx := context.Background()
	job, step := runningJob(t, d.st)
	obs := &counter{}
	jb := newJournal(t, d.st, obs).Job(job.ID)

	a, err := jb.Begin(hostKey(job, step.ID, "a", "power-off"), "")
	if err != nil || a.ID <= 0 {
		t.Fatalf("begin on a disk with room: %+v %v", a, err)
	}
	jb.Event("info", "before the disk filled", "")

	d.fill()
	heldAt := time.Now()
	b, err := jb.Begin(hostKey(job, step.ID, "b", "power-off"), "sent")
	if err != nil || b.ID >= 0 {
		t.Fatalf("begin on a full disk: %+v %v; want a provisional action", b, err)
	}
	jb.Event("warn", "host b: held", "detail b")
	if err := jb.Finish(store.ActionResult{ID: b.ID, State: store.ActionSucceeded, Detail: "b off"},
		store.ActionResult{ID: a.ID, State: store.ActionFailed, Error: "a still on"}); err != nil {
		t.Fatal(err)
	}
	if err := jb.FinishStep(step.ID, store.StepFailed, "1/2 hosts off", "1 host not confirmed off"); err != nil {
		t.Fatal(err)
	}
	step2, err := jb.EnsureStep(ctx, 2, "after")
	if err != nil || step2.ID >= 0 {
		t.Fatalf("step created on a full disk: %+v %v; want a provisional step", step2, err)
	}
	if err := jb.StartStep(step2.ID); err != nil {
		t.Fatal(err)
	}
	c, err := jb.Begin(hostKey(job, step2.ID, "c", "power-off"), "")
	if err != nil {
		t.Fatal(err)
	}
	jb.Progress("Powering off hosts: c")
	jb.Event("info", "host c begun", "")
	jb.j.Wait()

	u, ok := jb.j.Unsaved(job.ID)
	if !ok || u.Records < 8 || u.Progress != "Powering off hosts: c" || u.Reason() == "" {
		t.Fatalf("unsaved = %+v %v", u, ok)
	}
	if obs.failed.Load() == 0 || obs.unsaved.Load() != int64(u.Records) {
		t.Errorf("observer: %d failures, %d unsaved; want >0 and %d", obs.failed.Load(), obs.unsaved.Load(), u.Records)
	}
	checkOverlay(t, jb, step, step2, b, c)
	// Reads keep working, and the store does not have the held records.
	if as, err := d.st.StepActions(ctx, step.ID); err != nil || len(as) != 1 || as[0].State != store.ActionRunning {
		t.Fatalf("store during the outage: %+v %v", as, err)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := jb.j.Flush(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("flush on a full disk: %v", err)
	}

	d.free()
	if err := jb.j.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := jb.j.Unsaved(job.ID); ok || obs.unsaved.Load() != 0 {
		t.Errorf("still unsaved after the flush (observer says %d)", obs.unsaved.Load())
	}
	checkStored(t, d.st, job, step, heldAt)
	// Written late, c finishes through its provisional ID.
	if err := jb.Finish(store.ActionResult{ID: c.ID, State: store.ActionSucceeded, Detail: "c off"}); err != nil {
		t.Fatalf("finish through a provisional ID after the store recovered: %v", err)
	}
	steps, _ := d.st.Steps(ctx, job.ID)
	as, _ := d.st.StepActions(ctx, steps[1].ID)
	if len(as) != 1 || as[0].Target != "c" || as[0].State != store.ActionSucceeded || as[0].Detail != "c off" {
		t.Errorf("step 2 actions %+v", as)
	}
}

// checkOverlay: the journal's reads show the held records.
func checkOverlay(t *testing.T, jb Job, step, step2 store.Step, b, c store.Action) {
	t.Helper()
	ctx := context.Background()
	as, err := jb.StepActions(ctx, step.ID)
	if err != nil || len(as) != 2 {
		t.Fatalf("overlay of step 1: %+v %v", as, err)
	}
	if as[0].State != store.ActionFailed || as[1].ID != b.ID || as[1].State != store.ActionSucceeded || as[1].Detail != "b off" {
		t.Errorf("overlay of step 1: %+v", as)
	}
	steps, err := jb.Steps(ctx)
	if err != nil || len(steps) != 2 || steps[0].State != store.StepFailed || steps[1].ID != step2.ID || steps[1].State != store.StepRunning {
		t.Errorf("overlay of steps: %+v %v", steps, err)
	}
	as, err = jb.StepActions(ctx, step2.ID)
	if err != nil || len(as) != 1 || as[0].ID != c.ID || as[0].State != store.ActionRunning {
		t.Errorf("overlay of the held step: %+v %v", as, err)
	}
}

// checkStored: after the flush, the store holds what the journal held.
func checkStored(t *testing.T, st *store.Store, job store.Job, step store.Step, heldAt time.Time) {
	t.Helper()
	ctx := context.Background()
	as, err := st.StepActions(ctx, step.ID)
	if err != nil || len(as) != 2 {
		t.Fatalf("actions of step 1: %+v %v", as, err)
	}
	a, b := as[0], as[1]
	if a.State != store.ActionFailed || a.Error != "a still on" || b.Target != "b" || b.State != store.ActionSucceeded ||
		b.Detail != "b off" || b.Attempts != 1 {
		t.Errorf("actions of step 1: %+v", as)
	}
	// Written with the time it was made, not the time of the write.
	if b.StartedAt == nil || b.StartedAt.Sub(heldAt).Abs() > 2*time.Second {
		t.Errorf("b started at %v, held at %v", b.StartedAt, heldAt)
	}
	steps, _ := st.Steps(ctx, job.ID)
	if len(steps) != 2 || steps[0].State != store.StepFailed || steps[1].Name != "after" || steps[1].State != store.StepRunning {
		t.Errorf("steps %+v", steps)
	}
	evs, _ := st.Events(ctx, job.ID, 0)
	var msgs []string
	for _, ev := range evs {
		msgs = append(msgs, ev.Message)
	}
	want := []string{"shutdown job created", "job started", "before the disk filled", "host b: held", "host c begun",
		"records written late: the store refused writes"}
	if !slices.Equal(msgs, want) {
		t.Errorf("events %q, want %q", msgs, want)
	}
	if rep, err := st.VerifyChain(ctx, job.ID); err != nil || !rep.OK || rep.Events != len(want) {
		t.Errorf("event chain: %+v %v", rep, err)
	}
	if j, _ := st.Job(ctx, job.ID); j.CurrentStep != "Powering off hosts: c" {
		t.Errorf("current_step %q", j.CurrentStep)
	}
}

// A held record that turns out wrong in itself (a finish of an action that
// does not exist) is dropped when written; the records behind it are not.
// A call (the job's final state) waits behind the held records and runs
// once they are written.
func TestHeldWrongRecordIsDroppedAndTheRestWritten(t *testing.T) {
	d := newSmallDisk(t)
	ctx := context.Background()
	job, step := runningJob(t, d.st)
	jb := newJournal(t, d.st, nil).Job(job.ID)

	d.fill()
	a, _ := jb.Begin(hostKey(job, step.ID, "a", "power-off"), "")
	if a.ID >= 0 {
		t.Fatalf("begin on a full disk: %+v", a)
	}
	// Wrong in itself, but behind a held record: held too.
	if err := jb.Finish(store.ActionResult{ID: 987654, State: store.ActionSucceeded}); err != nil {
		t.Fatalf("held finish: %v", err)
	}
	_ = jb.Finish(store.ActionResult{ID: a.ID, State: store.ActionSucceeded, Detail: "off"})
	var ok bool
	held, err := jb.Call("job succeeded", func(ctx context.Context) error {
		var err error
		ok, err = d.st.FinishJob(ctx, job.ID, store.StateSucceeded, "")
		return err
	})
	if !held || err != nil {
		t.Fatalf("final state on a full disk: held %v, %v", held, err)
	}
	d.free()
	if err := jb.j.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Error("final state not written after the held records")
	}
	j, _ := d.st.Job(ctx, job.ID)
	as, _ := d.st.StepActions(ctx, step.ID)
	if j.State != store.StateSucceeded || len(as) != 1 || as[0].State != store.ActionSucceeded {
		t.Errorf("job %s, actions %+v", j.State, as)
	}
	if j.FinishedAt == nil || as[0].FinishedAt == nil || j.FinishedAt.Before(*as[0].FinishedAt) {
		t.Errorf("final state before the action it follows: job %v, action %v", j.FinishedAt, as[0].FinishedAt)
	}
}
