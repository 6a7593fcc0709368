package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/runner/bmc"
	"github.com/edgeops/shutdownd/runner/hostctl"
	"github.com/edgeops/shutdownd/runner/openstack"
)

// NaiveResult is the naive serial baseline: what a straightforward script
// does with the same adapters as shutdownd, one VM at a time (stop it, wait
// until it is SHUTOFF), then the storage commands one by one, then one host
// at a time (power-off over SSH, wait for the BMC to read Off).
type NaiveResult struct {
	ToStop     int
	Sampled    int           // VMs actually stopped one by one
	SampleTime time.Duration // time for the sampled VMs
	VMs        time.Duration // SampleTime scaled to ToStop
	Storage    time.Duration
	Hosts      time.Duration
	HostsOff   int
}

// Total is the baseline's wall time (VM part extrapolated from the sample).
func (n NaiveResult) Total() time.Duration { return n.VMs + n.Storage + n.Hosts }

// naivePoll is how often the baseline re-reads a state it waits for; short,
// so that the baseline is not slow because of its polling.
const naivePoll = 100 * time.Millisecond

// RunNaive runs the baseline against a fresh site of sc. Serial VM stops are
// slow by construction (about 1.1 s each here, half an hour for 2,000), so
// only every sampleEvery-th VM is stopped and the VM time is scaled up:
// serial time is a sum, so the estimate is unbiased. Storage and hosts run
// in full.
func RunNaive(ctx context.Context, sc Scale, dir string, sampleEvery int) (NaiveResult, error) {
	var res NaiveResult
	site, err := StartSite(ctx, sc, dir)
	if err != nil {
		return res, fmt.Errorf("start site: %w", err)
	}
	defer site.Close()
	cfgPath, err := site.WriteConfig("127.0.0.1:1", filepath.Join(dir, "unused.db"))
	if err != nil {
		return res, err
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return res, err
	}

	cloud, err := openstack.New(ctx, openstack.Options{
		Cloud: cfg.OpenStack.Cloud, CloudsFile: cfg.OpenStack.CloudsFile,
		RequestTimeout: cfg.OpenStack.RequestTimeout, Concurrency: 1,
	})
	if err != nil {
		return res, err
	}
	servers, err := cloud.ListServers(ctx)
	if err != nil {
		return res, err
	}
	var sample []string
	for _, s := range servers {
		if s.Status != "ACTIVE" && s.Status != "ERROR" {
			continue
		}
		if res.ToStop%max(sampleEvery, 1) == 0 {
			sample = append(sample, s.ID)
		}
		res.ToStop++
	}
	res.Sampled = len(sample)
	start := time.Now()
	for _, id := range sample {
		if err := cloud.Stop(ctx, id); err != nil {
			return res, fmt.Errorf("stop %s: %w", id, err)
		}
		if err := waitFor(ctx, 5*time.Minute, func() (bool, error) {
			all, err := cloud.ListServers(ctx)
			if err != nil {
				return false, err
			}
			for _, s := range all {
				if s.ID == id {
					return s.Status == "SHUTOFF", nil
				}
			}
			return false, fmt.Errorf("server %s vanished", id)
		}); err != nil {
			return res, fmt.Errorf("wait for %s: %w", id, err)
		}
	}
	res.SampleTime = time.Since(start)
	if res.Sampled > 0 {
		res.VMs = time.Duration(float64(res.SampleTime) * float64(res.ToStop) / float64(res.Sampled))
	}

	start = time.Now()
	for _, c := range cfg.Storage.Plan() {
		h, ok := cfg.Host(c.Host)
		if !ok {
			return res, fmt.Errorf("storage host %s not configured", c.Host)
		}
		conn, err := hostctl.Dial(ctx, sshTarget(h))
		if err != nil {
			return res, err
		}
		_, err = conn.Run(ctx, c.Command)
		conn.Close()
		if err != nil {
			return res, fmt.Errorf("%s on %s: %w", c.Command, c.Host, err)
		}
	}
	res.Storage = time.Since(start)

	start = time.Now()
	for _, g := range cfg.HostGroups() {
		for _, h := range g {
			if err := naivePowerOff(ctx, h); err != nil {
				return res, fmt.Errorf("host %s: %w", h.Name, err)
			}
			res.HostsOff++
		}
	}
	res.Hosts = time.Since(start)
	return res, nil
}

func naivePowerOff(ctx context.Context, h config.Host) error {
	conn, err := hostctl.Dial(ctx, sshTarget(h))
	if err != nil {
		return err
	}
	err = conn.PowerOff(ctx, h.SSH.PoweroffCommand)
	conn.Close()
	if err != nil {
		return err
	}
	b := h.BMC
	ctl, err := bmc.Open(ctx, bmc.Target{
		Name: h.Name, Address: b.Address, Port: b.Port, Protocol: b.Protocol,
		User: b.User, Password: b.Password.Reveal(), InsecureTLS: b.InsecureTLS, CAFile: b.CAFile,
	})
	if err != nil {
		return err
	}
	defer ctl.Close(context.WithoutCancel(ctx))
	return waitFor(ctx, 3*time.Minute, func() (bool, error) {
		ps, err := ctl.PowerState(ctx)
		return ps == bmc.Off, err
	})
}

func sshTarget(h config.Host) hostctl.Target {
	return hostctl.Target{
		Name: h.Name, Address: h.Address, User: h.SSH.User, KeyFile: h.SSH.KeyFile,
		KnownHosts: h.SSH.KnownHosts, ConnectTimeout: h.SSH.ConnectTimeout, CommandTimeout: h.SSH.CommandTimeout,
	}
}

// waitFor calls f every naivePoll until it reports true, fails, or timeout
// passes.
func waitFor(ctx context.Context, timeout time.Duration, f func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := f()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not done after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(naivePoll):
		}
	}
}
