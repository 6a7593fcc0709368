package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeops/shutdownd/store"
)

// writeTokenFile stores the token as an operator would: alone, mode 0600.
func writeTokenFile(t *testing.T, tok string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestClientAgainstService drives every client action against the real
// service and a simulated site: a simulation and a shutdown followed with
// --wait (exit 0), a failing simulation (exit 1), queries and errors.
func TestClientAgainstService(t *testing.T) {
	svc := startE2E(t, nil)
	tf := writeTokenFile(t, svc.token)
	client := func(args ...string) (string, string, error) {
		return runCLI(append(append([]string{"client"}, args...), "--url", svc.url, "--token-file", tf)...)
	}

	out, errOut, err := client("simulate", "--wait", "--reason", "weekly check")
	if err != nil {
		t.Fatalf("simulate --wait: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
	}
	for _, want := range []string{"simulate accepted: job 1", "job 1 simulation running", "job 1 succeeded"} {
		if !strings.Contains(out, want) {
			t.Errorf("simulate --wait output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\r") {
		t.Errorf("output to a buffer (not a terminal) contains \\r:\n%q", out)
	}
	j, err := svc.main.Store.Job(context.Background(), 1)
	if err != nil || j.State != store.StateSucceeded || j.Reason != "weekly check" {
		t.Fatalf("job 1 = %+v, %v; want succeeded with the reason", j, err)
	}

	// A host that refuses SSH makes the simulation fail: exit status 1
	// (an error that is not a usage error), with the failure shown.
	h := svc.demo.Site.Host("compute-02")
	h.SSH.SetReachable(false)
	out, _, err = client("simulate", "--wait")
	h.SSH.SetReachable(true)
	var jf jobFailedError
	if !errors.As(err, &jf) || jf.state != "failed" || jf.id != 2 {
		t.Fatalf("simulate --wait with an unreachable host: err %v, want job 2 failed\n%s", err, out)
	}
	if !strings.Contains(out, "job 2 failed") || !strings.Contains(out, "compute-02") {
		t.Errorf("failed simulation output does not name the job and the host:\n%s", out)
	}

	out, _, err = client("status")
	if err != nil || !strings.Contains(out, "simulation  job 2 failed") || !strings.Contains(out, "shutdown    never run") ||
		!strings.Contains(out, "startup     never run") {
		t.Errorf("status: %v\n%s", err, out)
	}
	out, _, err = client("jobs", "--kind", "simulation")
	if err != nil || !strings.Contains(out, "weekly check") || strings.Count(out, "\n") != 3 {
		t.Errorf("jobs: %v\n%s", err, out)
	}
	out, _, err = client("job", "2")
	if err != nil || !strings.Contains(out, "STEPS") || !strings.Contains(out, "failed") || !strings.Contains(out, "host compute-02") {
		t.Errorf("job 2: %v\n%s", err, out)
	}
	out, _, err = client("job", "1", "--json")
	var detail struct {
		Job     struct{ ID int64 }
		Actions []json.RawMessage
	}
	if err != nil || json.Unmarshal([]byte(out), &detail) != nil || detail.Job.ID != 1 || len(detail.Actions) == 0 {
		t.Errorf("job 1 --json: %v\n%s", err, out)
	}
	// job --wait on a finished job reports its result at once.
	if _, _, err := client("job", "1", "--wait"); err != nil {
		t.Errorf("job 1 --wait (succeeded): %v", err)
	}
	if _, _, err := client("job", "2", "--wait"); !errors.As(err, &jf) {
		t.Errorf("job 2 --wait (failed): %v, want a job failure", err)
	}

	// The shutdown of the simulated site, followed to its end.
	out, _, err = client("shutdown", "--wait", "--reason", "utility power lost", "--expected-recovery", "2030-01-01T00:00:00Z")
	if err != nil || !strings.Contains(out, "job 3 succeeded") {
		t.Fatalf("shutdown --wait: %v\n%s", err, out)
	}
	for _, h := range svc.demo.Site.Hosts {
		if st := h.Machine.State(); st != "Off" {
			t.Errorf("host %s is %s after the shutdown", h.Spec.Name, st)
		}
	}
	out, _, err = client("cancel", "3")
	if err != nil || !strings.Contains(out, "already succeeded") {
		t.Errorf("cancel of a finished job: %v\n%s", err, out)
	}

	// API errors are failures (exit 1), not usage errors.
	var ue usageError
	if _, _, err := client("job", "99"); err == nil || errors.As(err, &ue) || !strings.Contains(err.Error(), "not_found") {
		t.Errorf("job 99: %v, want a not_found failure", err)
	}
	bad := writeTokenFile(t, "sdt_not-a-token")
	_, _, err = runCLI("client", "status", "--url", svc.url, "--token-file", bad)
	if err == nil || !strings.Contains(err.Error(), "invalid_api_token") || strings.Contains(err.Error(), "sdt_not-a-token") {
		t.Errorf("bad token: %v, want invalid_api_token without the token", err)
	}

	// The environment: SHUTDOWND_URL and SHUTDOWND_TOKEN, no flags.
	t.Setenv("SHUTDOWND_URL", svc.url)
	t.Setenv("SHUTDOWND_TOKEN", svc.token)
	out, _, err = runCLI("client", "jobs", "--kind", "shutdown")
	if err != nil || !strings.Contains(out, "utility power lost") {
		t.Errorf("client jobs from the environment: %v\n%s", err, out)
	}
}

// TestClientUsage: bad command lines are usage errors (exit 2) and never
// reach the service.
func TestClientUsage(t *testing.T) {
	t.Setenv("SHUTDOWND_TOKEN", "")
	t.Setenv("SHUTDOWND_TOKEN_FILE", "")
	tf := writeTokenFile(t, "sdt_x")
	cases := [][]string{
		{"client"},
		{"client", "reboot"},
		{"client", "job", "--token-file", tf},
		{"client", "job", "abc", "--token-file", tf},
		{"client", "cancel", "0", "--token-file", tf},
		{"client", "status", "extra", "--token-file", tf},
		{"client", "status"}, // no token anywhere
		{"client", "status", "--token-file", tf, "--url", "ftp://x"},
		{"client", "status", "--token", "sdt_x"}, // no such flag: tokens never on the command line
		{"client", "jobs", "--wait", "--token-file", tf},
	}
	for _, c := range cases {
		_, _, err := runCLI(c...)
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("%v: err %v, want a usage error", c, err)
		}
	}
}

// TestClientDisplay checks both renderings of a followed job: one line
// rewritten in place on a terminal, plain lines elsewhere.
func TestClientDisplay(t *testing.T) {
	t.Parallel()
	running := clientJob{ID: 7, Kind: "shutdown", State: "running", CurrentStep: "Stopping OpenStack VMs (3/60 off)"}
	later := running
	later.CurrentStep = "Stopping OpenStack VMs (60/60 off)"
	ev := sseEvent{At: "2025-06-24T07:47:04.065478Z", Level: "info", Message: "step started", Detail: "vms"}

	var tty bytes.Buffer
	d := newDisplay(&tty, true)
	d.update(running)
	d.event(ev)
	d.update(later)
	d.end(sseEnd{JobID: 7, State: "succeeded"})
	d.close()
	got := tty.String()
	if strings.Count(got, "\r\x1b[K") < 4 || !strings.Contains(got, "\r\x1b[K07:47:04 info  step started (vms)\n") {
		t.Errorf("terminal rendering does not rewrite one line in place:\n%q", got)
	}
	if strings.Count(got, "\n") != 2 {
		t.Errorf("terminal rendering: want 2 full lines (the event and the end), got:\n%q", got)
	}
	if !strings.Contains(got, "(60/60 off)") || !strings.HasSuffix(strings.SplitN(got, "job 7 succeeded", 2)[0], "\r\x1b[K") {
		t.Errorf("terminal rendering misses the last step or does not clear before the end:\n%q", got)
	}

	var plain bytes.Buffer
	d = newDisplay(&plain, false)
	d.update(running)
	d.update(running) // unchanged: no new line
	d.event(ev)
	d.update(later)
	d.end(sseEnd{JobID: 7, State: "failed", Error: "host compute-01 still on"})
	d.close()
	got = plain.String()
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if strings.Contains(got, "\r") || len(lines) != 4 {
		t.Fatalf("plain rendering: want 4 lines without \\r, got:\n%q", got)
	}
	if !strings.Contains(lines[0], "job 7 shutdown running: Stopping OpenStack VMs (3/60 off)") ||
		!strings.Contains(lines[3], "job 7 failed: host compute-01 still on") {
		t.Errorf("plain rendering:\n%s", got)
	}
	if isTerminal(&plain) {
		t.Errorf("a buffer is not a terminal")
	}
}
