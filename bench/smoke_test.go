package bench

import (
	"context"
	"testing"
	"time"
)

// smokeScale is a tiny site that takes a couple of seconds: the harness
// itself (site, service process, load generator, baseline) is checked in
// `make test`; the numbers are `make bench`'s business.
func smokeScale() Scale {
	sc := IssueScale(20)
	sc.Projects, sc.Compute, sc.Storage, sc.Control = 2, 2, 1, 1
	sc.VMStopMin, sc.VMStopMax = 20*time.Millisecond, 100*time.Millisecond
	sc.HostOffMin, sc.HostOffMax = 20*time.Millisecond, 100*time.Millisecond
	sc.CephLatency = 5 * time.Millisecond
	sc.PollInterval, sc.BMCPollEvery = 50*time.Millisecond, 20*time.Millisecond
	return sc
}

func TestHarnessSmoke(t *testing.T) {
	ctx := context.Background()
	bin, err := BuildService(ctx, "..", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sc := smokeScale()
	r, err := RunShutdown(ctx, sc, RunOptions{Bin: bin, Dir: t.TempDir(), LoadConns: 2, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if r.JobState != "succeeded" {
		t.Errorf("job %s (%s), want succeeded", r.JobState, r.JobError)
	}
	if r.LowerBound.ToStop == 0 || r.Stopped != r.LowerBound.ToStop {
		t.Errorf("stopped %d of %d", r.Stopped, r.LowerBound.ToStop)
	}
	// No shutdown beats its critical path; a ratio below 1 means the lower
	// bound or the wall time is measured wrong.
	if r.Ratio() < 1 {
		t.Errorf("wall %s below the lower bound %s", r.Wall, r.LowerBound.Total())
	}
	if r.StopCalls < r.Stopped || r.ListCalls == 0 {
		t.Errorf("nova calls: %d stops, %d lists for %d VMs", r.StopCalls, r.ListCalls, r.Stopped)
	}
	if r.FirstStop <= 0 || r.FirstStop > r.Wall {
		t.Errorf("first stop at %s of %s", r.FirstStop, r.Wall)
	}
	if r.PeakRSS < 1<<20 {
		t.Errorf("peak RSS %d bytes, not read from /proc", r.PeakRSS)
	}
	if l := r.Load; l == nil || l.Requests == 0 || l.Errors != 0 || l.P99 < l.P50 {
		t.Errorf("load generator: %+v", l)
	}
	t.Logf("ratio %.2f, %.2f req/VM, first stop %s, load %s", r.Ratio(), r.RequestsPerVM(), r.FirstStop, r.Load)

	n, err := RunNaive(ctx, sc, t.TempDir(), 2)
	if err != nil {
		t.Fatal(err)
	}
	if n.Sampled == 0 || n.Sampled > n.ToStop || n.HostsOff != sc.Compute+sc.Storage+sc.Control {
		t.Errorf("naive: %+v", n)
	}
	if n.VMs < n.SampleTime {
		t.Errorf("naive VM time %s not scaled up from sample %s", n.VMs, n.SampleTime)
	}
}
