package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/csv"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeops/shutdownd/store"
)

func fileSums(t *testing.T, path string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	for _, p := range []string{path, path + "-wal"} {
		b, err := os.ReadFile(p)
		if err == nil {
			out[p] = sha256.Sum256(b)
		}
	}
	return out
}

func TestAudit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "shutdownd.db")
	st, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	job, _, err := st.CreateShutdown(ctx, store.NewJob{TokenName: "ups", RemoteAddr: "10.0.9.7", Reason: "utility power lost"})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.StartJob(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	step, err := st.EnsureStep(ctx, job.ID, 1, "Stopping OpenStack VMs")
	if err != nil {
		t.Fatal(err)
	}
	for vm, msg := range map[string]string{"web-1": "", "db-1": "still ACTIVE at stop timeout"} {
		state := store.ActionSucceeded
		if msg != "" {
			state = store.ActionFailed
		}
		if _, err := st.RecordAction(ctx, store.ActionKey{JobID: job.ID, StepID: step.ID, TargetKind: "vm", Target: vm,
			TargetID: "id-" + vm, Operation: "os-stop"}, state, "", msg); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.FinishJob(ctx, job.ID, store.StateFailed, "1 VM failed"); err != nil {
		t.Fatal(err)
	}

	// The service keeps the database open; the audit must neither write nor wait.
	before := fileSums(t, path)
	audit := func(args ...string) (string, error) {
		var out, errb bytes.Buffer
		err := dispatch(ctx, append([]string{"audit"}, append(args, "--database", path)...), &out, &errb)
		return out.String(), err
	}
	out, err := audit("jobs")
	if err != nil || !strings.Contains(out, "utility power lost") || !strings.Contains(out, "10.0.9.7") || !strings.Contains(out, "FAILED") {
		t.Fatalf("audit jobs: %v\n%s", err, out)
	}
	out, err = audit("job", "1", "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	var rep map[string][]map[string]string
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("job json: %v\n%s", err, out)
	}
	if len(rep["actions"]) != 2 || len(rep["steps"]) != 1 || len(rep["events"]) < 3 || rep["job"][0]["chain"] != "intact" {
		t.Fatalf("job report: %+v", rep)
	}
	out, err = audit("failures", "--format", "csv")
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var sawVM, sawJob bool
	for _, r := range rows[1:] {
		sawVM = sawVM || (r[5] == "db-1" && r[10] == "still ACTIVE at stop timeout" && r[3] == "Stopping OpenStack VMs")
		sawJob = sawJob || (r[4] == "" && r[10] == "1 VM failed")
	}
	if rows[0][0] != "job" || !sawVM || !sawJob || len(rows) != 3 {
		t.Fatalf("failures csv:\n%s", out)
	}
	if _, err := audit("verify"); err != nil {
		t.Fatalf("verify intact: %v", err)
	}
	if _, err := audit("job", "99"); err == nil {
		t.Fatal("audit of a missing job succeeded")
	}
	if _, err := audit("jobs", "--format", "xml"); err == nil {
		t.Fatal("bad format accepted")
	}
	if after := fileSums(t, path); len(after) != len(before) || func() bool {
		for k, v := range before {
			if after[k] != v {
				return true
			}
		}
		return false
	}() {
		t.Fatal("the audit changed the database files")
	}

	// Tampering with an event is caught by verify (exit status 1).
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{`DROP TRIGGER events_append_only_update`,
		`UPDATE events SET detail = 'all fine' WHERE id = (SELECT max(id) FROM events)`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	out, err = audit("verify")
	if err == nil || !strings.Contains(out, "BROKEN") {
		t.Fatalf("verify after tampering: %v\n%s", err, out)
	}
}

// TestAuditAsAReadOnlyUser runs the real binary as an account that may read
// the database but not write its directory (an auditor, or a copy on
// read-only media), with the service stopped: the audit works and leaves
// nothing beside the database. It needs root to switch users.
func TestAuditAsAReadOnlyUser(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI runs as root; this test switches to an unprivileged user")
		}
		t.Skip("needs root to run the audit as another user")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatalf("setpriv (util-linux) not found: %v", err)
	}
	ctx := context.Background()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} { // t.TempDir's are 0700
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "shutdownd.db")
	st, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.CreateShutdown(ctx, store.NewJob{TokenName: "ups", Reason: "utility power lost"}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil { // the service is stopped: no -wal, no -shm
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	// The binary must be reachable by the unprivileged user too.
	bin := filepath.Join(dir, "shutdownd")
	b, err := os.ReadFile(shutdowndBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadDir(dir)
	sum := fileSums(t, path)
	out, err := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", bin, "audit", "jobs", "--database", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "utility power lost") {
		t.Fatalf("audit jobs as an unprivileged user: %v\n%s", err, out)
	}
	after, _ := os.ReadDir(dir)
	if len(after) != len(before) {
		t.Errorf("the audit left files beside the database: %v -> %v", before, after)
	}
	if got := fileSums(t, path); got[path] != sum[path] {
		t.Error("the audit changed the database file")
	}
}
