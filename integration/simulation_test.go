package integration

import (
	"strings"
	"testing"

	"github.com/edgeops/shutdownd/runner"
	"github.com/edgeops/shutdownd/sitesim"
	"github.com/edgeops/shutdownd/store"
)

// mixedHosts is a small site with both BMC kinds in every role group.
func mixedHosts() []hostSpec {
	return []hostSpec{
		{name: "compute-01", role: "compute", bmc: bmcIPMI},
		{name: "compute-02", role: "compute", bmc: bmcRedfish},
		{name: "storage-01", role: "storage", bmc: bmcIPMI},
		{name: "control-01", role: "control", bmc: bmcRedfish},
	}
}

func mixedVMs() []sitesim.VM {
	return []sitesim.VM{
		{ID: "vm-web-1", Name: "web-01", Project: "web", StopDelay: 100e6},
		{ID: "vm-web-2", Name: "web-02", Project: "web", StopDelay: 150e6},
		{ID: "vm-db-1", Name: "db-primary-1", Project: "data", StopDelay: 200e6},
		{ID: "vm-ci-1", Name: "ci_runner_7", Project: "ci", Status: "SHUTOFF"},
	}
}

func TestIntegrationSimulationAgainstRealPeersChangesNothing(t *testing.T) {
	t.Parallel()
	s := startSite(t, siteSpec{hosts: mixedHosts(), vms: mixedVMs(), storageAdmin: "storage-01"})
	r := s.simulate()
	if r.job.State != store.StateSucceeded {
		t.Fatalf("simulation %s:\n%s", r.job.State, r.dump())
	}
	list := r.action(t, "openstack", "edge", "check-list-servers")
	if !strings.Contains(list.Detail, "4 servers") || !strings.Contains(list.Detail, "3 to stop") {
		t.Errorf("openstack check detail %q, want 4 servers, 3 to stop", list.Detail)
	}
	if d := r.step(t, runner.StepStorage).Detail; !strings.Contains(d, "HEALTH_OK") {
		t.Errorf("storage check detail %q, want the admin host's ceph health", d)
	}
	for _, name := range s.order {
		h := s.hosts[name]
		if a := r.action(t, "host", name, "check-ssh"); a.State != store.ActionSucceeded {
			t.Errorf("%s check-ssh %s: %s", name, a.State, a.Error)
		}
		// The real sshd's login is root: `id -u` proves every command.
		if a := r.action(t, "host", name, "check-privilege"); a.State != store.ActionSucceeded || !strings.HasPrefix(a.Detail, "user root is root (id -u 0)") {
			t.Errorf("%s check-privilege %s %q: %s", name, a.State, a.Detail, a.Error)
		}
		if a := r.action(t, "bmc", name, "check-bmc"); a.State != store.ActionSucceeded || a.Detail != "session ok, power On" {
			t.Errorf("%s check-bmc %s %q: %s", name, a.State, a.Detail, a.Error)
		}
		if h.sshd.Logins() == 0 {
			t.Errorf("%s: sshd logged no login; the simulation did not really log in", name)
		}
		if !h.sshd.Running() {
			t.Errorf("%s: sshd is down after a simulation", name)
		}
	}
	if got := s.hosts["storage-01"].lines(t); !containsLine(got, "ceph health") {
		t.Errorf("storage-01 received %q, want a ceph health check", got)
	}
	s.assertNothingChanged(t)
	if s.nova.ListRequests() == 0 {
		t.Error("Nova saw no server list")
	}
	for _, name := range []string{"compute-02", "control-01"} {
		if n := s.hosts[name].redfish.PowerReads(); n == 0 {
			t.Errorf("%s: Redfish power state never read", name)
		}
	}
}

func containsLine(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}
