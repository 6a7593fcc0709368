package store

import (
	"context"
	"slices"
	"testing"
)

// finishedShutdown creates a shutdown, records what its VM step did with
// three VMs (one stopped, one already off, one failed) and finishes it.
func finishedShutdown(t *testing.T, s *Store) Job {
	t.Helper()
	ctx := context.Background()
	sd, _, err := s.CreateShutdown(ctx, NewJob{Reason: "mains lost"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.StartJob(ctx, sd.ID); err != nil {
		t.Fatal(err)
	}
	st, err := s.EnsureStep(ctx, sd.ID, 1, "openstack")
	if err != nil {
		t.Fatal(err)
	}
	key := func(name string) ActionKey {
		return ActionKey{JobID: sd.ID, StepID: st.ID, TargetKind: "vm", Target: name, TargetID: "id-" + name, Operation: "os-stop"}
	}
	if _, err := s.RecordActions(ctx, []ActionRecord{
		{Key: key("web-1"), State: ActionSucceeded, Detail: "SHUTOFF"},
		{Key: key("was-off"), State: ActionSucceeded, Detail: "already SHUTOFF"},
		{Key: key("stuck"), State: ActionFailed, Error: "not SHUTOFF after 5m"},
		{Key: key("db-1"), State: ActionSucceeded, Detail: "SHUTOFF (confirmed after restart)"},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.FinishJob(ctx, sd.ID, StateSucceeded, ""); err != nil {
		t.Fatal(err)
	}
	return sd
}

func TestCreateStartupRestoresLatestShutdown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	if _, err := s.CreateStartup(ctx, NewJob{}, 0); !isErr(err, ErrNoShutdown) {
		t.Fatalf("startup with no shutdown ever: %v, want ErrNoShutdown", err)
	}
	older := finishedShutdown(t, s)
	sd := finishedShutdown(t, s)
	su, err := s.CreateStartup(ctx, NewJob{TokenName: "ops", Reason: "mains back"}, 0)
	if err != nil || su.Kind != KindStartup || su.State != StatePending {
		t.Fatalf("startup: %+v, %v", su, err)
	}
	if got, err := s.RestoredShutdown(ctx, su.ID); err != nil || got != sd.ID {
		t.Errorf("restored shutdown %d, %v; want the latest, %d", got, err, sd.ID)
	}
	if !hasEvent(t, s, su.ID, "restores shutdown job "+itoa(sd.ID)) {
		t.Error("no event naming the restored shutdown")
	}
	// While it is active, nothing else starts but a shutdown.
	if _, err := s.CreateStartup(ctx, NewJob{}, older.ID); !isErr(err, ErrJobRunning) {
		t.Errorf("second startup: %v, want ErrJobRunning", err)
	}
	if _, err := s.CreateSimulation(ctx, NewJob{}); !isErr(err, ErrJobRunning) {
		t.Errorf("simulation during a startup: %v, want ErrJobRunning", err)
	}
	if got, _ := s.ListJobs(ctx, JobFilter{Kind: KindStartup}); len(got) != 1 {
		t.Errorf("jobs of kind startup: %d, want 1", len(got))
	}
	if _, err := s.RestoredShutdown(ctx, sd.ID); !isErr(err, ErrNotFound) {
		t.Errorf("RestoredShutdown of a shutdown: %v, want ErrNotFound", err)
	}
}

func TestCreateStartupNamedJob(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	older := finishedShutdown(t, s)
	finishedShutdown(t, s)
	sim, err := s.CreateSimulation(ctx, NewJob{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RequestCancel(ctx, sim.ID); err != nil {
		t.Fatal(err)
	}
	for _, id := range []int64{sim.ID, 999} {
		if _, err := s.CreateStartup(ctx, NewJob{}, id); !isErr(err, ErrNoShutdown) {
			t.Errorf("startup restoring job %d: %v, want ErrNoShutdown", id, err)
		}
	}
	su, err := s.CreateStartup(ctx, NewJob{}, older.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := s.RestoredShutdown(ctx, su.ID); got != older.ID {
		t.Errorf("restored %d, want the named %d", got, older.ID)
	}
}

// TestShutdownPreemptsStartup: power failed again during the recovery. The
// shutdown must start at once, and the startup end as preempted.
func TestShutdownPreemptsStartup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	finishedShutdown(t, s)
	su, err := s.CreateStartup(ctx, NewJob{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.StartJob(ctx, su.ID); err != nil {
		t.Fatal(err)
	}
	sd, created, err := s.CreateShutdown(ctx, NewJob{Reason: "mains lost again"})
	if err != nil || !created {
		t.Fatalf("shutdown during startup: %+v created=%v err=%v", sd, created, err)
	}
	got, err := s.Job(ctx, su.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := "preempted by shutdown job " + itoa(sd.ID)
	if got.State != StateCancelled || got.Error != want {
		t.Errorf("startup after preemption: %s %q, want cancelled %q", got.State, got.Error, want)
	}
	if !hasEvent(t, s, sd.ID, "preempted startup job "+itoa(su.ID)) {
		t.Error("no preemption event on the shutdown")
	}
}

// TestStoppedVMs: a startup starts exactly what the shutdown stopped, never
// a VM that was off before it or one whose stop failed.
func TestStoppedVMs(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	sd := finishedShutdown(t, s)
	vms, err := s.StoppedVMs(context.Background(), sd.ID)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range vms {
		names = append(names, v.Name)
		if v.ID != "id-"+v.Name {
			t.Errorf("vm %s has id %q", v.Name, v.ID)
		}
	}
	if want := []string{"web-1", "db-1"}; !slices.Equal(names, want) {
		t.Errorf("stopped vms %v, want %v", names, want)
	}
}
