package bench

import (
	"context"
	"fmt"
	"time"
)

// Result is one measured shutdown of a simulated site by shutdownd.
type Result struct {
	Scale      Scale
	LowerBound LowerBound
	Wall       time.Duration // POST /shutdown to the last host Off
	Stopped    int           // VMs stopped (were ACTIVE or ERROR, now SHUTOFF)
	StopCalls  int
	ListCalls  int
	FirstStop  time.Duration // POST /shutdown to the first os-stop arriving at Nova
	PeakRSS    int64
	JobState   string
	JobError   string
	Load       *LoadResult // set when the run had the status load generator
}

// Ratio is the wall time over the critical-path lower bound.
func (r Result) Ratio() float64 { return r.Wall.Seconds() / r.LowerBound.Total().Seconds() }

// RequestsPerVM is Nova stop plus list calls over the VMs stopped.
func (r Result) RequestsPerVM() float64 {
	if r.Stopped == 0 {
		return 0
	}
	return float64(r.StopCalls+r.ListCalls) / float64(r.Stopped)
}

// RunOptions shape one measured run.
type RunOptions struct {
	Bin string // shutdownd binary
	Dir string // fresh directory for the site and the database
	// LoadConns > 0 runs the status load generator with that many
	// connections from POST /shutdown until the job ends.
	LoadConns int
	Timeout   time.Duration
}

// RunShutdown starts the site of sc and a shutdownd process for it, sends
// POST /shutdown and measures the shutdown until the job ends.
func RunShutdown(ctx context.Context, sc Scale, o RunOptions) (Result, error) {
	res := Result{Scale: sc}
	site, err := StartSite(ctx, sc, o.Dir)
	if err != nil {
		return res, fmt.Errorf("start site: %w", err)
	}
	defer site.Close()
	svc, err := StartService(ctx, o.Bin, site, o.Dir)
	if err != nil {
		return res, err
	}
	defer svc.Stop()

	res.LowerBound = lowerBound(site)
	before := statuses(site)
	novaLatency := site.Opts.NovaLatency

	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	loadDone := make(chan LoadResult, 1)
	if o.LoadConns > 0 {
		go func() { loadDone <- Load(loadCtx, svc.URL+"/shutdown/status", svc.Token, o.LoadConns) }()
	}

	t0 := time.Now()
	if err := svc.TriggerShutdown(ctx); err != nil {
		return res, err
	}
	st, err := svc.WaitDone(ctx, o.Timeout)
	if o.LoadConns > 0 {
		stopLoad()
		lr := <-loadDone
		res.Load = &lr
	}
	if err != nil {
		return res, err
	}
	res.JobState, res.JobError = st.State, st.Error
	last, ok := lastHostOff(site)
	if !ok {
		return res, fmt.Errorf("job %s but some host is still on (error %q)", st.State, st.Error)
	}
	res.Wall = last.Sub(t0)
	if fs := site.Nova.FirstStopAt(); !fs.IsZero() {
		// Nova records the stop after its simulated latency; the request
		// arrived that much earlier.
		res.FirstStop = fs.Sub(t0) - novaLatency
	}
	res.Stopped = stoppedVMs(site, before)
	res.StopCalls = site.Nova.StopRequests()
	res.ListCalls = site.Nova.ListRequests()
	if res.PeakRSS, err = svc.PeakRSS(); err != nil {
		return res, err
	}
	if res.Stopped != res.LowerBound.ToStop {
		return res, fmt.Errorf("%d of %d VMs stopped", res.Stopped, res.LowerBound.ToStop)
	}
	return res, nil
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}
