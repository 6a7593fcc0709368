package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/edgeops/shutdownd/sitesim"
)

// runBinary runs the real binary with env added to the environment and
// returns its combined output and exit code.
func runBinary(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, shutdowndBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("shutdownd %s did not end within 60s:\n%s", strings.Join(args, " "), out)
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run shutdownd: %v", err)
	}
	return string(out), code
}

// writeOwnKey writes key as this machine's only SSH host key in a new
// directory and returns the SHUTDOWND_OWN_HOST_KEYS setting for it.
func writeOwnKey(t *testing.T, key ssh.PublicKey) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ssh_host_ed25519_key.pub"), ssh.MarshalAuthorizedKey(key), 0o644); err != nil {
		t.Fatal(err)
	}
	return envOwnHostKeys + "=" + filepath.Join(dir, "ssh_host_*_key.pub")
}

// lineOf returns the 1-based line of the first line of text containing s.
func lineOf(t *testing.T, text, s string) int {
	t.Helper()
	for i, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			return i + 1
		}
	}
	t.Fatalf("%q not in:\n%s", s, text)
	return 0
}

// The real binary, with this machine's host key injected as the key one
// host of the simulated site presents: check-config and serve both refuse
// the configuration, naming the line of that host's address, and serve
// listens on nothing. With an unrelated key standing for this machine, the
// same configuration is valid.
func TestBinaryRefusesAHostThatIsThisMachine(t *testing.T) {
	dir := t.TempDir()
	site, err := sitesim.Start(context.Background(), sitesim.Options{Dir: dir, VMsPerProject: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer site.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	path, err := site.WriteConfig(addr, filepath.Join(dir, "db"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	victim := site.Host("compute-02")
	line := lineOf(t, string(raw), victim.SSH.Addr())
	want := fmt.Sprintf("%s:%d: hosts[1].address: host compute-02 is this machine", path, line)
	env := []string{writeOwnKey(t, victim.SSH.HostKey())}

	out, code := runBinary(t, env, "check-config", "--config", path)
	if code != 1 || !strings.Contains(out, want) {
		t.Errorf("check-config: exit %d\n%s\nwant exit 1 and %q", code, out, want)
	}
	out, code = runBinary(t, env, "serve", "--config", path)
	if code != 1 || !strings.Contains(out, want) || strings.Contains(out, "shutdownd serving") {
		t.Errorf("serve: exit %d\n%s\nwant exit 1 and %q before serving", code, out, want)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("something listens on %s", addr)
	}
	for _, h := range site.Hosts {
		if n := h.SSH.Logins(); n != 0 {
			t.Errorf("%s: %d SSH logins; a refused configuration must reach no host", h.Spec.Name, n)
		}
	}

	other, _, err := sitesim.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	out, code = runBinary(t, []string{writeOwnKey(t, other.PublicKey())}, "check-config", "--config", path)
	if code != 0 || !strings.Contains(out, "is valid") {
		t.Errorf("check-config with an unrelated own key: exit %d\n%s", code, out)
	}
	// A location that holds no key is refused rather than taken as "this
	// machine has no keys": a typo must not switch the guard off.
	out, code = runBinary(t, []string{envOwnHostKeys + "=" + filepath.Join(t.TempDir(), "*.pub")}, "check-config", "--config", path)
	if code != 1 || !strings.Contains(out, "cannot tell which host is this machine") {
		t.Errorf("check-config with an empty own-key location: exit %d\n%s", code, out)
	}
}
