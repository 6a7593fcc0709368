package sitesim

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// SSHHostOptions configures one simulated host's SSH server. The zero value
// of every field is the ordinary behaviour of a healthy Linux host, so a
// site only sets what a test wants to break.
type SSHHostOptions struct {
	// Name is what `hostname` prints.
	Name string
	// Machine is the power state shared with the host's BMC; nil creates
	// a new powered-on machine called Name.
	Machine *Machine
	// HostKey is the server's key; nil generates an ed25519 key.
	HostKey ssh.Signer
	// AuthorizedKeys are the client keys allowed to log in; empty refuses
	// every login (there is no password or keyboard-interactive auth).
	AuthorizedKeys []ssh.PublicKey
	// PowerOffDelay is the time from a power-off command to the Machine
	// being Off, like an OS running its shutdown.
	PowerOffDelay time.Duration
	// IgnorePowerOff makes the host accept a power-off command (exit 0)
	// and stay up: a broken shutdown that the BMC has to deal with.
	IgnorePowerOff bool
	// ExitOnPowerOff makes the host answer a power-off command with exit
	// status 0 and close the session cleanly. By default the connection is
	// dropped without an exit status, as a real host going down does.
	ExitOnPowerOff bool
	// Latency delays every command's answer.
	Latency time.Duration
	// SudoDenied makes sudo ask every user but root for a password (exit
	// 1, "sudo: a password is required"): the user has no NOPASSWD rule.
	// By default passwordless sudo works for every command.
	SudoDenied bool
	// SudoCommands, when not nil, are the only commands sudo runs without
	// a password for a user other than root (NOPASSWD rules naming them,
	// compared by program name and arguments); any other is refused as
	// sudo refuses it. `sudo -n -l CMD` answers from the same rules.
	SudoCommands []string
	// Ceph is the cluster this host's `ceph` command talks to, and whose
	// OSDs its ceph.target runs (when it is one of the cluster's hosts);
	// nil gives the host a cluster of its own without OSDs.
	Ceph *CephCluster
	// Handler, if set, is asked first about every command line; when it
	// returns handled, its stdout and exit status are the answer. The
	// command is recorded either way.
	Handler func(cmd string) (stdout string, exit int, handled bool)
	// Logger receives one debug line per command; nil discards.
	Logger *slog.Logger
}

// Command is one command line a simulated host received, for assertions
// and for the demo's "what would have run" view.
type Command struct {
	At   time.Time
	Line string
	User string
}

// SSHHost is an SSH server on 127.0.0.1 for one simulated host. It records
// every "exec" request and emulates the few commands shutdownd sends; it
// never executes anything. Its port is closed while the Machine is Off (or
// SetReachable(false)) and reopened on the same port when it comes back, so
// known_hosts and configs written once stay valid.
type SSHHost struct {
	opts   SSHHostOptions
	log    *slog.Logger
	config *ssh.ServerConfig
	signer ssh.Signer
	addr   string // fixed at start: 127.0.0.1:port

	mu          sync.Mutex
	ln          net.Listener
	conns       map[net.Conn]struct{}
	reachable   bool
	closed      bool
	commands    []Command
	powerCmds   int
	logins      int
	cephStopped bool

	wg sync.WaitGroup
}

// sshHandshakeTimeout bounds a client that connects and says nothing, so
// Close never waits on it for long.
const sshHandshakeTimeout = 10 * time.Second

// NewSSHHost starts the server on 127.0.0.1 with a port chosen by the
// kernel. If the Machine is Off, the port is reserved but closed.
func NewSSHHost(opts SSHHostOptions) (*SSHHost, error) {
	if opts.Machine == nil {
		opts.Machine = NewMachine(opts.Name)
	}
	if opts.HostKey == nil {
		s, _, err := GenerateKey()
		if err != nil {
			return nil, fmt.Errorf("generate host key for %s: %w", opts.Name, err)
		}
		opts.HostKey = s
	}
	h := &SSHHost{
		opts:      opts,
		log:       opts.Logger,
		signer:    opts.HostKey,
		conns:     make(map[net.Conn]struct{}),
		reachable: true,
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.opts.Ceph == nil {
		h.opts.Ceph = NewCephCluster(0)
	}
	h.config = &ssh.ServerConfig{PublicKeyCallback: h.checkKey, AuthLogCallback: h.countLogin}
	h.config.AddHostKey(opts.HostKey)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for ssh host %s: %w", opts.Name, err)
	}
	h.addr = ln.Addr().String()
	h.mu.Lock()
	h.ln = ln
	h.wg.Add(1)
	go h.accept(ln)
	h.mu.Unlock()

	opts.Machine.OnChange(func(PowerState) { h.reconcile() })
	h.reconcile() // the machine may be Off already
	return h, nil
}

// Addr returns host:port; it stays the same across power cycles.
func (h *SSHHost) Addr() string { return h.addr }

// HostKey returns the server's public host key, for known_hosts.
func (h *SSHHost) HostKey() ssh.PublicKey { return h.signer.PublicKey() }

// Machine returns the power state this server follows.
func (h *SSHHost) Machine() *Machine { return h.opts.Machine }

// Commands returns every command line received so far, oldest first.
func (h *SSHHost) Commands() []Command {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.commands)
}

// PowerCommands returns how many power-off commands were received, whether
// or not they took effect.
func (h *SSHHost) PowerCommands() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.powerCmds
}

// CephFlags returns the OSD flags set now in the host's cluster, in the
// order they were set.
func (h *SSHHost) CephFlags() []string { return h.opts.Ceph.Flags() }

// CephStopped reports whether `systemctl stop ceph.target` was received
// (and not undone by a start).
func (h *SSHHost) CephStopped() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cephStopped
}

// Logins returns how many clients passed authentication; a client that
// refused the host key never gets that far.
func (h *SSHHost) Logins() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.logins
}

// SetReachable(false) simulates sshd down on a running host: the port is
// closed and open connections dropped. SetReachable(true) undoes it (the
// port opens again only if the Machine is On).
func (h *SSHHost) SetReachable(ok bool) {
	h.mu.Lock()
	h.reachable = ok
	h.mu.Unlock()
	h.reconcile()
}

// Close stops the server for good and waits for its goroutines.
func (h *SSHHost) Close() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.reconcile()
	h.wg.Wait()
}

// reconcile opens or closes the port to match the machine's state. It reads
// the current state rather than trusting a callback's argument, so two quick
// transitions delivered out of order still converge.
func (h *SSHHost) reconcile() {
	h.mu.Lock()
	defer h.mu.Unlock()
	up := !h.closed && h.reachable && h.opts.Machine.Ready()
	if !up {
		if h.ln != nil {
			h.ln.Close()
			h.ln = nil
		}
		for c := range h.conns {
			c.Close()
		}
		return
	}
	if h.ln != nil {
		return
	}
	ln, err := net.Listen("tcp", h.addr)
	if err != nil {
		h.log.Error("ssh host cannot listen again", "host", h.opts.Name, "addr", h.addr, "err", err)
		return
	}
	h.ln = ln
	h.wg.Add(1)
	go h.accept(ln)
}

func (h *SSHHost) accept(ln net.Listener) {
	defer h.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		h.mu.Lock()
		if h.ln != ln {
			h.mu.Unlock()
			c.Close()
			return
		}
		h.conns[c] = struct{}{}
		h.wg.Add(1)
		h.mu.Unlock()
		go h.serveConn(c)
	}
}

func (h *SSHHost) checkKey(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	for _, k := range h.opts.AuthorizedKeys {
		if k.Type() == key.Type() && string(k.Marshal()) == string(key.Marshal()) {
			return nil, nil
		}
	}
	return nil, fmt.Errorf("unknown public key for %q", meta.User())
}

// countLogin counts a successful authentication. x/crypto/ssh calls it
// before it tells the client, so a client whose Dial returned is always
// counted (counting after NewServerConn returned raced a test that read
// Logins right after its Dial).
func (h *SSHHost) countLogin(_ ssh.ConnMetadata, method string, err error) {
	if err != nil || method == "none" {
		return
	}
	h.mu.Lock()
	h.logins++
	h.mu.Unlock()
}

func (h *SSHHost) serveConn(c net.Conn) {
	defer h.wg.Done()
	defer func() {
		h.mu.Lock()
		delete(h.conns, c)
		h.mu.Unlock()
		c.Close()
	}()
	c.SetDeadline(time.Now().Add(sshHandshakeTimeout))
	sconn, chans, reqs, err := ssh.NewServerConn(c, h.config)
	if err != nil {
		return
	}
	c.SetDeadline(time.Time{})
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			// No port forwarding, no agent: only what shutdownd needs.
			nc.Reject(ssh.UnknownChannelType, "only session channels")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		h.wg.Add(1)
		go h.serveSession(c, sconn.User(), ch, creqs)
	}
}

func (h *SSHHost) serveSession(c net.Conn, user string, ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer h.wg.Done()
	done := make(chan struct{})
	defer close(done)
	execd := false
	for req := range reqs {
		if req.Type != "exec" || execd {
			// No shell, pty, env or subsystem: a batch client needs none.
			if req.WantReply {
				req.Reply(false, nil)
			}
			continue
		}
		var p struct{ Command string }
		if err := ssh.Unmarshal(req.Payload, &p); err != nil {
			req.Reply(false, nil)
			continue
		}
		execd = true
		req.Reply(true, nil)
		h.wg.Add(1)
		go h.exec(c, user, ch, p.Command, done)
	}
}

// exec answers one command. done is closed when the client closes the
// session, which cuts a slow (Latency) command short.
func (h *SSHHost) exec(c net.Conn, user string, ch ssh.Channel, line string, done <-chan struct{}) {
	defer h.wg.Done()
	h.mu.Lock()
	h.commands = append(h.commands, Command{At: time.Now(), Line: line, User: user})
	h.mu.Unlock()
	h.log.Debug("ssh command", "host", h.opts.Name, "user", user, "cmd", line)

	if h.opts.Latency > 0 {
		t := time.NewTimer(h.opts.Latency)
		select {
		case <-t.C:
		case <-done:
			t.Stop()
			return
		}
	}
	r := h.emulate(user, line)
	goingDown := r.powerOff && !h.opts.IgnorePowerOff
	if goingDown && !h.opts.ExitOnPowerOff {
		// The host goes down under the client: no exit status.
		h.opts.Machine.PowerOffAfter(h.opts.PowerOffDelay, "ssh")
		c.Close()
		return
	}
	io.WriteString(ch, r.stdout)
	io.WriteString(ch.Stderr(), r.stderr)
	ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(r.exit)}))
	ch.Close()
	if goingDown {
		// A clean exit first, then the machine goes down: scheduled after
		// the exit status is out, or a zero delay could close the
		// connection under it.
		h.opts.Machine.PowerOffAfter(h.opts.PowerOffDelay, "ssh")
	}
}

type sshReply struct {
	stdout, stderr string
	exit           int
	powerOff       bool
}

// sshPowerOffCommands are the command lines (after sudo and the directory of
// the program are stripped) that shut a host down.
var sshPowerOffCommands = map[string]bool{
	"systemctl poweroff": true,
	"poweroff":           true,
	"shutdown -h now":    true,
	"shutdown -P now":    true,
	"halt -p":            true,
}

// sshCephFlags are the OSD flags `ceph osd set` accepts.
var sshCephFlags = map[string]bool{
	"noout": true, "noin": true, "noup": true, "nodown": true,
	"norecover": true, "norebalance": true, "nobackfill": true,
	"noscrub": true, "nodeep-scrub": true, "pause": true,
	"notieragent": true, "nosnaptrim": true,
}

// emulate answers a command line from user. Shell syntax (pipes, &&,
// quotes) is not interpreted: such a line is a command not found, which is
// what a test wants to see if shutdownd ever sends one.
func (h *SSHHost) emulate(user, line string) sshReply {
	if h.opts.Handler != nil {
		if out, code, ok := h.opts.Handler(line); ok {
			return sshReply{stdout: out, exit: code}
		}
	}
	f := strings.Fields(line)
	var sudo *sudoCall
	if len(f) > 0 && path.Base(f[0]) == "sudo" {
		sudo = parseSudo(f[1:])
		f = sudo.cmd
	}
	cmd := sshJoinCmd(f)
	if sudo != nil && sudo.list {
		// Lists what would be allowed; runs nothing.
		return h.sudoList(user, f, sudo.nonInteractive)
	}
	if sshPowerOffCommands[cmd] {
		h.mu.Lock()
		h.powerCmds++
		h.mu.Unlock()
	}
	if sudo != nil {
		if r, refused := h.sudoRefuses(user, f, sudo.nonInteractive); refused {
			return r
		}
	} else if user != "root" {
		if r, refused := sshNeedsRoot(cmd); refused {
			return r
		}
	}
	if len(f) == 0 {
		return sshReply{}
	}
	switch {
	case sshPowerOffCommands[cmd]:
		return sshReply{powerOff: true}
	case cmd == "true":
		return sshReply{}
	case cmd == "id -u":
		return sshReply{stdout: sshUID(user) + "\n"}
	case cmd == "id -un":
		return sshReply{stdout: user + "\n"}
	case cmd == "hostname":
		return sshReply{stdout: h.opts.Name + "\n"}
	case path.Base(f[0]) == "ceph":
		return h.ceph(f[1:])
	case cmd == "systemctl stop ceph.target":
		h.mu.Lock()
		h.cephStopped = true
		h.mu.Unlock()
		h.opts.Ceph.setDaemon(h.opts.Name, false)
		return sshReply{}
	case cmd == "systemctl start ceph.target":
		h.mu.Lock()
		h.cephStopped = false
		h.mu.Unlock()
		h.opts.Ceph.setDaemon(h.opts.Name, true)
		return sshReply{}
	case cmd == "systemctl is-active ceph.target":
		if h.CephStopped() {
			return sshReply{stdout: "inactive\n", exit: 3}
		}
		return sshReply{stdout: "active\n"}
	}
	return sshNotFound(f[0])
}

// sudoCall is a sudo command line taken apart: its options and the
// command it is asked to run (or list).
type sudoCall struct {
	nonInteractive, list bool
	cmd                  []string
}

// parseSudo reads sudo's single-letter options (-n, -l, combined as -nl)
// up to the command.
func parseSudo(args []string) *sudoCall {
	c := &sudoCall{}
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		c.nonInteractive = c.nonInteractive || strings.Contains(args[0], "n")
		c.list = c.list || strings.Contains(args[0], "l")
		args = args[1:]
	}
	c.cmd = args
	return c
}

// sshUID is what `id -u` prints: 0 for root, a regular user's id for
// anyone else.
func sshUID(user string) string {
	if user == "root" {
		return "0"
	}
	return "1000"
}

// sshPrograms are where the programs shutdownd sends live on a Debian
// host, for sudo's messages and its -l answer.
var sshPrograms = map[string]string{
	"systemctl": "/usr/bin/systemctl", "ceph": "/usr/bin/ceph", "true": "/usr/bin/true",
	"hostname": "/usr/bin/hostname", "id": "/usr/bin/id",
	"poweroff": "/usr/sbin/poweroff", "shutdown": "/usr/sbin/shutdown", "halt": "/usr/sbin/halt",
}

// sshFullCommand is the command as sudo names it: the program's full path
// and the arguments; ok is false for a program the host does not have.
func sshFullCommand(f []string) (string, bool) {
	p, ok := sshPrograms[path.Base(f[0])]
	if !ok {
		return "", false
	}
	return strings.Join(append([]string{p}, f[1:]...), " "), true
}

// sudoAllows reports whether the host's sudo rules let user run f without
// a password. Root may always.
func (h *SSHHost) sudoAllows(user string, f []string) bool {
	if user == "root" {
		return true
	}
	if h.opts.SudoDenied {
		return false
	}
	return h.opts.SudoCommands == nil || slices.Contains(h.opts.SudoCommands, sshJoinCmd(f))
}

// sudoRefuses answers `sudo CMD` the way sudo refuses it, or reports that
// sudo lets it through.
func (h *SSHHost) sudoRefuses(user string, f []string, nonInteractive bool) (sshReply, bool) {
	if len(f) == 0 || (user != "root" && h.opts.SudoDenied) {
		msg := "sudo: a password is required\n"
		if !nonInteractive {
			msg = "sudo: a terminal is required to read the password; either use the -S option to read from standard input or configure an askpass helper\n" + msg
		}
		return sshReply{stderr: msg, exit: 1}, true
	}
	full, known := sshFullCommand(f)
	if !known {
		return sshReply{stderr: "sudo: " + f[0] + ": command not found\n", exit: 1}, true
	}
	if !h.sudoAllows(user, f) {
		return sshReply{stderr: fmt.Sprintf("Sorry, user %s is not allowed to execute '%s' as root on %s.\n", user, full, h.opts.Name), exit: 1}, true
	}
	return sshReply{}, false
}

// sudoList answers `sudo -l [CMD]`: with a command, its full path when the
// rules allow it (exit 0) and exit 1 when they do not; without one, the
// user's rules. It never runs anything.
func (h *SSHHost) sudoList(user string, f []string, nonInteractive bool) sshReply {
	if user != "root" && h.opts.SudoDenied {
		if nonInteractive {
			return sshReply{stderr: "sudo: a password is required\n", exit: 1}
		}
		return sshReply{stderr: "sudo: a terminal is required to read the password; either use the -S option to read from standard input or configure an askpass helper\nsudo: a password is required\n", exit: 1}
	}
	if len(f) == 0 {
		rules := "(ALL : ALL) NOPASSWD: ALL"
		if user != "root" && h.opts.SudoCommands != nil {
			var full []string
			for _, c := range h.opts.SudoCommands {
				if p, ok := sshFullCommand(strings.Fields(c)); ok {
					full = append(full, p)
				}
			}
			rules = "(root) NOPASSWD: " + strings.Join(full, ", ")
		}
		return sshReply{stdout: fmt.Sprintf("User %s may run the following commands on %s:\n    %s\n", user, h.opts.Name, rules)}
	}
	full, known := sshFullCommand(f)
	if !known {
		return sshReply{stderr: "sudo: " + f[0] + ": command not found\n", exit: 1}
	}
	if !h.sudoAllows(user, f) {
		return sshReply{exit: 1}
	}
	return sshReply{stdout: full + "\n"}
}

// sshNeedsRoot refuses, as the host would, a command that only root may
// run, sent by another user without sudo: systemd asks polkit, which
// cannot ask anyone over a batch SSH session; ceph cannot read the admin
// keyring.
func sshNeedsRoot(cmd string) (sshReply, bool) {
	switch {
	case sshPowerOffCommands[cmd]:
		return sshReply{stderr: "Call to PowerOff failed: Interactive authentication required.\n", exit: 1}, true
	case cmd == "systemctl stop ceph.target", cmd == "systemctl start ceph.target":
		verb := strings.Fields(cmd)[1]
		return sshReply{stderr: "Failed to " + verb + " ceph.target: Interactive authentication required.\nSee system logs and 'systemctl status ceph.target' for details.\n", exit: 1}, true
	case strings.HasPrefix(cmd, "ceph osd set "), strings.HasPrefix(cmd, "ceph osd unset "):
		return sshReply{stderr: "Error initializing cluster client: PermissionDeniedError('error calling conf_read_file')\n", exit: 1}, true
	}
	return sshReply{}, false
}

func sshJoinCmd(f []string) string {
	if len(f) == 0 {
		return ""
	}
	g := slices.Clone(f)
	g[0] = path.Base(g[0])
	return strings.Join(g, " ")
}

func sshNotFound(prog string) sshReply {
	return sshReply{stderr: "bash: line 1: " + prog + ": command not found\n", exit: 127}
}

func (h *SSHHost) ceph(args []string) sshReply {
	c := h.opts.Ceph
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case len(args) == 1 && args[0] == "health":
		return sshReply{stdout: c.healthLocked() + "\n"}
	case len(args) == 1 && (args[0] == "-s" || args[0] == "status"):
		return sshReply{stdout: c.statusLocked()}
	case len(args) >= 2 && args[0] == "osd" && args[1] == "stat" && cephJSONFormat(args[2:]):
		return sshReply{stdout: c.osdStatJSONLocked()}
	case len(args) == 3 && args[0] == "osd" && (args[1] == "set" || args[1] == "unset"):
		flag := args[2]
		if !sshCephFlags[flag] {
			return sshReply{stderr: "Invalid command: " + flag + " not in full|pause|noup|nodown|noout|noin|nobackfill|norebalance|norecover|noscrub|nodeep-scrub|notieragent|nosnaptrim\nError EINVAL: invalid command\n", exit: 22}
		}
		c.setFlagLocked(flag, args[1] == "set")
		return sshReply{stdout: flag + " is " + args[1] + "\n"}
	}
	return sshReply{stderr: "Invalid command: unknown command\nError EINVAL: invalid command\n", exit: 22}
}

// cephJSONFormat reports whether args ask for JSON output (-f json,
// --format json or --format=json).
func cephJSONFormat(args []string) bool {
	switch {
	case len(args) == 2 && (args[0] == "-f" || args[0] == "--format") && args[1] == "json":
		return true
	case len(args) == 1 && args[0] == "--format=json":
		return true
	}
	return false
}

// GenerateKey returns a new ed25519 key as a signer and as an OpenSSH PEM
// private key, ready to be written (mode 0600) as a client's key file.
func GenerateKey() (ssh.Signer, []byte, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate ed25519 key: %w", err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, nil, fmt.Errorf("signer from ed25519 key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return nil, nil, fmt.Errorf("marshal ed25519 key: %w", err)
	}
	return signer, pem.EncodeToMemory(block), nil
}

// KnownHostsLine returns the known_hosts line for a server at addr, in the
// "[127.0.0.1]:port" form clients look up for a non-22 port.
func KnownHostsLine(addr string, key ssh.PublicKey) string {
	return knownhosts.Line([]string{knownhosts.Normalize(addr)}, key)
}

// Port returns the server's TCP port, for configs that take it apart.
func (h *SSHHost) Port() int {
	_, p, err := net.SplitHostPort(h.addr)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}
