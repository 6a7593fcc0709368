package sitesim

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// HostSpec describes one simulated physical host and how it misbehaves.
type HostSpec struct {
	Name string
	Role string // compute, storage, control
	// Self marks the machine running shutdownd (powered off last).
	Self bool
	// NoBMC leaves the host without a BMC.
	NoBMC bool
	// SSHDown makes the SSH port refuse connections while the host is on.
	SSHDown bool
	// IgnorePowerOff: the host accepts the power-off command and stays on.
	IgnorePowerOff bool
	// IgnoreSoftOff: the BMC accepts GracefulShutdown and nothing happens.
	IgnoreSoftOff bool
	// IgnoreHardOff: the BMC accepts ForceOff and the machine stays on.
	IgnoreHardOff bool
	// BMCDown makes the BMC unreachable.
	BMCDown bool
	// SudoDenied makes sudo ask the login user (unless root) for a
	// password: every sudo command fails.
	SudoDenied bool
	// SudoCommands, when not nil, are the only commands sudo lets the
	// login user (unless root) run (see SSHHostOptions.SudoCommands).
	SudoCommands []string
	// PowerOffDelay overrides Options.PowerOffDelay for this host, so a
	// benchmark site can have hosts that take different times to go down.
	PowerOffDelay time.Duration
	// BootDelay overrides Options.BootDelay for this host.
	BootDelay time.Duration
}

// Options shape a simulated site: its size, its latencies and its faults.
// The zero value of each field has a usable default (see DemoOptions for
// the demo's site).
type Options struct {
	// Dir receives clouds.yaml, the SSH key, known_hosts, BMC password and
	// CA files, and shutdownd.yaml. Required.
	Dir string

	Projects      []string
	VMsPerProject int
	// VMs replaces the generated VMs when set.
	VMs                  []VM
	VMStopMin, VMStopMax time.Duration
	NovaLatency          time.Duration
	NovaFailRate         float64
	Nova429Rate          float64
	NovaPageSize         int
	// NovaPassword is what Keystone accepts; ConfigPassword is what the
	// generated clouds.yaml says (differs only to test a wrong password).
	NovaPassword, ConfigPassword string

	Hosts []HostSpec
	// User is the SSH login written into shutdownd.yaml (ssh.user); root
	// when empty. The hosts answer `id -u` and sudo for whoever logs in.
	User string
	// PowerOffDelay is how long a host takes to go Off after the SSH
	// power-off command; SoftOffDelay after a BMC GracefulShutdown.
	PowerOffDelay, SoftOffDelay time.Duration
	// SSHLatency is added to every SSH command answer.
	SSHLatency time.Duration
	// BootDelay is how long a host takes after a BMC power-on before its
	// SSH, nova-compute and OSDs answer; OSDStartDelay how long the OSDs
	// of a storage host take after `systemctl start ceph.target`.
	BootDelay, OSDStartDelay time.Duration

	// Storage is "ceph" (default) or "none".
	Storage string
	Exclude []string
	Seed    int64

	// Settings written into shutdownd.yaml.
	StopTimeout, PollInterval                     time.Duration
	HostOff, BMCSoftOff, BMCHardOff, BMCPollEvery time.Duration
	// HostBoot and StorageReady bound a startup's waits (default 30s).
	HostBoot, StorageReady time.Duration
	Concurrency            int

	// UPSRuntime, when set, starts a simulated UPS (see UPS) whose full
	// battery lasts that long, and writes a power_source section for it.
	UPSRuntime time.Duration
}

// DemoOptions is the demo's site: about 60 VMs in 3 projects, 6 hosts (3
// compute, 2 storage, 1 control), Ceph, with delays short enough to watch.
func DemoOptions(dir string) Options {
	return Options{
		Dir:           dir,
		Projects:      []string{"web", "analytics", "ci"},
		VMsPerProject: 20,
		VMStopMin:     500 * time.Millisecond,
		VMStopMax:     4 * time.Second,
		NovaLatency:   5 * time.Millisecond,
		Hosts:         DefaultHosts(),
		PowerOffDelay: 1500 * time.Millisecond,
		SoftOffDelay:  time.Second,
		SSHLatency:    50 * time.Millisecond,
		BootDelay:     3 * time.Second,
		OSDStartDelay: time.Second,
		Storage:       "ceph",
		Seed:          1,
		StopTimeout:   2 * time.Minute,
		PollInterval:  time.Second,
		HostOff:       20 * time.Second,
		BMCSoftOff:    10 * time.Second,
		BMCHardOff:    10 * time.Second,
		BMCPollEvery:  250 * time.Millisecond,
		Concurrency:   20,
	}
}

// DefaultHosts is the demo's six hosts.
func DefaultHosts() []HostSpec {
	return []HostSpec{
		{Name: "compute-01", Role: "compute"},
		{Name: "compute-02", Role: "compute"},
		{Name: "compute-03", Role: "compute"},
		{Name: "storage-01", Role: "storage"},
		{Name: "storage-02", Role: "storage"},
		{Name: "control-01", Role: "control"},
	}
}

// SiteHost is one running simulated host.
type SiteHost struct {
	Spec    HostSpec
	Machine *Machine
	SSH     *SSHHost
	BMC     *RedfishBMC // nil with NoBMC
}

// Site is a running simulated site.
type Site struct {
	Opts  Options
	Nova  *Nova
	Hosts []*SiteHost
	// Ceph is the cluster of the storage hosts, shared by every host's
	// `ceph` command.
	Ceph *CephCluster
	// UPS is the simulated UPS; nil without Options.UPSRuntime.
	UPS *UPS

	// File paths written into Dir.
	CloudsFile, KeyFile, KnownHostsFile, PasswordFile string
}

// bmcPassword is the simulated BMCs' password; tests grep outputs for it to
// prove secrets never leak.
const bmcPassword = "sim-bmc-secret-7f3a"

// BMCPassword returns the password every simulated BMC accepts.
func BMCPassword() string { return bmcPassword }

// Start starts every peer of the site on 127.0.0.1 and writes the files a
// shutdownd configuration needs into opts.Dir.
func Start(ctx context.Context, opts Options) (*Site, error) {
	if opts.Dir == "" {
		return nil, errors.New("sitesim: Options.Dir is required")
	}
	fillOptions(&opts)
	s := &Site{Opts: opts}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()

	vms := opts.VMs
	if vms == nil {
		vms = GenerateVMs(opts.Projects, opts.VMsPerProject, opts.Seed, opts.VMStopMin, opts.VMStopMax)
	}
	vms = placeVMs(vms, opts.Hosts)
	s.Nova = NewNova(NovaOptions{
		Projects: opts.Projects, VMs: vms, Latency: opts.NovaLatency,
		FailRate: opts.NovaFailRate, RateLimit429: opts.Nova429Rate, RetryAfter: "0",
		PageSize: opts.NovaPageSize, Password: opts.NovaPassword, Seed: opts.Seed,
	})
	if err := s.Nova.Start(); err != nil {
		return nil, fmt.Errorf("start nova: %w", err)
	}

	signer, keyPEM, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	s.KeyFile = filepath.Join(opts.Dir, "id_ed25519")
	if err := os.WriteFile(s.KeyFile, keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("write key: %w", err)
	}
	s.PasswordFile = filepath.Join(opts.Dir, "bmc-password")
	if err := os.WriteFile(s.PasswordFile, []byte(bmcPassword+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("write bmc password: %w", err)
	}

	var known strings.Builder
	s.Ceph = NewCephCluster(opts.OSDStartDelay)
	for _, spec := range opts.Hosts {
		h := &SiteHost{Spec: spec, Machine: NewMachine(spec.Name)}
		s.Hosts = append(s.Hosts, h)
		s.wireHost(h)
		h.SSH, err = NewSSHHost(SSHHostOptions{
			Name: spec.Name, Machine: h.Machine, AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()},
			PowerOffDelay: cmp.Or(spec.PowerOffDelay, opts.PowerOffDelay), IgnorePowerOff: spec.IgnorePowerOff,
			Latency: opts.SSHLatency, SudoDenied: spec.SudoDenied, SudoCommands: spec.SudoCommands, Ceph: s.Ceph,
		})
		if err != nil {
			return nil, fmt.Errorf("start ssh host %s: %w", spec.Name, err)
		}
		if spec.SSHDown {
			h.SSH.SetReachable(false)
		}
		known.WriteString(KnownHostsLine(h.SSH.Addr(), h.SSH.HostKey()) + "\n")
		if spec.NoBMC {
			continue
		}
		h.BMC, err = NewRedfishBMC(RedfishOptions{
			Machine: h.Machine, User: "admin", Password: bmcPassword,
			SoftOffDelay: opts.SoftOffDelay, IgnoreSoftOff: spec.IgnoreSoftOff, IgnoreHardOff: spec.IgnoreHardOff, Unreachable: spec.BMCDown,
		})
		if err != nil {
			return nil, fmt.Errorf("start bmc %s: %w", spec.Name, err)
		}
		if err := os.WriteFile(s.caFile(spec.Name), h.BMC.CertPEM(), 0o644); err != nil {
			return nil, fmt.Errorf("write bmc ca: %w", err)
		}
	}
	s.KnownHostsFile = filepath.Join(opts.Dir, "known_hosts")
	if err := os.WriteFile(s.KnownHostsFile, []byte(known.String()), 0o644); err != nil {
		return nil, fmt.Errorf("write known_hosts: %w", err)
	}
	s.CloudsFile = filepath.Join(opts.Dir, "clouds.yaml")
	clouds := s.Nova.CloudsYAML("sim")
	if opts.ConfigPassword != "" && opts.ConfigPassword != opts.NovaPassword {
		clouds = strings.Replace(clouds, "password: "+opts.NovaPassword, "password: "+opts.ConfigPassword, 1)
	}
	if err := os.WriteFile(s.CloudsFile, []byte(clouds), 0o600); err != nil {
		return nil, fmt.Errorf("write clouds.yaml: %w", err)
	}
	if err := s.startUPS(); err != nil {
		return nil, err
	}
	ok = true
	return s, ctx.Err()
}

// placeVMs gives every VM without a host one of the site's compute hosts,
// in turn, so that a compute host powered off takes its VMs' nova-compute
// service with it. A site without compute hosts leaves them as they are.
func placeVMs(vms []VM, hosts []HostSpec) []VM {
	var compute []string
	for _, h := range hosts {
		if h.Role == "compute" {
			compute = append(compute, h.Name)
		}
	}
	if len(compute) == 0 {
		return vms
	}
	out := slices.Clone(vms)
	for i := range out {
		if out[i].Host == "" {
			out[i].Host = compute[i%len(compute)]
		}
	}
	return out
}

// wireHost makes the rest of the site follow the host's machine: its boot
// delay, its nova-compute service (a compute host) and its OSDs (a storage
// host).
func (s *Site) wireHost(h *SiteHost) {
	h.Machine.SetBootDelay(cmp.Or(h.Spec.BootDelay, s.Opts.BootDelay))
	switch h.Spec.Role {
	case "compute":
		m, name := h.Machine, h.Spec.Name
		s.Nova.SetComputeService(name, m.Ready())
		m.OnChange(func(PowerState) { s.Nova.SetComputeService(name, m.Ready()) })
	case "storage":
		s.Ceph.AddHost(h.Spec.Name, h.Machine, OSDsPerHost)
	}
}

func fillOptions(o *Options) {
	d := DemoOptions(o.Dir)
	if o.Projects == nil {
		o.Projects = d.Projects
	}
	if o.VMStopMax == 0 {
		o.VMStopMin, o.VMStopMax = 50*time.Millisecond, 200*time.Millisecond
	}
	if o.Hosts == nil {
		o.Hosts = d.Hosts
	}
	if o.NovaPassword == "" {
		o.NovaPassword = "sim-secret"
	}
	if o.Storage == "" {
		o.Storage = "ceph"
	}
	if o.User == "" {
		o.User = "root"
	}
	if o.StopTimeout == 0 {
		o.StopTimeout = 30 * time.Second
	}
	if o.PollInterval == 0 {
		o.PollInterval = 100 * time.Millisecond
	}
	if o.HostOff == 0 {
		o.HostOff = 5 * time.Second
	}
	if o.BMCSoftOff == 0 {
		o.BMCSoftOff = 3 * time.Second
	}
	if o.BMCHardOff == 0 {
		o.BMCHardOff = 3 * time.Second
	}
	if o.BMCPollEvery == 0 {
		o.BMCPollEvery = 50 * time.Millisecond
	}
	if o.Concurrency == 0 {
		o.Concurrency = 20
	}
	o.HostBoot = cmp.Or(o.HostBoot, 30*time.Second)
	o.StorageReady = cmp.Or(o.StorageReady, 30*time.Second)
}

func (s *Site) caFile(host string) string {
	return filepath.Join(s.Opts.Dir, "bmc-ca-"+host+".pem")
}

// Host returns the named host, or nil.
func (s *Site) Host(name string) *SiteHost {
	for _, h := range s.Hosts {
		if h.Spec.Name == name {
			return h
		}
	}
	return nil
}

// Config returns a shutdownd.yaml for this site.
func (s *Site) Config(listen, database string) string {
	o := s.Opts
	var b strings.Builder
	fmt.Fprintf(&b, "listen: %q\ndatabase: %q\n", listen, database)
	fmt.Fprintf(&b, "openstack:\n  cloud: sim\n  clouds_file: %q\n  concurrency: %d\n  stop_timeout: %s\n  poll_interval: %s\n  request_timeout: 10s\n",
		s.CloudsFile, o.Concurrency, o.StopTimeout, o.PollInterval)
	if len(o.Exclude) > 0 {
		b.WriteString("  exclude:\n")
		for _, x := range o.Exclude {
			fmt.Fprintf(&b, "    - %q\n", x)
		}
	}
	var storage []string
	for _, h := range o.Hosts {
		if h.Role == "storage" {
			storage = append(storage, h.Name)
		}
	}
	if o.Storage == "ceph" && len(storage) > 0 {
		fmt.Fprintf(&b, "storage:\n  type: ceph\n  admin_host: %s\n  hosts: [%s]\n", storage[0], strings.Join(storage, ", "))
	}
	fmt.Fprintf(&b, "ssh:\n  user: %s\n  key_file: %q\n  known_hosts: %q\n  connect_timeout: 2s\n  command_timeout: 10s\n  poweroff_command: systemctl poweroff\n",
		o.User, s.KeyFile, s.KnownHostsFile)
	fmt.Fprintf(&b, "bmc:\n  protocol: redfish\n  user: admin\n  password_file: %q\n", s.PasswordFile)
	fmt.Fprintf(&b, "timeouts:\n  host_off: %s\n  bmc_soft_off: %s\n  bmc_hard_off: %s\n  bmc_poll_interval: %s\n  host_boot: %s\n  storage_ready: %s\n",
		o.HostOff, o.BMCSoftOff, o.BMCHardOff, o.BMCPollEvery, o.HostBoot, o.StorageReady)
	b.WriteString("hosts:\n")
	for _, h := range s.Hosts {
		fmt.Fprintf(&b, "  - name: %s\n    role: %s\n    address: %q\n", h.Spec.Name, h.Spec.Role, h.SSH.Addr())
		if h.Spec.Self {
			b.WriteString("    self: true\n")
		}
		if h.BMC != nil {
			fmt.Fprintf(&b, "    bmc: {address: %q, port: %d, ca_file: %q}\n", h.BMC.Host(), h.BMC.Port(), s.caFile(h.Spec.Name))
		}
	}
	s.upsConfig(&b)
	return b.String()
}

// WriteConfig writes Config(listen, database) to Dir/shutdownd.yaml and
// returns its path.
func (s *Site) WriteConfig(listen, database string) (string, error) {
	p := filepath.Join(s.Opts.Dir, "shutdownd.yaml")
	if err := os.WriteFile(p, []byte(s.Config(listen, database)), 0o600); err != nil {
		return "", fmt.Errorf("write config: %w", err)
	}
	return p, nil
}

// Close stops every peer.
func (s *Site) Close() {
	for _, h := range s.Hosts {
		if h.SSH != nil {
			h.SSH.Close()
		}
		if h.BMC != nil {
			h.BMC.Close()
		}
	}
	if s.Nova != nil {
		s.Nova.Close()
	}
	if s.UPS != nil {
		s.UPS.Close()
	}
}
