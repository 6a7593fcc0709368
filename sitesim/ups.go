package sitesim

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// UPS is the demo's simulated UPS: a tiny NUT server (the subset of the
// RFC 9271 protocol shutdownd speaks: USERNAME, PASSWORD, LOGIN, LIST VAR,
// GET VAR, LOGOUT) and an HTTP control to pull the plug and put it back.
// On battery the charge falls so that the runtime drops a second per
// second; on mains it charges again. It is for the demo only: the tests
// use the real upsd (nut/upsdtest).
type UPS struct {
	Name string
	User string

	password string
	full     time.Duration // runtime at 100 %
	tls      *tls.Config
	certPEM  []byte
	nut      net.Listener
	ctl      *http.Server
	ctlLn    net.Listener
	wg       sync.WaitGroup

	mu      sync.Mutex
	onBatt  bool
	charge  float64 // percent
	changed time.Time
	conns   map[net.Conn]struct{}
}

// upsPassword is what the simulated UPS's user logs in with.
const upsPassword = "sim-ups-secret-41c2"

// StartUPS starts the simulated UPS on 127.0.0.1: the NUT server and the
// control endpoint, each on its own free port. full is the runtime of a
// full battery.
func StartUPS(name string, full time.Duration) (*UPS, error) {
	u := &UPS{Name: name, User: "shutdownd", password: upsPassword, full: full, charge: 100, changed: time.Now(),
		conns: map[net.Conn]struct{}{}}
	cert, certPEM, err := selfSignedCert("sitesim-ups")
	if err != nil {
		return nil, fmt.Errorf("simulated UPS: %w", err)
	}
	u.tls, u.certPEM = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, certPEM
	if u.nut, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("simulated UPS: %w", err)
	}
	if u.ctlLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		u.nut.Close()
		return nil, fmt.Errorf("simulated UPS control: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /unplug", func(w http.ResponseWriter, _ *http.Request) {
		u.SetMains(false)
		fmt.Fprintln(w, u.describe())
	})
	mux.HandleFunc("POST /plug", func(w http.ResponseWriter, _ *http.Request) {
		u.SetMains(true)
		fmt.Fprintln(w, u.describe())
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, u.describe()) })
	u.ctl = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	u.wg.Add(2)
	go func() { defer u.wg.Done(); _ = u.ctl.Serve(u.ctlLn) }()
	go func() { defer u.wg.Done(); u.serve() }()
	return u, nil
}

// Addr is host:port of the NUT server.
func (u *UPS) Addr() string { return u.nut.Addr().String() }

// ControlURL is the base URL of the plug control.
func (u *UPS) ControlURL() string { return "http://" + u.ctlLn.Addr().String() }

// CertPEM is the certificate STARTTLS presents (its own CA).
func (u *UPS) CertPEM() []byte { return u.certPEM }

// Password is what User logs in with.
func (u *UPS) Password() string { return u.password }

// SetMains plugs the UPS in (true) or pulls the plug (false).
func (u *UPS) SetMains(on bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.advance(time.Now())
	u.onBatt = !on
}

// advance moves the charge to now: down on battery (runtime falls a
// second per second), up on mains (full again in a tenth of the runtime).
func (u *UPS) advance(now time.Time) {
	dt := now.Sub(u.changed).Seconds()
	u.changed = now
	rate := 100 / u.full.Seconds()
	if u.onBatt {
		u.charge = max(u.charge-rate*dt, 0)
	} else {
		u.charge = min(u.charge+10*rate*dt, 100)
	}
}

// vars is what LIST VAR answers.
func (u *UPS) vars() [][2]string {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.advance(time.Now())
	status := "OL"
	switch {
	case u.onBatt && u.charge < 10:
		status = "OB DISCHRG LB"
	case u.onBatt:
		status = "OB DISCHRG"
	case u.charge < 100:
		status = "OL CHRG"
	}
	runtime := u.full.Seconds() * u.charge / 100
	return [][2]string{
		{"battery.charge", strconv.FormatFloat(float64(int(u.charge)), 'f', -1, 64)},
		{"battery.runtime", strconv.Itoa(int(runtime))},
		{"device.mfr", "sitesim"},
		{"device.model", "Simulated UPS"},
		{"ups.status", status},
	}
}

func (u *UPS) describe() string {
	var parts []string
	for _, v := range u.vars() {
		if strings.HasPrefix(v[0], "battery.") || v[0] == "ups.status" {
			parts = append(parts, v[0]+": "+v[1])
		}
	}
	return strings.Join(parts, ", ")
}

func (u *UPS) serve() {
	for {
		c, err := u.nut.Accept()
		if err != nil {
			return
		}
		u.mu.Lock()
		u.conns[c] = struct{}{}
		u.mu.Unlock()
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			u.session(c)
			u.mu.Lock()
			delete(u.conns, c)
			u.mu.Unlock()
			c.Close()
		}()
	}
}

// session answers one client, one line per command.
func (u *UPS) session(c net.Conn) {
	sc := bufio.NewScanner(c)
	var user, pass string
	reply := func(s string) bool { _, err := fmt.Fprintf(c, "%s\n", s); return err == nil }
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		arg := func(i int) string {
			if i < len(f) {
				return strings.Trim(f[i], `"`)
			}
			return ""
		}
		var ok bool
		switch strings.ToUpper(f[0]) {
		case "USERNAME":
			user, ok = arg(1), reply("OK")
		case "PASSWORD":
			pass, ok = arg(1), reply("OK")
		case "LOGIN":
			if user != u.User || pass != u.password {
				ok = reply("ERR ACCESS-DENIED")
			} else {
				ok = reply("OK")
			}
		case "LOGOUT":
			reply("OK Goodbye")
			return
		case "STARTTLS":
			if !reply("OK STARTTLS") {
				return
			}
			tc := tls.Server(c, u.tls)
			_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
			if err := tc.Handshake(); err != nil {
				return
			}
			_ = tc.SetDeadline(time.Time{})
			u.session(tc)
			return
		case "LIST":
			ok = u.list(arg(1), arg(2), reply)
		case "GET":
			ok = u.get(arg(1), arg(2), arg(3), reply)
		default:
			ok = reply("ERR UNKNOWN-COMMAND")
		}
		if !ok {
			return
		}
	}
}

func (u *UPS) list(what, ups string, reply func(string) bool) bool {
	if what != "VAR" {
		return reply("ERR INVALID-ARGUMENT")
	}
	if ups != u.Name {
		return reply("ERR UNKNOWN-UPS")
	}
	reply("BEGIN LIST VAR " + ups)
	for _, v := range u.vars() {
		reply(fmt.Sprintf("VAR %s %s %q", ups, v[0], v[1]))
	}
	return reply("END LIST VAR " + ups)
}

func (u *UPS) get(what, ups, name string, reply func(string) bool) bool {
	if what != "VAR" {
		return reply("ERR INVALID-ARGUMENT")
	}
	if ups != u.Name {
		return reply("ERR UNKNOWN-UPS")
	}
	for _, v := range u.vars() {
		if v[0] == name {
			return reply(fmt.Sprintf("VAR %s %s %q", ups, name, v[1]))
		}
	}
	return reply("ERR VAR-NOT-SUPPORTED")
}

// Close stops both servers and ends every session.
func (u *UPS) Close() {
	u.ctl.Close()
	u.nut.Close()
	u.mu.Lock()
	for c := range u.conns {
		c.Close()
	}
	u.mu.Unlock()
	u.wg.Wait()
}

// startUPS starts the simulated UPS when the options ask for one, and
// writes its user's password file.
func (s *Site) startUPS() error {
	if s.Opts.UPSRuntime <= 0 {
		return nil
	}
	u, err := StartUPS("ups", s.Opts.UPSRuntime)
	if err != nil {
		return err
	}
	s.UPS = u
	if err := os.WriteFile(s.upsPasswordFile(), []byte(u.Password()+"\n"), 0o600); err != nil {
		return fmt.Errorf("write ups password: %w", err)
	}
	if err := os.WriteFile(s.upsCAFile(), u.CertPEM(), 0o644); err != nil {
		return fmt.Errorf("write ups ca: %w", err)
	}
	return nil
}

func (s *Site) upsCAFile() string { return filepath.Join(s.Opts.Dir, "nut-ca.pem") }

func (s *Site) upsPasswordFile() string { return filepath.Join(s.Opts.Dir, "nut-password") }

// upsConfig writes the power_source section for the simulated UPS: over
// STARTTLS, as a NUT server off the management host should be read, polled
// every second with a 10 s grace, so a pulled plug ends in a shutdown
// within seconds in the demo, and the plug put back brings the site up
// again 10 s later (startup_after).
func (s *Site) upsConfig(b *strings.Builder) {
	if s.UPS == nil {
		return
	}
	fmt.Fprintf(b, "power_source:\n  nut: {address: %q, ups: %s, user: %s, password_file: %q, starttls: true, ca_file: %q}\n",
		s.UPS.Addr(), s.UPS.Name, s.UPS.User, s.upsPasswordFile(), s.upsCAFile())
	b.WriteString("  poll_interval: 1s\n  on_battery_grace: 10s\n  shutdown_when: {runtime_margin: 30s, charge_below: 30, low_battery: true}\n")
	b.WriteString("  startup_after: 10s\n  startup_min_charge: 50\n")
}
