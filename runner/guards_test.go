package runner_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/sitesim"
	"github.com/edgeops/shutdownd/store"
)

// thisMachineFixture is a site whose self host, mgmt-01, stands for the
// machine running shutdownd: its SSH host key is loaded as this machine's
// own. After the load, storage-01's address is pointed at mgmt-01's SSH
// server, as a DNS or NAT change during an outage would; known_hosts (one
// file for the site) accepts mgmt-01's key at that address.
func thisMachineFixture(t *testing.T) *fixture {
	t.Helper()
	f := newFixture(t, func(o *sitesim.Options) {
		o.Hosts = []sitesim.HostSpec{
			{Name: "compute-01", Role: "compute"},
			{Name: "storage-01", Role: "storage"},
			{Name: "mgmt-01", Role: "control", Self: true},
		}
	})
	own := filepath.Join(t.TempDir(), "ssh_host_ed25519_key.pub")
	mgmt := f.site.Host("mgmt-01").SSH
	if err := os.WriteFile(own, ssh.MarshalAuthorizedKey(mgmt.HostKey()), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadWith(f.cfg.Path, config.Options{OwnHostKeys: own, OwnHostKeysSet: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range cfg.Hosts {
		if cfg.Hosts[i].Name == "storage-01" {
			cfg.Hosts[i].Address = mgmt.Addr()
		}
	}
	f.cfg = cfg
	return f
}

// A host not marked self whose SSH address now leads to this machine is
// refused at the handshake, before anything is sent: its storage commands
// and its power-off fail naming the reason, its BMC is not used either (the
// same change may have moved the BMC's address), and this machine receives
// nothing but its own power-off, after the job's final state. The other
// hosts go down as usual.
func TestHostWhoseAddressLeadsHereIsNeverPoweredOff(t *testing.T) {
	f := thisMachineFixture(t)
	r, stop := f.start()
	defer stop()
	job := f.shutdown(r)
	f.waitFor("job final", 60*time.Second, func() bool { return f.job(job.ID).State.Final() })
	j := f.job(job.ID)
	if j.State != store.StateFailed || !strings.Contains(j.Error, "storage-01") {
		t.Fatalf("job %s %q; want failed naming storage-01", j.State, j.Error)
	}
	f.waitFor("self power-off recorded", 30*time.Second, func() bool {
		a := f.action(job.ID, "mgmt-01", "self-poweroff")
		return a.State.Final()
	})

	const reason = "this machine's own SSH host key"
	if a := f.action(job.ID, "storage-01", "ssh-poweroff"); a.State != store.ActionFailed ||
		!strings.Contains(a.Error, "refused, nothing sent") || !strings.Contains(a.Error, reason) {
		t.Errorf("storage-01 ssh-poweroff %s %q; want failed, nothing sent, naming the reason", a.State, a.Error)
	}
	if a := f.action(job.ID, "storage-01", "power-off"); a.State != store.ActionFailed || !strings.Contains(a.Error, "BMC not used") {
		t.Errorf("storage-01 power-off %s %q; want failed saying the BMC was not used", a.State, a.Error)
	}
	storageFailed := 0
	for _, a := range f.actions(job.ID) {
		if a.Target != "storage-01" {
			continue
		}
		if a.Operation == store.OpBMCSoftOff || a.Operation == store.OpBMCHardOff || a.Operation == store.OpBMCConfirmSoftOff || a.Operation == store.OpBMCConfirmHardOff {
			t.Errorf("storage-01: %s recorded; the BMC of a host that led here must not be used", a.Operation)
		}
		if a.TargetKind == "storage" {
			if a.State != store.ActionFailed || !strings.Contains(a.Error, reason) {
				t.Errorf("storage-01 %s %s %q; want failed naming the reason", a.Operation, a.State, a.Error)
			}
			storageFailed++
		}
	}
	if storageFailed == 0 {
		t.Error("no storage command recorded for storage-01")
	}

	storage, mgmt := f.site.Host("storage-01"), f.site.Host("mgmt-01")
	if storage.Machine.State() != sitesim.PowerOn || len(storage.BMC.Resets()) != 0 || len(storage.SSH.Commands()) != 0 {
		t.Errorf("storage-01 touched: %s, BMC resets %v, commands %v", storage.Machine.State(), storage.BMC.Resets(), storage.SSH.Commands())
	}
	// mgmt-01 (this machine) got its own power-off, once, after the job's
	// final state, and nothing meant for storage-01.
	if n := mgmt.SSH.PowerCommands(); n != 1 {
		t.Errorf("this machine got %d power-off commands, want its own one", n)
	}
	for _, c := range mgmt.SSH.Commands() {
		if j.FinishedAt == nil || c.At.Before(*j.FinishedAt) {
			t.Errorf("this machine received %q at %s, before the job's final state at %v", c.Line, c.At, j.FinishedAt)
		}
	}
	if h := f.site.Host("compute-01"); h.Machine.State() != sitesim.PowerOff {
		t.Errorf("compute-01 %s; the other hosts must go down as usual", h.Machine.State())
	}
}

// A simulation finds the same thing, without sending anything.
func TestSimulationFindsAHostWhoseAddressLeadsHere(t *testing.T) {
	f := thisMachineFixture(t)
	r, stop := f.start()
	defer stop()
	job := f.simulate(r)
	f.waitFor("simulation final", 30*time.Second, func() bool { return f.job(job.ID).State.Final() })
	j := f.job(job.ID)
	if j.State != store.StateFailed || !strings.Contains(j.Error, "host storage-01 check-ssh") {
		t.Fatalf("simulation %s %q; want failed naming storage-01's SSH check", j.State, j.Error)
	}
	if a := f.action(job.ID, "storage-01", "check-ssh"); !strings.Contains(a.Error, "this machine's own SSH host key") {
		t.Errorf("storage-01 check-ssh %q; want the reason", a.Error)
	}
	for _, h := range f.site.Hosts {
		if h.SSH.PowerCommands() != 0 || h.Machine.State() != sitesim.PowerOn {
			t.Errorf("%s changed by a simulation", h.Spec.Name)
		}
	}
}
