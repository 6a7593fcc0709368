package runner_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/runner"
	"github.com/edgeops/shutdownd/sitesim"
	"github.com/edgeops/shutdownd/store"
)

// novaFront puts an HTTP proxy between the runner and the site's simulated
// Nova (clouds.yaml is rewritten to point at it), so a test can hold or
// break the list requests of later pages, the ones with a marker.
type novaFront struct {
	mu     sync.Mutex
	marker func(w http.ResponseWriter, r *http.Request) bool // answers a later page itself if it returns true
}

func (f *fixture) novaFront() *novaFront {
	f.t.Helper()
	nova := f.site.Nova
	nf := &novaFront{}
	target, err := url.Parse(nova.URL())
	if err != nil {
		f.t.Fatal(err)
	}
	var self string
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(resp *http.Response) error {
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		b = bytes.ReplaceAll(b, []byte(nova.URL()), []byte(self))
		resp.Body = io.NopCloser(bytes.NewReader(b))
		resp.ContentLength = int64(len(b))
		resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
		return nil
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nf.mu.Lock()
		marker := nf.marker
		nf.mu.Unlock()
		if marker != nil && r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/servers/detail") &&
			r.URL.Query().Get("marker") != "" && marker(w, r) {
			return
		}
		rp.ServeHTTP(w, r)
	}))
	f.t.Cleanup(srv.Close)
	self = srv.URL
	clouds := strings.ReplaceAll(nova.CloudsYAML("sim"), nova.URL(), srv.URL)
	if err := os.WriteFile(f.site.CloudsFile, []byte(clouds), 0o600); err != nil {
		f.t.Fatal(err)
	}
	return nf
}

func (nf *novaFront) onLaterPage(h func(w http.ResponseWriter, r *http.Request) bool) {
	nf.mu.Lock()
	nf.marker = h
	nf.mu.Unlock()
}

// firstPage is how many servers the runner's first list request asks for.
const firstPage = 250

// vmsOnlySite has 300 VMs (more than the runner's first page) and one host.
func vmsOnlySite(o *sitesim.Options) {
	o.Projects, o.VMsPerProject = []string{"a", "b"}, 150
	o.Hosts = []sitesim.HostSpec{{Name: "compute-01", Role: "compute"}}
	o.Storage = "none"
}

// The os-stops of the first page go out while the rest of the listing is
// still on its way: the proxy holds the second page until Nova has received
// an os-stop, and the runner must not wait for it.
func TestVMStopsStartFromTheFirstPageWhileTheRestIsListed(t *testing.T) {
	f := newFixture(t, vmsOnlySite)
	front := f.novaFront()
	var mu sync.Mutex
	heldUntilStop := 0
	front.onLaterPage(func(w http.ResponseWriter, r *http.Request) bool {
		deadline := time.Now().Add(20 * time.Second) // fail-safe only
		for f.site.Nova.StopRequests() == 0 && time.Now().Before(deadline) && r.Context().Err() == nil {
			time.Sleep(time.Millisecond)
		}
		if f.site.Nova.StopRequests() > 0 {
			mu.Lock()
			heldUntilStop++
			mu.Unlock()
		}
		return false // then forward the page
	})
	before := map[string]string{}
	for _, vm := range f.site.Nova.Servers() {
		before[vm.ID] = vm.Status
	}
	r, stop := f.start()
	defer stop()
	job := f.shutdown(r)
	f.waitFor("job final", 60*time.Second, func() bool { return f.job(job.ID).State.Final() })
	if j := f.job(job.ID); j.State != store.StateSucceeded {
		t.Fatalf("job %s: %s", j.State, j.Error)
	}
	mu.Lock()
	if heldUntilStop == 0 {
		t.Error("the second page was requested before any os-stop reached Nova, or never")
	}
	mu.Unlock()
	for _, vm := range f.site.Nova.Servers() {
		want := 0
		if before[vm.ID] == "ACTIVE" || before[vm.ID] == "ERROR" {
			want = 1
		}
		if n := f.site.Nova.StopRequestsFor(vm.ID); n != want {
			t.Errorf("vm %s (%s before) got %d os-stop, want %d", vm.Name, before[vm.ID], n, want)
		}
		if want == 1 && vm.Status != "SHUTOFF" {
			t.Errorf("vm %s is %s", vm.Name, vm.Status)
		}
	}
	if got := f.countActions(job.ID, "vm", ""); got != len(before) {
		t.Errorf("%d vm actions for %d servers", got, len(before))
	}
}

// Nova fails the listing after the first page (the marker server was
// deleted meanwhile, which Nova answers with 400): the VMs of the first page
// are stopped and awaited, the step and the job fail naming the listing, and
// the job goes on to the hosts.
func TestListingFailingAfterTheFirstPageStopsWhatWasListedAndFailsTheStep(t *testing.T) {
	f := newFixture(t, vmsOnlySite)
	front := f.novaFront()
	front.onLaterPage(func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"badRequest":{"code":400,"message":"marker [`+r.URL.Query().Get("marker")+`] not found"}}`)
		return true
	})
	r, stop := f.start()
	defer stop()
	job := f.shutdown(r)
	f.waitFor("job final", 60*time.Second, func() bool { return f.job(job.ID).State.Final() })
	j := f.job(job.ID)
	if j.State != store.StateFailed || !strings.Contains(j.Error, "list servers") || !strings.Contains(j.Error, "not found") {
		t.Fatalf("job %s (%q), want failed naming the listing", j.State, j.Error)
	}
	steps, err := f.store.Steps(context.Background(), job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) == 0 || steps[0].Name != runner.StepOpenStack || steps[0].State != store.StepFailed {
		t.Fatalf("steps %+v, want openstack failed first", steps)
	}
	servers := f.site.Nova.Servers()
	first, rest := servers[:firstPage], servers[firstPage:]
	for _, vm := range first {
		if vm.Status == "ACTIVE" || vm.Status == "ERROR" {
			t.Errorf("first-page vm %s still %s", vm.Name, vm.Status)
		}
	}
	for _, vm := range rest {
		if n := f.site.Nova.StopRequestsFor(vm.ID); n != 0 {
			t.Errorf("vm %s, never listed, got %d os-stop", vm.Name, n)
		}
	}
	if got := f.countActions(job.ID, "vm", ""); got != len(first) {
		t.Errorf("%d vm actions, want one per listed server (%d)", got, len(first))
	}
	if n := f.countActions(job.ID, "vm", store.ActionRunning); n != 0 {
		t.Errorf("%d vm actions left running", n)
	}
	if h := f.site.Host("compute-01"); h.Machine.State() != sitesim.PowerOff {
		t.Errorf("host still %s: the job did not go on after the failed listing", h.Machine.State())
	}
}

// The service stops while the listing is in the middle (the second page is
// held): the job stays running, and the restarted service finishes it
// without a second os-stop to any VM.
func TestServiceStopDuringTheListingResumesWithoutSecondStops(t *testing.T) {
	f := newFixture(t, func(o *sitesim.Options) {
		vmsOnlySite(o)
		o.VMStopMin, o.VMStopMax = 20*time.Millisecond, 50*time.Millisecond
	})
	front := f.novaFront()
	held := make(chan struct{}, 1)
	release := make(chan struct{})
	front.onLaterPage(func(w http.ResponseWriter, r *http.Request) bool {
		select {
		case held <- struct{}{}:
		default:
		}
		select {
		case <-release:
			return false
		case <-r.Context().Done():
			return true
		}
	})
	r, w, stop := f.startWatched()
	f.waitFor("authenticated ahead", 10*time.Second, func() bool { ok, _ := w.counts(); return ok == 1 })
	job := f.shutdown(r)
	select {
	case <-held:
	case <-time.After(20 * time.Second):
		t.Fatal("the second page was never requested")
	}
	f.waitFor("a first-page VM off", 20*time.Second, func() bool {
		for _, vm := range f.site.Nova.Servers()[:firstPage] {
			if f.site.Nova.StopRequestsFor(vm.ID) > 0 && vm.Status == "SHUTOFF" {
				return true
			}
		}
		return false
	})
	// The status says what is going on while the listing hangs.
	const listing = "Stopping OpenStack VMs: listing servers, sending os-stop"
	f.waitFor("current_step while listing", 10*time.Second, func() bool { return f.job(job.ID).CurrentStep == listing })
	stop()
	if j := f.job(job.ID); j.State != store.StateRunning {
		t.Fatalf("after the service stopped the job is %s, want running", j.State)
	}
	steps, _ := f.store.Steps(context.Background(), job.ID)
	if len(steps) != 1 || steps[0].State != store.StepRunning {
		t.Fatalf("steps %+v, want the openstack step still running", steps)
	}
	close(release)
	f.resumeToSuccess(job.ID)
	for _, vm := range f.site.Nova.Servers() {
		if n := f.site.Nova.StopRequestsFor(vm.ID); n > 1 {
			t.Errorf("vm %s got %d os-stop", vm.Name, n)
		}
		if vm.Status == "ACTIVE" || vm.Status == "ERROR" {
			t.Errorf("vm %s still %s", vm.Name, vm.Status)
		}
	}
	if n := f.countActions(job.ID, "vm", store.ActionRunning); n != 0 {
		t.Errorf("%d vm actions left running", n)
	}
}

// authWatch counts the runner's Keystone authentications as its observer
// sees them.
type authWatch struct {
	mu         sync.Mutex
	ok, failed int
}

func (a *authWatch) JobStarted(context.Context, store.Job)               {}
func (a *authWatch) StepFinished(context.Context, store.Job, store.Step) {}
func (a *authWatch) JobFinished(context.Context, store.Job)              {}
func (a *authWatch) PeerCall(peer, op string, err error) {
	if peer != runner.PeerNova || op != "authenticate" {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		a.failed++
	} else {
		a.ok++
	}
}

func (a *authWatch) counts() (ok, failed int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ok, a.failed
}

// startWatched starts a runner that reports to an authWatch.
func (f *fixture) startWatched() (*runner.Runner, *authWatch, func()) {
	w := &authWatch{}
	r, stop := f.startWith(runner.Options{Observer: w})
	return r, w, stop
}

func (f *fixture) runJob(r *runner.Runner, kind store.Kind) store.Job {
	f.t.Helper()
	job := f.simulate
	if kind == store.KindShutdown {
		job = f.shutdown
	}
	j := job(r)
	f.waitFor("job final", 60*time.Second, func() bool { return f.job(j.ID).State.Final() })
	return f.job(j.ID)
}

func smallSite(o *sitesim.Options) {
	o.Hosts = []sitesim.HostSpec{{Name: "compute-01", Role: "compute"}}
	o.Storage = "none"
}

// The runner authenticates when it starts; the shutdown uses that client
// and does not go to Keystone again.
func TestShutdownUsesTheClientAuthenticatedAhead(t *testing.T) {
	f := newFixture(t, smallSite)
	r, w, stop := f.startWatched()
	defer stop()
	f.waitFor("authenticated ahead", 10*time.Second, func() bool { ok, _ := w.counts(); return ok == 1 })
	j := f.runJob(r, store.KindShutdown)
	if j.State != store.StateSucceeded {
		t.Fatalf("job %s: %s", j.State, j.Error)
	}
	if n := f.site.Nova.Auths(); n != 1 {
		t.Errorf("Keystone issued %d tokens, want 1 (the one from before the job)", n)
	}
	if n := f.site.Nova.StopRequests(); n == 0 {
		t.Error("no os-stop sent")
	}
}

// Authenticating ahead fails (clouds.yaml unreadable at start): the shutdown
// authenticates itself, as without the warm-up.
func TestFailedAuthenticationAheadFallsBackToTheShutdownAuthenticating(t *testing.T) {
	f := newFixture(t, smallSite)
	clouds, err := os.ReadFile(f.site.CloudsFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(f.site.CloudsFile); err != nil {
		t.Fatal(err)
	}
	r, w, stop := f.startWatched()
	defer stop()
	f.waitFor("authentication ahead failed", 10*time.Second, func() bool { _, failed := w.counts(); return failed == 1 })
	if err := os.WriteFile(f.site.CloudsFile, clouds, 0o600); err != nil {
		t.Fatal(err)
	}
	j := f.runJob(r, store.KindShutdown)
	if j.State != store.StateSucceeded {
		t.Fatalf("job %s: %s", j.State, j.Error)
	}
	if ok, _ := w.counts(); ok != 1 || f.site.Nova.Auths() != 1 {
		t.Errorf("%d successful authentications, Keystone issued %d tokens; want the shutdown's own, 1", ok, f.site.Nova.Auths())
	}
	for _, vm := range f.site.Nova.Servers() {
		if vm.Status == "ACTIVE" || vm.Status == "ERROR" {
			t.Errorf("vm %s still %s", vm.Name, vm.Status)
		}
	}
}

// The client authenticated ahead is not used when it could be stale: its
// token was revoked (the client renews it on Nova's 401), or clouds.yaml
// changed (a fresh authentication reads it again). A simulation always
// authenticates itself: that authentication works is what it checks.
func TestClientAuthenticatedAheadIsRenewedWhenStale(t *testing.T) {
	tests := []struct {
		name      string
		kind      store.Kind
		meanwhile func(f *fixture)
		wantAuths int
	}{
		{"token revoked", store.KindShutdown, func(f *fixture) { f.site.Nova.ExpireTokens() }, 2},
		{"clouds.yaml rewritten", store.KindShutdown, func(f *fixture) {
			b, err := os.ReadFile(f.site.CloudsFile)
			if err != nil {
				f.t.Fatal(err)
			}
			if err := os.WriteFile(f.site.CloudsFile, append(b, "\n# rotated\n"...), 0o600); err != nil {
				f.t.Fatal(err)
			}
		}, 2},
		{"simulation", store.KindSimulation, func(*fixture) {}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, smallSite)
			r, w, stop := f.startWatched()
			defer stop()
			f.waitFor("authenticated ahead", 10*time.Second, func() bool { ok, _ := w.counts(); return ok == 1 })
			tc.meanwhile(f)
			j := f.runJob(r, tc.kind)
			if j.State != store.StateSucceeded {
				t.Fatalf("%s %s: %s", tc.kind, j.State, j.Error)
			}
			if n := f.site.Nova.Auths(); n != tc.wantAuths {
				t.Errorf("Keystone issued %d tokens, want %d", n, tc.wantAuths)
			}
		})
	}
}

// A VM whose os-stop Nova refuses with 409 because it is busy with another
// task is re-read, not failed: when the task ends with the VM idle and still
// on, it is asked again and stops; when the task leaves it PAUSED, it is
// skipped with that state, as if it had been listed so. Neither holds the
// step until stop_timeout.
func TestVMBusyWithAnotherTaskIsAskedAgainOrSkipped(t *testing.T) {
	f := newFixture(t, func(o *sitesim.Options) {
		o.VMs = []sitesim.VM{
			{ID: "vm-rebooting", Name: "rebooting", Project: "a", Status: "ACTIVE", StopDelay: 50 * time.Millisecond},
			{ID: "vm-pausing", Name: "pausing", Project: "a", Status: "ACTIVE", StopDelay: 50 * time.Millisecond},
			{ID: "vm-plain", Name: "plain", Project: "a", Status: "ACTIVE", StopDelay: 50 * time.Millisecond},
		}
		o.Hosts = []sitesim.HostSpec{{Name: "compute-01", Role: "compute"}}
		o.Storage = "none"
		o.StopTimeout = time.Minute
	})
	// The tasks last until the runner's os-stop has met them (409), however
	// slow the machine; then they end, one leaving its VM on, one PAUSED.
	f.site.Nova.SetTask("vm-rebooting", "rebooting", time.Hour, "ACTIVE")
	f.site.Nova.SetTask("vm-pausing", "pausing", time.Hour, "PAUSED")
	r, stop := f.start()
	defer stop()
	job := f.shutdown(r)
	f.waitFor("os-stops refused", 30*time.Second, func() bool {
		return f.site.Nova.StopRequestsFor("vm-rebooting") == 1 && f.site.Nova.StopRequestsFor("vm-pausing") == 1
	})
	f.site.Nova.SetTask("vm-rebooting", "", 0, "ACTIVE")
	f.site.Nova.SetTask("vm-pausing", "", 0, "PAUSED")
	f.waitFor("job final", 30*time.Second, func() bool { return f.job(job.ID).State.Final() })
	if j := f.job(job.ID); j.State != store.StateSucceeded {
		t.Fatalf("job %s: %s", j.State, j.Error)
	}
	byID := map[string]store.Action{}
	for _, a := range f.actions(job.ID) {
		if a.TargetKind == "vm" {
			byID[a.TargetID] = a
		}
	}
	if a := byID["vm-rebooting"]; a.State != store.ActionSucceeded || a.Detail != "SHUTOFF" {
		t.Errorf("rebooting VM: %s %q %q, want succeeded SHUTOFF", a.State, a.Detail, a.Error)
	}
	if got := f.site.Nova.Status("vm-rebooting"); got != "SHUTOFF" {
		t.Errorf("rebooting VM is %s at Nova", got)
	}
	if n := f.site.Nova.StopRequestsFor("vm-rebooting"); n != 2 {
		t.Errorf("rebooting VM got %d os-stops, want 2 (refused, then asked again)", n)
	}
	if a := byID["vm-pausing"]; a.State != store.ActionSkipped || !strings.Contains(a.Detail, "status PAUSED") {
		t.Errorf("pausing VM: %s %q %q, want skipped with status PAUSED", a.State, a.Detail, a.Error)
	}
	if n := f.site.Nova.StopRequestsFor("vm-pausing"); n != 1 {
		t.Errorf("pausing VM got %d os-stops, want 1", n)
	}
	if a := byID["vm-plain"]; a.State != store.ActionSucceeded {
		t.Errorf("plain VM: %s %q", a.State, a.Error)
	}
}
