package main

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/sitesim"
	"github.com/edgeops/shutdownd/store"

	_ "modernc.org/sqlite" // read-only watcher and integrity checks on copies
)

// These tests kill the real binary in the middle of a shutdown and start it
// again: the site (Nova, SSH hosts, BMCs) lives in the test process, so its
// state survives the service, as a real site outlives a crashed controller.

// procLog collects a subprocess's output and reports the address it serves.
type procLog struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	addr chan string
	sent bool
}

var servingRE = regexp.MustCompile(`msg="shutdownd serving" addr=(\S+)`)

func (p *procLog) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf.Write(b)
	if !p.sent {
		if m := servingRE.FindSubmatch(p.buf.Bytes()); m != nil {
			p.sent = true
			p.addr <- string(m[1])
		}
	}
	return len(b), nil
}

func (p *procLog) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.buf.String()
}

// svcProc is one run of `shutdownd serve`.
type svcProc struct {
	cmd    *exec.Cmd
	log    *procLog
	addr   string
	exited chan struct{}
}

// startProc starts `shutdownd args...` and returns at once.
func startProc(t *testing.T, args ...string) *svcProc {
	t.Helper()
	cmd := exec.Command(shutdowndBinary(t), args...)
	lg := &procLog{addr: make(chan string, 1)}
	cmd.Stdout, cmd.Stderr = lg, lg
	if err := cmd.Start(); err != nil {
		t.Fatalf("start shutdownd: %v", err)
	}
	p := &svcProc{cmd: cmd, log: lg, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			cmd.Process.Signal(syscall.SIGKILL)
			<-p.exited
		}
	})
	return p
}

// startService runs `shutdownd serve --config cfg` and waits until it
// accepts requests.
func startService(t *testing.T, cfg string) *svcProc {
	t.Helper()
	p := startProc(t, "serve", "--config", cfg)
	select {
	case p.addr = <-p.log.addr:
	case <-p.exited:
		t.Fatalf("shutdownd exited before serving (%v):\n%s", p.cmd.ProcessState, p.log)
	case <-time.After(30 * time.Second):
		t.Fatalf("shutdownd not serving after 30s:\n%s", p.log)
	}
	return p
}

func (p *svcProc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL: %v", err)
	}
	<-p.exited
}

// wait waits for the process to exit and returns its exit code.
func (p *svcProc) wait(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(within):
		t.Fatalf("shutdownd still running after %s:\n%s", within, p.log)
		return -1
	}
}

// crashRig is a small simulated site with a service configuration and a
// token, shared by the runs of one kill sequence.
type crashRig struct {
	t     *testing.T
	site  *sitesim.Site
	dir   string
	db    string
	cfg   string
	token string
	vms   []sitesim.VM // as they were before the shutdown
	kills []killRecord
}

// killRecord is what the store held right after one SIGKILL.
type killRecord struct {
	point   string
	step    string // the step running at the kill ("" before the first)
	actions map[int64]actionRow
}

type actionRow struct {
	key      string
	state    string
	finished string
	attempts int
}

// crashHosts are three host groups (compute, storage, control), all with a
// BMC, so a kill can land in each group.
func crashHosts() []sitesim.HostSpec {
	return []sitesim.HostSpec{
		{Name: "compute-01", Role: "compute"},
		{Name: "compute-02", Role: "compute"},
		{Name: "storage-01", Role: "storage"},
		{Name: "storage-02", Role: "storage"},
		{Name: "control-01", Role: "control"},
	}
}

// crashVMs mixes the statuses the runner treats differently; stop delays
// are spread so kills land while some VMs are stopping and others are off.
func crashVMs() []sitesim.VM {
	ms := time.Millisecond
	return []sitesim.VM{
		{Name: "web-01", Project: "web", StopDelay: 150 * ms},
		{Name: "web-02", Project: "web", StopDelay: 300 * ms},
		{Name: "web-03", Project: "web", StopDelay: 450 * ms},
		{Name: "web-04", Project: "web", StopDelay: 600 * ms},
		{Name: "web-05", Project: "web", StopDelay: 500 * ms},
		{Name: "db-01", Project: "db", StopDelay: 200 * ms},
		{Name: "db-02", Project: "db", StopDelay: 400 * ms},
		{Name: "db-03", Project: "db", Status: "ERROR", StopDelay: 250 * ms},
		{Name: "db-04", Project: "db", Status: "SHUTOFF"},
		{Name: "db-05", Project: "db", Status: "PAUSED"},
	}
}

func newCrashRig(t *testing.T) *crashRig {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	site, err := sitesim.Start(ctx, sitesim.Options{
		Dir: dir, Projects: []string{"web", "db"}, VMs: crashVMs(),
		NovaLatency: 5 * time.Millisecond, Hosts: crashHosts(),
		PowerOffDelay: 250 * time.Millisecond, SoftOffDelay: 250 * time.Millisecond,
		SSHLatency: 15 * time.Millisecond, Storage: "ceph", Seed: 1,
		StopTimeout: 20 * time.Second, PollInterval: 50 * time.Millisecond,
		HostOff: 10 * time.Second, BMCSoftOff: 5 * time.Second, BMCHardOff: 5 * time.Second,
		BMCPollEvery: 40 * time.Millisecond, Concurrency: 2,
	})
	if err != nil {
		t.Fatalf("start site: %v", err)
	}
	t.Cleanup(site.Close)
	r := &crashRig{t: t, site: site, dir: dir, db: filepath.Join(dir, "shutdownd.db"), vms: site.Nova.Servers()}
	r.cfg, err = site.WriteConfig("127.0.0.1:0", r.db)
	if err != nil {
		t.Fatal(err)
	}
	// The token is created before the service ever starts, by the same
	// store code the service runs.
	st, err := store.Open(ctx, r.db)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	r.token, err = store.NewTokenSecret()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateToken(ctx, "ups", store.HashToken(r.token), []string{"read", "shutdown"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	return r
}

// postShutdown asks the service to shut the site down and returns the job
// id from the Location header.
func (r *crashRig) postShutdown(p *svcProc) int64 {
	r.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+p.addr+"/shutdown", strings.NewReader(`{"reason":"crash test"}`))
	req.Header.Set("auth-token", r.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatalf("POST /shutdown: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		r.t.Fatalf("POST /shutdown: %d %s", resp.StatusCode, body)
	}
	var id int64
	if _, err := fmt.Sscanf(resp.Header.Get("Location"), "/jobs/%d", &id); err != nil {
		r.t.Fatalf("Location %q: %v", resp.Header.Get("Location"), err)
	}
	return id
}

// watchDB opens the database read-only, as an auditor would while the
// service runs; it never writes and never checkpoints.
func (r *crashRig) watchDB() *sql.DB {
	r.t.Helper()
	db, err := sql.Open("sqlite", "file:"+r.db+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		r.t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	return db
}

func count(t *testing.T, db *sql.DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func queryStrings(t *testing.T, db *sql.DB, query string) []string {
	t.Helper()
	rows, err := db.Query(query)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func jobState(t *testing.T, db *sql.DB, id int64) string {
	t.Helper()
	var st string
	err := db.QueryRow(`SELECT state FROM jobs WHERE id = ?`, id).Scan(&st)
	if err == sql.ErrNoRows {
		return ""
	}
	if err != nil {
		t.Fatalf("read job: %v", err)
	}
	return st
}

// killPoint is a moment in a shutdown, seen from the store or the site.
type killPoint struct {
	name    string
	reached func(r *crashRig, db *sql.DB) bool
}

// actionsAtLeast is reached once n action rows match where.
func actionsAtLeast(name string, n int, where string) killPoint {
	return killPoint{name, func(r *crashRig, db *sql.DB) bool {
		return count(r.t, db, `SELECT count(*) FROM actions WHERE `+where) >= n
	}}
}

func siteReached(name string, f func(*sitesim.Site) bool) killPoint {
	return killPoint{name, func(r *crashRig, _ *sql.DB) bool { return f(r.site) }}
}

func machineOff(names ...string) func(*sitesim.Site) bool {
	return func(s *sitesim.Site) bool {
		for _, n := range names {
			if s.Host(n).Machine.State() == sitesim.PowerOff {
				return true
			}
		}
		return false
	}
}

func firstShutoff(s *sitesim.Site) bool {
	for _, vm := range s.Nova.Servers() {
		if !s.Nova.ShutoffAt(vm.ID).IsZero() {
			return true
		}
	}
	return false
}

// Kill points, by step. Counts only grow during a job, so each point stays
// reached once it is; a point already passed after a restart kills the
// service while it resumes, which is a kill point too.
var (
	kpJobCreated   = killPoint{"job created", func(r *crashRig, db *sql.DB) bool { return count(r.t, db, `SELECT count(*) FROM jobs`) >= 1 }}
	kpFirstVMBegun = actionsAtLeast("vm: first os-stop recorded", 1, `target_kind = 'vm' AND operation = 'os-stop'`)
	kpNova3Stops   = siteReached("vm: Nova received 3 os-stop", func(s *sitesim.Site) bool { return s.Nova.StopRequests() >= 3 })
	kpNovaShutoff  = siteReached("vm: first VM SHUTOFF at Nova", firstShutoff)
	kpVMs2Off      = actionsAtLeast("vm: 2 VMs recorded SHUTOFF", 2, `target_kind = 'vm' AND state = 'succeeded' AND detail = 'SHUTOFF'`)
	kpVMs6Off      = actionsAtLeast("vm: 6 VMs recorded off", 6, `target_kind = 'vm' AND state = 'succeeded'`)
	kpStorageStep  = killPoint{"storage: step begun", func(r *crashRig, db *sql.DB) bool {
		return count(r.t, db, `SELECT count(*) FROM steps WHERE name = 'storage'`) >= 1
	}}
	kpStorage1  = siteReached("storage: first ceph command received", func(s *sitesim.Site) bool { return len(s.Host("storage-01").SSH.Commands()) >= 1 })
	kpStorage2  = actionsAtLeast("storage: 2 commands recorded", 2, `target_kind = 'storage'`)
	kpStorage5  = actionsAtLeast("storage: 5 commands recorded", 5, `target_kind = 'storage'`)
	kpStorage8  = actionsAtLeast("storage: 8 commands recorded", 8, `target_kind = 'storage'`)
	kpGroup1    = actionsAtLeast("hosts: group 1 begun", 1, `target_kind = 'host' AND operation = 'power-off'`)
	kpComputeOf = siteReached("hosts: a compute host Off, not yet confirmed", machineOff("compute-01", "compute-02"))
	kpHostDone  = actionsAtLeast("hosts: one host confirmed Off", 1, `target_kind = 'host' AND operation = 'power-off' AND state = 'succeeded'`)
	kpGroup2    = actionsAtLeast("hosts: group 2 begun", 1, `target_kind = 'host' AND operation = 'power-off' AND target LIKE 'storage-%'`)
	kpStorageSS = siteReached("hosts: storage-01 received power-off", func(s *sitesim.Site) bool { return s.Host("storage-01").SSH.PowerCommands() >= 1 })
	kpGroup3    = actionsAtLeast("hosts: group 3 begun", 1, `target_kind = 'host' AND operation = 'power-off' AND target = 'control-01'`)
	kpControlSS = siteReached("hosts: control-01 received power-off", func(s *sitesim.Site) bool { return s.Host("control-01").SSH.PowerCommands() >= 1 })
)

// crashPool is every kill point in the order a shutdown reaches them.
var crashPool = []killPoint{
	kpJobCreated, kpFirstVMBegun, kpNova3Stops, kpNovaShutoff, kpVMs2Off, kpVMs6Off,
	kpStorageStep, kpStorage1, kpStorage2, kpStorage5, kpStorage8,
	kpGroup1, kpComputeOf, kpHostDone, kpGroup2, kpStorageSS, kpGroup3, kpControlSS,
}

// randomKillPoints picks n points of the pool, in job order. The seed is
// logged; CRASH_SEED replays a run.
func randomKillPoints(t *testing.T, n int) []killPoint {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("CRASH_SEED"); v != "" {
		fmt.Sscan(v, &seed)
	}
	t.Logf("random kill points: CRASH_SEED=%d", seed)
	idx := rand.New(rand.NewPCG(seed, seed)).Perm(len(crashPool))[:n]
	slices.Sort(idx)
	var out []killPoint
	for _, i := range idx {
		out = append(out, crashPool[i])
	}
	return out
}

// TestCrashSIGKILLResumesSameJob kills the service with SIGKILL at 22
// points spread over the three steps (several per run, so a resumed job is
// killed again) and proves that each run finishes the same job with a
// complete, duplicate-free record and no repeated stop or power-off.
func TestCrashSIGKILLResumesSameJob(t *testing.T) {
	runs := [][]killPoint{
		{kpJobCreated, kpFirstVMBegun, kpStorage2, kpGroup1},
		{kpNova3Stops, kpVMs2Off, kpStorage5, kpComputeOf, kpGroup3},
		{kpVMs6Off, kpStorageStep, kpStorage8, kpGroup2, kpControlSS},
		{kpNovaShutoff, kpStorage1, kpHostDone, kpStorageSS},
		randomKillPoints(t, 4),
	}
	start := time.Now()
	total := 0
	bySteps := map[string]int{}
	for i, points := range runs {
		t.Run(fmt.Sprintf("run%d", i+1), func(t *testing.T) {
			r := newCrashRig(t)
			r.killAt(points)
			r.finishAndCheck()
			for _, k := range r.kills {
				bySteps[k.step]++
			}
			total += len(r.kills)
		})
	}
	t.Logf("%d kills in %s, by step running at the kill: %v", total, time.Since(start).Round(time.Millisecond), bySteps)
	if total < 20 {
		t.Errorf("only %d kills, want at least 20", total)
	}
	for _, s := range []string{"openstack", "storage", "hosts"} {
		if bySteps[s] == 0 {
			t.Errorf("no kill landed in step %s: %v", s, bySteps)
		}
	}
}

// killAt starts the service, asks for a shutdown, and SIGKILLs the service
// at each point in turn, restarting it in between.
func (r *crashRig) killAt(points []killPoint) {
	t := r.t
	for i, kp := range points {
		p := startService(t, r.cfg)
		if i == 0 {
			if id := r.postShutdown(p); id != 1 {
				t.Fatalf("job id %d, want 1", id)
			}
		}
		db := r.watchDB()
		deadline := time.Now().Add(30 * time.Second)
		for !kp.reached(r, db) {
			if st := jobState(t, db, 1); st == "succeeded" || st == "failed" || st == "cancelled" {
				t.Fatalf("kill point %q: job ended %s before it was reached:\n%s", kp.name, st, p.log)
			}
			if time.Now().After(deadline) {
				t.Fatalf("kill point %q not reached in 30s:\n%s", kp.name, p.log)
			}
			time.Sleep(2 * time.Millisecond) // polling cadence, not a wait for the outcome
		}
		p.kill(t)
		db.Close()
		r.afterKill(kp.name)
	}
}

// afterKill checks the database a SIGKILL left behind, on a copy so the
// restarted service meets exactly what the crash left: integrity, the job
// still active, and every external action the site received recorded
// before it happened.
func (r *crashRig) afterKill(point string) {
	t := r.t
	db := copyAndOpen(t, r.db)
	defer db.Close()
	var res string
	if err := db.QueryRow(`PRAGMA integrity_check`).Scan(&res); err != nil || res != "ok" {
		t.Fatalf("after kill at %q: integrity_check = %q, %v", point, res, err)
	}
	if n := count(t, db, `SELECT count(*) FROM pragma_foreign_key_check`); n != 0 {
		t.Fatalf("after kill at %q: %d foreign key violations", point, n)
	}
	if st := jobState(t, db, 1); st != "pending" && st != "running" {
		t.Fatalf("after kill at %q: job state %q, want pending or running", point, st)
	}
	rec := killRecord{point: point, actions: readActions(t, db)}
	// The step being worked on: the last one created (it may still be
	// pending if the kill came between creating and starting it).
	db.QueryRow(`SELECT name FROM steps WHERE job_id = 1 ORDER BY seq DESC LIMIT 1`).Scan(&rec.step)

	// Write-ahead: the site never saw an action the store does not hold.
	keys := map[string]bool{}
	for _, a := range rec.actions {
		keys[a.key] = true
	}
	for _, vm := range r.vms {
		if r.site.Nova.StopRequestsFor(vm.ID) > 0 && !keys[actionKey("vm", vm.Name, vm.ID, "os-stop")] {
			t.Errorf("after kill at %q: VM %s got os-stop with no action recorded", point, vm.Name)
		}
	}
	for _, h := range r.site.Hosts {
		for _, c := range h.SSH.Commands() {
			if isPowerOff(c.Line) {
				if !keys[actionKey("host", h.Spec.Name, "", "ssh-poweroff")] {
					t.Errorf("after kill at %q: host %s got %q with no action recorded", point, h.Spec.Name, c.Line)
				}
				continue
			}
			found := false
			for k := range keys {
				if strings.HasPrefix(k, "storage\x00"+h.Spec.Name+"\x00"+c.Line+"\x00") {
					found = true
				}
			}
			if !found {
				t.Errorf("after kill at %q: host %s got %q with no action recorded", point, h.Spec.Name, c.Line)
			}
		}
	}
	r.kills = append(r.kills, rec)
	t.Logf("killed at %q (step %q): %d actions recorded", point, rec.step, len(rec.actions))
}

func isPowerOff(line string) bool { return strings.HasSuffix(line, "poweroff") }

func actionKey(kind, target, targetID, op string) string {
	return kind + "\x00" + target + "\x00" + targetID + "\x00" + op
}

func readActions(t *testing.T, db *sql.DB) map[int64]actionRow {
	t.Helper()
	rows, err := db.Query(`SELECT id, target_kind, target, target_id, operation, state, coalesce(finished_at, ''), attempts FROM actions WHERE job_id = 1`)
	if err != nil {
		t.Fatalf("read actions: %v", err)
	}
	defer rows.Close()
	out := map[int64]actionRow{}
	for rows.Next() {
		var id int64
		var kind, target, targetID, op string
		var a actionRow
		if err := rows.Scan(&id, &kind, &target, &targetID, &op, &a.state, &a.finished, &a.attempts); err != nil {
			t.Fatal(err)
		}
		a.key = actionKey(kind, target, targetID, op)
		out[id] = a
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// copyAndOpen copies the database and its WAL (not the shared-memory index,
// which SQLite rebuilds) and opens the copy, so checks never touch the file
// the next service start recovers.
func copyAndOpen(t *testing.T, path string) *sql.DB {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy.db")
	for _, suffix := range []string{"", "-wal"} {
		b, err := os.ReadFile(path + suffix)
		if os.IsNotExist(err) && suffix != "" {
			continue
		}
		if err != nil {
			t.Fatalf("copy database: %v", err)
		}
		if err := os.WriteFile(dst+suffix, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	db, err := sql.Open("sqlite", dst+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	return db
}

// finishAndCheck starts the service one last time, waits for the job and
// checks the record and the site.
func (r *crashRig) finishAndCheck() {
	t := r.t
	p := startService(t, r.cfg)
	db := r.watchDB()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st := jobState(t, db, 1)
		if st == "succeeded" || st == "failed" || st == "cancelled" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job not finished after the last restart (state %s):\n%s", st, p.log)
		}
		time.Sleep(5 * time.Millisecond) // polling cadence
	}
	db.Close()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM:\n%s", code, p.log)
	}
	r.checkRecord(p.log.String())
	r.checkSite()
}

// checkRecord: one job, succeeded; one row per VM, storage command and
// host; nothing left running; and every action that was final at a kill
// is unchanged (done actions are never redone).
func (r *crashRig) checkRecord(logs string) {
	t := r.t
	db := copyAndOpen(t, r.db)
	defer db.Close()
	var kind, state, errMsg string
	if err := db.QueryRow(`SELECT kind, state, error FROM jobs WHERE id = 1`).Scan(&kind, &state, &errMsg); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, `SELECT count(*) FROM jobs`); n != 1 || kind != "shutdown" || state != "succeeded" || errMsg != "" {
		var evs []string
		rows, _ := db.Query(`SELECT level, message, detail FROM events WHERE job_id = 1 ORDER BY id`)
		for rows != nil && rows.Next() {
			var l, m, d string
			rows.Scan(&l, &m, &d)
			evs = append(evs, l+" "+m+" "+d)
		}
		t.Fatalf("jobs: %d rows; job 1 %s %s error %q\nevents:\n%s\nlast service log:\n%s", n, kind, state, errMsg, strings.Join(evs, "\n"), logs)
	}
	if n := count(t, db, `SELECT count(*) FROM steps WHERE job_id = 1 AND state = 'succeeded'`); n != 3 {
		t.Errorf("%d steps succeeded, want 3", n)
	}
	if left := queryStrings(t, db, `SELECT target_kind || ' ' || target || ' ' || operation || ' ' || state FROM actions WHERE state IN ('pending', 'running')`); len(left) != 0 {
		t.Errorf("actions left pending or running: %q", left)
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE job_id = 1 AND message = 'job resumed after restart'`); n == 0 {
		t.Errorf("no 'job resumed after restart' event")
	}

	final := readActions(t, db)
	perTarget := map[string]int{}
	for _, a := range final {
		f := strings.Split(a.key, "\x00")
		switch {
		case f[0] == "vm":
			perTarget["vm "+f[2]]++
		case f[0] == "storage":
			perTarget["storage "+f[1]+" "+f[2]]++
		case f[0] == "host" && f[3] == "power-off":
			perTarget["host "+f[1]]++
		}
	}
	for _, vm := range r.vms {
		if n := perTarget["vm "+vm.ID]; n != 1 {
			t.Errorf("VM %s: %d action rows, want 1", vm.Name, n)
		}
	}
	var storageRows int
	for k, n := range perTarget {
		if strings.HasPrefix(k, "storage ") {
			storageRows++
			if n != 1 {
				t.Errorf("%s: %d rows, want 1", k, n)
			}
		}
	}
	if storageRows != 8 {
		t.Errorf("%d storage commands recorded, want 8 (6 Ceph flags, 2 stops)", storageRows)
	}
	for _, h := range crashHosts() {
		if n := perTarget["host "+h.Name]; n != 1 {
			t.Errorf("host %s: %d power-off rows, want 1", h.Name, n)
		}
	}
	for _, vm := range r.vms {
		want := "succeeded"
		if vm.Status == "PAUSED" {
			want = "skipped"
		}
		for _, a := range final {
			if strings.HasPrefix(a.key, "vm\x00"+vm.Name+"\x00"+vm.ID) && a.state != want {
				t.Errorf("VM %s (%s): action %s, want %s", vm.Name, vm.Status, a.state, want)
			}
		}
	}
	for _, k := range r.kills {
		for id, before := range k.actions {
			after, ok := final[id]
			switch {
			case !ok:
				t.Errorf("action %d (%q) recorded at kill %q is lost", id, before.key, k.point)
			case after.key != before.key:
				t.Errorf("action %d changed target: %q -> %q", id, before.key, after.key)
			case before.finished != "" && (after.state != before.state || after.finished != before.finished || after.attempts != before.attempts):
				t.Errorf("action %q was %s at kill %q and was redone: now %s, attempts %d -> %d",
					before.key, before.state, k.point, after.state, before.attempts, after.attempts)
			}
		}
	}
}

// checkSite: everything is off, no VM got an os-stop after it was SHUTOFF,
// no host got a power-off after it was Off, and no BMC was asked to power
// off a host that the SSH command had already taken down.
func (r *crashRig) checkSite() {
	t := r.t
	nova := r.site.Nova
	for _, vm := range r.vms {
		stops := nova.StopTimesFor(vm.ID)
		switch vm.Status {
		case "SHUTOFF", "PAUSED":
			if len(stops) != 0 {
				t.Errorf("VM %s was %s and got %d os-stop", vm.Name, vm.Status, len(stops))
			}
			continue
		}
		if st := nova.Status(vm.ID); st != "SHUTOFF" {
			t.Errorf("VM %s is %s, want SHUTOFF", vm.Name, st)
			continue
		}
		off := nova.ShutoffAt(vm.ID)
		for i, at := range stops {
			if at.After(off) {
				t.Errorf("VM %s: os-stop #%d at %s, %s after it reached SHUTOFF", vm.Name, i+1, at.Format("15:04:05.000"), at.Sub(off))
			}
		}
	}
	for _, h := range r.site.Hosts {
		m := h.Machine
		if m.State() != sitesim.PowerOff {
			t.Errorf("host %s is %s, want Off", h.Spec.Name, m.State())
			continue
		}
		offs := 0
		for _, ev := range m.History() {
			if ev.State == sitesim.PowerOff {
				offs++
			}
		}
		if offs != 1 {
			t.Errorf("host %s powered off %d times: %v", h.Spec.Name, offs, m.History())
		}
		offAt := m.OffAt()
		for _, c := range h.SSH.Commands() {
			if isPowerOff(c.Line) && c.At.After(offAt) {
				t.Errorf("host %s: power-off command at %s, after it was Off at %s", h.Spec.Name, c.At.Format("15:04:05.000"), offAt.Format("15:04:05.000"))
			}
		}
		// The SSH power-off always works on this site, so a BMC reset can
		// only be a power-off repeated after a restart.
		if rs := h.BMC.Resets(); len(rs) != 0 {
			t.Errorf("host %s: BMC got resets %v; the SSH power-off was enough", h.Spec.Name, rs)
		}
	}
	for _, name := range []string{"storage-01", "storage-02"} {
		if !r.site.Host(name).SSH.CephStopped() {
			t.Errorf("%s: ceph.target not stopped", name)
		}
	}
	if flags := r.site.Host("storage-01").SSH.CephFlags(); len(flags) != 6 {
		t.Errorf("Ceph flags %v, want 6", flags)
	}
}

// TestCrashSIGTERMStopsCleanlyAndResumes stops the service with SIGTERM in
// each step: it exits 0 at once, stops listening, leaves the job active
// with nothing recorded as failed because of the stop, and the job resumes
// and succeeds after a restart.
func TestCrashSIGTERMStopsCleanlyAndResumes(t *testing.T) {
	r := newCrashRig(t)
	for i, kp := range []killPoint{kpVMs2Off, kpStorage2, kpComputeOf} {
		p := startService(t, r.cfg)
		if i == 0 {
			r.postShutdown(p)
		}
		db := r.watchDB()
		deadline := time.Now().Add(30 * time.Second)
		for !kp.reached(r, db) {
			if time.Now().After(deadline) {
				t.Fatalf("point %q not reached:\n%s", kp.name, p.log)
			}
			time.Sleep(2 * time.Millisecond) // polling cadence
		}
		db.Close()
		start := time.Now()
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		code := p.wait(t, 10*time.Second)
		took := time.Since(start)
		if code != 0 {
			t.Errorf("SIGTERM at %q: exit code %d:\n%s", kp.name, code, p.log)
		}
		if took > 3*time.Second {
			t.Errorf("SIGTERM at %q: exit took %s", kp.name, took)
		}
		if c, err := net.DialTimeout("tcp", p.addr, time.Second); err == nil {
			c.Close()
			t.Errorf("SIGTERM at %q: %s still accepts connections", kp.name, p.addr)
		}
		if !strings.Contains(p.log.String(), "signal received") {
			t.Errorf("SIGTERM at %q: no stop message in the log:\n%s", kp.name, p.log)
		}
		r.afterKill("SIGTERM at " + kp.name)
		check := copyAndOpen(t, r.db)
		if failed := queryStrings(t, check, `SELECT target_kind || ' ' || target || ' ' || operation || ': ' || error FROM actions WHERE state = 'failed'`); len(failed) != 0 {
			t.Errorf("SIGTERM at %q recorded failures: %q", kp.name, failed)
		}
		check.Close()
		t.Logf("SIGTERM at %q: exit %d after %s", kp.name, code, took.Round(time.Millisecond))
	}
	r.finishAndCheck()
}

// TestStartupRefusesBadDatabase: a database that is not SQLite, or that
// cannot be created, stops the service at start with a clear error and a
// non-zero exit, before anything listens.
func TestStartupRefusesBadDatabase(t *testing.T) {
	r := newCrashRig(t)
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, bytes.Repeat([]byte("this is not a database\n"), 400), 0o600); err != nil {
		t.Fatal(err)
	}
	// A real database whose pages from the fourth on are overwritten
	// (schema pages included): the header is fine, the content is not.
	damaged := filepath.Join(dir, "damaged.db")
	st, err := store.Open(context.Background(), damaged)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if _, err := st.CreateToken(context.Background(), fmt.Sprintf("t%d", i), store.HashToken(fmt.Sprint(i)), []string{"read"}, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(damaged)
	if err != nil {
		t.Fatal(err)
	}
	for off := 3 * 4096; off+64 <= len(b); off += 4096 {
		copy(b[off:], bytes.Repeat([]byte{0xff}, 64))
	}
	if err := os.WriteFile(damaged, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, db, want string
	}{
		{"garbage file", garbage, "not a database"},
		{"damaged schema pages", damaged, "malformed"},
		{"parent is a file", filepath.Join(notDir, "shutdownd.db"), "not a directory"},
		{"missing directory", filepath.Join(dir, "missing", "shutdownd.db"), "no such file or directory"},
	}
	if os.Geteuid() != 0 {
		ro := filepath.Join(dir, "readonly")
		if err := os.Mkdir(ro, 0o500); err != nil {
			t.Fatal(err)
		}
		cases = append(cases, struct{ name, db, want string }{"unwritable directory", filepath.Join(ro, "shutdownd.db"), "permission denied"})
	} else {
		t.Log("running as root: directory permissions do not apply; the unwritable cases are a file as parent and a missing directory")
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			ln.Close()
			cfg, err := r.site.WriteConfig(addr, tc.db)
			if err != nil {
				t.Fatal(err)
			}
			p := startProc(t, "serve", "--config", cfg)
			code := p.wait(t, 20*time.Second)
			out := p.log.String()
			if code == 0 {
				t.Fatalf("exit code 0 with database %s:\n%s", tc.db, out)
			}
			if !strings.Contains(out, tc.db) || !strings.Contains(out, tc.want) {
				t.Errorf("error does not name the database and the reason %q:\n%s", tc.want, out)
			}
			if strings.Contains(out, "shutdownd serving") {
				t.Errorf("service started serving before failing:\n%s", out)
			}
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				t.Errorf("something listens on %s", addr)
			}
			t.Logf("exit %d: %s", code, strings.TrimSpace(out))
		})
	}
}
