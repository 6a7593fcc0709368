package store

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

func TestCreateSimulationRecordsWhoAndWhy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	fixed := time.Date(2025, 6, 24, 7, 47, 4, 65478123, time.UTC)
	s.now = func() time.Time { return fixed }
	rec := time.Date(2025, 6, 24, 12, 0, 0, 0, time.FixedZone("CEST", 2*3600))
	job, err := s.CreateSimulation(ctx, NewJob{Kind: KindShutdown, TokenName: "ups", RemoteAddr: "127.0.0.1:5000",
		Reason: "mains lost", ExpectedRecovery: &rec})
	if err != nil {
		t.Fatal(err)
	}
	if job.Kind != KindSimulation || job.State != StatePending || job.ID == 0 {
		t.Fatalf("created %+v", job)
	}
	got, err := s.Job(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.TokenName != "ups" || got.RemoteAddr != "127.0.0.1:5000" || got.Reason != "mains lost" ||
		got.ExpectedRecovery == nil || !got.ExpectedRecovery.Equal(rec) || got.StartedAt != nil || got.FinishedAt != nil {
		t.Errorf("stored %+v", got)
	}
	if want := fixed.Truncate(time.Microsecond); !got.CreatedAt.Equal(want) || got.CreatedAt.Location() != time.UTC {
		t.Errorf("CreatedAt %v, want %v UTC", got.CreatedAt, want)
	}
	if !got.CreatedAt.Equal(job.CreatedAt) || !got.ExpectedRecovery.Equal(*job.ExpectedRecovery) {
		t.Errorf("returned job %+v differs from stored %+v", job, got)
	}
	evs, err := s.Events(ctx, job.ID, 0)
	if err != nil || len(evs) != 1 || evs[0].Message != "simulation job created" {
		t.Fatalf("events %+v, %v", evs, err)
	}

	if _, err := s.CreateSimulation(ctx, NewJob{}); !errors.Is(err, ErrJobRunning) {
		t.Errorf("second simulation: %v, want ErrJobRunning", err)
	}
	if _, err := s.Job(ctx, 999); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing job: %v, want ErrNotFound", err)
	}
}

func TestCreateSimulationConcurrent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	const n = 100
	var (
		wg              sync.WaitGroup
		mu              sync.Mutex
		created, busy   int
		unexpectedError error
	)
	start := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, err := s.CreateSimulation(ctx, NewJob{})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				created++
			case errors.Is(err, ErrJobRunning):
				busy++
			default:
				unexpectedError = err
			}
		}()
	}
	close(start)
	wg.Wait()
	if unexpectedError != nil {
		t.Fatal(unexpectedError)
	}
	if created != 1 || busy != n-1 {
		t.Errorf("created %d, busy %d; want 1 and %d", created, busy, n-1)
	}
	jobs, err := s.ListJobs(ctx, JobFilter{})
	if err != nil || len(jobs) != 1 {
		t.Errorf("jobs in store: %d, %v", len(jobs), err)
	}
}

// TestCreateConcurrentTwoStores races two Store values (two processes, in
// effect) on one file: only the database can arbitrate.
func TestCreateConcurrentTwoStores(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, path := newStore(t)
	b, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := a
			if i%2 == 1 {
				st = b
			}
			if i%4 < 2 {
				_, err := st.CreateSimulation(ctx, NewJob{})
				errs <- err
			} else {
				_, _, err := st.CreateShutdown(ctx, NewJob{})
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil && !errors.Is(err, ErrJobRunning) {
			t.Errorf("unexpected error: %v", err)
		}
	}
	db := rawDB(t, path)
	var active int
	if err := db.QueryRow(`SELECT count(*) FROM jobs WHERE state IN ('pending', 'running')`).Scan(&active); err != nil {
		t.Fatal(err)
	}
	if active != 1 {
		t.Errorf("%d active jobs, want 1", active)
	}
	var shutdowns int
	if err := db.QueryRow(`SELECT count(*) FROM jobs WHERE kind = 'shutdown'`).Scan(&shutdowns); err != nil {
		t.Fatal(err)
	}
	if shutdowns != 1 {
		t.Errorf("%d shutdown jobs, want exactly 1 (later requests join it)", shutdowns)
	}
}

func TestCreateShutdownIdempotent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	first, created, err := s.CreateShutdown(ctx, NewJob{Reason: "ups on battery"})
	if err != nil || !created || first.Kind != KindShutdown || first.State != StatePending {
		t.Fatalf("first: %+v created=%v err=%v", first, created, err)
	}
	if err := s.StartJob(ctx, first.ID); err != nil {
		t.Fatal(err)
	}
	again, created, err := s.CreateShutdown(ctx, NewJob{Reason: "retry"})
	if err != nil || created || again.ID != first.ID || again.State != StateRunning || again.Reason != "ups on battery" {
		t.Fatalf("retry: %+v created=%v err=%v", again, created, err)
	}
	if _, err := s.CreateSimulation(ctx, NewJob{}); !errors.Is(err, ErrJobRunning) {
		t.Errorf("simulation during shutdown: %v, want ErrJobRunning", err)
	}
}

func TestCreateShutdownPreemptsSimulation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	sim, err := s.CreateSimulation(ctx, NewJob{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.StartJob(ctx, sim.ID); err != nil {
		t.Fatal(err)
	}
	sd, created, err := s.CreateShutdown(ctx, NewJob{Reason: "power lost"})
	if err != nil || !created || sd.State != StatePending {
		t.Fatalf("shutdown: %+v created=%v err=%v", sd, created, err)
	}
	got, err := s.Job(ctx, sim.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := "preempted by shutdown job " + itoa(sd.ID)
	if got.State != StateCancelled || got.Error != want || got.FinishedAt == nil {
		t.Errorf("simulation after preemption: %+v, want cancelled %q", got, want)
	}
	if !hasEvent(t, s, sim.ID, want) {
		t.Errorf("no %q event on the simulation", want)
	}
	if !hasEvent(t, s, sd.ID, "preempted simulation job "+itoa(sim.ID)) {
		t.Error("no preemption event on the shutdown")
	}
	active, err := s.ActiveJob(ctx)
	if err != nil || active == nil || active.ID != sd.ID {
		t.Errorf("active job %+v, %v; want the shutdown", active, err)
	}
	// The late simulation runner cannot overwrite the preemption.
	ok, err := s.FinishJob(ctx, sim.ID, StateSucceeded, "")
	if err != nil || ok {
		t.Errorf("late FinishJob = %v, %v; want false, nil", ok, err)
	}
	if got, _ := s.Job(ctx, sim.ID); got.State != StateCancelled {
		t.Errorf("simulation state %s after late finish", got.State)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func hasEvent(t *testing.T, s *Store, jobID int64, msg string) bool {
	t.Helper()
	evs, err := s.Events(context.Background(), jobID, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Message == msg {
			return true
		}
	}
	return false
}

func TestStartAndFinishJob(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	job, err := s.CreateSimulation(ctx, NewJob{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.StartJob(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	j1, _ := s.Job(ctx, job.ID)
	if j1.State != StateRunning || j1.StartedAt == nil {
		t.Fatalf("after start: %+v", j1)
	}
	// Starting a running job (a resume) keeps the first start time.
	s.now = func() time.Time { return time.Now().Add(time.Hour) }
	if err := s.StartJob(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	if j2, _ := s.Job(ctx, job.ID); !j2.StartedAt.Equal(*j1.StartedAt) {
		t.Errorf("restart moved started_at %v -> %v", j1.StartedAt, j2.StartedAt)
	}
	if _, err := s.FinishJob(ctx, job.ID, StateRunning, ""); err == nil {
		t.Error("FinishJob accepted a non-final state")
	}
	ok, err := s.FinishJob(ctx, job.ID, StateFailed, "bmc compute-01 unreachable")
	if err != nil || !ok {
		t.Fatalf("FinishJob = %v, %v", ok, err)
	}
	j3, _ := s.Job(ctx, job.ID)
	if j3.State != StateFailed || j3.Error != "bmc compute-01 unreachable" || j3.FinishedAt == nil {
		t.Errorf("after finish: %+v", j3)
	}
	// A second finish changes nothing.
	ok, err = s.FinishJob(ctx, job.ID, StateSucceeded, "")
	if err != nil || ok {
		t.Errorf("second FinishJob = %v, %v; want false, nil", ok, err)
	}
	if j4, _ := s.Job(ctx, job.ID); j4.State != StateFailed || j4.Error != j3.Error {
		t.Errorf("second finish overwrote: %+v", j4)
	}
	if err := s.StartJob(ctx, job.ID); !errors.Is(err, ErrJobFinished) {
		t.Errorf("StartJob on final job: %v, want ErrJobFinished", err)
	}
	if err := s.StartJob(ctx, 999); !errors.Is(err, ErrNotFound) {
		t.Errorf("StartJob on missing job: %v, want ErrNotFound", err)
	}
	if _, err := s.FinishJob(ctx, 999, StateFailed, ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("FinishJob on missing job: %v, want ErrNotFound", err)
	}
}

func TestFinishJobGuardAfterCancel(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	job, _, err := s.CreateShutdown(ctx, NewJob{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RequestCancel(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	ok, err := s.FinishJob(ctx, job.ID, StateSucceeded, "")
	if err != nil || ok {
		t.Fatalf("FinishJob on cancelled job = %v, %v; want false", ok, err)
	}
	if got, _ := s.Job(ctx, job.ID); got.State != StateCancelled {
		t.Errorf("state %s, want cancelled", got.State)
	}
}

// TestBatchCurrentStep: a Batch's CurrentStep is the job's progress text,
// and a batch for a job that does not exist is refused as ErrNotFound.
func TestBatchCurrentStep(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	job, _ := s.CreateSimulation(ctx, NewJob{})
	if err := setCurrentStep(ctx, s, job.ID, "Stopping OpenStack VMs (120/200 off)"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Job(ctx, job.ID); got.CurrentStep != "Stopping OpenStack VMs (120/200 off)" {
		t.Errorf("current step %q", got.CurrentStep)
	}
	if err := setCurrentStep(ctx, s, 999, "x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing job: %v", err)
	}
}

func TestRequestCancel(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)

	// Pending: cancelled at once, and the slot is free again.
	pending, _ := s.CreateSimulation(ctx, NewJob{})
	got, err := s.RequestCancel(ctx, pending.ID)
	if err != nil || got.State != StateCancelled || got.FinishedAt == nil || got.Error == "" {
		t.Fatalf("cancel pending: %+v, %v", got, err)
	}
	if a, _ := s.ActiveJob(ctx); a != nil {
		t.Errorf("active job after cancelling the pending one: %+v", a)
	}

	// Running: only flagged; the runner stops at a safe point.
	running, _ := s.CreateSimulation(ctx, NewJob{})
	if err := s.StartJob(ctx, running.ID); err != nil {
		t.Fatal(err)
	}
	got, err = s.RequestCancel(ctx, running.ID)
	if err != nil || got.State != StateRunning || !got.CancelRequested || got.FinishedAt != nil {
		t.Fatalf("cancel running: %+v, %v", got, err)
	}
	if !hasEvent(t, s, running.ID, "cancel requested") {
		t.Error("no cancel event")
	}
	if ok, err := s.FinishJob(ctx, running.ID, StateCancelled, "cancelled by request"); err != nil || !ok {
		t.Fatalf("runner finishing cancelled job: %v, %v", ok, err)
	}

	// Final: unchanged.
	before, _ := s.Job(ctx, running.ID)
	got, err = s.RequestCancel(ctx, running.ID)
	if err != nil || got.State != before.State || got.Error != before.Error || !got.FinishedAt.Equal(*before.FinishedAt) {
		t.Errorf("cancel final: %+v, %v; want unchanged %+v", got, err, before)
	}
	if _, err := s.RequestCancel(ctx, 999); !errors.Is(err, ErrNotFound) {
		t.Errorf("cancel missing: %v, want ErrNotFound", err)
	}
}

func TestFailInterruptedSimulations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	done, _ := s.CreateSimulation(ctx, NewJob{})
	if _, err := s.FinishJob(ctx, done.ID, StateSucceeded, ""); err != nil {
		t.Fatal(err)
	}
	sim, _ := s.CreateSimulation(ctx, NewJob{})
	if err := s.StartJob(ctx, sim.ID); err != nil {
		t.Fatal(err)
	}
	step, err := s.EnsureStep(ctx, sim.ID, 1, "Checking hosts")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.StartStep(ctx, step.ID); err != nil {
		t.Fatal(err)
	}
	act, err := beginAction(ctx, s, ActionKey{JobID: sim.ID, StepID: step.ID, TargetKind: "host", Target: "compute-01", Operation: "check-ssh"}, "")
	if err != nil {
		t.Fatal(err)
	}

	n, err := s.FailInterruptedSimulations(ctx)
	if err != nil || n != 1 {
		t.Fatalf("FailInterruptedSimulations = %d, %v; want 1", n, err)
	}
	got, _ := s.Job(ctx, sim.ID)
	if got.State != StateFailed || got.Error != "interrupted by restart" || got.FinishedAt == nil {
		t.Errorf("simulation: %+v", got)
	}
	if d, _ := s.Job(ctx, done.ID); d.State != StateSucceeded {
		t.Errorf("finished simulation touched: %+v", d)
	}
	steps, _ := s.Steps(ctx, sim.ID)
	if len(steps) != 1 || steps[0].State != StepFailed {
		t.Errorf("steps: %+v", steps)
	}
	acts, _ := s.Actions(ctx, sim.ID)
	if len(acts) != 1 || acts[0].ID != act.ID || acts[0].State != ActionFailed || acts[0].FinishedAt == nil {
		t.Errorf("actions: %+v", acts)
	}

	// Shutdowns are left for the runner to resume.
	sd, _, err := s.CreateShutdown(ctx, NewJob{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.StartJob(ctx, sd.ID); err != nil {
		t.Fatal(err)
	}
	if n, err := s.FailInterruptedSimulations(ctx); err != nil || n != 0 {
		t.Errorf("second call = %d, %v; want 0", n, err)
	}
	if got, _ := s.Job(ctx, sd.ID); got.State != StateRunning {
		t.Errorf("shutdown state %s, want running", got.State)
	}
}

func TestListAndLatestJobs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	if j, err := s.LatestJob(ctx, KindShutdown); j != nil || err != nil {
		t.Fatalf("LatestJob on empty store = %+v, %v", j, err)
	}
	if j, err := s.ActiveJob(ctx); j != nil || err != nil {
		t.Fatalf("ActiveJob on empty store = %+v, %v", j, err)
	}
	var ids []int64
	for i := range 6 {
		var job Job
		var err error
		if i%3 == 2 {
			job, _, err = s.CreateShutdown(ctx, NewJob{})
		} else {
			job, err = s.CreateSimulation(ctx, NewJob{})
		}
		if err != nil {
			t.Fatal(err)
		}
		st := StateSucceeded
		if i%2 == 1 {
			st = StateFailed
		}
		if _, err := s.FinishJob(ctx, job.ID, st, ""); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, job.ID)
	}
	// ids[0] sim ok, [1] sim failed, [2] shutdown ok, [3] sim failed, [4] sim ok, [5] shutdown failed.
	tests := []struct {
		name string
		f    JobFilter
		want []int64
	}{
		{"all newest first", JobFilter{}, []int64{ids[5], ids[4], ids[3], ids[2], ids[1], ids[0]}},
		{"kind", JobFilter{Kind: KindSimulation}, []int64{ids[4], ids[3], ids[1], ids[0]}},
		{"state", JobFilter{State: StateFailed}, []int64{ids[5], ids[3], ids[1]}},
		{"kind and state", JobFilter{Kind: KindShutdown, State: StateSucceeded}, []int64{ids[2]}},
		{"limit", JobFilter{Limit: 2}, []int64{ids[5], ids[4]}},
		{"before", JobFilter{Before: ids[3], Limit: 2}, []int64{ids[2], ids[1]}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			jobs, err := s.ListJobs(ctx, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			var got []int64
			for _, j := range jobs {
				got = append(got, j.ID)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("ids %v, want %v", got, tc.want)
			}
		})
	}
	latest, err := s.LatestJob(ctx, KindShutdown)
	if err != nil || latest == nil || latest.ID != ids[5] || latest.State != StateFailed {
		t.Errorf("LatestJob(shutdown) = %+v, %v", latest, err)
	}
}

func TestListJobsLimits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, path := newStore(t)
	db := rawDB(t, path)
	if _, err := db.Exec(`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 600)
		INSERT INTO jobs (kind, state, created_at, finished_at) SELECT 'simulation', 'succeeded', ?, ? FROM n`, ts, ts); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ limit, want int }{{0, 50}, {-1, 50}, {10, 10}, {1000, 500}} {
		jobs, err := s.ListJobs(ctx, JobFilter{Limit: tc.limit})
		if err != nil || len(jobs) != tc.want {
			t.Errorf("limit %d: %d jobs, %v; want %d", tc.limit, len(jobs), err, tc.want)
		}
	}
}
