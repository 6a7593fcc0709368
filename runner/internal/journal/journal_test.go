package journal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/store"
)

// smallDisk is a real file system of a few MiB (tmpfs) holding a store, and
// a filler file that takes its free space on demand.
type smallDisk struct {
	t   *testing.T
	dir string
	st  *store.Store
}

// newSmallDisk mounts a tmpfs for a store. Mounting needs root: under
// CI=true its absence is a failure, elsewhere the test is skipped.
func newSmallDisk(t *testing.T) *smallDisk {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", dir).CombinedOutput()
	if err != nil {
		msg := fmt.Sprintf("mount a tmpfs for a full-disk test (needs root): %v: %s", err, out)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	st, err := store.Open(context.Background(), filepath.Join(dir, "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() }) // before the unmount (cleanups run last first)
	return &smallDisk{t: t, dir: dir, st: st}
}

// fill takes every free byte of the file system.
func (d *smallDisk) fill() {
	f, err := os.Create(filepath.Join(d.dir, "filler"))
	if err != nil {
		d.t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !strings.Contains(err.Error(), "no space left") {
				d.t.Fatalf("fill: %v", err)
			}
			break
		}
	}
	// Single bytes: the last partial block too.
	for {
		if _, err := f.Write(buf[:1]); err != nil {
			return
		}
	}
}

func (d *smallDisk) free() {
	if err := os.Remove(filepath.Join(d.dir, "filler")); err != nil {
		d.t.Fatal(err)
	}
}

// counter is an Observer that counts.
type counter struct {
	failed   atomic.Int64
	unsaved  atomic.Int64
	maxHeld  atomic.Int64
	observed sync.Mutex
}

func (c *counter) StoreWriteFailed() { c.failed.Add(1) }
func (c *counter) RecordsUnsaved(n int) {
	c.unsaved.Store(int64(n))
	c.observed.Lock()
	if int64(n) > c.maxHeld.Load() {
		c.maxHeld.Store(int64(n))
	}
	c.observed.Unlock()
}

// runningJob creates a running shutdown with a first step.
func runningJob(t *testing.T, st *store.Store) (store.Job, store.Step) {
	t.Helper()
	ctx := context.Background()
	job, _, err := st.CreateShutdown(ctx, store.NewJob{Kind: store.KindShutdown})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.StartJob(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	step, err := st.EnsureStep(ctx, job.ID, 1, "hosts")
	if err != nil {
		t.Fatal(err)
	}
	return job, step
}

func newJournal(t *testing.T, st *store.Store, obs Observer) *Journal {
	j := New(st, Options{Logger: slog.New(slog.DiscardHandler), RetryEvery: 20 * time.Millisecond, Observer: obs})
	t.Cleanup(func() { j.Close() })
	return j
}

func hostKey(job store.Job, stepID int64, target string, op store.Operation) store.ActionKey {
	return store.ActionKey{JobID: job.ID, StepID: stepID, TargetKind: "host", Target: target, Operation: op}
}

// Writes asked for together are committed together, and one that is wrong
// in itself fails alone: the others still land, each caller learns its own
// outcome, and the events and the latest progress are written.
func TestGroupCommitIsolatesABadWrite(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	job, step := runningJob(t, st)
	jb := newJournal(t, st, nil).Job(job.ID)

	const n = 40
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := jb.Begin(hostKey(job, step.ID, fmt.Sprintf("h%02d", i), "power-off"), "")
			if errs[i] = err; err == nil {
				errs[i] = jb.Finish(store.ActionResult{ID: a.ID, State: store.ActionSucceeded, Detail: "off"})
				jb.Event("info", "host off", a.Target)
			}
			jb.Progress(fmt.Sprintf("Powering off hosts (%d)", i))
		}()
	}
	// Not an action of this database: its finish fails, alone.
	var bad error
	wg.Add(1)
	go func() {
		defer wg.Done()
		bad = jb.Finish(store.ActionResult{ID: 987654, State: store.ActionSucceeded})
	}()
	wg.Wait()
	if err := jb.j.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for i, err := range errs {
		if err != nil {
			t.Errorf("host %d: %v", i, err)
		}
	}
	if !errors.Is(bad, store.ErrNotFound) {
		t.Errorf("finish of a missing action: %v, want ErrNotFound", bad)
	}
	as, err := st.StepActions(ctx, step.ID)
	if err != nil || len(as) != n {
		t.Fatalf("%d actions (%v), want %d", len(as), err, n)
	}
	for _, a := range as {
		if a.State != store.ActionSucceeded || a.Detail != "off" {
			t.Errorf("%s: %s %q", a.Target, a.State, a.Detail)
		}
	}
	evs, _ := st.Events(ctx, job.ID, 0)
	if off := countEvents(evs, "host off"); off != n {
		t.Errorf("%d host-off events, want %d", off, n)
	}
	if j, _ := st.Job(ctx, job.ID); !strings.HasPrefix(j.CurrentStep, "Powering off hosts") {
		t.Errorf("current_step %q", j.CurrentStep)
	}
	if rep, err := st.VerifyChain(ctx, job.ID); err != nil || !rep.OK {
		t.Errorf("event chain: %+v %v", rep, err)
	}
}

func countEvents(evs []store.Event, msg string) int {
	n := 0
	for _, ev := range evs {
		if ev.Message == msg {
			n++
		}
	}
	return n
}
