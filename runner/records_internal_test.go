package runner

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"

	"github.com/edgeops/shutdownd/store"
)

// Writes asked for together are committed together, and one that cannot be
// written fails alone: the others still land, each caller learns its own
// outcome, and the events and the latest progress are written by wait.
func TestRecorderGroupsWritesAndIsolatesAFailure(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	job, _, err := st.CreateShutdown(ctx, store.NewJob{Kind: store.KindShutdown})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.StartJob(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	step, err := st.EnsureStep(ctx, job.ID, 3, StepHosts)
	if err != nil {
		t.Fatal(err)
	}
	e := &exec{r: &Runner{store: st}, job: job, ctx: ctx, log: slog.New(slog.DiscardHandler)}
	rec := newRecorder(e)

	const n = 40
	var wg sync.WaitGroup
	acts := make([]store.Action, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := store.ActionKey{JobID: job.ID, StepID: step.ID, TargetKind: "host", Target: "h" + string(rune('A'+i)), Operation: "power-off"}
			acts[i], errs[i] = rec.begin(key, "")
			if errs[i] == nil {
				rec.finish(acts[i].ID, store.ActionSucceeded, "off", "")
				rec.event("info", "host off", key.Target)
			}
			rec.setProgress("Powering off hosts (%d)", i)
		}()
	}
	// Not an action of this database: its finish fails, alone.
	wg.Add(1)
	go func() {
		defer wg.Done()
		rec.finish(987654, store.ActionSucceeded, "", "")
	}()
	wg.Wait()
	rec.wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("begin %d: %v", i, err)
		}
	}
	as, err := st.StepActions(ctx, step.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(as) != n {
		t.Fatalf("%d actions, want %d", len(as), n)
	}
	for _, a := range as {
		if a.State != store.ActionSucceeded || a.Detail != "off" {
			t.Errorf("%s: %s %q", a.Target, a.State, a.Detail)
		}
	}
	evs, _ := st.Events(ctx, job.ID, 0)
	off := 0
	for _, ev := range evs {
		if ev.Message == "host off" {
			off++
		}
	}
	if off != n {
		t.Errorf("%d host-off events, want %d", off, n)
	}
	if j, _ := st.Job(ctx, job.ID); j.CurrentStep == "" {
		t.Error("no progress written")
	}
	if rep, err := st.VerifyChain(ctx, job.ID); err != nil || !rep.OK {
		t.Errorf("event chain: %+v %v", rep, err)
	}
}
