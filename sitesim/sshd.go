package sitesim

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

// ErrToolMissing is wrapped by the launchers of real peers (sshd, ipmi_sim)
// when the program is not installed or cannot run here (sshd needs root).
// Tests skip on it, or fail under CI=true.
var ErrToolMissing = errors.New("external tool unavailable")

// DefaultSSHDBinary is Debian's OpenSSH server.
const DefaultSSHDBinary = "/usr/sbin/sshd"

// sshdPollInterval is how often the launcher looks at the host's state
// files: a power-off request from the recorder, a chassis powered off by
// ipmi_sim.
const sshdPollInterval = 20 * time.Millisecond

// SSHDOptions describe one host served by a real OpenSSH sshd.
type SSHDOptions struct {
	// Name is the host name (what `hostname` answers).
	Name string
	// Dir receives the host's key, sshd_config, the recorder script and its
	// logs and state. Required; one directory per host.
	Dir string
	// Machine is the host's power state; a new one (On) when nil. Share it
	// with a RedfishBMC so the BMC sees what SSH did and the other way round.
	Machine *Machine
	// AuthorizedKeys may log in (as root, key only).
	AuthorizedKeys []ssh.PublicKey
	// PowerOffDelay is how long the host takes to go Off after a power-off
	// command (the OS shutting down).
	PowerOffDelay time.Duration
	// IgnorePowerOff: the power-off command is accepted (exit 0) and
	// recorded, and the host stays on.
	IgnorePowerOff bool
	// SudoDenied makes every sudo of a user other than root fail as
	// without a NOPASSWD rule (`sudo -n -l CMD` too).
	SudoDenied bool
	// Binary is the sshd to run; DefaultSSHDBinary when empty.
	Binary string
}

// SSHD is a real sshd on 127.0.0.1 whose every login runs a recorder
// script (ForceCommand) instead of a shell: the script logs the command and
// emulates it; nothing is ever executed for real. A power-off command marks
// the host down; once its Machine is Off the whole sshd process tree is
// killed, so connections drop and the port refuses, as with a host that
// lost power.
type SSHD struct {
	opts    SSHDOptions
	dir     string
	addr    string
	hostKey ssh.PublicKey
	machine *Machine

	out    *lockedBuffer
	cmd    *exec.Cmd
	exited chan struct{}
	stop   chan struct{}
	wg     sync.WaitGroup

	mu     sync.Mutex
	down   bool // process tree killed
	closed bool
}

// StartSSHD writes the host's files into opts.Dir, starts sshd on a free
// port and waits until it greets.
func StartSSHD(ctx context.Context, opts SSHDOptions) (*SSHD, error) {
	if opts.Dir == "" || opts.Name == "" {
		return nil, errors.New("start sshd: Name and Dir are required")
	}
	if opts.Binary == "" {
		opts.Binary = DefaultSSHDBinary
	}
	if _, err := os.Stat(opts.Binary); err != nil {
		return nil, fmt.Errorf("start sshd %s: %w: %v (Debian package openssh-server)", opts.Name, ErrToolMissing, err)
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("start sshd %s: %w: sshd must run as root to log users in", opts.Name, ErrToolMissing)
	}
	// sshd refuses to start without its privilege separation directory,
	// which systemd normally creates at boot.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return nil, fmt.Errorf("start sshd %s: privilege separation dir: %w", opts.Name, err)
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("start sshd %s: %w", opts.Name, err)
	}
	s := &SSHD{opts: opts, dir: opts.Dir, machine: opts.Machine, out: &lockedBuffer{}, stop: make(chan struct{})}
	if s.machine == nil {
		s.machine = NewMachine(opts.Name)
	}
	if err := s.writeFiles(); err != nil {
		return nil, fmt.Errorf("start sshd %s: %w", opts.Name, err)
	}
	var lastErr error
	for range 3 { // a free port can be taken between our probe and sshd's bind
		port, err := freeTCPPort()
		if err != nil {
			return nil, fmt.Errorf("start sshd %s: %w", opts.Name, err)
		}
		if lastErr = s.launch(ctx, port); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		return nil, fmt.Errorf("start sshd %s: %w\n%s", opts.Name, lastErr, s.out.String())
	}
	s.machine.OnChange(func(ps PowerState) {
		if ps == PowerOff {
			s.powerLost()
		}
	})
	s.wg.Add(1)
	go s.watch()
	return s, nil
}

func (s *SSHD) writeFiles() error {
	signer, keyPEM, err := GenerateKey()
	if err != nil {
		return err
	}
	s.hostKey = signer.PublicKey()
	var auth bytes.Buffer
	for _, k := range s.opts.AuthorizedKeys {
		auth.Write(ssh.MarshalAuthorizedKey(k))
	}
	files := []struct {
		name string
		body string
		mode os.FileMode
	}{
		{"ssh_host_ed25519_key", string(keyPEM), 0o600},
		{"authorized_keys", auth.String(), 0o600},
		{"recorder.sh", recorderScript(s.dir, s.opts.Name), 0o755},
		{"power", "1\n", 0o600},
		{"commands.log", "", 0o600},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(s.dir, f.name), []byte(f.body), f.mode); err != nil {
			return fmt.Errorf("write %s: %w", f.name, err)
		}
	}
	if s.opts.IgnorePowerOff {
		if err := touch(filepath.Join(s.dir, "ignore-poweroff")); err != nil {
			return err
		}
	}
	if s.opts.SudoDenied {
		if err := touch(filepath.Join(s.dir, "sudo-denied")); err != nil {
			return err
		}
	}
	return nil
}

func touch(p string) error {
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(p), err)
	}
	return nil
}

// sshdConfig is a locked-down server: loopback only, public key only, no
// PAM, no forwarding, no TTY, and every session forced into the recorder.
func (s *SSHD) sshdConfig(port int) string {
	p := func(name string) string { return filepath.Join(s.dir, name) }
	return fmt.Sprintf(`# sitesim sshd for %s: records and emulates commands, executes nothing.
ListenAddress 127.0.0.1
Port %d
HostKey %s
PidFile %s
AuthorizedKeysFile %s
ForceCommand %s
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
AllowTcpForwarding no
AllowAgentForwarding no
AllowStreamLocalForwarding no
X11Forwarding no
PermitTunnel no
PermitTTY no
PermitUserRC no
PrintMotd no
PrintLastLog no
UseDNS no
LoginGraceTime 10
MaxStartups 100:30:200
MaxSessions 50
LogLevel INFO
`, s.opts.Name, port, p("ssh_host_ed25519_key"), p("sshd.pid"), p("authorized_keys"), p("recorder.sh"))
}

func (s *SSHD) launch(ctx context.Context, port int) error {
	conf := filepath.Join(s.dir, "sshd_config")
	if err := os.WriteFile(conf, []byte(s.sshdConfig(port)), 0o600); err != nil {
		return fmt.Errorf("write sshd_config: %w", err)
	}
	cmd := exec.Command(s.opts.Binary, "-D", "-e", "-f", conf)
	cmd.Stdout, cmd.Stderr = s.out, s.out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run sshd: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(10 * time.Second)
	for {
		if greets(addr) {
			s.cmd, s.exited, s.addr = cmd, exited, addr
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("sshd exited at start on port %d", port)
		case <-ctx.Done():
			killTree(cmd.Process.Pid)
			<-exited
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			killTree(cmd.Process.Pid)
			<-exited
			return fmt.Errorf("sshd on port %d did not greet within 10s", port)
		}
	}
}

// greets reports whether an SSH server answers on addr with its banner.
func greets(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "SSH-2.0-")
}

func freeTCPPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// watch turns the recorder's and ipmi_sim's files into Machine state: a
// power-off request starts the OS shutdown delay, a power file reading 0
// (chassis powered off through IPMI) is an immediate Off.
func (s *SSHD) watch() {
	defer s.wg.Done()
	t := time.NewTicker(sshdPollInterval)
	defer t.Stop()
	req := filepath.Join(s.dir, "poweroff.req")
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		if _, err := os.Stat(req); err == nil {
			_ = os.Remove(req)
			s.machine.PowerOffAfter(s.opts.PowerOffDelay, "ssh")
		}
		if b, err := os.ReadFile(s.PowerFile()); err == nil && strings.TrimSpace(string(b)) == "0" {
			s.machine.SetState(PowerOff, "ipmi")
		}
	}
}

// powerLost mirrors Off into the power file (what ipmi_sim reads) and kills
// sshd with every session it serves.
func (s *SSHD) powerLost() {
	s.mu.Lock()
	if s.down || s.closed {
		s.mu.Unlock()
		return
	}
	s.down = true
	s.mu.Unlock()
	_ = os.WriteFile(s.PowerFile(), []byte("0\n"), 0o600)
	killTree(s.cmd.Process.Pid)
	<-s.exited
}

// Addr is host:port of the SSH server, for the configuration.
func (s *SSHD) Addr() string { return s.addr }

// HostKey is the server's public host key, for known_hosts.
func (s *SSHD) HostKey() ssh.PublicKey { return s.hostKey }

// Machine is the host's power state.
func (s *SSHD) Machine() *Machine { return s.machine }

// PowerFile holds the host's power as ipmi_sim's chassis script sees it
// ("1" on, "0" off); pass it to StartIPMISim to pair a BMC with this host.
func (s *SSHD) PowerFile() string { return filepath.Join(s.dir, "power") }

// Running reports whether sshd still runs (false once the host lost power).
func (s *SSHD) Running() bool {
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// Output is what sshd logged (-e: to stderr), for test failure messages.
func (s *SSHD) Output() string { return s.out.String() }

// Logins counts successful logins sshd logged; a host whose key the client
// rejected shows none.
func (s *SSHD) Logins() int { return strings.Count(s.out.String(), "Accepted publickey for ") }

// Commands returns every command line the recorder received, in order.
func (s *SSHD) Commands() ([]Command, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, "commands.log"))
	if err != nil {
		return nil, fmt.Errorf("read commands of %s: %w", s.opts.Name, err)
	}
	var out []Command
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if line == "" {
			continue
		}
		f := strings.SplitN(line, "\t", 3)
		if len(f) != 3 {
			return nil, fmt.Errorf("read commands of %s: malformed line %q", s.opts.Name, line)
		}
		secs, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("read commands of %s: time in %q: %w", s.opts.Name, line, err)
		}
		at := time.Unix(0, int64(secs*1e9))
		out = append(out, Command{At: at, User: f[1], Line: f[2]})
	}
	return out, nil
}

// PowerCommands returns the power-off commands received (after sudo and the
// program's directory are stripped), honoured or not.
func (s *SSHD) PowerCommands() ([]string, error) { return s.lines("poweroff.log") }

// CephFlags returns the OSD flags currently set through this host.
func (s *SSHD) CephFlags() ([]string, error) { return s.lines("ceph-flags") }

// CephStopped reports whether `systemctl stop ceph.target` was received.
func (s *SSHD) CephStopped() bool {
	_, err := os.Stat(filepath.Join(s.dir, "ceph-stopped"))
	return err == nil
}

func (s *SSHD) lines(name string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s of %s: %w", name, s.opts.Name, err)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out, nil
}

// Close kills sshd and its sessions and stops watching.
func (s *SSHD) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	s.wg.Wait()
	killTree(s.cmd.Process.Pid)
	<-s.exited
}

// killTree kills root and every process descended from it. The per-
// connection sshd processes start their own sessions, so a process group
// kill would miss them; the tree is found through /proc instead. Every
// process is stopped first so none can fork a child that escapes, then
// killed. Only processes we started (root) and their children are touched.
func killTree(root int) {
	stopped := map[int]bool{}
	for range 5 {
		grew := false
		for _, p := range descendants(root) {
			if !stopped[p] {
				_ = syscall.Kill(p, syscall.SIGSTOP)
				stopped[p] = true
				grew = true
			}
		}
		if !grew {
			break
		}
	}
	stopped[root] = true
	for p := range stopped {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
}

// descendants returns root and all its live descendants, from /proc.
func descendants(root int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return []int{root}
	}
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 || i+2 > len(b) {
			continue
		}
		f := strings.Fields(string(b[i+2:]))
		if len(f) < 2 {
			continue
		}
		ppid, err := strconv.Atoi(f[1])
		if err != nil {
			continue
		}
		children[ppid] = append(children[ppid], pid)
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// lockedBuffer collects a child's output while tests read it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// recorderScript is the ForceCommand of every login. It appends the command
// to commands.log and answers it from files in dir; it never runs the
// command, so a power-off, a ceph flag or a systemctl stop only changes
// files. Shell syntax in a command line is not interpreted (globbing is off
// and the line is only split on blanks).
func recorderScript(dir, name string) string {
	return `#!/bin/sh
# sitesim recorder for ` + name + `: records and emulates; executes nothing.
dir=` + shellQuote(dir) + `
name=` + shellQuote(name) + `
line=$SSH_ORIGINAL_COMMAND
printf '%s\t%s\t%s\n' "$(date +%s.%N)" "$(id -un)" "$line" >> "$dir/commands.log"
set -f
set -- $line
sudo=0
list=0
uid=$(id -u)
if [ $# -gt 0 ] && [ "${1##*/}" = sudo ]; then
  sudo=1
  shift
  while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do
    case "$1" in -*l*) list=1 ;; esac
    shift
  done
fi
# sudo asks root for nothing; anyone else is refused with sudo-denied.
if [ $sudo = 1 ] && { { [ -e "$dir/sudo-denied" ] && [ "$uid" != 0 ]; } || { [ $# -eq 0 ] && [ $list = 0 ]; }; }; then
  echo "sudo: a password is required" >&2
  exit 1
fi
if [ $list = 1 ]; then
  # sudo -l [CMD] lists what sudo allows; nothing is run.
  if [ $# -eq 0 ]; then
    echo "User $(id -un) may run the following commands on $name:"
    echo "    (ALL : ALL) NOPASSWD: ALL"
    exit 0
  fi
  case "${1##*/}" in
  systemctl|ceph|true|hostname|id) p=/usr/bin/${1##*/} ;;
  poweroff|shutdown|halt) p=/usr/sbin/${1##*/} ;;
  *) echo "sudo: $1: command not found" >&2; exit 1 ;;
  esac
  shift
  echo "$p${*:+ $*}"
  exit 0
fi
[ $# -eq 0 ] && exit 0
prog=${1##*/}
shift
cmd=$prog
[ $# -gt 0 ] && cmd="$prog $*"
case "$cmd" in
"id -u") echo "$uid" ;;
"systemctl poweroff"|poweroff|"shutdown -h now"|"shutdown -P now"|"halt -p")
  printf '%s\n' "$cmd" >> "$dir/poweroff.log"
  [ -e "$dir/ignore-poweroff" ] || : > "$dir/poweroff.req"
  exit 0 ;;
true) exit 0 ;;
hostname) echo "$name" ;;
"ceph health")
  if [ -s "$dir/ceph-flags" ]; then
    echo "HEALTH_WARN $(paste -sd, "$dir/ceph-flags") flag(s) set"
  else
    echo HEALTH_OK
  fi ;;
"ceph osd set "*|"ceph osd unset "*)
  flag=$3
  case "$#:$flag" in
  3:noout|3:noin|3:noup|3:nodown|3:norecover|3:norebalance|3:nobackfill|3:noscrub|3:nodeep-scrub|3:pause|3:notieragent|3:nosnaptrim) ;;
  *) echo "Invalid command: $flag not in full|pause|noup|nodown|noout|noin|nobackfill|norebalance|norecover|noscrub|nodeep-scrub|notieragent|nosnaptrim" >&2
     echo "Error EINVAL: invalid command" >&2
     exit 22 ;;
  esac
  if [ "$2" = set ]; then
    grep -qx "$flag" "$dir/ceph-flags" 2>/dev/null || echo "$flag" >> "$dir/ceph-flags"
    echo "$flag is set"
  else
    grep -vx "$flag" "$dir/ceph-flags" > "$dir/ceph-flags.new" 2>/dev/null
    mv "$dir/ceph-flags.new" "$dir/ceph-flags"
    echo "$flag is unset"
  fi ;;
"systemctl stop ceph.target") : > "$dir/ceph-stopped" ;;
"systemctl start ceph.target") rm -f "$dir/ceph-stopped" ;;
"systemctl is-active ceph.target")
  if [ -e "$dir/ceph-stopped" ]; then echo inactive; exit 3; fi
  echo active ;;
*) echo "sh: 1: $prog: not found" >&2
   exit 127 ;;
esac
exit 0
`
}
