package runner_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
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

// bootFile writes a boot id file, as /proc/sys/kernel/random/boot_id gives
// one, for a runner that plays this machine.
func bootFile(t *testing.T, id string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "boot_id")
	if err := os.WriteFile(p, []byte(id+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// siteTraffic is what the site's peers have received: every request that
// could stop or power off anything, and every login.
type siteTraffic map[string]int

func trafficOf(s *sitesim.Site) siteTraffic {
	t := siteTraffic{
		"nova stop": s.Nova.StopRequests(), "nova list": s.Nova.ListRequests(), "nova show": s.Nova.ShowRequests(),
	}
	for _, h := range s.Hosts {
		t[h.Spec.Name+" ssh logins"] = h.SSH.Logins()
		t[h.Spec.Name+" ssh commands"] = len(h.SSH.Commands())
		if h.BMC != nil {
			t[h.Spec.Name+" bmc reads"] = h.BMC.PowerReads()
			t[h.Spec.Name+" bmc resets"] = len(h.BMC.Resets())
		}
	}
	return t
}

func (a siteTraffic) diff(b siteTraffic) []string {
	var out []string
	for k, v := range b {
		if a[k] != v {
			out = append(out, fmt.Sprintf("%s: %d -> %d", k, a[k], v))
		}
	}
	return out
}

// hookLog is a webhook receiver that keeps the job.finished payloads.
type hookLog struct {
	mu       sync.Mutex
	finished []notify.Payload
}

func (h *hookLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	if r.Header.Get("X-Shutdownd-Event") != notify.EventJobFinished {
		return
	}
	var p notify.Payload
	if err := json.Unmarshal(b, &p); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	h.finished = append(h.finished, p)
	h.mu.Unlock()
}

func (h *hookLog) list() []notify.Payload {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]notify.Payload(nil), h.finished...)
}

// interruptDuringVMs starts a shutdown with a runner of boot boot, stops the
// runner (the service stops; the job stays running) once the slow VM's
// os-stop is out, and returns the job and what the site had received then.
func interruptDuringVMs(f *fixture, boot string) (store.Job, siteTraffic) {
	f.t.Helper()
	r, stop := f.startWith(runner.Options{BootIDFile: boot})
	job := f.shutdown(r)
	f.waitFor("the slow VM's os-stop sent", 30*time.Second, func() bool { return f.site.Nova.StopRequests() >= 1 })
	stop()
	if j := f.job(job.ID); j.State != store.StateRunning {
		f.t.Fatalf("after stop job is %s, want running", j.State)
	}
	return job, trafficOf(f.site)
}

// restartNotResumed starts a runner as a restarted service would, with a
// webhook, and checks that the job ends failed with want in its error, an
// event and a job.finished notification, and that nothing reached the site.
func restartNotResumed(f *fixture, job store.Job, before siteTraffic, boot, want string) {
	t := f.t
	t.Helper()
	hooks := &hookLog{}
	srv := httptest.NewServer(hooks)
	defer srv.Close()
	n := notify.New(notify.Options{Webhooks: []config.Webhook{{URL: srv.URL}}, Store: f.store})
	defer n.Close()
	r, stop := f.startWith(runner.Options{BootIDFile: boot, Observer: runner.Observers(n)})
	defer stop()
	idle := r.Idle()
	f.waitFor("job final", 30*time.Second, func() bool { return f.job(job.ID).State.Final() })
	j := f.job(job.ID)
	if j.State != store.StateFailed || !strings.HasPrefix(j.Error, "interrupted at ") || !strings.Contains(j.Error, ", not resumed: "+want) {
		t.Fatalf("job %s %q; want failed, interrupted at ..., not resumed: %s", j.State, j.Error, want)
	}
	evs, err := f.store.Events(context.Background(), job.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	var saw bool
	for _, e := range evs {
		saw = saw || (e.Level == "error" && e.Message == "not resumed after restart")
	}
	if !saw {
		t.Errorf("no 'not resumed after restart' event")
	}
	f.waitFor("job.finished delivered", 30*time.Second, func() bool { return len(hooks.list()) > 0 })
	if p := hooks.list()[0]; p.Job.ID != job.ID || p.Job.State != "failed" || p.Job.Error != j.Error {
		t.Errorf("job.finished payload %+v", p.Job)
	}
	// The runner found nothing to run: from here on it sends nothing.
	select {
	case <-idle:
	case <-time.After(30 * time.Second):
		t.Fatal("runner not idle after the restart")
	}
	if d := before.diff(trafficOf(f.site)); len(d) != 0 {
		t.Errorf("the site received requests after the restart: %v", d)
	}
	for _, a := range f.actions(job.ID) {
		if !a.State.Final() {
			t.Errorf("action %s %s left %s", a.Target, a.Operation, a.State)
		}
	}
}

// A shutdown interrupted in one boot of the management machine is not
// resumed in the next one: the machine went down with the site (the
// batteries ran out), and whoever brought it back may have restored the
// site too. The job fails, says why, notifies, and the site hears nothing.
func TestShutdownFromAnotherBootIsNotResumed(t *testing.T) {
	f := newFixture(t, slowVM)
	job, before := interruptDuringVMs(f, bootFile(t, "boot-a"))
	if j := f.job(job.ID); j.BootID != "boot-a" {
		t.Fatalf("job recorded boot %q, want boot-a", j.BootID)
	}
	restartNotResumed(f, job, before, bootFile(t, "boot-b"), "the machine rebooted")
}

// On the same boot, a shutdown whose last record is older than
// resume_window is not resumed either: the service was down longer than a
// restart takes, and the site may have been restored meanwhile.
func TestShutdownOlderThanTheResumeWindowIsNotResumed(t *testing.T) {
	f := newFixture(t, slowVM)
	boot := bootFile(t, "boot-a")
	job, before := interruptDuringVMs(f, boot)
	f.cfg.ResumeWindow = time.Second
	f.waitFor("last record older than the window", 30*time.Second, func() bool {
		last, err := f.store.LastRecord(context.Background(), job.ID)
		return err == nil && time.Since(last) > 1200*time.Millisecond
	})
	restartNotResumed(f, job, before, boot, "last record ")
}

// A step that records nothing for longer than resume_window (a BMC
// confirmation on a host that ignores its power-off) still keeps the job's
// last record young through the heartbeat, so a restart right after it
// resumes the job.
func TestHeartbeatKeepsASilentStepResumable(t *testing.T) {
	f := newFixture(t, func(o *sitesim.Options) {
		o.VMs = []sitesim.VM{{ID: "vm-1", Name: "one", Project: "a"}}
		o.Hosts = []sitesim.HostSpec{{Name: "compute-01", Role: "compute", IgnorePowerOff: true}}
		o.Storage = "none"
		o.HostOff = 5 * time.Second
	})
	const window = 2 * time.Second
	f.cfg.ResumeWindow = window
	boot := bootFile(t, "boot-a")
	r, stop := f.startWith(runner.Options{BootIDFile: boot})
	job := f.shutdown(r)
	var confirm store.Action
	f.waitFor("BMC confirmation waiting", 30*time.Second, func() bool {
		for _, a := range f.actions(job.ID) {
			if a.Operation == "bmc-confirm-off" && a.State == store.ActionRunning {
				confirm = a
				return true
			}
		}
		return false
	})
	// Wait, with the confirmation silent, for longer than the window.
	oldest := time.Duration(0)
	f.waitFor("a silent wait longer than the window", 30*time.Second, func() bool {
		last, err := f.store.LastRecord(context.Background(), job.ID)
		if err != nil {
			t.Fatal(err)
		}
		oldest = max(oldest, time.Since(last))
		return time.Since(*confirm.StartedAt) > window+500*time.Millisecond
	})
	stop()
	if oldest >= window {
		t.Errorf("the job's last record was %s old during the wait; the heartbeat should keep it under %s", oldest, window)
	}
	// What kept it young is the job's own row (the heartbeat), not an
	// action or an event written meanwhile.
	last, err := f.store.LastRecord(context.Background(), job.ID)
	if err != nil {
		t.Fatal(err)
	}
	newest := confirm.UpdatedAt
	for _, a := range f.actions(job.ID) {
		newest = later(newest, a.UpdatedAt)
	}
	evs, err := f.store.Events(context.Background(), job.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		newest = later(newest, e.At)
	}
	if last.Sub(newest) < window/2 {
		t.Errorf("last record %s, newest action or event %s: the silent wait was not silent, the heartbeat is not what was tested", last, newest)
	}
	t.Logf("oldest last record during a %s silent wait: %s (window %s)", time.Since(*confirm.StartedAt).Round(time.Millisecond), oldest.Round(time.Millisecond), window)
	// The host went down meanwhile: the resumed job confirms it at once.
	f.site.Host("compute-01").Machine.SetState(sitesim.PowerOff, "test")
	f.resumeWith(job.ID, runner.Options{BootIDFile: boot})
	evs, err = f.store.Events(context.Background(), job.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	var resumed bool
	for _, e := range evs {
		resumed = resumed || e.Message == "job resumed after restart"
	}
	if !resumed {
		t.Error("no 'job resumed after restart' event")
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
