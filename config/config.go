// Package config loads and validates shutdownd's YAML configuration
// (described in the README's Configuration section).
//
// The file is read into a yaml.Node tree first, so that every problem can be
// reported as "FILE:LINE: field.path: reason". All problems are collected
// and returned together, sorted by line, so an operator fixes the file in one
// go instead of restarting once per mistake: a site that loses power is no
// time to discover a typo.
//
// Decisions where the product contract is silent:
//   - An SSH address without a port gets ":22" appended.
//   - A BMC address is a host name or IP only; its port is the separate
//     port field (default 623 for ipmi, 443 for redfish).
//   - Durations are Go duration strings ("5m", "2s") and must be positive.
//   - Relative paths are resolved against the directory of the config file.
//   - Per-host ssh and bmc blocks override the top-level blocks field by
//     field; a host with no bmc block has no BMC (BMC nil), which is allowed,
//     but power-off can then be neither confirmed nor forced.
//   - Every host needs an SSH key file and a known_hosts file: host keys are
//     always verified. Every BMC needs a user and a password.
//   - Secret files (BMC passwords, the SSH key, the TLS key) must not be
//     readable by every user.
//   - An explicitly empty value ("") in an ssh or bmc block is an error, not
//     "use the default"; leave the key out to inherit.
//   - host_order, when set, must list every host except the self host
//     exactly once; the self host always goes last and may not be listed.
//   - Storage fields that the chosen type does not use are rejected rather
//     than silently ignored.
package config

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the whole validated configuration, with every default applied
// and every relative path made relative to the config file's directory.
type Config struct {
	// Path is the file the config was loaded from (the name given to Parse).
	Path string
	// Listen is the HTTP listen address, host:port.
	Listen string
	// TLS enables HTTPS when both files are set.
	TLS TLS
	// Database is the SQLite file path.
	Database  string
	OpenStack OpenStack
	Storage   Storage
	// SSH holds the defaults every host's SSH settings start from.
	SSH SSH
	// BMC holds the defaults every host's BMC settings start from; Address
	// is always empty here (addresses are per host).
	BMC      BMC
	Timeouts Timeouts
	// ResumeWindow is how old an interrupted job's last record may be for
	// the job to resume after a restart (on the same boot only): older, the
	// site may have been restored by hand meanwhile, and the job fails
	// instead of powering anything off.
	ResumeWindow time.Duration
	// Hosts are in file order; Host.SSH and Host.BMC are fully resolved.
	Hosts []Host
	// HostOrder, when non-empty, replaces the role order: each inner list is
	// one group of hosts shut down in parallel.
	HostOrder [][]string
	Metrics   Metrics
	Notify    Notify
	// Web configures the browser pages (the overview's warnings).
	Web Web
	// TrustedProxies are the peers whose X-Forwarded-For header is believed
	// when deciding a client's address (token networks, rate limits).
	// Empty: the header is ignored, since any client can write it.
	TrustedProxies []netip.Prefix
	// OwnHostKeys are this machine's SSH host keys, read at load (see
	// Options.OwnHostKeys); empty when it has none.
	OwnHostKeys []OwnKey
	// PowerSource is the UPS watched through NUT; nil without one.
	PowerSource *PowerSource
}

// TLS names the certificate and key for HTTPS; both empty means plain HTTP.
type TLS struct {
	CertFile, KeyFile string
}

// OpenStack configures the VM step. Source == "" means the site has no
// OpenStack (the openstack section was omitted) and the VM step is skipped
// (see Enabled); the other fields still carry their defaults so callers
// never see zeros.
type OpenStack struct {
	// Source says where the credentials come from: SourceConfig or
	// SourceOSCloud (a clouds.yaml entry, Cloud), SourceOpenrc (the OS_*
	// variables, Openrc), or "" (no OpenStack).
	Source string
	// Cloud is the entry of clouds.yaml to use; empty with SourceOpenrc.
	Cloud string
	// Openrc is what the openrc variables said when the configuration was
	// read, without the secret, for check-config; the login reads the
	// variables itself. Nil unless Source is SourceOpenrc.
	Openrc *Openrc
	// CloudsFile is an explicit clouds.yaml; empty means the standard search
	// (OS_CLIENT_CONFIG_FILE, ./clouds.yaml, ~/.config/openstack/, /etc/openstack/).
	CloudsFile     string
	Concurrency    int
	StopTimeout    time.Duration
	PollInterval   time.Duration
	RequestTimeout time.Duration
	// Exclude lists VM names or IDs that are never stopped.
	Exclude []string
}

// Where the OpenStack credentials come from (OpenStack.Source).
const (
	SourceConfig  = "config"   // openstack.cloud names a clouds.yaml entry
	SourceOSCloud = "OS_CLOUD" // OS_CLOUD names it, the section does not
	SourceOpenrc  = "openrc"   // no cloud anywhere: the OS_* variables
)

// Enabled reports whether the site has OpenStack: the openstack section is
// present. Without it the VM step is skipped. A configuration built in code
// with a Cloud and no Source (tests, the demo) has OpenStack too.
func (o OpenStack) Enabled() bool { return o.Source != "" || o.Cloud != "" }

// Name is how the cloud is named in actions and logs: the clouds.yaml entry,
// or "openrc".
func (o OpenStack) Name() string {
	if o.Source == SourceOpenrc {
		return SourceOpenrc
	}
	return o.Cloud
}

// Openrc is the non-secret part of the openrc variables.
type Openrc struct {
	AuthURL string // with any password in it removed
	// User is OS_USERNAME or OS_USER_ID; UserDomain and ProjectDomain are
	// the *_DOMAIN_NAME or *_DOMAIN_ID (falling back to OS_DOMAIN_*).
	User, UserDomain, Project, ProjectDomain, Region string
	// AppCredential is OS_APPLICATION_CREDENTIAL_ID (or _NAME): the login
	// uses the application credential instead of a password.
	AppCredential string
}

// Storage types.
const (
	StorageCeph     = "ceph"
	StorageCommands = "commands"
	StorageNone     = "none"
)

// Storage configures the storage step. Plan gives the exact commands.
type Storage struct {
	// Type is ceph, commands or none (the default when the section is absent).
	Type string
	// AdminHost runs the ceph flag commands and the health command.
	AdminHost string
	// Hosts are the hosts where ceph.target is stopped (type ceph).
	Hosts []string
	// Commands are run in order instead of the ceph preset (type commands).
	Commands []StorageCommand
	// StartupCommands are what a startup runs instead (type commands);
	// empty: a startup leaves storage as it is.
	StartupCommands []StorageCommand
	// HealthCommand is the read-only check a simulation runs on AdminHost.
	HealthCommand string
}

// StorageCommand is one command run over SSH on one host during the storage
// step.
type StorageCommand struct {
	Host, Command string
}

// SSH is how shutdownd reaches a host to power it off.
type SSH struct {
	User, KeyFile, KnownHosts      string
	ConnectTimeout, CommandTimeout time.Duration
	PoweroffCommand                string
}

// BMC protocols.
const (
	ProtocolRedfish = "redfish"
	ProtocolIPMI    = "ipmi"
)

// BMC is how shutdownd confirms or forces a host's power-off.
type BMC struct {
	// Address is a host name or IP, without port.
	Address  string
	Port     int
	Protocol string
	User     string
	Password Secret
	// InsecureTLS skips certificate verification (redfish only).
	InsecureTLS bool
	// CAFile verifies the BMC's certificate (redfish only).
	CAFile string
	// Timeout bounds opening a session (Redfish login, or the first
	// ipmitool call) and each power read or power command.
	Timeout time.Duration
}

// MaxIPMIPasswordLen is the longest password IPMI v2 (RMCP+) can carry: the
// protocol has a 20-byte field, and a longer password never logs in.
const MaxIPMIPasswordLen = 20

// Timeouts bound the host step.
type Timeouts struct {
	// HostOff is how long to wait for the BMC to report Off after the SSH
	// power-off command before forcing it.
	HostOff time.Duration
	// BMCSoftOff and BMCHardOff are how long each BMC power action may take
	// to show Off.
	BMCSoftOff, BMCHardOff time.Duration
	// BMCPollInterval is the pause between power-state reads.
	BMCPollInterval time.Duration
	// HostBoot bounds a startup's wait for a host powered on to answer
	// SSH, and for the compute services before VMs are started.
	HostBoot time.Duration
	// StorageReady bounds a startup's wait for every Ceph OSD to be up.
	StorageReady time.Duration
}

// Host roles, in the default shutdown order.
const (
	RoleCompute = "compute"
	RoleStorage = "storage"
	RoleControl = "control"
)

// Roles is the default shutdown order: workloads first, the control plane
// last, so the management services stay reachable as long as possible.
var Roles = []string{RoleCompute, RoleStorage, RoleControl}

// Host is one physical machine.
type Host struct {
	Name string
	Role string
	// Address is host:port for SSH (":22" appended when the file had no port).
	Address string
	// Self marks the machine running shutdownd: it is powered off last,
	// after the job's final state is on disk.
	Self bool
	// SSH is fully resolved: the top-level defaults with this host's
	// overrides applied.
	SSH SSH
	// BMC is fully resolved, or nil when the host has no BMC.
	BMC *BMC
	// RefuseKeys are host keys this host must never present: this
	// machine's own (Config.OwnHostKeys) for every host not marked self,
	// nil for the self host. A session that presents one has reached the
	// machine running shutdownd under this host's address (a DNS or NAT
	// change since the load) and is refused before anything is sent.
	RefuseKeys []OwnKey
}

// Metrics access levels for GET /metrics.
const (
	MetricsOpen = "open"
	MetricsRead = "read"
	MetricsOff  = "off"
)

// Metrics says who may read GET /metrics.
type Metrics struct {
	// Access is open (no token), read (a read token) or off.
	Access string
}

// Notify lists where job notifications are sent.
type Notify struct {
	Webhooks []Webhook
}

// Webhook is one notification endpoint. Secret, when set, signs the body.
type Webhook struct {
	URL string
	// SecretEnv is the environment variable the secret was read from.
	SecretEnv string
	Secret    Secret
}

// Load reads and validates the config file at path.
func Load(path string) (*Config, error) {
	return LoadWith(path, Options{})
}

// LoadWith is Load with options (where this machine's SSH host keys are).
func LoadWith(path string, opts Options) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return ParseWith(data, path, opts)
}

// HostGroups returns the non-self hosts in shutdown order: one group per
// role (compute, storage, control, empty roles left out, file order inside
// a group), or the groups of HostOrder when it is set. Hosts of one group
// are shut down in parallel.
func (c *Config) HostGroups() [][]Host {
	var groups [][]Host
	if len(c.HostOrder) > 0 {
		for _, names := range c.HostOrder {
			var g []Host
			for _, n := range names {
				if h, ok := c.Host(n); ok && !h.Self {
					g = append(g, h)
				}
			}
			if len(g) > 0 {
				groups = append(groups, g)
			}
		}
		return groups
	}
	for _, role := range Roles {
		var g []Host
		for _, h := range c.Hosts {
			if h.Role == role && !h.Self {
				g = append(g, h)
			}
		}
		if len(g) > 0 {
			groups = append(groups, g)
		}
	}
	return groups
}

// Self returns the host running shutdownd, which is powered off after
// everything else; ok is false when no host is marked self. Validation
// refuses a second one.
func (c *Config) Self() (h Host, ok bool) {
	i := slices.IndexFunc(c.Hosts, func(h Host) bool { return h.Self })
	if i < 0 {
		return Host{}, false
	}
	return c.Hosts[i], true
}

// Host looks a host up by name.
func (c *Config) Host(name string) (Host, bool) {
	i := slices.IndexFunc(c.Hosts, func(h Host) bool { return h.Name == name })
	if i < 0 {
		return Host{}, false
	}
	return c.Hosts[i], true
}

// DatabaseOf returns the database a configuration file names (the default
// when it names none), resolved as Load resolves it, reading nothing else.
// The store commands (token, migrate, audit) need only that, and must work
// from an operator's shell, which has none of the secrets' environment
// variables the service's unit sets.
func DatabaseOf(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read config: %w", err)
	}
	var doc struct {
		Database string `yaml:"database"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return "", fmt.Errorf("%s: invalid YAML: %w", path, err)
	}
	db := strings.TrimSpace(doc.Database)
	switch {
	case db == "":
		return DefaultDatabase, nil
	case filepath.IsAbs(db):
		return db, nil
	}
	return filepath.Join(filepath.Dir(path), db), nil
}
