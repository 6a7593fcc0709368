package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/edgeops/shutdownd/sitesim"
)

// StartupTimes are how long the simulated site takes to come back: each
// host boots in [BootMin, BootMax] after its BMC power-on, the OSDs of a
// storage host are up OSDStart after ceph.target starts, and each VM boots
// in its stop delay's time after os-start.
type StartupTimes struct {
	BootMin, BootMax time.Duration
	OSDStart         time.Duration
}

// IssueStartupTimes are the startup benchmark's: boots of 1 to 4 s (real
// servers take minutes; the ratio is what matters), OSDs up 1 s after
// their start.
func IssueStartupTimes() StartupTimes {
	return StartupTimes{BootMin: time.Second, BootMax: 4 * time.Second, OSDStart: time.Second}
}

// StartupResult is one measured startup.
type StartupResult struct {
	LowerBound StartupBound
	Wall       time.Duration // POST /startup to the last VM ACTIVE
	Started    int           // VMs ACTIVE again that were ACTIVE or ERROR before the shutdown
	StartCalls int
	JobState   string
	JobError   string
}

// Ratio is the wall time over the critical-path lower bound.
func (r StartupResult) Ratio() float64 { return r.Wall.Seconds() / r.LowerBound.Total().Seconds() }

// StartupBound is the critical path of a startup: the slowest boot of each
// host group, groups one after the other (control, storage, compute); then
// Ceph's commands that must run one after the other (two flags unset, one
// round of ceph.target starts, the OSDs' start, four flags unset); then the
// slowest VM start.
type StartupBound struct {
	Hosts     time.Duration
	Storage   time.Duration
	SlowestVM time.Duration
	ToStart   int
}

// Total is the lower bound.
func (b StartupBound) Total() time.Duration { return b.Hosts + b.Storage + b.SlowestVM }

// startupOptions gives every host of sc a boot delay from the seed.
func startupOptions(sc Scale, st StartupTimes, dir string) sitesim.Options {
	o := sc.options(dir)
	r := rand.New(rand.NewPCG(uint64(sc.Seed), 0xb007))
	for i := range o.Hosts {
		o.Hosts[i].BootDelay = st.BootMin + time.Duration(r.Int64N(int64(st.BootMax-st.BootMin)+1))
	}
	o.OSDStartDelay = st.OSDStart
	o.HostBoot, o.StorageReady = 5*time.Minute, 5*time.Minute
	return o
}

func startupBound(site *sitesim.Site, before map[string]string) StartupBound {
	var b StartupBound
	slowest := map[string]time.Duration{}
	for _, h := range site.Opts.Hosts {
		slowest[h.Role] = max(slowest[h.Role], h.BootDelay)
	}
	for _, d := range slowest {
		b.Hosts += d
	}
	b.Storage = 7*site.Opts.SSHLatency + site.Opts.OSDStartDelay
	for _, vm := range site.Nova.Servers() {
		if s := before[vm.ID]; s == "ACTIVE" || s == "ERROR" {
			b.ToStart++
			b.SlowestVM = max(b.SlowestVM, vm.StopDelay)
		}
	}
	return b
}

// RunStartup shuts the site of sc down with shutdownd, then measures the
// startup that brings it back.
func RunStartup(ctx context.Context, sc Scale, st StartupTimes, o RunOptions) (StartupResult, error) {
	var res StartupResult
	site, err := sitesim.Start(ctx, startupOptions(sc, st, o.Dir))
	if err != nil {
		return res, fmt.Errorf("start site: %w", err)
	}
	defer site.Close()
	svc, err := StartService(ctx, o.Bin, site, o.Dir)
	if err != nil {
		return res, err
	}
	defer svc.Stop()
	before := statuses(site)
	if err := svc.TriggerShutdown(ctx); err != nil {
		return res, err
	}
	if s, err := svc.WaitDone(ctx, o.Timeout); err != nil || s.State != "succeeded" {
		return res, fmt.Errorf("shutdown before the startup: %+v, %v", s, err)
	}
	res.LowerBound = startupBound(site, before)

	t0 := time.Now()
	if err := svc.post(ctx, "/startup"); err != nil {
		return res, err
	}
	s, err := svc.waitKind(ctx, "/startup/status", o.Timeout)
	if err != nil {
		return res, err
	}
	res.JobState, res.JobError = s.State, s.Error
	var last time.Time
	for _, vm := range site.Nova.Servers() {
		if b := before[vm.ID]; b != "ACTIVE" && b != "ERROR" {
			continue
		}
		if vm.Status != "ACTIVE" {
			return res, fmt.Errorf("%s was %s, is %s after the startup (job %s %s)", vm.Name, before[vm.ID], vm.Status, s.State, s.Error)
		}
		res.Started++
		if at := site.Nova.ActiveAt(vm.ID); at.After(last) {
			last = at
		}
	}
	res.Wall = last.Sub(t0)
	res.StartCalls = site.Nova.StartRequests()
	return res, nil
}

// post sends a POST and expects 202.
func (s *Service) post(ctx context.Context, path string) error {
	resp, err := s.request(ctx, http.MethodPost, path)
	if err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("POST %s: status %s", path, resp.Status)
	}
	return nil
}

// waitKind polls a status path until its job is no longer running.
func (s *Service) waitKind(ctx context.Context, path string, timeout time.Duration) (jobStatus, error) {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := s.request(ctx, http.MethodGet, path)
		if err != nil {
			return jobStatus{}, err
		}
		var body struct {
			Data jobStatus `json:"data"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil {
			return jobStatus{}, fmt.Errorf("decode %s: %w", path, err)
		}
		if !body.Data.Running && body.Data.State != "" {
			return body.Data, nil
		}
		if time.Now().After(deadline) {
			return body.Data, fmt.Errorf("%s still running after %s: %s", path, timeout, body.Data.CurrentStep)
		}
		select {
		case <-ctx.Done():
			return body.Data, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
