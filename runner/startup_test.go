package runner_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/notify"
	"github.com/edgeops/shutdownd/runner"
	"github.com/edgeops/shutdownd/sitesim"
	"github.com/edgeops/shutdownd/store"
)

// startupVMs is a small site's VMs in every state a startup must tell
// apart; "keep-me" is excluded by configuration.
var startupVMs = []sitesim.VM{
	{ID: "vm-web-1", Name: "web-1", Status: "ACTIVE"},
	{ID: "vm-web-2", Name: "web-2", Status: "ACTIVE"},
	{ID: "vm-db-1", Name: "db-1", Status: "ACTIVE"},
	{ID: "vm-db-2", Name: "db-2", Status: "ACTIVE"},
	{ID: "vm-broken", Name: "broken", Status: "ERROR"},
	{ID: "vm-api-1", Name: "api-1", Status: "ACTIVE"},
	{ID: "vm-was-off", Name: "was-off", Status: "SHUTOFF"},
	{ID: "vm-paused", Name: "paused", Status: "PAUSED"},
	{ID: "vm-keep", Name: "keep-me", Status: "ACTIVE"},
}

func startupFixture(t *testing.T, tune func(*sitesim.Options)) *fixture {
	return newFixture(t, func(o *sitesim.Options) {
		o.VMs = slices.Clone(startupVMs)
		for i := range o.VMs {
			o.VMs[i].StopDelay = 50 * time.Millisecond
		}
		o.Exclude = []string{"keep-me"}
		o.BootDelay = 150 * time.Millisecond
		o.OSDStartDelay = 100 * time.Millisecond
		o.HostBoot, o.StorageReady = 20*time.Second, 20*time.Second
		if tune != nil {
			tune(o)
		}
	})
}

// awaitJob waits until job id is final and returns it.
func (f *fixture) awaitJob(id int64) store.Job {
	f.t.Helper()
	f.waitFor("job final", 90*time.Second, func() bool { return f.job(id).State.Final() })
	return f.job(id)
}

// shutdownSite runs a shutdown to success on a started runner.
func (f *fixture) shutdownSite(kick func()) store.Job {
	f.t.Helper()
	sd, _, err := f.store.CreateShutdown(context.Background(), store.NewJob{Reason: "mains lost"})
	if err != nil {
		f.t.Fatal(err)
	}
	kick()
	if j := f.awaitJob(sd.ID); j.State != store.StateSucceeded {
		f.t.Fatalf("shutdown %s: %s", j.State, j.Error)
	}
	for _, h := range f.site.Hosts {
		if h.Machine.State() != sitesim.PowerOff {
			f.t.Fatalf("%s still on after the shutdown", h.Spec.Name)
		}
	}
	return sd
}

func (f *fixture) createStartup(kick func()) store.Job {
	f.t.Helper()
	su, err := f.store.CreateStartup(context.Background(), store.NewJob{Reason: "mains back"}, 0)
	if err != nil {
		f.t.Fatal(err)
	}
	kick()
	return su
}

// TestStartupBringsBackExactlyWhatTheShutdownStopped is the whole cycle on
// the simulated site: hosts on in reverse role order, the recovery flags
// unset only once every OSD is up, exactly the VMs that were ACTIVE or
// ERROR before the shutdown ACTIVE after, the others off, and no os-start
// to an excluded VM.
func TestStartupBringsBackExactlyWhatTheShutdownStopped(t *testing.T) {
	t.Parallel()
	f := startupFixture(t, nil)
	hooks := newHookSink(t)
	n := notify.New(notify.Options{Webhooks: []config.Webhook{{URL: hooks.srv.URL}}, Store: f.store})
	defer n.Close()
	r, stop := f.startWith(runner.Options{Observer: n})
	defer stop()
	f.shutdownSite(r.Kick)
	su := f.createStartup(r.Kick)
	if j := f.awaitJob(su.ID); j.State != store.StateSucceeded {
		t.Fatalf("startup %s: %s", j.State, j.Error)
	}

	// Hosts: every group on only after the one before it.
	order := [][]string{{"control-01"}, {"storage-01", "storage-02"}, {"compute-01", "compute-02", "compute-03"}}
	var prevLast time.Time
	for _, g := range order {
		var first, last time.Time
		for _, name := range g {
			on := f.site.Host(name).Machine.OnAt()
			if on.IsZero() || !f.site.Host(name).Machine.Ready() {
				t.Fatalf("%s not back", name)
			}
			if first.IsZero() || on.Before(first) {
				first = on
			}
			if on.After(last) {
				last = on
			}
		}
		if !first.After(prevLast) {
			t.Errorf("group %v powered on at %s, before the group before it ended at %s", g, first, prevLast)
		}
		prevLast = last
	}

	// Ceph: pause and nodown first, the recovery flags only with every OSD up.
	total, _ := f.site.Ceph.OSDs()
	for _, c := range f.site.Ceph.FlagLog() {
		if c.Set || !slices.Contains([]string{"nobackfill", "norebalance", "norecover", "noout"}, c.Flag) {
			continue
		}
		if c.OSDUp != total {
			t.Errorf("%s unset with %d/%d OSDs up", c.Flag, c.OSDUp, total)
		}
	}
	if flags := f.site.Ceph.Flags(); len(flags) != 0 {
		t.Errorf("flags still set after the startup: %v", flags)
	}

	// VMs: exactly those that were ACTIVE or ERROR before.
	nova := f.site.Nova
	for _, v := range startupVMs {
		got := nova.Status(v.ID)
		switch {
		case v.Name == "keep-me":
			if nova.StartRequestsFor(v.ID) != 0 || nova.StopRequestsFor(v.ID) != 0 {
				t.Errorf("excluded %s got %d os-start, %d os-stop", v.Name, nova.StartRequestsFor(v.ID), nova.StopRequestsFor(v.ID))
			}
		case v.Status == "ACTIVE" || v.Status == "ERROR":
			if got != "ACTIVE" || nova.StartRequestsFor(v.ID) != 1 {
				t.Errorf("%s (was %s): %s after %d os-start, want ACTIVE after one", v.Name, v.Status, got, nova.StartRequestsFor(v.ID))
			}
		default:
			if got != v.Status || nova.StartRequestsFor(v.ID) != 0 {
				t.Errorf("%s (was %s): %s, %d os-start; want left alone", v.Name, v.Status, got, nova.StartRequestsFor(v.ID))
			}
		}
	}
	steps, err := f.store.Steps(context.Background(), su.ID)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range steps {
		names = append(names, s.Name+" "+string(s.State))
	}
	if want := []string{"hosts succeeded", "storage succeeded", "openstack succeeded"}; !slices.Equal(names, want) {
		t.Errorf("steps %v, want %v", names, want)
	}
	// Webhooks say which kind of job started and ended.
	f.waitFor("job.finished of the startup notified", 30*time.Second, func() bool {
		return hooks.has("job.finished", "startup", su.ID)
	})
	if !hooks.has("job.started", "startup", su.ID) {
		t.Error("no job.started webhook with kind startup")
	}
}

// hookSink is a webhook receiver that keeps (event, kind, job id) of every
// notification.
type hookSink struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []string
}

func newHookSink(t *testing.T) *hookSink {
	h := &hookSink{}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p notify.Payload
		if err := json.NewDecoder(r.Body).Decode(&p); err == nil {
			h.mu.Lock()
			h.got = append(h.got, fmt.Sprintf("%s %s %d", p.Event, p.Job.Kind, p.Job.ID))
			h.mu.Unlock()
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hookSink) has(event, kind string, id int64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Contains(h.got, fmt.Sprintf("%s %s %d", event, kind, id))
}

// TestStartupWithAComputeBMCDown: a compute host whose BMC does not answer
// stays off; its VMs are recorded failed by name, never sent an os-start,
// the rest of the site comes back, and the job fails naming the host.
func TestStartupWithAComputeBMCDown(t *testing.T) {
	t.Parallel()
	f := startupFixture(t, func(o *sitesim.Options) { o.HostBoot = 3 * time.Second })
	r, stop := f.start()
	defer stop()
	f.shutdownSite(r.Kick)
	if err := f.site.Host("compute-02").BMC.SetReachable(false); err != nil {
		t.Fatal(err)
	}
	su := f.createStartup(r.Kick)
	j := f.awaitJob(su.ID)
	if j.State != store.StateFailed || !strings.Contains(j.Error, "host compute-02") {
		t.Fatalf("startup %s %q, want failed naming compute-02", j.State, j.Error)
	}
	as, err := f.store.Actions(context.Background(), su.ID)
	if err != nil {
		t.Fatal(err)
	}
	onDown := 0
	for _, v := range f.site.Nova.Servers() {
		orig := slices.IndexFunc(startupVMs, func(s sitesim.VM) bool { return s.ID == v.ID })
		wasOn := startupVMs[orig].Status == "ACTIVE" || startupVMs[orig].Status == "ERROR"
		if !wasOn || v.Name == "keep-me" {
			continue
		}
		if v.Host != "compute-02" {
			if v.Status != "ACTIVE" {
				t.Errorf("%s on %s: %s, want ACTIVE", v.Name, v.Host, v.Status)
			}
			continue
		}
		onDown++
		i := slices.IndexFunc(as, func(a store.Action) bool { return a.TargetID == v.ID && a.Operation == "os-start" })
		if i < 0 || as[i].State != store.ActionFailed || !strings.Contains(as[i].Error, "compute-02") {
			t.Errorf("%s on the host that did not come back: action %+v, want failed naming compute-02", v.Name, as[i])
		}
		if !strings.Contains(j.Error, v.Name) {
			t.Errorf("job error %q does not name %s", j.Error, v.Name)
		}
		if n := f.site.Nova.StartRequestsFor(v.ID); n != 0 {
			t.Errorf("%s got %d os-start while its host is down", v.Name, n)
		}
	}
	if onDown == 0 {
		t.Fatal("no VM of the test ran on compute-02")
	}
	if f.site.Host("compute-02").Machine.State() != sitesim.PowerOff || !f.site.Host("compute-01").Machine.Ready() {
		t.Error("compute-02 should be off and compute-01 back")
	}
}

// TestShutdownPreemptsStartupDuringTheHostStep: power fails again while the
// site comes back. The shutdown starts at once, the startup ends preempted,
// and the site is powered off again.
func TestShutdownPreemptsStartupDuringTheHostStep(t *testing.T) {
	t.Parallel()
	f := startupFixture(t, nil)
	r, stop := f.start()
	defer stop()
	f.shutdownSite(r.Kick)
	// The control host boots slowly: the startup is in its host step.
	f.site.Host("control-01").Machine.SetBootDelay(time.Hour)
	su := f.createStartup(r.Kick)
	f.waitFor("control-01 powered on", 30*time.Second, func() bool {
		return f.site.Host("control-01").Machine.State() == sitesim.PowerOn
	})
	sd, created, err := f.store.CreateShutdown(context.Background(), store.NewJob{Reason: "mains lost again"})
	if err != nil || !created {
		t.Fatalf("shutdown during startup: %v created=%v", err, created)
	}
	r.Kick()
	if j := f.awaitJob(su.ID); j.State != store.StateCancelled || !strings.Contains(j.Error, "preempted by shutdown job") {
		t.Errorf("startup %s %q, want cancelled as preempted", j.State, j.Error)
	}
	// The storage hosts are still off, so its Ceph commands fail: it
	// ends failed saying so, and powers everything off all the same.
	if j := f.awaitJob(sd.ID); j.State == store.StateCancelled {
		t.Fatalf("second shutdown %s: %s", j.State, j.Error)
	}
	for _, h := range f.site.Hosts {
		if h.Machine.State() != sitesim.PowerOff {
			t.Errorf("%s not powered off again", h.Spec.Name)
		}
	}
	for _, h := range []string{"storage-01", "compute-01"} {
		if len(f.site.Host(h).Machine.History()) != 1 {
			t.Errorf("%s was powered on by the preempted startup: %v", h, f.site.Host(h).Machine.History())
		}
	}
}

// TestStartupFromAnotherBootIsNotResumed: a startup interrupted in one boot
// of the management machine is not resumed in the next, as a shutdown is
// not: whoever rebooted it may have finished bringing the site back by
// hand. The job fails, says why, and no BMC or host hears from it again.
func TestStartupFromAnotherBootIsNotResumed(t *testing.T) {
	f := startupFixture(t, nil)
	bootA := bootFile(t, "boot-a")
	r, stop := f.startWith(runner.Options{BootIDFile: bootA})
	f.shutdownSite(r.Kick)
	f.site.Host("control-01").Machine.SetBootDelay(time.Hour)
	su := f.createStartup(r.Kick)
	f.waitFor("control-01 powered on", 30*time.Second, func() bool {
		return f.site.Host("control-01").Machine.State() == sitesim.PowerOn
	})
	stop()
	if j := f.job(su.ID); j.State != store.StateRunning {
		t.Fatalf("after the service stopped the startup is %s, want running", j.State)
	}
	restartNotResumed(f, f.job(su.ID), trafficOf(f.site), bootFile(t, "boot-b"), "the machine rebooted")
	if f.site.Host("storage-01").Machine.State() != sitesim.PowerOff {
		t.Error("storage-01 powered on by a startup that was not resumed")
	}
}

// TestStartupWhenOpenStackDoesNotAnswer: the hosts and storage come back,
// and every VM the shutdown stopped is recorded failed by name, with why,
// once host_boot has passed without Keystone accepting a login.
func TestStartupWhenOpenStackDoesNotAnswer(t *testing.T) {
	t.Parallel()
	f := startupFixture(t, func(o *sitesim.Options) { o.HostBoot = 2 * time.Second })
	r, stop := f.start()
	defer stop()
	f.shutdownSite(r.Kick)
	f.site.Nova.SetPassword("rotated-meanwhile")
	su := f.createStartup(r.Kick)
	j := f.awaitJob(su.ID)
	if j.State != store.StateFailed || !strings.Contains(j.Error, "web-1") {
		t.Fatalf("startup %s %q, want failed naming the VMs", j.State, j.Error)
	}
	as, err := f.store.Actions(context.Background(), su.ID)
	if err != nil {
		t.Fatal(err)
	}
	failed := 0
	for _, a := range as {
		if a.Operation == "os-start" {
			if a.State != store.ActionFailed || !strings.Contains(a.Error, "OpenStack not answering") {
				t.Errorf("%s: %s %q", a.Target, a.State, a.Error)
			}
			failed++
		}
	}
	if failed != 6 { // web-1, web-2, db-1, db-2, broken, api-1
		t.Errorf("%d VMs recorded failed, want the 6 the shutdown stopped", failed)
	}
	if f.site.Nova.StartRequests() != 0 || !f.site.Host("compute-03").Machine.Ready() || len(f.site.Ceph.Flags()) != 0 {
		t.Error("want no os-start, the hosts back and Ceph unfrozen")
	}
}
