package store

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// The helper process of TestReadsSeeOtherProcess: the test binary re-runs
// itself with these variables set and, instead of the tests, opens the
// database with Open (as `shutdownd token revoke` does), writes, and exits.
const (
	helperEnv   = "SHUTDOWND_STORE_TEST_HELPER"
	helperDBEnv = "SHUTDOWND_STORE_TEST_DB"
)

func TestMain(m *testing.M) {
	if what := os.Getenv(helperEnv); what != "" {
		if err := helper(what, os.Getenv(helperDBEnv)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func helper(what, path string) error {
	ctx := context.Background()
	s, err := Open(ctx, path)
	if err != nil {
		return err
	}
	defer s.Close()
	switch what {
	case "revoke":
		return s.RevokeToken(ctx, "ups")
	case "step":
		j, err := s.LatestJob(ctx, KindShutdown)
		if err != nil || j == nil {
			return fmt.Errorf("latest job: %v %v", j, err)
		}
		return setCurrentStep(ctx, s, j.ID, "set by another process")
	}
	return fmt.Errorf("unknown helper %q", what)
}

// runHelper runs the test binary as a separate process that writes path.
func runHelper(t *testing.T, what, path string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+what, helperDBEnv+"="+path)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper %s: %v\n%s", what, err, out)
	}
}

func newToken(t *testing.T, s *Store, name string, expires *time.Time) (string, Token) {
	t.Helper()
	secret, err := NewTokenSecret()
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.CreateToken(context.Background(), name, HashToken(secret), []string{"read"}, nil, expires)
	if err != nil {
		t.Fatal(err)
	}
	return secret, tok
}

// TestReadsSeeOtherProcess: a revocation and a job change committed by a
// separate process (the test binary re-run as a helper, opening the file
// with Open as the CLI does) are seen by the first read after that process
// exited, although the same prepared statements read both just before.
func TestReadsSeeOtherProcess(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, path := newStore(t)
	secret, _ := newToken(t, s, "ups", nil)
	job, _, err := s.CreateShutdown(ctx, NewJob{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.StartJob(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if tok, err := s.TokenByHash(ctx, HashToken(secret)); err != nil || tok.RevokedAt != nil {
			t.Fatalf("before: %+v %v", tok, err)
		}
		if j, err := s.LatestJob(ctx, KindShutdown); err != nil || j.CurrentStep != "" {
			t.Fatalf("before: %+v %v", j, err)
		}
	}

	runHelper(t, "revoke", path)
	if tok, err := s.TokenByHash(ctx, HashToken(secret)); err != nil || tok.RevokedAt == nil {
		t.Fatalf("first read after another process revoked: %+v %v, want revoked", tok, err)
	}
	runHelper(t, "step", path)
	if j, err := s.LatestJob(ctx, KindShutdown); err != nil || j.CurrentStep != "set by another process" {
		t.Fatalf("first read after another process wrote: %+v %v", j, err)
	}
}

// TestLatestJobAfterEveryCommit: the latest job reflects every commit that
// returned before the read, through every store method that changes a job,
// while another reader keeps the prepared statement busy.
func TestLatestJobAfterEveryCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, path := newStore(t)
	db := rawDB(t, path)
	latest := func() *Job {
		t.Helper()
		j, err := s.LatestJob(ctx, KindShutdown)
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	if j := latest(); j != nil {
		t.Fatalf("no job yet, got %+v", j)
	}
	// A hot reader, as the status endpoint under load.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				_, _ = s.LatestJob(ctx, KindShutdown)
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	job, _, err := s.CreateShutdown(ctx, NewJob{Reason: "ups"})
	if err != nil {
		t.Fatal(err)
	}
	if j := latest(); j == nil || j.ID != job.ID || j.State != StatePending {
		t.Fatalf("after create: %+v", j)
	}
	if err := s.StartJob(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	if j := latest(); j.State != StateRunning {
		t.Fatalf("after start: %+v", j)
	}
	for i := range 50 {
		text := fmt.Sprintf("Stopping OpenStack VMs (%d/50 off)", i)
		if err := setCurrentStep(ctx, s, job.ID, text); err != nil {
			t.Fatal(err)
		}
		if j := latest(); j.CurrentStep != text {
			t.Fatalf("after step %d: current_step %q", i, j.CurrentStep)
		}
	}
	if _, err := db.ExecContext(ctx, `UPDATE jobs SET current_step = 'operator SQL' WHERE id = ?`, job.ID); err != nil {
		t.Fatal(err)
	}
	if j := latest(); j.CurrentStep != "operator SQL" {
		t.Fatalf("after raw SQL: current_step %q", j.CurrentStep)
	}
	if _, err := s.RequestCancel(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	if j := latest(); !j.CancelRequested {
		t.Fatalf("after cancel request: %+v", j)
	}
	if _, err := s.FinishJob(ctx, job.ID, StateFailed, "2 hosts unreachable"); err != nil {
		t.Fatal(err)
	}
	if j := latest(); j.State != StateFailed || j.Error != "2 hosts unreachable" {
		t.Fatalf("after finish: %+v", j)
	}
	sim, err := s.CreateSimulation(ctx, NewJob{})
	if err != nil {
		t.Fatal(err)
	}
	if j, err := s.LatestJob(ctx, KindSimulation); err != nil || j.ID != sim.ID {
		t.Fatalf("simulation: %+v %v", j, err)
	}
	if j := latest(); j.ID != job.ID {
		t.Fatalf("shutdown after a simulation was created: %+v", j)
	}
}
