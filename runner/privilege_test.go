package runner_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/sitesim"
	"github.com/edgeops/shutdownd/store"
)

// login sets a host's SSH user and power-off command in the loaded
// configuration, as a per-host ssh block would.
func (f *fixture) login(host, user, poweroff string) {
	f.t.Helper()
	for i := range f.cfg.Hosts {
		if f.cfg.Hosts[i].Name == host {
			f.cfg.Hosts[i].SSH.User, f.cfg.Hosts[i].SSH.PoweroffCommand = user, poweroff
			return
		}
	}
	f.t.Fatalf("no host %s", host)
}

// runSimulation runs one simulation to its end and returns the job.
func (f *fixture) runSimulation() store.Job {
	f.t.Helper()
	r, stop := f.start()
	defer stop()
	job := f.simulate(r)
	f.waitFor("simulation final", 30*time.Second, func() bool { return f.job(job.ID).State.Final() })
	return f.job(job.ID)
}

// checkPrivilege returns a host's check-privilege action of job.
func (f *fixture) checkPrivilege(jobID int64, host string) store.Action {
	f.t.Helper()
	return f.action(jobID, host, "check-privilege")
}

// A simulation proves, for each host, that its power-off command would be
// permitted, without running it: root passes (`id -u` is 0); a user other
// than root passes only when the command goes through sudo and `sudo -n -l`
// permits it. A plain command from such a user fails even where sudo would
// permit it, since it is not sent through sudo. The failures name the host
// and the reason; nothing is powered off. A shutdown of the same site then
// shows the verdicts were right: the hosts that passed go down over SSH,
// those that failed need their BMC.
func TestSimulationProvesThePowerOffWouldBePermitted(t *testing.T) {
	f := newFixture(t, func(o *sitesim.Options) {
		o.Hosts = []sitesim.HostSpec{
			{Name: "root-01", Role: "compute"},
			{Name: "sudo-01", Role: "compute", SudoCommands: []string{"systemctl poweroff"}},
			{Name: "plain-01", Role: "compute"},
			{Name: "denied-01", Role: "compute", SudoDenied: true},
			{Name: "narrow-01", Role: "compute", SudoCommands: []string{"systemctl reboot"}},
		}
		o.Storage = "none"
	})
	f.login("sudo-01", "ops", "sudo -n systemctl poweroff")
	f.login("plain-01", "ops", "systemctl poweroff")
	f.login("denied-01", "ops", "systemctl poweroff")
	f.login("narrow-01", "ops", "sudo systemctl poweroff")

	j := f.runSimulation()
	if j.State != store.StateFailed {
		t.Fatalf("simulation %s %q; want failed", j.State, j.Error)
	}
	want := map[string]string{
		"root-01":   "user root is root (id -u 0)",
		"sudo-01":   "user ops (id -u 1000): sudo -n -l permits systemctl poweroff",
		"plain-01":  "user ops is not root (id -u 1000) and 'systemctl poweroff' does not go through sudo, so nothing proves it is permitted (sudo -n -l permits it: make the command 'sudo -n systemctl poweroff')",
		"denied-01": "user ops is not root (id -u 1000) and sudo -n -l refuses 'systemctl poweroff': sudo: a password is required",
		"narrow-01": "user ops is not root (id -u 1000) and sudo -n -l refuses 'systemctl poweroff': no sudo rule allows it (exit 1)",
	}
	for host, text := range want {
		a := f.checkPrivilege(j.ID, host)
		passes := host == "root-01" || host == "sudo-01"
		got := a.Error
		if passes {
			got = a.Detail
		}
		if (a.State == store.ActionSucceeded) != passes || !strings.Contains(got, text) {
			t.Errorf("%s check-privilege %s %q %q; want %q", host, a.State, a.Detail, a.Error, text)
		}
		if named := strings.Contains(j.Error, "host "+host+" check-privilege"); named == passes {
			t.Errorf("job error %q: names %s %v, want %v", j.Error, host, named, !passes)
		}
	}
	for _, h := range f.site.Hosts {
		var lines []string
		for _, c := range h.SSH.Commands() {
			lines = append(lines, c.Line)
		}
		if !slices.Contains(lines, "id -u") {
			t.Errorf("%s never asked id -u: %q", h.Spec.Name, lines)
		}
		if h.SSH.PowerCommands() != 0 || h.Machine.State() != sitesim.PowerOn || len(h.BMC.Resets()) != 0 {
			t.Errorf("%s changed by a simulation (commands %q)", h.Spec.Name, lines)
		}
	}

	sd := f.runShutdown()
	for name, a := range f.hostActions(sd.ID) {
		viaSSH := strings.HasPrefix(a.Detail, "off via SSH")
		if passes := name == "root-01" || name == "sudo-01"; viaSSH != passes {
			t.Errorf("%s: %s %q; the simulation said the power-off would be permitted: %v", name, a.State, a.Detail, passes)
		}
	}
}

// The same proof for the storage commands on the storage hosts: the Ceph
// preset's commands do not go through sudo, so they need root; commands of
// type commands that use sudo pass where `sudo -n -l` permits each of them.
func TestSimulationProvesTheStorageCommandsWouldBePermitted(t *testing.T) {
	hosts := []sitesim.HostSpec{
		{Name: "compute-01", Role: "compute"},
		{Name: "storage-01", Role: "storage", SudoCommands: []string{"systemctl poweroff", "systemctl stop ceph.target"}},
		{Name: "storage-02", Role: "storage", SudoCommands: []string{"systemctl poweroff"}},
	}
	t.Run("ceph preset as root", func(t *testing.T) {
		f := newFixture(t, func(o *sitesim.Options) { o.Hosts = hosts })
		if j := f.runSimulation(); j.State != store.StateSucceeded {
			t.Fatalf("simulation %s %q", j.State, j.Error)
		}
	})
	t.Run("ceph preset as another user", func(t *testing.T) {
		f := newFixture(t, func(o *sitesim.Options) { o.Hosts = hosts })
		f.login("storage-01", "ops", "sudo -n systemctl poweroff")
		j := f.runSimulation()
		a := f.checkPrivilege(j.ID, "storage-01")
		if j.State != store.StateFailed || a.State != store.ActionFailed ||
			a.Error != "user ops is not root (id -u 1000) and the ceph preset sends its commands without sudo (ceph osd set noout; "+
				"ceph osd set norecover; ceph osd set norebalance; ceph osd set nobackfill; ceph osd set nodown; ceph osd set pause; "+
				"systemctl stop ceph.target): it needs root on this host (or storage type commands, with sudo)" {
			t.Fatalf("simulation %s %q; storage-01 %s %q", j.State, j.Error, a.State, a.Error)
		}
		if a := f.checkPrivilege(j.ID, "storage-02"); a.State != store.ActionSucceeded {
			t.Errorf("storage-02 (root) %s %q", a.State, a.Error)
		}
	})
	t.Run("commands with sudo", func(t *testing.T) {
		f := newFixture(t, func(o *sitesim.Options) { o.Hosts = hosts })
		f.cfg.Storage = config.Storage{Type: config.StorageCommands, Commands: []config.StorageCommand{
			{Host: "storage-01", Command: "sudo -n systemctl stop ceph.target"},
			{Host: "storage-02", Command: "sudo -n systemctl stop ceph.target"},
		}}
		for _, h := range []string{"storage-01", "storage-02"} {
			f.login(h, "ops", "sudo -n systemctl poweroff")
		}
		j := f.runSimulation()
		if a := f.checkPrivilege(j.ID, "storage-01"); a.State != store.ActionSucceeded ||
			a.Detail != "user ops (id -u 1000): sudo -n -l permits systemctl poweroff; systemctl stop ceph.target" {
			t.Errorf("storage-01 %s %q %q", a.State, a.Detail, a.Error)
		}
		a := f.checkPrivilege(j.ID, "storage-02")
		if j.State != store.StateFailed || a.State != store.ActionFailed ||
			a.Error != "user ops is not root (id -u 1000) and sudo -n -l refuses 'systemctl stop ceph.target': no sudo rule allows it (exit 1)" {
			t.Errorf("simulation %s %q; storage-02 %s %q", j.State, j.Error, a.State, a.Error)
		}
		for _, h := range f.site.Hosts {
			if h.SSH.CephStopped() || h.SSH.PowerCommands() != 0 {
				t.Errorf("%s changed by a simulation", h.Spec.Name)
			}
		}
	})
}
