// Package upsdtest runs the real Network UPS Tools server for tests: Debian's
// upsd with the dummy-ups driver, on 127.0.0.1, from a temporary
// configuration directory. The driver reads a definition file that Set
// rewrites, so a test changes ups.status, battery.charge and battery.runtime
// as a real UPS would, and Kill stops upsd as a crash would.
//
// SAFETY: only upsd and dummy-ups are ever started. upsmon, the program that
// powers a machine off, is never run, and no driver is run with -k.
//
// Under CI=true a missing NUT program fails the test; elsewhere it skips.
package upsdtest

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/nut"
)

// The real programs (see the Makefile's TOOLS): /usr/sbin/upsd is a wrapper
// that starts nothing while /etc/nut/nut.conf says MODE=none.
const (
	UpsdPath     = "/lib/nut/upsd"
	DummyUPSPath = "/lib/nut/dummy-ups"
)

// Options configures the server.
type Options struct {
	// UPS is the UPS name (default "ups1").
	UPS string
	// User and Password add a upsd.users entry with upsmon secondary
	// rights, which LOGIN needs.
	User, Password string
	// Vars are the first values; default OL, charge 100, runtime 3600.
	Vars map[string]string
	// CertFile, when set, is a PEM file with certificate and key: upsd
	// then accepts STARTTLS.
	CertFile string
}

// Server is a running upsd with one dummy UPS.
type Server struct {
	// Addr is 127.0.0.1:port of upsd.
	Addr string
	// UPS is the UPS name.
	UPS string

	t      testing.TB
	dir    string
	dev    string
	env    []string
	user   string
	pass   string
	drv    *exec.Cmd
	upsd   *exec.Cmd
	upsdOK chan struct{}
	cert   string
	mtime  time.Time // of the last definition file written
	vars   map[string]string
}

// Require skips the test (fails it under CI=true) when the NUT programs are
// missing.
func Require(t testing.TB) {
	t.Helper()
	for _, p := range []string{UpsdPath, DummyUPSPath} {
		if _, err := os.Stat(p); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s missing under CI=true (make tools installs nut-server): %v", p, err)
			}
			t.Skipf("%s missing (make tools installs nut-server): %v", p, err)
		}
	}
}

// Start runs dummy-ups and upsd and waits until upsd answers with the UPS's
// status. Both are stopped at the end of the test.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	Require(t)
	s := &Server{t: t, UPS: cmpOr(o.UPS, "ups1"), dir: t.TempDir(), user: o.User, pass: o.Password}
	s.dev = filepath.Join(s.dir, s.UPS+".dev")
	s.vars = map[string]string{"ups.status": "OL", "battery.charge": "100", "battery.runtime": "3600"}
	maps.Copy(s.vars, o.Vars)
	state := filepath.Join(s.dir, "state")
	must(t, os.Mkdir(state, 0o700))
	s.env = append(os.Environ(), "NUT_CONFPATH="+s.dir, "NUT_STATEPATH="+state)
	s.writeDev()
	// pollinterval 1: the driver rereads the definition file every second,
	// the fastest it can.
	s.write("ups.conf", fmt.Sprintf("[%s]\n  driver = dummy-ups\n  port = %s\n  pollinterval = 1\n", s.UPS, s.dev))
	users := ""
	if o.User != "" {
		// The NUT parser takes a double-quoted value with backslash escapes.
		esc := strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(o.Password)
		users = fmt.Sprintf("[%s]\n  password = \"%s\"\n  upsmon secondary\n", o.User, esc)
	}
	s.write("upsd.users", users)
	s.startDriver()
	s.startUpsd(o.CertFile)
	t.Cleanup(s.stop)
	s.waitStatus(s.vars["ups.status"])
	return s
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (s *Server) write(name, content string) {
	must(s.t, os.WriteFile(filepath.Join(s.dir, name), []byte(content), 0o600))
}

// writeDev replaces the definition file in one rename, so the driver never
// reads half of it. dummy-ups rereads the file when its modification time
// changes, in whole seconds: two writes within one second would look like
// one, so each write gets a modification time a second past the last.
func (s *Server) writeDev() {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(s.vars)) {
		fmt.Fprintf(&b, "%s: %s\n", k, s.vars[k])
	}
	tmp := s.dev + ".tmp"
	must(s.t, os.WriteFile(tmp, []byte(b.String()), 0o600))
	mtime := time.Now().Truncate(time.Second)
	if !mtime.After(s.mtime) {
		mtime = s.mtime.Add(time.Second)
	}
	s.mtime = mtime
	must(s.t, os.Chtimes(tmp, mtime, mtime))
	must(s.t, os.Rename(tmp, s.dev))
}

// asRoot adds -u root when running as root: upsd and the driver would
// otherwise switch to the "nut" user, which cannot read the test's files.
func asRoot(args ...string) []string {
	if os.Geteuid() == 0 {
		return append(args, "-u", "root")
	}
	return args
}

func (s *Server) command(path string, args ...string) *exec.Cmd {
	cmd := exec.Command(path, args...)
	cmd.Env = s.env
	cmd.Dir = s.dir
	log, err := os.OpenFile(filepath.Join(s.dir, filepath.Base(path)+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	must(s.t, err)
	cmd.Stdout, cmd.Stderr = log, log
	return cmd
}

func (s *Server) startDriver() {
	s.drv = s.command(DummyUPSPath, asRoot("-a", s.UPS, "-F")...)
	must(s.t, s.drv.Start())
}

// startUpsd starts upsd on a free port; upsd cannot listen on port 0, so a
// port is picked and, if another process took it meanwhile, picked again.
func (s *Server) startUpsd(certFile string) {
	s.cert = certFile
	for attempt := 0; ; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		must(s.t, err)
		s.Addr = l.Addr().String()
		l.Close()
		if s.runUpsd() {
			return
		}
		if attempt == 4 {
			s.t.Fatalf("upsd did not listen on %s:\n%s", s.Addr, s.Log())
		}
		s.killUpsd()
	}
}

// runUpsd starts upsd on s.Addr and reports whether it listens.
func (s *Server) runUpsd() bool {
	host, port, _ := net.SplitHostPort(s.Addr)
	conf := fmt.Sprintf("LISTEN %s %s\nMAXAGE 15\n", host, port)
	if s.cert != "" {
		conf += "CERTFILE " + s.cert + "\n"
	}
	s.write("upsd.conf", conf)
	s.upsd = s.command(UpsdPath, asRoot("-F")...)
	must(s.t, s.upsd.Start())
	s.upsdOK = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(s.upsd, s.upsdOK)
	return s.listening()
}

// Restart starts upsd again on the same address after Kill, and waits until
// it serves the UPS.
func (s *Server) Restart() {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !s.runUpsd() {
		s.killUpsd()
		if time.Now().After(deadline) {
			s.t.Fatalf("upsd did not start again on %s:\n%s", s.Addr, s.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.waitStatus(s.vars["ups.status"])
}

// listening waits until upsd accepts connections or exits.
func (s *Server) listening() bool {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.upsdOK:
			return false
		default:
		}
		if c, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
			c.Close()
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// Log returns what upsd and the driver printed, for failure messages.
func (s *Server) Log() string {
	a, _ := os.ReadFile(filepath.Join(s.dir, "upsd.log"))
	b, _ := os.ReadFile(filepath.Join(s.dir, "dummy-ups.log"))
	return "upsd:\n" + string(a) + "dummy-ups:\n" + string(b)
}

// Set changes variables (e.g. "ups.status": "OB DISCHRG") and waits until
// upsd serves the new ups.status, so the test continues from a known state.
func (s *Server) Set(vars map[string]string) {
	s.t.Helper()
	maps.Copy(s.vars, vars)
	s.writeDev()
	s.waitStatus(s.vars["ups.status"])
	for k, want := range vars {
		s.waitVar(k, want)
	}
}

func (s *Server) waitStatus(want string) {
	s.t.Helper()
	s.waitVar("ups.status", want)
}

// waitVar polls upsd, as a client, until the variable has the value.
func (s *Server) waitVar(name, want string) {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var got string
	var err error
	for time.Now().Before(deadline) {
		got, err = s.read(name)
		if err == nil && got == want {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("upsd at %s: %s = %q (err %v), want %q\n%s", s.Addr, name, got, err, want, s.Log())
}

func (s *Server) read(name string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := nut.Dial(ctx, nut.Options{Address: s.Addr, Timeout: 2 * time.Second})
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.Var(ctx, s.UPS, name)
}

// Kill stops upsd with SIGKILL, as a crash would; the driver keeps running.
func (s *Server) Kill() {
	s.t.Helper()
	s.killUpsd()
}

func (s *Server) killUpsd() {
	if s.upsd == nil || s.upsd.Process == nil {
		return
	}
	_ = s.upsd.Process.Kill()
	select {
	case <-s.upsdOK:
	case <-time.After(10 * time.Second):
		s.t.Errorf("upsd pid %d did not exit after SIGKILL", s.upsd.Process.Pid)
	}
	s.upsd = nil
}

func (s *Server) stop() {
	s.killUpsd()
	if s.drv != nil && s.drv.Process != nil {
		_ = s.drv.Process.Kill()
		_ = s.drv.Wait()
	}
}
