package sitesim

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func startTestSSHD(t *testing.T, opts SSHDOptions) (*SSHD, ssh.Signer) {
	t.Helper()
	signer, _, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	opts.AuthorizedKeys = []ssh.PublicKey{signer.PublicKey()}
	opts.Dir = t.TempDir()
	d, err := StartSSHD(context.Background(), opts)
	if errors.Is(err, ErrToolMissing) {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.Close()
		if t.Failed() {
			t.Logf("sshd output:\n%s", d.Output())
		}
	})
	return d, signer
}

func sshdDial(t *testing.T, d *SSHD, signer ssh.Signer) *ssh.Client {
	t.Helper()
	c, err := ssh.Dial("tcp", d.Addr(), &ssh.ClientConfig{
		User: "root", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(d.HostKey()), Timeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sshdRun runs cmd in a new session of c, as hostctl does.
func sshdRun(t *testing.T, c *ssh.Client, cmd string) (string, int) {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.Output(cmd)
	var ee *ssh.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitStatus()
	}
	t.Fatalf("run %q: %v", cmd, err)
	return "", -1
}

func TestSSHDRecordsAndEmulatesWithoutExecuting(t *testing.T) {
	t.Parallel()
	d, signer := startTestSSHD(t, SSHDOptions{Name: "storage-01", PowerOffDelay: 50 * time.Millisecond})
	c := sshdDial(t, d, signer)
	canary := filepath.Join(t.TempDir(), "canary")
	steps := []struct {
		cmd, out string
		exit     int
	}{
		{"hostname", "storage-01\n", 0},
		{"true", "", 0},
		{"sudo -n true", "", 0},
		{"id -u", "0\n", 0},
		// Listing what sudo allows runs nothing: the host stays up.
		{"sudo -n -l systemctl poweroff", "/usr/bin/systemctl poweroff\n", 0},
		{"sudo -nl frobnicate", "", 1},
		{"ceph osd set noout", "noout is set\n", 0},
		{"ceph osd set pause", "pause is set\n", 0},
		{"ceph health", "HEALTH_WARN noout,pause flag(s) set\n", 0},
		{"ceph osd unset pause", "pause is unset\n", 0},
		{"ceph osd set bogus", "", 22},
		{"systemctl stop ceph.target", "", 0},
		// Shell syntax is never interpreted: nothing here may run.
		{"touch " + canary, "", 127},
		{"true; touch " + canary, "", 127},
		{"echo $(touch " + canary + ")", "", 127},
	}
	for _, s := range steps {
		out, exit := sshdRun(t, c, s.cmd)
		if out != s.out || exit != s.exit {
			t.Errorf("%q: %q exit %d, want %q exit %d", s.cmd, out, exit, s.out, s.exit)
		}
	}
	if _, err := os.Stat(canary); err == nil {
		t.Fatal("a recorded command was executed")
	}
	if f, err := d.CephFlags(); err != nil || !slices.Equal(f, []string{"noout"}) || !d.CephStopped() {
		t.Errorf("ceph flags %q (%v), stopped %v", f, err, d.CephStopped())
	}
	cmds, err := d.Commands()
	if err != nil || len(cmds) != len(steps) {
		t.Fatalf("%d commands recorded (%v), want %d", len(cmds), err, len(steps))
	}
	for i, c := range cmds {
		if c.Line != steps[i].cmd || c.User != "root" || time.Since(c.At) > time.Minute {
			t.Errorf("command %d recorded as %+v, want %q", i, c, steps[i].cmd)
		}
	}
	if n := d.Logins(); n != 1 {
		t.Errorf("%d logins logged, want 1", n)
	}

	// Power-off: accepted, then the host goes Off and sshd goes away.
	if _, exit := sshdRun(t, c, "sudo systemctl poweroff"); exit != 0 {
		t.Fatalf("power-off exit %d", exit)
	}
	waitUntil(t, "host off and sshd gone", func() bool { return d.Machine().State() == PowerOff && !d.Running() })
	if p, _ := d.PowerCommands(); !slices.Equal(p, []string{"systemctl poweroff"}) {
		t.Errorf("power commands %q", p)
	}
	if c, err := net.DialTimeout("tcp", d.Addr(), time.Second); err == nil {
		c.Close()
		t.Error("port still accepts after power-off")
	}
	if b, _ := os.ReadFile(d.PowerFile()); strings.TrimSpace(string(b)) != "0" {
		t.Errorf("power file %q after power-off", b)
	}
}

func TestSSHDTakenDownByPairedIPMIChassisOff(t *testing.T) {
	t.Parallel()
	d, _ := startTestSSHD(t, SSHDOptions{Name: "compute-01", IgnorePowerOff: true})
	sim, err := StartIPMISim(context.Background(), IPMISimOptions{Dir: t.TempDir(), User: "admin", Password: "pw-1234", PowerFile: d.PowerFile()})
	if errors.Is(err, ErrToolMissing) && os.Getenv("CI") != "true" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	if on, err := sim.PowerOn(); err != nil || !on {
		t.Fatalf("chassis on = %v, %v", on, err)
	}
	// What the chassis script does on "set power 0".
	if err := sim.SetPower(false); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "sshd down after chassis off", func() bool { return !d.Running() })
	if h := d.Machine().History(); len(h) != 1 || h[0].Cause != "ipmi" {
		t.Errorf("power history %+v", h)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
