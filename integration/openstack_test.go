package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/runner"
	"github.com/edgeops/shutdownd/sitesim"
	"github.com/edgeops/shutdownd/store"
)

func oneHost() []hostSpec {
	return []hostSpec{{name: "compute-01", role: "compute", bmc: bmcRedfish}}
}

func TestIntegrationNovaAnswering500And503And429StillStopsEveryVMWithRetriesInEvents(t *testing.T) {
	t.Parallel()
	var vms []sitesim.VM
	for i := range 16 {
		vms = append(vms, sitesim.VM{ID: fmt.Sprintf("vm-%02d", i), Name: fmt.Sprintf("web-%02d", i), Project: "web", StopDelay: 100 * time.Millisecond})
	}
	s := startSite(t, siteSpec{
		hosts: oneHost(), vms: vms,
		// 20% 500/503, 10% 429 with Retry-After: 1 (honoured), fixed seed.
		nova: sitesim.NovaOptions{FailRate: 0.2, RateLimit429: 0.1, RetryAfter: "1", Seed: 11},
	})
	r := s.shutdown()
	if r.job.State != store.StateSucceeded {
		t.Fatalf("shutdown %s:\n%s", r.job.State, r.dump())
	}
	for _, vm := range vms {
		if st := s.nova.Status(vm.ID); st != "SHUTOFF" {
			t.Errorf("%s is %s", vm.Name, st)
		}
		if n := s.nova.StopRequestsFor(vm.ID); n < 1 {
			t.Errorf("%s got no os-stop", vm.Name)
		}
		if a := r.action(t, "vm", vm.Name, "os-stop"); a.State != store.ActionSucceeded {
			t.Errorf("%s os-stop %s: %s", vm.Name, a.State, a.Error)
		}
	}
	faults := s.nova.Faults()
	retries := r.eventsMatching(": retry ")
	if faults == 0 || len(retries) == 0 || len(retries) > faults {
		t.Fatalf("Nova injected %d faults, job shows %d retry events:\n%s", faults, len(retries), r.dump())
	}
	var saw429, saw5xx bool
	for _, e := range retries {
		saw429 = saw429 || strings.Contains(e.Detail, "429")
		saw5xx = saw5xx || strings.Contains(e.Detail, "500") || strings.Contains(e.Detail, "503")
		if e.Level != "warn" {
			t.Errorf("retry event level %s", e.Level)
		}
	}
	if !saw429 || !saw5xx {
		t.Errorf("retry events do not show both 429 (%v) and 5xx (%v):\n%s", saw429, saw5xx, r.dump())
	}
	if s.hosts["compute-01"].powerOn(t) {
		t.Error("the host stayed on")
	}
}

func TestIntegrationVMThatNeverReachesShutoffFailsAtTheTimeoutAndTheJobGoesOn(t *testing.T) {
	t.Parallel()
	const stopTimeout = 1500 * time.Millisecond
	s := startSite(t, siteSpec{
		hosts: []hostSpec{
			{name: "compute-01", role: "compute", bmc: bmcRedfish},
			{name: "storage-01", role: "storage", bmc: bmcIPMI},
		},
		vms: []sitesim.VM{
			{ID: "vm-stuck", Name: "legacy-win2012", Project: "ops", StopDelay: 100 * time.Millisecond, NeverStops: true},
			{ID: "vm-ok", Name: "web-01", Project: "web", StopDelay: 100 * time.Millisecond},
		},
		storageAdmin: "storage-01",
		stopTimeout:  stopTimeout,
	})
	r := s.shutdown()
	if r.job.State != store.StateFailed || !strings.Contains(r.job.Error, "legacy-win2012") {
		t.Fatalf("shutdown %s %q, want failed naming the stuck VM:\n%s", r.job.State, r.job.Error, r.dump())
	}
	stuck := r.action(t, "vm", "legacy-win2012", "os-stop")
	if stuck.State != store.ActionFailed || stuck.Error != "not SHUTOFF after "+stopTimeout.String() {
		t.Errorf("stuck VM %s %q", stuck.State, stuck.Error)
	}
	if took := stuck.FinishedAt.Sub(*stuck.StartedAt); took < stopTimeout {
		t.Errorf("stuck VM failed after %s, before stop_timeout %s", took, stopTimeout)
	}
	if n := s.nova.StopRequestsFor("vm-stuck"); n != 1 {
		t.Errorf("stuck VM got %d os-stop, want 1", n)
	}
	if st := s.nova.Status("vm-stuck"); st != "ACTIVE" {
		t.Errorf("stuck VM is %s", st)
	}
	if a := r.action(t, "vm", "web-01", "os-stop"); a.State != store.ActionSucceeded || s.nova.Status("vm-ok") != "SHUTOFF" {
		t.Errorf("web-01 %s, Nova status %s", a.State, s.nova.Status("vm-ok"))
	}
	if ev := r.eventsMatching("1 VMs not stopped at the timeout"); len(ev) != 1 {
		t.Errorf("%d timeout events", len(ev))
	}
	if st := r.step(t, runner.StepOpenStack); st.State != store.StepFailed {
		t.Errorf("openstack step %s", st.State)
	}
	// The job went on: storage stopped after the timeout, hosts down.
	if st := r.step(t, runner.StepStorage); st.State != store.StepSucceeded {
		t.Errorf("storage step %s: %s", st.State, st.Error)
	}
	if at := s.hosts["storage-01"].commandAt(t, "ceph osd set noout"); at.Before(*stuck.FinishedAt) {
		t.Errorf("storage stopped at %s, before the VM timeout at %s", at, stuck.FinishedAt)
	}
	for _, name := range s.order {
		if s.hosts[name].powerOn(t) {
			t.Errorf("%s still on", name)
		}
	}
}

func TestIntegrationVMsShutoffErrorPausedSuspendedAndExcludedAreEachHandledAndRecorded(t *testing.T) {
	t.Parallel()
	vms := []sitesim.VM{
		{ID: "id-active", Name: "app-01", Project: "web", StopDelay: 100 * time.Millisecond},
		{ID: "id-shutoff", Name: "old-01", Project: "web", Status: "SHUTOFF"},
		{ID: "id-error", Name: "broken-01", Project: "web", Status: "ERROR", StopDelay: 100 * time.Millisecond},
		{ID: "id-paused", Name: "paused-01", Project: "ci", Status: "PAUSED"},
		{ID: "id-suspended", Name: "suspended-01", Project: "ci", Status: "SUSPENDED"},
		{ID: "id-keep-name", Name: "ups-monitor", Project: "ops"},
		{ID: "id-keep-id", Name: "bastion", Project: "ops"},
	}
	s := startSite(t, siteSpec{hosts: oneHost(), vms: vms, exclude: []string{"ups-monitor", "id-keep-id"}})
	r := s.shutdown()
	if r.job.State != store.StateSucceeded {
		t.Fatalf("shutdown %s:\n%s", r.job.State, r.dump())
	}
	cases := []struct {
		id, name   string
		stops      int
		novaStatus string
		state      store.ActionState
		detail     string
	}{
		{"id-active", "app-01", 1, "SHUTOFF", store.ActionSucceeded, "SHUTOFF"},
		{"id-shutoff", "old-01", 0, "SHUTOFF", store.ActionSucceeded, "already SHUTOFF"},
		{"id-error", "broken-01", 1, "SHUTOFF", store.ActionSucceeded, "SHUTOFF"},
		{"id-paused", "paused-01", 0, "PAUSED", store.ActionSkipped, "skipped: status PAUSED"},
		{"id-suspended", "suspended-01", 0, "SUSPENDED", store.ActionSkipped, "skipped: status SUSPENDED"},
		{"id-keep-name", "ups-monitor", 0, "ACTIVE", store.ActionSkipped, "excluded by configuration"},
		{"id-keep-id", "bastion", 0, "ACTIVE", store.ActionSkipped, "excluded by configuration"},
	}
	for _, c := range cases {
		if n := s.nova.StopRequestsFor(c.id); n != c.stops {
			t.Errorf("%s: %d os-stop, want %d", c.name, n, c.stops)
		}
		if st := s.nova.Status(c.id); st != c.novaStatus {
			t.Errorf("%s: Nova status %s, want %s", c.name, st, c.novaStatus)
		}
		a := r.action(t, "vm", c.name, "os-stop")
		if a.State != c.state || a.Detail != c.detail || a.TargetID != c.id {
			t.Errorf("%s: recorded %s %q (id %s), want %s %q", c.name, a.State, a.Detail, a.TargetID, c.state, c.detail)
		}
	}
	if n := s.nova.StopRequests(); n != 2 {
		t.Errorf("Nova got %d os-stop in total, want 2", n)
	}
	if d := r.step(t, runner.StepOpenStack).Detail; d != "3 off, 0 failed, 4 skipped of 7 servers" {
		t.Errorf("openstack step detail %q", d)
	}
}

func TestIntegrationWrongKeystonePasswordFailsSimulationNamingOpenStackAuth(t *testing.T) {
	t.Parallel()
	const wrong = "not-the-Keystone-pw-77"
	s := startSite(t, siteSpec{hosts: oneHost(), vms: mixedVMs(), cloudsPassword: wrong})
	r := s.simulate()
	if r.job.State != store.StateFailed {
		t.Fatalf("simulation %s, want failed:\n%s", r.job.State, r.dump())
	}
	if !strings.Contains(r.job.Error, "openstack auth") || !strings.Contains(r.job.Error, "authentication failed") {
		t.Errorf("job error %q does not say OpenStack authentication failed", r.job.Error)
	}
	a := r.action(t, "openstack", "edge", "check-list-servers")
	if a.State != store.ActionFailed || !strings.Contains(a.Error, "clouds.yaml") {
		t.Errorf("openstack check %s %q, want failed pointing at clouds.yaml", a.State, a.Error)
	}
	if d := r.dump(); strings.Contains(d, wrong) || strings.Contains(d, "sim-secret") {
		t.Error("a Keystone password is in the job record")
	}
	if n := s.nova.ListRequests(); n != 0 {
		t.Errorf("Nova served %d lists without a token", n)
	}
	// The other checks still ran and passed.
	if a := r.action(t, "host", "compute-01", "check-ssh"); a.State != store.ActionSucceeded {
		t.Errorf("check-ssh %s: %s", a.State, a.Error)
	}
	s.assertNothingChanged(t)
}

// With no cloud configured and no OS_CLOUD, the openrc variables of an
// application credential are the credentials: the simulation logs in with
// them and says so, and the shutdown stops every VM. Not parallel: it sets
// the environment.
func TestIntegrationOpenrcApplicationCredentialSimulatesAndShutsDown(t *testing.T) {
	const secret = "Int-AppCred-Secret-5"
	s := startSite(t, siteSpec{hosts: oneHost(), vms: mixedVMs(), openrc: true,
		nova: sitesim.NovaOptions{AppCredentialID: "ac-int", AppCredentialSecret: secret}})
	if s.cfg.OpenStack.Source != "openrc" {
		t.Fatalf("source %q, want openrc", s.cfg.OpenStack.Source)
	}
	sim := s.simulate()
	if sim.job.State != store.StateSucceeded {
		t.Fatalf("simulation %s:\n%s", sim.job.State, sim.dump())
	}
	if a := sim.action(t, "openstack", "openrc", "check-list-servers"); !strings.Contains(a.Detail, "login ok with the openrc variables") {
		t.Errorf("check detail %q", a.Detail)
	}
	r := s.shutdown()
	if r.job.State != store.StateSucceeded {
		t.Fatalf("shutdown %s:\n%s", r.job.State, r.dump())
	}
	for _, vm := range s.nova.Servers() {
		if vm.Status != "SHUTOFF" {
			t.Errorf("%s is %s", vm.Name, vm.Status)
		}
	}
	for _, l := range s.nova.Logins() {
		if l.Method != "application_credential" || !l.OK {
			t.Errorf("login %+v, want application credentials only", l)
		}
	}
	if strings.Contains(s.logs.String(), secret) {
		t.Error("the service log holds the application credential secret")
	}
}
