package bench

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"
)

// BenchmarkSiteStartup measures a startup of the issue's site (2,000 VMs,
// 100 hosts) after its shutdown: wall time against the critical path
// (slowest boot per group + Ceph + slowest VM start). Goal: ratio <= 1.15.
func BenchmarkSiteStartup(b *testing.B) {
	ctx := context.Background()
	bin, err := BuildService(ctx, "..", b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	vms := envInt("BENCH_STARTUP_VMS", 2000)
	for b.Loop() {
		dir := b.TempDir()
		if keep := os.Getenv("BENCH_KEEP"); keep != "" {
			if dir, err = os.MkdirTemp(keep, fmt.Sprintf("startup-%d-", vms)); err != nil {
				b.Fatal(err)
			}
		}
		r, err := RunStartup(ctx, IssueScale(vms), IssueStartupTimes(), RunOptions{Bin: bin, Dir: dir, Timeout: 10 * time.Minute})
		if err != nil {
			b.Fatalf("%d VMs: %v", vms, err)
		}
		lb := r.LowerBound
		b.Logf("startup of %d VMs: wall %s, lower bound %s (hosts %s + storage %s + VM %s), ratio %.3f, %d started, %d os-start, job %s %s",
			vms, fmtDur(r.Wall), fmtDur(lb.Total()), fmtDur(lb.Hosts), fmtDur(lb.Storage), fmtDur(lb.SlowestVM), r.Ratio(),
			r.Started, r.StartCalls, r.JobState, r.JobError)
		b.ReportMetric(r.Ratio(), "startup-wall/lower-bound")
		b.ReportMetric(r.Wall.Seconds(), "startup-wall-s")
	}
}

// TestStartupHarnessSmoke runs the startup harness on a tiny site.
func TestStartupHarnessSmoke(t *testing.T) {
	ctx := context.Background()
	bin, err := BuildService(ctx, "..", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	st := StartupTimes{BootMin: 50 * time.Millisecond, BootMax: 200 * time.Millisecond, OSDStart: 50 * time.Millisecond}
	r, err := RunStartup(ctx, smokeScale(), st, RunOptions{Bin: bin, Dir: t.TempDir(), Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if r.JobState != "succeeded" || r.Started != r.LowerBound.ToStart || r.Started == 0 {
		t.Errorf("startup %s (%s): %d of %d started", r.JobState, r.JobError, r.Started, r.LowerBound.ToStart)
	}
	if r.Ratio() < 1 {
		t.Errorf("wall %s below the lower bound %s", r.Wall, r.LowerBound.Total())
	}
}
