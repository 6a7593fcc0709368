package sitesim

import (
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// newTestSSHHost starts a host that trusts one fresh client key and
// returns the host and that key.
func newTestSSHHost(t *testing.T, opts SSHHostOptions) (*SSHHost, ssh.Signer) {
	t.Helper()
	client, _, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if opts.Name == "" {
		opts.Name = "compute-01"
	}
	opts.AuthorizedKeys = append(opts.AuthorizedKeys, client.PublicKey())
	h, err := NewSSHHost(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h, client
}

func sshDial(t *testing.T, h *SSHHost, key ssh.Signer) (*ssh.Client, error) {
	t.Helper()
	return ssh.Dial("tcp", h.Addr(), &ssh.ClientConfig{
		User:            "root",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(key)},
		HostKeyCallback: ssh.FixedHostKey(h.HostKey()),
		Timeout:         5 * time.Second,
	})
}

type sshExecResult struct {
	stdout, stderr string
	err            error
}

func sshRun(t *testing.T, c *ssh.Client, cmd string) sshExecResult {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatalf("new session: %v", err)
	}
	defer s.Close()
	var out, errb strings.Builder
	s.Stdout, s.Stderr = &out, &errb
	err = s.Run(cmd)
	return sshExecResult{out.String(), errb.String(), err}
}

func sshExitStatus(err error) int {
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		return ee.ExitStatus()
	}
	if err != nil {
		return -1
	}
	return 0
}

// sshWaitFor polls cond until it holds or the deadline passes.
func sshWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func sshRefused(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

func TestSSHHostEmulatesCommands(t *testing.T) {
	t.Parallel()
	h, key := newTestSSHHost(t, SSHHostOptions{})
	c, err := sshDial(t, h, key)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// One session per step, in order: the ceph steps depend on each other.
	steps := []struct {
		cmd    string
		stdout string // substring; "" means must be empty
		stderr string // substring
		exit   int
	}{
		{"hostname", "compute-01\n", "", 0},
		{"true", "", "", 0},
		{"sudo -n true", "", "", 0},
		{"ceph health", "HEALTH_OK\n", "", 0},
		{"ceph osd set noout", "noout is set\n", "", 0},
		{"sudo -n /usr/bin/ceph osd set norecover", "norecover is set\n", "", 0},
		{"ceph health", "HEALTH_WARN noout,norecover flag(s) set\n", "", 0},
		{"ceph -s", "flags noout,norecover", "", 0},
		{"ceph osd set nosuchflag", "", "Error EINVAL", 22},
		{"ceph osd unset norecover", "norecover is unset\n", "", 0},
		{"ceph status", "health: HEALTH_WARN noout flag(s) set", "", 0},
		{"systemctl is-active ceph.target", "active\n", "", 0},
		{"sudo systemctl stop ceph.target", "", "", 0},
		{"systemctl is-active ceph.target", "inactive\n", "", 3},
		{"rm -rf /", "", "rm: command not found", 127},
		{"hostname && reboot", "", "command not found", 127},
	}
	for _, st := range steps {
		r := sshRun(t, c, st.cmd)
		if got := sshExitStatus(r.err); got != st.exit {
			t.Errorf("%q: exit %d (%v), want %d", st.cmd, got, r.err, st.exit)
		}
		if st.stdout == "" && r.stdout != "" || !strings.Contains(r.stdout, st.stdout) {
			t.Errorf("%q: stdout %q, want %q", st.cmd, r.stdout, st.stdout)
		}
		if !strings.Contains(r.stderr, st.stderr) {
			t.Errorf("%q: stderr %q, want %q", st.cmd, r.stderr, st.stderr)
		}
	}
	if got := h.CephFlags(); !slices.Equal(got, []string{"noout"}) {
		t.Errorf("CephFlags = %v, want [noout]", got)
	}
	if !h.CephStopped() {
		t.Error("CephStopped = false after systemctl stop ceph.target")
	}
	cmds := h.Commands()
	if len(cmds) != len(steps) {
		t.Fatalf("recorded %d commands, want %d", len(cmds), len(steps))
	}
	for i, c := range cmds {
		if c.Line != steps[i].cmd || c.User != "root" || c.At.IsZero() {
			t.Errorf("command %d = %+v, want line %q by root", i, c, steps[i].cmd)
		}
	}
	if h.Logins() != 1 || h.PowerCommands() != 0 {
		t.Errorf("Logins = %d, PowerCommands = %d; want 1, 0", h.Logins(), h.PowerCommands())
	}
}

func TestSSHHostSudoDeniedAndHandler(t *testing.T) {
	t.Parallel()
	h, key := newTestSSHHost(t, SSHHostOptions{
		SudoDenied: true,
		Handler: func(cmd string) (string, int, bool) {
			if cmd == "uptime" {
				return "up 3 days\n", 0, true
			}
			return "", 0, false
		},
	})
	// sudo asks root for nothing: the user without sudo rights is another.
	c := sshDialAs(t, h, key, "ops")
	r := sshRun(t, c, "sudo -n true")
	if sshExitStatus(r.err) != 1 || !strings.Contains(r.stderr, "sudo: a password is required") {
		t.Errorf("sudo -n true: exit %v stderr %q, want 1 and a password prompt error", r.err, r.stderr)
	}
	r = sshRun(t, c, "sudo -n systemctl poweroff")
	if sshExitStatus(r.err) != 1 {
		t.Errorf("sudo poweroff without sudo rights: %v, want exit 1", r.err)
	}
	if h.Machine().State() != PowerOn {
		t.Error("machine powered off although sudo was denied")
	}
	if h.PowerCommands() != 1 {
		t.Errorf("PowerCommands = %d, want 1 (received, refused)", h.PowerCommands())
	}
	if r := sshRun(t, c, "uptime"); r.err != nil || r.stdout != "up 3 days\n" {
		t.Errorf("handler command: %q, %v", r.stdout, r.err)
	}
}

func TestSSHHostPowerOffDropsAndComesBack(t *testing.T) {
	t.Parallel()
	h, key := newTestSSHHost(t, SSHHostOptions{PowerOffDelay: 20 * time.Millisecond})
	c, err := sshDial(t, h, key)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := sshRun(t, c, "sudo systemctl poweroff")
	var missing *ssh.ExitMissingError
	if !errors.As(r.err, &missing) {
		t.Fatalf("poweroff session ended with %v, want ExitMissingError (dropped)", r.err)
	}
	sshWaitFor(t, "machine off", func() bool { return h.Machine().State() == PowerOff })
	sshWaitFor(t, "port closed", func() bool { return sshRefused(h.Addr()) })
	if h.PowerCommands() != 1 {
		t.Errorf("PowerCommands = %d, want 1", h.PowerCommands())
	}
	if ev := h.Machine().History(); len(ev) != 1 || ev[0].Cause != "ssh" {
		t.Errorf("history = %+v, want one ssh power-off", ev)
	}

	addr := h.Addr()
	h.Machine().SetState(PowerOn, "test")
	if h.Addr() != addr {
		t.Fatalf("address changed across power cycle: %s -> %s", addr, h.Addr())
	}
	c2, err := sshDial(t, h, key)
	if err != nil {
		t.Fatalf("dial after power on: %v", err)
	}
	defer c2.Close()
	if r := sshRun(t, c2, "hostname"); r.err != nil {
		t.Errorf("hostname after power on: %v", r.err)
	}
}

func TestSSHHostPowerOffVariants(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		opts    SSHHostOptions
		cmd     string
		wantOff bool
	}{
		{"ignored", SSHHostOptions{IgnorePowerOff: true}, "systemctl poweroff", false},
		{"clean exit", SSHHostOptions{ExitOnPowerOff: true}, "shutdown -h now", true},
		{"halt", SSHHostOptions{ExitOnPowerOff: true}, "sudo -n /sbin/halt -p", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, key := newTestSSHHost(t, tt.opts)
			c, err := sshDial(t, h, key)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if r := sshRun(t, c, tt.cmd); r.err != nil {
				t.Fatalf("%s: %v, want exit 0", tt.cmd, r.err)
			}
			if tt.wantOff {
				sshWaitFor(t, "machine off", func() bool { return h.Machine().State() == PowerOff })
				return
			}
			// Still serving after the command: the host did not go down.
			if r := sshRun(t, c, "true"); r.err != nil {
				t.Fatalf("session after ignored power-off: %v", r.err)
			}
			if h.Machine().State() != PowerOn || h.PowerCommands() != 1 {
				t.Errorf("state %s, power commands %d; want On, 1", h.Machine().State(), h.PowerCommands())
			}
		})
	}
}

func TestSSHHostReachabilityAndAuth(t *testing.T) {
	t.Parallel()
	h, key := newTestSSHHost(t, SSHHostOptions{})

	stranger, _, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if c, err := sshDial(t, h, stranger); err == nil {
		c.Close()
		t.Fatal("login with an unauthorized key succeeded")
	}
	if h.Logins() != 0 {
		t.Errorf("Logins = %d after a refused key, want 0", h.Logins())
	}

	c, err := sshDial(t, h, key)
	if err != nil {
		t.Fatal(err)
	}
	h.SetReachable(false)
	if !sshRefused(h.Addr()) {
		t.Error("port open while unreachable")
	}
	// The open connection is dropped too.
	if _, err := c.NewSession(); err == nil {
		t.Error("session on a dropped connection succeeded")
	}
	h.SetReachable(true)
	c2, err := sshDial(t, h, key)
	if err != nil {
		t.Fatalf("dial after SetReachable(true): %v", err)
	}
	c2.Close()
	if h.Logins() != 2 {
		t.Errorf("Logins = %d, want 2", h.Logins())
	}
}

func TestSSHHostStartsOffWhenMachineOff(t *testing.T) {
	t.Parallel()
	m := NewMachine("storage-01")
	m.SetState(PowerOff, "test")
	h, key := newTestSSHHost(t, SSHHostOptions{Name: "storage-01", Machine: m})
	if !sshRefused(h.Addr()) {
		t.Fatal("port open while the machine is off")
	}
	m.SetState(PowerOn, "test")
	c, err := sshDial(t, h, key)
	if err != nil {
		t.Fatalf("dial after power on: %v", err)
	}
	c.Close()
}

func TestKnownHostsLine(t *testing.T) {
	t.Parallel()
	s, pemBytes, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	line := KnownHostsLine("127.0.0.1:2222", s.PublicKey())
	if !strings.HasPrefix(line, "[127.0.0.1]:2222 ssh-ed25519 ") {
		t.Errorf("line = %q", line)
	}
	if line22 := KnownHostsLine("127.0.0.1:22", s.PublicKey()); !strings.HasPrefix(line22, "127.0.0.1 ssh-ed25519 ") {
		t.Errorf("port 22 line = %q", line22)
	}
	parsed, err := ssh.ParsePrivateKey(pemBytes)
	if err != nil {
		t.Fatalf("parse generated PEM: %v", err)
	}
	if string(parsed.PublicKey().Marshal()) != string(s.PublicKey().Marshal()) {
		t.Error("PEM and signer hold different keys")
	}
}

// sshDialAs logs in to h as user.
func sshDialAs(t *testing.T, h *SSHHost, key ssh.Signer, user string) *ssh.Client {
	t.Helper()
	c, err := ssh.Dial("tcp", h.Addr(), &ssh.ClientConfig{
		User:            user,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(key)},
		HostKeyCallback: ssh.FixedHostKey(h.HostKey()),
		Timeout:         5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Each host answers `id -u` and `sudo -n -l CMD` for the user who logged
// in and from its own sudo rules, as a Debian host would, and listing never
// runs the command. A user other than root cannot run what needs root
// without sudo.
func TestSSHHostPrivilegePerUserAndSudoRules(t *testing.T) {
	t.Parallel()
	h, key := newTestSSHHost(t, SSHHostOptions{SudoCommands: []string{"systemctl poweroff"}})
	denied, deniedKey := newTestSSHHost(t, SSHHostOptions{Name: "compute-02", SudoDenied: true})
	steps := []struct {
		host       *SSHHost
		key        ssh.Signer
		user, cmd  string
		out, err   string
		wantStatus int
	}{
		{h, key, "root", "id -u", "0\n", "", 0},
		{h, key, "ops", "id -u", "1000\n", "", 0},
		{h, key, "ops", "id -un", "ops\n", "", 0},
		{h, key, "ops", "sudo -n -l systemctl poweroff", "/usr/bin/systemctl poweroff\n", "", 0},
		{h, key, "ops", "sudo -n -l /usr/bin/systemctl poweroff", "/usr/bin/systemctl poweroff\n", "", 0},
		{h, key, "ops", "sudo -n -l systemctl stop ceph.target", "", "", 1},
		{h, key, "ops", "sudo -n -l frobnicate", "", "sudo: frobnicate: command not found", 1},
		{h, key, "ops", "sudo -n -l", "User ops may run the following commands on compute-01:\n    (root) NOPASSWD: /usr/bin/systemctl poweroff\n", "", 0},
		{h, key, "root", "sudo -n -l systemctl stop ceph.target", "/usr/bin/systemctl stop ceph.target\n", "", 0},
		{h, key, "ops", "sudo -n systemctl stop ceph.target", "",
			"Sorry, user ops is not allowed to execute '/usr/bin/systemctl stop ceph.target' as root on compute-01.", 1},
		{h, key, "ops", "systemctl stop ceph.target", "", "Interactive authentication required", 1},
		{h, key, "ops", "ceph osd set noout", "", "PermissionDeniedError", 1},
		{h, key, "ops", "systemctl poweroff", "", "Call to PowerOff failed: Interactive authentication required.", 1},
		{denied, deniedKey, "ops", "sudo -n -l systemctl poweroff", "", "sudo: a password is required", 1},
		{denied, deniedKey, "root", "sudo -n -l systemctl poweroff", "/usr/bin/systemctl poweroff\n", "", 0},
		{denied, deniedKey, "root", "sudo -n true", "", "", 0},
	}
	for _, s := range steps {
		r := sshRun(t, sshDialAs(t, s.host, s.key, s.user), s.cmd)
		if r.stdout != s.out || !strings.Contains(r.stderr, s.err) || sshExitStatus(r.err) != s.wantStatus {
			t.Errorf("%s as %s: %q %q exit %d; want %q, stderr with %q, exit %d",
				s.cmd, s.user, r.stdout, r.stderr, sshExitStatus(r.err), s.out, s.err, s.wantStatus)
		}
	}
	for _, x := range []*SSHHost{h, denied} {
		if x.Machine().State() != PowerOn || x.CephStopped() || len(x.CephFlags()) != 0 {
			t.Errorf("%s changed: %s, ceph stopped %v, flags %v", x.opts.Name, x.Machine().State(), x.CephStopped(), x.CephFlags())
		}
	}
	if n := h.PowerCommands(); n != 1 {
		t.Errorf("PowerCommands = %d, want 1 (the refused plain one; a listing is not a power-off)", n)
	}
}
