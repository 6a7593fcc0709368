package runner

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/runner/openstack"
	"github.com/edgeops/shutdownd/sitesim"
	"github.com/edgeops/shutdownd/store"
)

func TestPollDecision(t *testing.T) {
	t.Parallel()
	srv := func(status, task string) openstack.Server {
		return openstack.Server{ID: "v", Status: status, TaskState: task}
	}
	cases := []struct {
		name                         string
		srv                          openstack.Server
		conflict, inFlight, stopping bool
		want                         pollVerdict
	}{
		{"SHUTOFF is off", srv(novaShutoff, ""), false, false, false, pollOff},
		{"SHUTOFF is off even with our stop out", srv(novaShutoff, ""), true, true, true, pollOff},
		{"active, our stop out: wait", srv(novaActive, ""), false, true, false, pollWait},
		{"active, Nova powering off: wait", srv(novaActive, "powering-off"), false, false, false, pollWait},
		{"active, stop answered: wait for SHUTOFF", srv(novaActive, ""), false, false, false, pollWait},
		{"refused while busy, idle and on: ask again", srv(novaActive, ""), true, false, false, pollResend},
		{"refused while busy, idle in ERROR: ask again", srv(novaError, ""), true, false, false, pollResend},
		{"refused while busy, idle and on, job cancelled: no new stop", srv(novaActive, ""), true, false, true, pollWait},
		{"refused while busy, Nova still busy: wait", srv(novaActive, "migrating"), true, false, false, pollWait},
		{"refused while busy, left PAUSED: skipped", srv("PAUSED", ""), true, false, false, pollSkipped},
		{"refused while busy, left SUSPENDED, cancelled: skipped", srv("SUSPENDED", ""), true, false, true, pollSkipped},
		{"PAUSED without a refusal: wait for the timeout", srv("PAUSED", ""), false, false, false, pollWait},
	}
	for _, c := range cases {
		if got := pollDecision(c.srv, c.conflict, c.inFlight, c.stopping); got != c.want {
			t.Errorf("%s: pollDecision = %d, want %d", c.name, got, c.want)
		}
	}
}

func TestListedServerBucketAndRecord(t *testing.T) {
	t.Parallel()
	cases := []struct {
		status           string
		excluded, before bool
		bucket           vmBucket
		state            store.ActionState
		detail           string
	}{
		{novaActive, false, false, vmToStop, "", ""},
		{novaError, false, false, vmToStop, "", ""},
		{novaActive, true, false, vmExcluded, store.ActionSkipped, "excluded by configuration"},
		{novaShutoff, true, false, vmExcluded, store.ActionSkipped, "excluded by configuration"},
		{novaShutoff, false, false, vmOff, store.ActionSucceeded, "already SHUTOFF"},
		{novaShutoff, false, true, vmOff, store.ActionSucceeded, "SHUTOFF (confirmed after restart)"},
		{"PAUSED", false, false, vmSkipped, store.ActionSkipped, "skipped: status PAUSED"},
		{"BUILD", false, true, vmSkipped, store.ActionSkipped, "skipped: status BUILD"},
	}
	for _, c := range cases {
		b := bucketOf(c.status, c.excluded)
		if b != c.bucket {
			t.Errorf("%s excluded=%v: bucket %d, want %d", c.status, c.excluded, b, c.bucket)
			continue
		}
		if b == vmToStop {
			continue // recorded as running when its os-stop is sent
		}
		if st, d := listedRecord(b, c.status, c.before); st != c.state || d != c.detail {
			t.Errorf("%s excluded=%v before=%v: %s %q, want %s %q", c.status, c.excluded, c.before, st, d, c.state, c.detail)
		}
	}
}

func TestUnfinishedVM(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		v         vmState
		cancelled bool
		want      store.ActionResult
	}{
		{"timeout", vmState{actionID: 1, sent: 1}, false, store.ActionResult{ID: 1, State: store.ActionFailed, Error: "not SHUTOFF after 5s"}},
		{"retries exhausted", vmState{actionID: 2, sent: 1, err: "os-stop: 503"}, false, store.ActionResult{ID: 2, State: store.ActionFailed, Error: "os-stop: 503"}},
		{"cancelled before its stop", vmState{actionID: 3}, true, store.ActionResult{ID: 3, State: store.ActionSkipped, Detail: "not sent: job cancelled"}},
		{"cancelled after its stop", vmState{actionID: 4, sent: 1, err: "x"}, true,
			store.ActionResult{ID: 4, State: store.ActionSkipped, Detail: "os-stop sent; SHUTOFF not awaited: job cancelled"}},
	}
	for _, c := range cases {
		if got := unfinished(&c.v, c.cancelled, 5*time.Second); got != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}
}

// vmStopFixture is one shutdown job's OpenStack step over the simulated
// site's Nova and a store on a real file, for driving vmStop phase by
// phase.
type vmStopFixture struct {
	t     *testing.T
	site  *sitesim.Site
	st    *store.Store
	e     *exec
	step  store.Step
	cloud Cloud
}

func newVMStopFixture(t *testing.T, projects []string, perProject int) *vmStopFixture {
	t.Helper()
	site, cfg, st, e := internalExec(t, sitesim.Options{
		Projects: projects, VMsPerProject: perProject, Storage: "none",
		Hosts:     []sitesim.HostSpec{{Name: "compute-01", Role: "compute"}},
		VMStopMin: 10 * time.Millisecond, VMStopMax: 30 * time.Millisecond, PollInterval: 20 * time.Millisecond, Seed: 3,
	})
	ctx := e.ctx
	if err := st.StartJob(ctx, e.job.ID); err != nil {
		t.Fatal(err)
	}
	step, err := st.EnsureStep(ctx, e.job.ID, 1, StepOpenStack)
	if err != nil {
		t.Fatal(err)
	}
	cloud, err := openCloud(ctx, cfg.OpenStack, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &vmStopFixture{t: t, site: site, st: st, e: e, step: step, cloud: cloud}
}

func (f *vmStopFixture) actions() []store.Action {
	f.t.Helper()
	as, err := f.st.StepActions(context.Background(), f.step.ID)
	if err != nil {
		f.t.Fatal(err)
	}
	return as
}

// The list phase hands over the whole listing page by page, the first
// page of listPageSizes[0] servers, and waits for the first batch to be
// recorded before it asks for the next.
func TestVMStopListHandsOverPages(t *testing.T) {
	f := newVMStopFixture(t, []string{"a", "b", "c"}, 100)
	s := newVMStop(f.e, f.step, f.cloud)
	pages, listed := s.list(context.Background())
	first := <-pages
	if len(first) != listPageSizes[0] {
		t.Fatalf("first page has %d servers, want %d", len(first), listPageSizes[0])
	}
	select {
	case p := <-pages:
		t.Fatalf("a second page of %d servers before the first batch was recorded", len(p))
	case <-time.After(100 * time.Millisecond):
	}
	close(s.rec.firstDone)
	seen := map[string]bool{}
	for _, srv := range first {
		seen[srv.ID] = true
	}
	for p := range pages {
		for _, srv := range p {
			seen[srv.ID] = true
		}
	}
	if err := <-listed; err != nil {
		t.Fatal(err)
	}
	if len(seen) != 300 {
		t.Errorf("%d distinct servers listed, want 300", len(seen))
	}
}

// record writes each server's os-stop action before the os-stop leaves,
// sends one os-stop per server to stop, and leaves the others to
// settleListing's rows; a server Nova is already powering off is not sent
// a second one but waits in pending.
func TestVMStopRecordSendsEachStopOnceAfterItsAction(t *testing.T) {
	f := newVMStopFixture(t, []string{"a"}, 12)
	vms := f.site.Nova.Servers()
	f.site.Nova.SetStatus(vms[0].ID, novaShutoff)
	f.site.Nova.SetStatus(vms[1].ID, "PAUSED")
	f.site.Nova.SetTask(vms[2].ID, "powering-off", time.Hour, novaShutoff)
	s := newVMStop(f.e, f.step, f.cloud)
	lctx, stopListing := context.WithCancel(context.Background())
	defer stopListing()
	pages, listed := s.list(lctx)
	s.record(pages, stopListing)
	if err := <-listed; err != nil {
		t.Fatal(err)
	}
	s.w.wait()
	if len(s.pending) != 10 {
		t.Errorf("%d pending, want the 10 ACTIVE servers (one of them busy)", len(s.pending))
	}
	if v := s.pending[vms[2].ID]; v == nil || !v.conflict {
		t.Errorf("server powering off: %+v, want pending, marked to be re-read", v)
	}
	if n := f.site.Nova.StopRequests(); n != 9 {
		t.Errorf("%d os-stop requests, want 9 (no second stop to a VM powering off)", n)
	}
	for _, a := range f.actions() {
		if a.State != store.ActionRunning || a.Operation != store.OpOSStop {
			t.Errorf("action %s %s %s, want running os-stop", a.Target, a.Operation, a.State)
		}
	}
	if n := len(f.actions()); n != 10 {
		t.Errorf("%d actions on disk, want 10 (the others are written by settleListing)", n)
	}
	if len(s.rec.recs) != 2 {
		t.Errorf("%d rows held for after the stops, want 2 (SHUTOFF, PAUSED)", len(s.rec.recs))
	}
}

// poll settles every pending server from the listing: SHUTOFF succeeds,
// and a server deleted meanwhile succeeds as no longer listed; settle then
// fails what is left at the timeout, with the reason.
func TestVMStopPollAndSettle(t *testing.T) {
	f := newVMStopFixture(t, []string{"a"}, 6)
	vms := f.site.Nova.Servers()
	f.site.Nova.SetTask(vms[0].ID, "powering-off", time.Hour, novaShutoff) // never ends within the test
	s := newVMStop(f.e, f.step, f.cloud)
	s.cfg.StopTimeout = 2 * time.Second
	s.announce(false) // the client logged in: nothing waits to be said
	lctx, stopListing := context.WithCancel(context.Background())
	defer stopListing()
	pages, listed := s.list(lctx)
	s.record(pages, stopListing)
	if err := <-listed; err != nil {
		t.Fatal(err)
	}
	if out := s.settleListing(nil); out != nil {
		t.Fatalf("settleListing ended the step: %+v", out)
	}
	f.site.Nova.Delete(vms[1].ID)
	if s.poll() {
		t.Fatal("poll reported an interruption")
	}
	if len(s.pending) != 1 || s.pending[vms[0].ID] == nil {
		t.Fatalf("pending after the timeout: %v, want only the VM stuck powering off", s.pending)
	}
	s.settle()
	byID := map[string]store.Action{}
	for _, a := range f.actions() {
		byID[a.TargetID] = a
	}
	if a := byID[vms[0].ID]; a.State != store.ActionFailed || !strings.Contains(a.Error, "not SHUTOFF after 2s") {
		t.Errorf("stuck VM: %s %q, want failed at the timeout", a.State, a.Error)
	}
	if a := byID[vms[1].ID]; a.State != store.ActionSucceeded || a.Detail != "server no longer listed (deleted)" &&
		a.Detail != "server deleted before stop" && a.Detail != "SHUTOFF" {
		t.Errorf("deleted VM: %s %q, want succeeded", a.State, a.Detail)
	}
	for _, v := range vms[2:] {
		if a := byID[v.ID]; a.State != store.ActionSucceeded || a.Detail != "SHUTOFF" {
			t.Errorf("%s: %s %q, want succeeded SHUTOFF", v.Name, a.State, a.Detail)
		}
	}
	state, _, err := s.result()
	if state != store.StepFailed || err == nil || err.Error() != "1 VMs not stopped" {
		t.Errorf("result %s, %v; want failed, 1 VMs not stopped", state, err)
	}
}
