package config

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Defaults applied when the file leaves a field out.
const (
	DefaultListen          = "127.0.0.1:8080"
	DefaultDatabase        = "/var/lib/shutdownd/shutdownd.db"
	DefaultSSHUser         = "root"
	DefaultPoweroffCommand = "systemctl poweroff"
	DefaultSSHPort         = "22"
	DefaultIPMIPort        = 623
	DefaultRedfishPort     = 443
	// DefaultBMCTimeout bounds a BMC login and each BMC request: long
	// enough for a slow BMC's Redfish session, short enough that an
	// unreachable BMC does not hold a host's power-off for long.
	DefaultBMCTimeout = 10 * time.Second
	// DefaultResumeWindow: a restart of the service alone (crash, kill,
	// upgrade) comes back within seconds; ten minutes is far longer than
	// that and far shorter than a site restored by hand.
	DefaultResumeWindow = 10 * time.Minute
)

func defaults(name string) *Config {
	return &Config{
		Path:     name,
		Listen:   DefaultListen,
		Database: DefaultDatabase,
		OpenStack: OpenStack{
			Concurrency:    20,
			StopTimeout:    5 * time.Minute,
			PollInterval:   2 * time.Second,
			RequestTimeout: 30 * time.Second,
		},
		Storage: Storage{Type: StorageNone},
		SSH: SSH{
			User:            DefaultSSHUser,
			ConnectTimeout:  10 * time.Second,
			CommandTimeout:  60 * time.Second,
			PoweroffCommand: DefaultPoweroffCommand,
		},
		BMC: BMC{Protocol: ProtocolRedfish, Timeout: DefaultBMCTimeout},
		Timeouts: Timeouts{
			HostOff:         3 * time.Minute,
			BMCSoftOff:      time.Minute,
			BMCHardOff:      time.Minute,
			BMCPollInterval: 2 * time.Second,
			HostBoot:        DefaultHostBoot,
			StorageReady:    DefaultStorageReady,
		},
		ResumeWindow: DefaultResumeWindow,
		Metrics:      Metrics{Access: MetricsRead},
		Web:          Web{SimulationMaxAge: DefaultSimulationMaxAge},
	}
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// Parse validates config data. name is used in error messages, and relative
// paths in the file are resolved against its directory. On error the
// returned error joins one *FieldError per problem, sorted by line.
func Parse(data []byte, name string) (*Config, error) {
	return ParseWith(data, name, Options{})
}

// ParseWith is Parse with options (where this machine's SSH host keys are).
func ParseWith(data []byte, name string, opts Options) (*Config, error) {
	d := &decoder{file: name, dir: filepath.Dir(name), opts: opts}
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil && !errors.Is(err, io.EOF) {
		if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
			line, _ := strconv.Atoi(m[1])
			return nil, &FieldError{File: name, Line: line, Reason: "invalid YAML: " + m[2]}
		}
		return nil, &FieldError{File: name, Line: 1, Reason: "invalid YAML: " + err.Error()}
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		return nil, &FieldError{File: name, Line: extra.Line, Reason: "more than one YAML document; put everything in one"}
	case !errors.Is(err, io.EOF):
		// A second document that does not even parse is still a second
		// document, and a broken file.
		line, reason := 1, err.Error()
		if m := yamlLine.FindStringSubmatch(reason); m != nil {
			line, _ = strconv.Atoi(m[1])
			reason = m[2]
		}
		return nil, &FieldError{File: name, Line: line, Reason: "invalid YAML after the first document: " + reason}
	}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		doc = doc.Content[0]
	}
	c := defaults(name)
	d.config(doc, c)
	if err := d.err(); err != nil {
		return nil, err
	}
	return c, nil
}

func (d *decoder) config(doc *yaml.Node, c *Config) {
	m := d.mapping(doc, "", "listen", "tls", "database", "openstack", "storage", "ssh",
		"bmc", "timeouts", "resume_window", "hosts", "host_order", "metrics", "notify", "trusted_proxies", "web", "power_source")
	if m == nil {
		return
	}
	if e, ok := m["listen"]; ok {
		d.listen(e.val, c)
	}
	if e, ok := m["tls"]; ok {
		d.tls(e, c)
	}
	if e, ok := m["database"]; ok {
		if s, ok := d.nonEmpty(e.val, "database"); ok {
			c.Database = d.resolve(s)
		}
	}
	if e, ok := m["openstack"]; ok {
		d.openstack(e, c)
	}
	// Host defaults before hosts, hosts before what refers to them.
	if e, ok := m["ssh"]; ok {
		d.sshBlock(e.val, "ssh", &c.SSH)
	}
	top := bmcDraft{BMC: c.BMC}
	if e, ok := m["bmc"]; ok {
		d.bmcBlock(e.val, "bmc", &top, false)
	}
	c.BMC = top.BMC
	if e, ok := m["timeouts"]; ok {
		d.timeouts(e.val, c)
	}
	if e, ok := m["resume_window"]; ok {
		if v, ok := d.duration(e.val, "resume_window"); ok {
			c.ResumeWindow = v
		}
	}
	hostsNode := doc
	if e, ok := m["hosts"]; ok {
		hostsNode = e.key
		d.hosts(e.key, e.val, c, top)
	}
	if len(c.Hosts) == 0 && !d.hadHostErrors() {
		d.fail(hostsNode, "hosts", "at least one host is required")
	}
	d.storage(m, c)
	if e, ok := m["host_order"]; ok {
		d.hostOrder(e, c)
	}
	if e, ok := m["metrics"]; ok {
		if mm := d.mapping(e.val, "metrics", "access"); mm != nil {
			if a, ok := mm["access"]; ok {
				if s, ok := d.oneOf(a.val, "metrics.access", MetricsOpen, MetricsRead, MetricsOff); ok {
					c.Metrics.Access = s
				}
			}
		}
	}
	if e, ok := m["notify"]; ok {
		d.notify(e.val, c)
	}
	if e, ok := m["trusted_proxies"]; ok {
		c.TrustedProxies = d.prefixes(e.val, "trusted_proxies")
	}
	if e, ok := m["web"]; ok {
		d.web(e.val, c)
	}
	if e, ok := m["power_source"]; ok {
		d.powerSource(e.val, c)
		d.checkPowerSource(e.key, c.PowerSource)
	}
}

// hadHostErrors avoids "at least one host is required" on top of the
// errors that made every listed host invalid.
func (d *decoder) hadHostErrors() bool {
	for _, e := range d.errs {
		if strings.HasPrefix(e.Path, "hosts[") {
			return true
		}
	}
	return false
}

func (d *decoder) listen(n *yaml.Node, c *Config) {
	s, ok := d.nonEmpty(n, "listen")
	if !ok {
		return
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		d.fail(n, "listen", "%q is not host:port", s)
		return
	}
	if _, err := port(s, 0); err != nil {
		d.fail(n, "listen", "%v", err)
		return
	}
	c.Listen = s
}

func (d *decoder) tls(te entry, c *Config) {
	m := d.mapping(te.val, "tls", "cert_file", "key_file")
	if m == nil {
		return
	}
	if e, ok := m["cert_file"]; ok {
		c.TLS.CertFile = d.path(e.val, "tls.cert_file", false)
	}
	if e, ok := m["key_file"]; ok {
		c.TLS.KeyFile = d.path(e.val, "tls.key_file", true)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		d.fail(te.key, "tls", "cert_file and key_file must be set together (or both left empty for plain HTTP)")
		return
	}
	if c.TLS.CertFile != "" && readable(c.TLS.CertFile) && readable(c.TLS.KeyFile) {
		// Parsed here, so check-config (the unit's ExecStartPre) refuses
		// what serve would refuse only after opening the store.
		if _, err := tls.LoadX509KeyPair(c.TLS.CertFile, c.TLS.KeyFile); err != nil {
			d.fail(te.key, "tls", "cert_file and key_file are not a PEM certificate and its private key: %s", tlsReason(err))
		}
	}
}

// tlsReason is crypto/tls's complaint without its package prefix.
func tlsReason(err error) string {
	return strings.TrimPrefix(err.Error(), "tls: ")
}

// readable reports whether p can be opened for reading; an unreadable file
// is reported by the path checks, not again by the content checks.
func readable(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

func (d *decoder) openstack(e entry, c *Config) {
	m := d.mapping(e.val, "openstack", "cloud", "clouds_file", "concurrency", "stop_timeout",
		"poll_interval", "request_timeout", "exclude")
	if m == nil {
		return // not a mapping: reported
	}
	d.openstackSource(e, m, &c.OpenStack)
	o := &c.OpenStack
	if e, ok := m["clouds_file"]; ok {
		// clouds.yaml usually holds the OpenStack password: a secret file.
		o.CloudsFile = d.path(e.val, "openstack.clouds_file", true)
	}
	if e, ok := m["concurrency"]; ok {
		if i, ok := d.integer(e.val, "openstack.concurrency"); ok {
			if i < 1 {
				d.fail(e.val, "openstack.concurrency", "must be at least 1, got %d", i)
			} else {
				o.Concurrency = i
			}
		}
	}
	for key, dst := range map[string]*time.Duration{
		"stop_timeout": &o.StopTimeout, "poll_interval": &o.PollInterval, "request_timeout": &o.RequestTimeout,
	} {
		if e, ok := m[key]; ok {
			if v, ok := d.duration(e.val, "openstack."+key); ok {
				*dst = v
			}
		}
	}
	if e, ok := m["exclude"]; ok {
		o.Exclude = d.strList(e.val, "openstack.exclude")
	}
}

func (d *decoder) timeouts(n *yaml.Node, c *Config) {
	m := d.mapping(n, "timeouts", "host_off", "bmc_soft_off", "bmc_hard_off", "bmc_poll_interval", "host_boot", "storage_ready")
	t := &c.Timeouts
	for key, dst := range map[string]*time.Duration{
		"host_off": &t.HostOff, "bmc_soft_off": &t.BMCSoftOff, "bmc_hard_off": &t.BMCHardOff, "bmc_poll_interval": &t.BMCPollInterval,
		"host_boot": &t.HostBoot, "storage_ready": &t.StorageReady,
	} {
		if e, ok := m[key]; ok {
			if v, ok := d.duration(e.val, "timeouts."+key); ok {
				*dst = v
			}
		}
	}
}

// sshKey checks that p holds an SSH private key shutdownd can use
// unattended: parsed, and not protected by a passphrase. Errors never show
// the file's content.
func (d *decoder) sshKey(n *yaml.Node, path, p string) {
	if !readable(p) {
		return
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return
	}
	_, err = ssh.ParsePrivateKey(data)
	var pass *ssh.PassphraseMissingError
	switch {
	case err == nil:
	case errors.As(err, &pass):
		d.fail(n, path, "the key is protected by a passphrase; shutdownd runs unattended and needs an unencrypted key")
	default:
		d.fail(n, path, "not an SSH private key (a .pub file, or another format?)")
	}
}

// sshBlock applies the keys present in n onto s, so the same code reads the
// top-level defaults and a host's overrides.
func (d *decoder) sshBlock(n *yaml.Node, path string, s *SSH) {
	m := d.mapping(n, path, "user", "key_file", "known_hosts", "connect_timeout", "command_timeout", "poweroff_command")
	if e, ok := m["user"]; ok {
		if v, ok := d.nonEmpty(e.val, path+".user"); ok {
			s.User = v
		}
	}
	if e, ok := m["key_file"]; ok {
		if _, ok := d.nonEmpty(e.val, path+".key_file"); ok {
			s.KeyFile = d.path(e.val, path+".key_file", true)
			d.sshKey(e.val, path+".key_file", s.KeyFile)
		}
	}
	if e, ok := m["known_hosts"]; ok {
		if _, ok := d.nonEmpty(e.val, path+".known_hosts"); ok {
			s.KnownHosts = d.path(e.val, path+".known_hosts", false)
			if readable(s.KnownHosts) {
				if _, err := knownhosts.New(s.KnownHosts); err != nil {
					d.fail(e.val, path+".known_hosts", "not a known_hosts file: %s", strings.TrimPrefix(err.Error(), "knownhosts: "))
				}
			}
		}
	}
	if e, ok := m["connect_timeout"]; ok {
		if v, ok := d.duration(e.val, path+".connect_timeout"); ok {
			s.ConnectTimeout = v
		}
	}
	if e, ok := m["command_timeout"]; ok {
		if v, ok := d.duration(e.val, path+".command_timeout"); ok {
			s.CommandTimeout = v
		}
	}
	if e, ok := m["poweroff_command"]; ok {
		if v, ok := d.nonEmpty(e.val, path+".poweroff_command"); ok {
			s.PoweroffCommand = v
		}
	}
}

// bmcDraft is a BMC being merged: it remembers which fields were set so the
// port default can follow the final protocol and a missing password is
// reported once, where it matters.
type bmcDraft struct {
	BMC
	portSet     bool
	passwordSet bool
	// passwordNode and passwordPath locate where the password was set, so
	// that a password a host's protocol cannot use is reported there.
	passwordNode *yaml.Node
	passwordPath string
}

func (d *decoder) bmcBlock(n *yaml.Node, path string, b *bmcDraft, perHost bool) map[string]entry {
	m := d.mapping(n, path, "address", "port", "protocol", "user", "password_file", "password_env", "insecure_tls", "ca_file", "timeout")
	if e, ok := m["address"]; ok {
		if !perHost {
			d.fail(e.key, path+".address", "a BMC address belongs to one host: set it in hosts[].bmc.address")
		} else if s, ok := d.nonEmpty(e.val, path+".address"); ok {
			if a, err := bmcAddress(s); err != nil {
				d.fail(e.val, path+".address", "%v", err)
			} else {
				b.Address = a
			}
		}
	}
	if e, ok := m["port"]; ok {
		if p, ok := d.integer(e.val, path+".port"); ok {
			if p < 1 || p > 65535 {
				d.fail(e.val, path+".port", "must be between 1 and 65535, got %d", p)
			}
			b.Port, b.portSet = p, true
		}
	}
	if e, ok := m["protocol"]; ok {
		if s, ok := d.oneOf(e.val, path+".protocol", ProtocolRedfish, ProtocolIPMI); ok {
			b.Protocol = s
		}
	}
	if e, ok := m["user"]; ok {
		if s, ok := d.nonEmpty(e.val, path+".user"); ok {
			b.User = s
		}
	}
	pf, hasFile := m["password_file"]
	pe, hasEnv := m["password_env"]
	switch {
	case hasFile && hasEnv:
		d.fail(pe.key, path+".password_env", "set either password_file or password_env, not both")
		b.passwordSet = true
	case hasFile:
		b.Password, b.passwordSet = d.secretFile(pf.val, path+".password_file"), true
		b.passwordNode, b.passwordPath = pf.val, path+".password_file"
	case hasEnv:
		b.Password, b.passwordSet = d.secretEnv(pe.val, path+".password_env"), true
		b.passwordNode, b.passwordPath = pe.val, path+".password_env"
	}
	if e, ok := m["insecure_tls"]; ok {
		if v, ok := d.boolean(e.val, path+".insecure_tls"); ok {
			b.InsecureTLS = v
		}
	}
	if e, ok := m["ca_file"]; ok {
		b.CAFile = d.path(e.val, path+".ca_file", false)
	}
	if e, ok := m["timeout"]; ok {
		if v, ok := d.duration(e.val, path+".timeout"); ok {
			b.Timeout = v
		}
	}
	return m
}
