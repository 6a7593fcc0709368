// Package bench measures shutdownd at site scale against the simulated site
// (package sitesim): the wall time of a shutdown against its critical-path
// lower bound, the load it puts on Nova, how fast the first os-stop leaves,
// a naive serial baseline, the status endpoint under load, the service's
// peak memory, and how all of it scales. `make bench` runs it; nothing here
// is part of `make test` except a small smoke test of the harness.
package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/edgeops/shutdownd/sitesim"
)

// Scale is the shape of one benchmark site.
type Scale struct {
	VMs      int // total VMs, spread over Projects projects
	Projects int
	Compute  int
	Storage  int
	Control  int
	Seed     int64

	VMStopMin, VMStopMax       time.Duration
	HostOffMin, HostOffMax     time.Duration
	NovaLatency, CephLatency   time.Duration
	PollInterval, BMCPollEvery time.Duration
	Concurrency                int
}

// IssueScale is the site of the issue: 2,000 VMs in 20 projects, each
// taking 0.2 to 2 s to stop, Nova answering after 5 ms, 100 hosts (70
// compute, 20 storage, 10 control) taking 0.5 to 3 s to power off, Ceph
// commands 50 ms each.
func IssueScale(vms int) Scale {
	return Scale{
		VMs: vms, Projects: 20, Compute: 70, Storage: 20, Control: 10, Seed: 7,
		VMStopMin: 200 * time.Millisecond, VMStopMax: 2 * time.Second,
		HostOffMin: 500 * time.Millisecond, HostOffMax: 3 * time.Second,
		NovaLatency: 5 * time.Millisecond, CephLatency: 50 * time.Millisecond,
		// Settings of the service under test (see BENCHMARKS.md for why
		// these and not the 2 s defaults).
		PollInterval: 250 * time.Millisecond, BMCPollEvery: 100 * time.Millisecond,
		Concurrency: 20,
	}
}

// options turns a Scale into sitesim options; every random choice comes
// from the seed, so two runs of one scale see the same site.
func (sc Scale) options(dir string) sitesim.Options {
	r := rand.New(rand.NewPCG(uint64(sc.Seed), 0xbe4c))
	between := func(lo, hi time.Duration) time.Duration {
		return lo + time.Duration(r.Int64N(int64(hi-lo)+1))
	}
	var hosts []sitesim.HostSpec
	add := func(role string, n int) {
		for i := 1; i <= n; i++ {
			hosts = append(hosts, sitesim.HostSpec{
				Name: fmt.Sprintf("%s-%03d", role, i), Role: role,
				PowerOffDelay: between(sc.HostOffMin, sc.HostOffMax),
			})
		}
	}
	add("compute", sc.Compute)
	add("storage", sc.Storage)
	add("control", sc.Control)
	projects := make([]string, sc.Projects)
	for i := range projects {
		projects[i] = fmt.Sprintf("project-%02d", i+1)
	}
	return sitesim.Options{
		Dir:           dir,
		Projects:      projects,
		VMsPerProject: sc.VMs / sc.Projects,
		VMStopMin:     sc.VMStopMin,
		VMStopMax:     sc.VMStopMax,
		NovaLatency:   sc.NovaLatency,
		Hosts:         hosts,
		SoftOffDelay:  time.Second,
		SSHLatency:    sc.CephLatency,
		Storage:       "ceph",
		Seed:          sc.Seed,
		StopTimeout:   5 * time.Minute,
		PollInterval:  sc.PollInterval,
		HostOff:       3 * time.Minute,
		BMCSoftOff:    time.Minute,
		BMCHardOff:    time.Minute,
		BMCPollEvery:  sc.BMCPollEvery,
		Concurrency:   sc.Concurrency,
	}
}

// StartSite starts the simulated site of sc in dir.
func StartSite(ctx context.Context, sc Scale, dir string) (*sitesim.Site, error) {
	return sitesim.Start(ctx, sc.options(dir))
}

// cephFlags is how many `ceph osd set` commands the Ceph preset runs on the
// admin host, one after the other, before any daemon stops.
const cephFlags = 6

// LowerBound is the critical path of a shutdown of the site as it is now
// (call it before the shutdown): the slowest stop of a VM that will be
// stopped, then the storage commands that must run one after the other (the
// OSD flags, then one round of stopping ceph.target, which the storage hosts
// could do in parallel), then the slowest host of each role group, groups in
// order. No implementation can be faster; every overhead shows as the ratio
// above 1.
type LowerBound struct {
	SlowestVM time.Duration
	Storage   time.Duration
	Hosts     time.Duration // sum over groups of the slowest host
	ToStop    int           // VMs that will be stopped (ACTIVE or ERROR)
}

// Total is the lower bound.
func (lb LowerBound) Total() time.Duration { return lb.SlowestVM + lb.Storage + lb.Hosts }

func lowerBound(site *sitesim.Site) LowerBound {
	var lb LowerBound
	for _, vm := range site.Nova.Servers() {
		if vm.Status == "ACTIVE" || vm.Status == "ERROR" {
			lb.ToStop++
			lb.SlowestVM = max(lb.SlowestVM, vm.StopDelay)
		}
	}
	lb.Storage = time.Duration(cephFlags+1) * site.Opts.SSHLatency
	slowest := map[string]time.Duration{}
	for _, h := range site.Opts.Hosts {
		slowest[h.Role] = max(slowest[h.Role], h.PowerOffDelay)
	}
	for _, d := range slowest {
		lb.Hosts += d
	}
	return lb
}

// stoppedVMs counts the VMs that were to be stopped and are now SHUTOFF.
func stoppedVMs(site *sitesim.Site, before map[string]string) int {
	n := 0
	for _, vm := range site.Nova.Servers() {
		if s := before[vm.ID]; (s == "ACTIVE" || s == "ERROR") && vm.Status == "SHUTOFF" {
			n++
		}
	}
	return n
}

func statuses(site *sitesim.Site) map[string]string {
	m := map[string]string{}
	for _, vm := range site.Nova.Servers() {
		m[vm.ID] = vm.Status
	}
	return m
}

// lastHostOff is when the last host of the site went off; ok is false if
// any host is still on.
func lastHostOff(site *sitesim.Site) (last time.Time, ok bool) {
	for _, h := range site.Hosts {
		at := h.Machine.OffAt()
		if h.Machine.State() != sitesim.PowerOff || at.IsZero() {
			return time.Time{}, false
		}
		if at.After(last) {
			last = at
		}
	}
	return last, true
}
