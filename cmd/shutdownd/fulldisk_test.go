package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/sitesim"
	"github.com/edgeops/shutdownd/store"
)

// TestFullDiskNeverStopsTheShutdown runs a shutdown of the simulated site
// with the database on a small tmpfs that a filler file fills as the first
// os-stop reaches Nova: every host is still powered off, the status says
// records are not being saved, and once the filler is removed every record
// is in the database, as a run on a roomy disk records them, with the
// event chain whole and the job succeeded.
func TestFullDiskNeverStopsTheShutdown(t *testing.T) {
	want := referenceRecords(t)

	r := newCrashRig(t)
	disk := mountSmallDisk(t, 16)
	r.useDatabase(filepath.Join(disk, "shutdownd.db"))
	p := startService(t, r.cfg)
	id := r.postShutdown(p)

	waitFor(t, "Nova's first os-stop", 30*time.Second, func() bool { return r.site.Nova.StopRequests() >= 1 })
	filler := fillDisk(t, disk)
	waitFor(t, "every host off", 60*time.Second, func() bool {
		for _, h := range r.site.Hosts {
			if h.Machine.State() != sitesim.PowerOff {
				return false
			}
		}
		return true
	})
	var step string
	waitFor(t, "status saying records are not saved", 30*time.Second, func() bool {
		step = r.status(p)
		return strings.Contains(step, "Records not being saved")
	})
	t.Logf("current_step during the outage: %s", step)
	if m := r.get(p, "/metrics"); !metricAbove(m, "shutdownd_records_unsaved", 0) || !metricAbove(m, "shutdownd_store_write_failures_total", 0) {
		t.Errorf("metrics during the outage do not show it:\n%s", grepLines(m, "records_unsaved", "store_write_failures"))
	}
	db := r.watchDB()
	defer db.Close()
	if n := count(t, db, `SELECT count(*) FROM actions WHERE target_kind = 'host' AND operation = 'power-off' AND state = 'succeeded'`); n == len(r.site.Hosts) {
		t.Fatalf("every host power-off is on the full disk: the disk did not refuse the writes")
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the job's final state on disk", 90*time.Second, func() bool { return jobState(t, db, id) == "succeeded" })
	r.checkSite()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.wait(t, 30*time.Second)
	got := readRecords(t, r.db, id)
	late := slices.Index(got.events, "warn records written late: the store refused writes")
	if late < 0 {
		t.Errorf("no event says records were written late: %q", got.events)
	} else {
		got.events = slices.Delete(got.events, late, late+1)
	}
	compareRecords(t, got, want)
	if !strings.Contains(p.log.String(), "record not saved (store refused the write); held in memory") {
		t.Error("the held records are not in the service log")
	}
}

// referenceRecords runs the same shutdown on a roomy disk.
func referenceRecords(t *testing.T) records {
	r := newCrashRig(t)
	p := startService(t, r.cfg)
	id := r.postShutdown(p)
	db := r.watchDB()
	defer db.Close()
	waitFor(t, "the reference job to end", 60*time.Second, func() bool { return jobState(t, db, id) == "succeeded" })
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.wait(t, 30*time.Second)
	return readRecords(t, r.db, id)
}

// records is what a job left in the database, without ids and times.
type records struct {
	actions, steps, events []string
}

func readRecords(t *testing.T, path string, id int64) records {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var rec records
	as, err := st.Actions(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range as {
		rec.actions = append(rec.actions, fmt.Sprintf("%s %s %s %s: %s x%d finished=%v", a.TargetKind, a.Target, a.TargetID, a.Operation,
			a.State, a.Attempts, a.FinishedAt != nil))
	}
	steps, err := st.Steps(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range steps {
		rec.steps = append(rec.steps, fmt.Sprintf("%d %s %s %q %q", s.Seq, s.Name, s.State, s.Detail, s.Error))
	}
	evs, err := st.Events(ctx, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		rec.events = append(rec.events, string(e.Level)+" "+e.Message)
	}
	rep, err := st.VerifyChain(ctx, id)
	if err != nil || !rep.OK || rep.Events != len(evs) {
		t.Errorf("event chain of job %d: %+v %v", id, rep, err)
	}
	j, err := st.Job(ctx, id)
	if err != nil || j.State != store.StateSucceeded || j.CurrentStep != "" || j.FinishedAt == nil {
		t.Errorf("job %d: %s, current_step %q, finished %v (%v)", id, j.State, j.CurrentStep, j.FinishedAt, err)
	}
	return rec
}

// compareRecords compares as sets with counts: the order of actions and
// events of parallel work differs from run to run.
func compareRecords(t *testing.T, got, want records) {
	t.Helper()
	for _, c := range []struct {
		what      string
		got, want []string
	}{{"actions", got.actions, want.actions}, {"steps", got.steps, want.steps}, {"events", got.events, want.events}} {
		g, w := slices.Sorted(slices.Values(c.got)), slices.Sorted(slices.Values(c.want))
		if !slices.Equal(g, w) {
			t.Errorf("%s differ from a run on a roomy disk:\n got %q\nwant %q", c.what, g, w)
		}
	}
}

// useDatabase points the rig's service at path, with the rig's token.
func (r *crashRig) useDatabase(path string) {
	t := r.t
	ctx := context.Background()
	var err error
	r.db = path
	if r.cfg, err = r.site.WriteConfig("127.0.0.1:0", path); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateToken(ctx, "ups", store.HashToken(r.token), []string{"read", "shutdown"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
}

func (r *crashRig) get(p *svcProc, path string) string {
	r.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+p.addr+path, nil)
	req.Header.Set("auth-token", r.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		r.t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	return string(body)
}

// status is the shutdown status's current_step.
func (r *crashRig) status(p *svcProc) string {
	var s struct {
		Data struct {
			CurrentStep string `json:"current_step"`
		} `json:"data"`
	}
	body := r.get(p, "/shutdown/status")
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		r.t.Fatalf("status %s: %v", body, err)
	}
	return s.Data.CurrentStep
}

func metricAbove(text, name string, v float64) bool {
	for _, l := range strings.Split(text, "\n") {
		var x float64
		if rest, ok := strings.CutPrefix(l, name+" "); ok {
			if _, err := fmt.Sscan(rest, &x); err == nil && x > v {
				return true
			}
		}
	}
	return false
}

func grepLines(text string, subs ...string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		for _, s := range subs {
			if strings.Contains(l, s) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

// mountSmallDisk mounts a tmpfs of mib MiB, unmounted at the end of the
// test. It needs root: under CI=true its absence is a failure, elsewhere
// the test is skipped with the reason.
func mountSmallDisk(t *testing.T, mib int) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dm,mode=0700", mib), "tmpfs", dir).CombinedOutput()
	if err != nil {
		msg := fmt.Sprintf("mount a tmpfs for the full-disk test (needs root): %v: %s", err, out)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fillDisk writes a file until the file system has no byte left.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 256<<10)
	for n := len(buf); n > 0; {
		if _, err := f.Write(buf[:n]); err != nil {
			n /= 2 // what is left is smaller than a write
		}
	}
	return path
}

// waitFor polls cond until it holds, failing the test after within.
func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		<-tick.C
	}
}
