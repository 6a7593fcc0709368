package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/notify"
	"github.com/edgeops/shutdownd/sitesim"
)

// These tests play the edge of an outage the crash tests do not: the
// management machine itself went down (the batteries ran out), or the
// service stayed down for long, before the site was brought back by hand.
// An interrupted shutdown must then end failed, never power anything off.

// finishedHooks is a webhook receiver that keeps the job.finished bodies.
type finishedHooks struct {
	mu   sync.Mutex
	jobs []notify.JobPayload
}

func (h *finishedHooks) ServeHTTP(w http.ResponseWriter, r *http.Request) {
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
	h.jobs = append(h.jobs, p.Job)
	h.mu.Unlock()
}

func (h *finishedHooks) list() []notify.JobPayload {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]notify.JobPayload(nil), h.jobs...)
}

// withResume appends resume_window and a webhook to the rig's configuration
// and points the binary at a boot id file of the test's own (the
// environment variable is inherited by every service the test starts).
func (r *crashRig) withResume(window string, hookURL string) (bootFile string) {
	r.t.Helper()
	f, err := os.OpenFile(r.cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := fmt.Fprintf(f, "resume_window: %s\nnotify:\n  webhooks: [{url: %q}]\n", window, hookURL); err != nil {
		r.t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		r.t.Fatal(err)
	}
	bootFile = filepath.Join(r.dir, "boot_id")
	r.setBoot(bootFile, "6f1c1b0e-8a43-4b7e-9a53-000000000001")
	r.t.Setenv(envBootIDFile, bootFile)
	return bootFile
}

func (r *crashRig) setBoot(path, id string) {
	r.t.Helper()
	if err := os.WriteFile(path, []byte(id+"\n"), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

// traffic is what the site's peers have received that could stop or power
// off anything, and every SSH login.
func (r *crashRig) traffic() map[string]int {
	s := r.site
	t := map[string]int{"nova stop": s.Nova.StopRequests(), "nova list": s.Nova.ListRequests(), "nova show": s.Nova.ShowRequests()}
	for _, h := range s.Hosts {
		t[h.Spec.Name+" ssh logins"] = h.SSH.Logins()
		t[h.Spec.Name+" ssh commands"] = len(h.SSH.Commands())
		t[h.Spec.Name+" bmc power reads"] = h.BMC.PowerReads()
		t[h.Spec.Name+" bmc resets"] = len(h.BMC.Resets())
	}
	return t
}

// killDuringVMs starts the service, asks for a shutdown and SIGKILLs the
// service once two VMs are recorded off.
func (r *crashRig) killDuringVMs() {
	r.t.Helper()
	r.killAt([]killPoint{kpVMs2Off})
}

// lastRecord reads, from a copy of the database, when job 1 was last
// written to (the newest of its row, events, actions and steps).
func (r *crashRig) lastRecord() time.Time {
	r.t.Helper()
	db := copyAndOpen(r.t, r.db)
	defer db.Close()
	var s string
	err := db.QueryRow(`SELECT max(t) FROM (
		SELECT max(created_at, coalesce(started_at, ''), coalesce(touched_at, '')) AS t FROM jobs WHERE id = 1
		UNION ALL SELECT max(at) FROM events WHERE job_id = 1
		UNION ALL SELECT max(updated_at) FROM actions WHERE job_id = 1
		UNION ALL SELECT max(coalesce(finished_at, started_at)) FROM steps WHERE job_id = 1)`).Scan(&s)
	if err != nil {
		r.t.Fatal(err)
	}
	t, err := time.Parse("2006-01-02T15:04:05.000000Z", s)
	if err != nil {
		r.t.Fatal(err)
	}
	return t
}

// restartNotResumed starts the service again and checks that job 1 ends
// failed saying why, with its event and its job.finished webhook, and that
// the site received nothing during the whole life of that service.
func (r *crashRig) restartNotResumed(hooks *finishedHooks, want string) {
	t := r.t
	before := r.traffic()
	p := startService(t, r.cfg)
	db := r.watchDB()
	defer db.Close()
	// Settle runs before the service listens: the job is final by now.
	var state, errMsg string
	if err := db.QueryRow(`SELECT state, error FROM jobs WHERE id = 1`).Scan(&state, &errMsg); err != nil {
		t.Fatal(err)
	}
	if state != "failed" || !strings.HasPrefix(errMsg, "interrupted at ") || !strings.Contains(errMsg, ", not resumed: "+want) {
		t.Fatalf("job 1 %s %q; want failed, interrupted at ..., not resumed: %s\n%s", state, errMsg, want, p.log)
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE job_id = 1 AND level = 'error' AND message = 'not resumed after restart'`); n != 1 {
		t.Errorf("%d 'not resumed after restart' events, want 1", n)
	}
	if left := queryStrings(t, db, `SELECT target || ' ' || operation FROM actions WHERE job_id = 1 AND state IN ('pending', 'running')`); len(left) != 0 {
		t.Errorf("actions left open: %q", left)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(hooks.list()) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no job.finished webhook after 30s:\n%s", p.log)
		}
		time.Sleep(10 * time.Millisecond) // polling cadence
	}
	if j := hooks.list()[0]; j.ID != 1 || j.State != "failed" || j.Error != errMsg {
		t.Errorf("job.finished for job %d %s %q; want job 1 failed %q", j.ID, j.State, j.Error, errMsg)
	}
	// The whole life of the service, to its exit: nothing reached the site.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM:\n%s", code, p.log)
	}
	after := r.traffic()
	for k, v := range after {
		if before[k] != v {
			t.Errorf("after the restart the site received %s: %d -> %d", k, before[k], v)
		}
	}
	t.Logf("not resumed: %s", errMsg)
}

func newHooks(t *testing.T) (*finishedHooks, string) {
	h := &finishedHooks{}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return h, srv.URL
}

// kill -9, then the service stays down longer than resume_window: the
// restart does not resume the shutdown, and sends nothing to Nova, to any
// host or to any BMC.
func TestCrashRestartPastTheResumeWindowDoesNotResume(t *testing.T) {
	r := newCrashRig(t)
	hooks, url := newHooks(t)
	const window = 2 * time.Second
	r.withResume(window.String(), url)
	r.killDuringVMs()
	// Let the window pass: wall-clock time is the condition here.
	time.Sleep(time.Until(r.lastRecord().Add(window + 200*time.Millisecond)))
	r.restartNotResumed(hooks, "last record ")
	for _, vm := range r.vms {
		if vm.Status == "ACTIVE" && r.site.Nova.StopRequestsFor(vm.ID) > 1 {
			t.Errorf("VM %s got a second os-stop", vm.Name)
		}
	}
	for _, h := range r.site.Hosts {
		if h.Machine.State() != sitesim.PowerOn {
			t.Errorf("host %s is %s; nothing may power it off", h.Spec.Name, h.Machine.State())
		}
	}
}

// kill -9 in the host step, then the machine "reboots" (a new boot id) and
// the service starts at once: the shutdown is not resumed.
func TestCrashRestartAfterARebootDoesNotResume(t *testing.T) {
	r := newCrashRig(t)
	hooks, url := newHooks(t)
	boot := r.withResume("10m", url)
	r.killAt([]killPoint{kpGroup1})
	r.setBoot(boot, "6f1c1b0e-8a43-4b7e-9a53-000000000002")
	r.restartNotResumed(hooks, "the machine rebooted")
	for _, name := range []string{"storage-01", "storage-02", "control-01"} {
		if h := r.site.Host(name); h.Machine.State() != sitesim.PowerOn || h.SSH.PowerCommands() != 0 {
			t.Errorf("host %s is %s after %d power-offs; a later group must never be reached", name, h.Machine.State(), h.SSH.PowerCommands())
		}
	}
}

// kill -9 and an immediate restart, on the same boot and well inside a
// short resume_window, still resumes the same job to success.
func TestCrashRestartAtOnceResumesWithinAShortWindow(t *testing.T) {
	r := newCrashRig(t)
	_, url := newHooks(t)
	r.withResume("15s", url)
	r.killAt([]killPoint{kpNova3Stops, kpStorage2})
	r.finishAndCheck()
	db := copyAndOpen(t, r.db)
	defer db.Close()
	var boot string
	if err := db.QueryRow(`SELECT boot_id FROM jobs WHERE id = 1`).Scan(&boot); err != nil || boot != "6f1c1b0e-8a43-4b7e-9a53-000000000001" {
		t.Errorf("job 1 boot_id %q, %v", boot, err)
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE job_id = 1 AND message LIKE 'same boot, last record within resume_window%'`); n != 2 {
		t.Errorf("%d 'same boot ...' events, want 2 (one per restart)", n)
	}
}
