package config

import (
	"net"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"
)

// PowerSource is the power_source section (SPEC section 7): the UPS that
// shutdownd watches through a NUT server, and when it acts by itself. Nil in
// Config when the section is absent: no watcher runs.
type PowerSource struct {
	NUT NUT
	// PollInterval is how often the UPS is read.
	PollInterval time.Duration
	// OnBatteryGrace is how long on battery is still a blip: no shutdown
	// starts before it has passed (except on FSD, the UPS's own order).
	OnBatteryGrace time.Duration
	ShutdownWhen   ShutdownWhen
	// StartupAfter is how long the mains must be back before the watcher
	// starts the startup job by itself; 0 never.
	StartupAfter time.Duration
	// StartupMinCharge is the battery charge (percent) the startup also
	// waits for, so a second outage finds a battery able to carry another
	// shutdown.
	StartupMinCharge float64
}

// NUT says where the NUT server (upsd) is and how to log in.
type NUT struct {
	// Address is host:port (":3493" appended when the file had no port).
	Address string
	// UPS is the UPS's name on that server.
	UPS string
	// User and Password log in (USERNAME, PASSWORD, LOGIN): upsd then
	// counts shutdownd among the systems the UPS powers. Empty User: no
	// login, read only.
	User     string
	Password Secret
	// StartTLS upgrades the connection before the login; CAFile, when set,
	// is the CA that signed upsd's certificate (else the system's).
	StartTLS bool
	CAFile   string
	// Timeout bounds each dial and each request.
	Timeout time.Duration
}

// ShutdownWhen are the conditions, any of which starts a shutdown once on
// battery for longer than the grace.
type ShutdownWhen struct {
	// RuntimeMargin: battery.runtime below the forecast of a shutdown now
	// plus this margin.
	RuntimeMargin time.Duration
	// ChargeBelow: battery.charge below this percent; 0 turns it off.
	ChargeBelow float64
	// LowBattery: the UPS flags LB.
	LowBattery bool
}

// Source names the UPS as jobs and power events name it: nut/<ups>.
func (p *PowerSource) Source() string { return "nut/" + p.NUT.UPS }

// Defaults of the power_source section.
const (
	DefaultNUTPort           = 3493
	DefaultPowerPoll         = 5 * time.Second
	DefaultOnBatteryGrace    = 30 * time.Second
	DefaultRuntimeMargin     = 2 * time.Minute
	DefaultChargeBelow       = 30
	DefaultStartupMinCharge  = 50
	DefaultNUTTimeout        = 5 * time.Second
	maxPowerPoll             = time.Minute
	minPowerGraceOverPolling = 2
)

// powerSource reads power_source. A section without nut is an error: the
// NUT server is the only power source there is.
func (d *decoder) powerSource(n *yaml.Node, c *Config) {
	const path = "power_source"
	m := d.mapping(n, path, "nut", "poll_interval", "on_battery_grace", "shutdown_when", "startup_after", "startup_min_charge")
	if m == nil {
		return
	}
	p := &PowerSource{PollInterval: DefaultPowerPoll, OnBatteryGrace: DefaultOnBatteryGrace,
		ShutdownWhen:     ShutdownWhen{RuntimeMargin: DefaultRuntimeMargin, ChargeBelow: DefaultChargeBelow, LowBattery: true},
		StartupMinCharge: DefaultStartupMinCharge}
	e, ok := m["nut"]
	if !ok {
		d.fail(n, path, "nut is required (the NUT server to read the UPS from)")
		return
	}
	d.nut(e.val, path+".nut", &p.NUT)
	if e, ok := m["poll_interval"]; ok {
		if v, ok := d.duration(e.val, path+".poll_interval"); ok {
			if v > maxPowerPoll {
				d.fail(e.val, path+".poll_interval", "must be at most %s, got %s (the watcher would notice a power cut too late)", dur(maxPowerPoll), e.val.Value)
			}
			p.PollInterval = v
		}
	}
	if e, ok := m["on_battery_grace"]; ok {
		if v, ok := d.duration(e.val, path+".on_battery_grace"); ok {
			p.OnBatteryGrace = v
		}
	}
	if e, ok := m["shutdown_when"]; ok {
		d.shutdownWhen(e.val, path+".shutdown_when", &p.ShutdownWhen)
	}
	if e, ok := m["startup_after"]; ok {
		p.StartupAfter = d.durationOrZero(e.val, path+".startup_after")
	}
	if e, ok := m["startup_min_charge"]; ok {
		if v, ok := d.percent(e.val, path+".startup_min_charge"); ok {
			p.StartupMinCharge = v
		}
	}
	c.PowerSource = p
}

func (d *decoder) nut(n *yaml.Node, path string, u *NUT) {
	m := d.mapping(n, path, "address", "ups", "user", "password_file", "password_env", "starttls", "ca_file", "timeout")
	if m == nil {
		return
	}
	u.Timeout = DefaultNUTTimeout
	if e, ok := m["address"]; ok {
		if s, ok := d.nonEmpty(e.val, path+".address"); ok {
			u.Address = nutAddress(s)
		}
	} else {
		d.fail(n, path, "address is required (host:port of upsd)")
	}
	if e, ok := m["ups"]; ok {
		if s, ok := d.nonEmpty(e.val, path+".ups"); ok {
			u.UPS = s
		}
	} else {
		d.fail(n, path, "ups is required (the UPS's name on the NUT server, as in ups.conf)")
	}
	d.nutLogin(n, path, m, u)
	if e, ok := m["starttls"]; ok {
		u.StartTLS, _ = d.boolean(e.val, path+".starttls")
	}
	if e, ok := m["ca_file"]; ok {
		if !u.StartTLS {
			d.fail(e.key, path+".ca_file", "only used with starttls: true")
		}
		u.CAFile = d.path(e.val, path+".ca_file", false)
	}
	if e, ok := m["timeout"]; ok {
		if v, ok := d.duration(e.val, path+".timeout"); ok {
			u.Timeout = v
		}
	}
}

// nutLogin reads user and its password: both or neither, since upsd
// refuses a login without a password.
func (d *decoder) nutLogin(n *yaml.Node, path string, m map[string]entry, u *NUT) {
	pf, hasFile := m["password_file"]
	pe, hasEnv := m["password_env"]
	e, hasUser := m["user"]
	if hasUser {
		if s, ok := d.nonEmpty(e.val, path+".user"); ok {
			u.User = s
		}
	}
	switch {
	case hasFile && hasEnv:
		d.fail(pe.key, path+".password_env", "set password_file or password_env, not both")
	case hasFile:
		u.Password = d.secretFile(pf.val, path+".password_file")
	case hasEnv:
		u.Password = d.secretEnv(pe.val, path+".password_env")
	}
	if hasUser && !hasFile && !hasEnv {
		d.fail(e.key, path+".user", "needs password_file or password_env")
	}
	if !hasUser && (hasFile || hasEnv) {
		d.fail(n, path, "a password needs a user")
	}
}

func (d *decoder) shutdownWhen(n *yaml.Node, path string, s *ShutdownWhen) {
	m := d.mapping(n, path, "runtime_margin", "charge_below", "low_battery")
	if m == nil {
		return
	}
	if e, ok := m["runtime_margin"]; ok {
		s.RuntimeMargin = d.durationOrZero(e.val, path+".runtime_margin")
	}
	if e, ok := m["charge_below"]; ok {
		if v, ok := d.percent(e.val, path+".charge_below"); ok {
			s.ChargeBelow = v
		}
	}
	if e, ok := m["low_battery"]; ok {
		if b, ok := d.boolean(e.val, path+".low_battery"); ok {
			s.LowBattery = b
		}
	}
}

// durationOrZero reads a duration where 0 is meaningful ("0s": off, or no
// margin); negative is still an error.
func (d *decoder) durationOrZero(n *yaml.Node, path string) time.Duration {
	if n.Kind == yaml.ScalarNode && !isNull(n) {
		if v, err := time.ParseDuration(n.Value); err == nil && v == 0 {
			return 0
		}
	}
	v, _ := d.duration(n, path)
	return v
}

// percent reads a number from 0 to 100.
func (d *decoder) percent(n *yaml.Node, path string) (float64, bool) {
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") {
		d.fail(n, path, "must be a number from 0 to 100 (percent)")
		return 0, false
	}
	v, err := strconv.ParseFloat(n.Value, 64)
	if err != nil || v < 0 || v > 100 {
		d.fail(n, path, "must be a number from 0 to 100 (percent), got %s", n.Value)
		return 0, false
	}
	return v, true
}

// nutAddress appends the NUT port when the address has none.
func nutAddress(s string) string {
	if _, _, err := net.SplitHostPort(s); err == nil {
		return s
	}
	return net.JoinHostPort(s, strconv.Itoa(DefaultNUTPort))
}

// checkPowerSource checks what needs the whole section: a grace shorter
// than two polls cannot tell a blip from an outage.
func (d *decoder) checkPowerSource(n *yaml.Node, p *PowerSource) {
	if p == nil {
		return
	}
	if p.OnBatteryGrace < minPowerGraceOverPolling*p.PollInterval {
		d.fail(n, "power_source.on_battery_grace", "must be at least %d poll intervals (%s), got %s: shorter, one reading decides between a blip and an outage",
			minPowerGraceOverPolling, dur(minPowerGraceOverPolling*p.PollInterval), dur(p.OnBatteryGrace))
	}
}

// DescribePower writes the power source's rules in words for check-config.
func (p *PowerSource) DescribePower(pr func(string, ...any)) {
	if p == nil {
		pr("Power source: none (power_source absent): only POST /shutdown starts a shutdown")
		return
	}
	n := p.NUT
	login := "no login (read only)"
	if n.User != "" {
		login = "logs in as " + n.User
	}
	tls := "plain TCP"
	if n.StartTLS {
		tls = "STARTTLS"
	}
	pr("Power source: UPS %s on the NUT server %s (%s, %s), read every %s", n.UPS, n.Address, login, tls, dur(p.PollInterval))
	pr("  every change between mains and battery, and every loss or return of the NUT server, is a power event")
	pr("  on battery for less than %s is a blip: nothing happens", dur(p.OnBatteryGrace))
	pr("  on battery for %s or longer, a shutdown starts when any of these holds:", dur(p.OnBatteryGrace))
	w := p.ShutdownWhen
	if w.LowBattery {
		pr("    - the UPS flags low battery (LB)")
	}
	pr("    - battery.runtime is below the forecast duration of a shutdown now plus %s", dur(w.RuntimeMargin))
	if w.ChargeBelow > 0 {
		pr("    - battery.charge is below %s%%", strconv.FormatFloat(w.ChargeBelow, 'f', -1, 64))
	}
	pr("    - the NUT server stops answering while the UPS was on battery (as upsmon does)")
	pr("  the UPS's forced shutdown flag (FSD) starts a shutdown at once, without the grace")
	pr("  the NUT server lost while on mains: a warning event, no shutdown")
	pr("  mains back before the shutdown started: nothing; at most one shutdown per outage, and never while another job of the outage exists")
	if p.StartupAfter > 0 {
		pr("  startup: mains back for %s with charge at least %s%% after a successful shutdown starts the startup job",
			dur(p.StartupAfter), strconv.FormatFloat(p.StartupMinCharge, 'f', -1, 64))
	} else {
		pr("  startup: never by itself (startup_after 0)")
	}
	pr("  jobs it starts are named power-source:%s, with the readings that decided them as reason", p.Source())
}
