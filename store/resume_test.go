package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

// clock is a store clock that tests move by hand.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// A job carries the boot id the store was told at creation, and again when
// it starts or resumes; a store that was not told records none.
func TestJobsRecordTheBootTheyRunIn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	unknown, _, err := s.CreateShutdown(ctx, NewJob{})
	if err != nil {
		t.Fatal(err)
	}
	if j, _ := s.Job(ctx, unknown.ID); j.BootID != "" {
		t.Errorf("boot id %q on a store that was not told one", j.BootID)
	}
	if _, err := s.FinishJob(ctx, unknown.ID, StateCancelled, "test"); err != nil {
		t.Fatal(err)
	}

	s.SetBootID("boot-a")
	job, _, err := s.CreateShutdown(ctx, NewJob{})
	if err != nil {
		t.Fatal(err)
	}
	if job.BootID != "boot-a" {
		t.Errorf("created with boot id %q, want boot-a", job.BootID)
	}
	s.SetBootID("boot-b")
	if err := s.StartJob(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	if j, _ := s.Job(ctx, job.ID); j.BootID != "boot-b" || j.State != StateRunning {
		t.Errorf("started: %s, boot id %q; want running, boot-b", j.State, j.BootID)
	}
	// Resuming a running job records the boot it resumes in.
	s.SetBootID("boot-c")
	if err := s.StartJob(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	if j, _ := s.Job(ctx, job.ID); j.BootID != "boot-c" {
		t.Errorf("resumed: boot id %q, want boot-c", j.BootID)
	}
}

// The last record of a job is the newest of its own row's writes (created,
// started, progress, heartbeat), its events, its actions and its steps.
func TestLastRecordIsTheNewestWriteOfAnyKind(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	c := &clock{t: time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)}
	s.now = c.now
	step := func(d time.Duration) time.Time { c.t = c.t.Add(d); return c.t }
	check := func(what string, want time.Time) {
		t.Helper()
		got, err := s.LastRecord(ctx, 1)
		if err != nil || !got.Equal(want) {
			t.Errorf("after %s: last record %v, %v; want %v", what, got, err, want)
		}
	}
	if _, err := s.LastRecord(ctx, 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing job: %v, want ErrNotFound", err)
	}
	created := c.t
	job, _, err := s.CreateShutdown(ctx, NewJob{})
	if err != nil || job.ID != 1 {
		t.Fatal(job.ID, err)
	}
	check("create", created)
	at := step(time.Second)
	if err := s.StartJob(ctx, 1); err != nil {
		t.Fatal(err)
	}
	check("start", at)
	at = step(time.Second)
	st, err := s.EnsureStep(ctx, 1, 1, "openstack")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.StartStep(ctx, st.ID); err != nil {
		t.Fatal(err)
	}
	check("step started", at)
	at = step(time.Second)
	a, err := beginAction(ctx, s, ActionKey{JobID: 1, StepID: st.ID, TargetKind: "vm", Target: "web-01", TargetID: "id-1", Operation: "os-stop"}, "")
	if err != nil {
		t.Fatal(err)
	}
	check("action begun", at)
	at = step(time.Second)
	if err := setCurrentStep(ctx, s, 1, "Stopping OpenStack VMs (0/1 off)"); err != nil {
		t.Fatal(err)
	}
	check("progress", at)
	at = step(time.Minute)
	if err := s.TouchJob(ctx, 1); err != nil {
		t.Fatal(err)
	}
	check("heartbeat", at)
	at = step(time.Second)
	if err := finishAction(ctx, s, a.ID, ActionSucceeded, "SHUTOFF", ""); err != nil {
		t.Fatal(err)
	}
	check("action finished", at)
	at = step(time.Second)
	if err := s.FinishStep(ctx, st.ID, StepSucceeded, "1/1 off", ""); err != nil {
		t.Fatal(err)
	}
	check("step finished", at)
	at = step(time.Second)
	if err := s.AddEvent(ctx, 1, "info", "something", ""); err != nil {
		t.Fatal(err)
	}
	check("event", at)
	// A read writes nothing.
	step(time.Hour)
	if _, err := s.Job(ctx, 1); err != nil {
		t.Fatal(err)
	}
	check("a read", at)
}

// A job that a restart does not resume ends failed with the message, its
// open steps failed, its open actions skipped (their outcome is unknown)
// and what was done before left as it was; an error event says why. A job
// already final is left alone.
func TestEndNotResumedClosesEverythingOpen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	job, _, err := s.CreateShutdown(ctx, NewJob{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.StartJob(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	done, err := s.EnsureStep(ctx, job.ID, 1, "openstack")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.StartStep(ctx, done.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishStep(ctx, done.ID, StepSucceeded, "2/2 off", ""); err != nil {
		t.Fatal(err)
	}
	open, err := s.EnsureStep(ctx, job.ID, 2, "storage")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.StartStep(ctx, open.ID); err != nil {
		t.Fatal(err)
	}
	key := ActionKey{JobID: job.ID, StepID: open.ID, TargetKind: "storage", Target: "storage-01", Operation: "ceph osd set noout"}
	finished, err := beginAction(ctx, s, key, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := finishAction(ctx, s, finished.ID, ActionSucceeded, "ok", ""); err != nil {
		t.Fatal(err)
	}
	key.Operation = "ceph osd set norecover"
	running, err := beginAction(ctx, s, key, "")
	if err != nil {
		t.Fatal(err)
	}

	const msg = "interrupted at 2025-03-01T10:00:00.000000Z, not resumed: the machine rebooted"
	ok, err := s.EndNotResumed(ctx, job.ID, msg, "boot id at start a, now b")
	if err != nil || !ok {
		t.Fatalf("EndNotResumed = %v, %v", ok, err)
	}
	j, _ := s.Job(ctx, job.ID)
	if j.State != StateFailed || j.Error != msg || j.FinishedAt == nil {
		t.Errorf("job %s %q finished %v", j.State, j.Error, j.FinishedAt)
	}
	steps, _ := s.Steps(ctx, job.ID)
	if len(steps) != 2 || steps[0].State != StepSucceeded || steps[1].State != StepFailed || steps[1].Error != msg {
		t.Errorf("steps %+v", steps)
	}
	as, _ := s.Actions(ctx, job.ID)
	for _, a := range as {
		switch a.ID {
		case finished.ID:
			if a.State != ActionSucceeded || a.Detail != "ok" {
				t.Errorf("finished action changed: %s %q", a.State, a.Detail)
			}
		case running.ID:
			if a.State != ActionSkipped || a.Detail != "outcome not recorded; "+msg || a.FinishedAt == nil {
				t.Errorf("open action: %s %q", a.State, a.Detail)
			}
		}
	}
	evs, _ := s.Events(ctx, job.ID, 0)
	var saw bool
	for _, e := range evs {
		if e.Level == "error" && e.Message == "not resumed after restart" && e.Detail == "boot id at start a, now b" {
			saw = true
		}
	}
	if !saw {
		t.Errorf("no 'not resumed after restart' event in %+v", evs)
	}
	if ok, err := s.EndNotResumed(ctx, job.ID, "again", ""); ok || err != nil {
		t.Errorf("second EndNotResumed = %v, %v; want false, nil", ok, err)
	}
	if j, _ := s.Job(ctx, job.ID); j.Error != msg {
		t.Errorf("a final job was changed: %q", j.Error)
	}
}
