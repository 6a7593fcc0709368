package config

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// full is the README's configuration example, adapted to files of site(), with
// per-host overrides added.
const full = `listen: 127.0.0.1:9090
tls: {cert_file: "", key_file: ""}
database: data/shutdownd.db
openstack:
  cloud: edge
  clouds_file: clouds.yaml
  concurrency: 8
  stop_timeout: 4m
  exclude: [router-vm, 0f1e2d3c]
storage:
  type: ceph
  admin_host: storage-01
  hosts: [storage-01, storage-02]
ssh:
  user: root
  key_file: id_ed25519
  known_hosts: known_hosts
  connect_timeout: 5s
  poweroff_command: systemctl poweroff
bmc:
  protocol: redfish
  user: admin
  password_file: bmc-password
  insecure_tls: false
timeouts: {host_off: 2m, bmc_soft_off: 30s}
resume_window: 15m
hosts:
  - name: mgmt-01
    role: control
    address: 10.0.0.5:22
    self: true
    bmc: {address: 10.0.1.5}
  - name: compute-01
    role: compute
    address: 10.0.0.11:22
    bmc: {address: 10.0.1.11, port: 6230, protocol: ipmi}
  - name: storage-01
    role: storage
    address: 10.0.0.21
    ssh: {user: ops, poweroff_command: sudo systemctl poweroff, connect_timeout: 3s}
    bmc: {address: 10.0.1.21, protocol: ipmi, user: root, password_env: SHUTDOWND_TEST_BMC_PASS}
  - name: compute-02
    role: compute
    address: "[fd00::12]:2222"
  - name: storage-02
    role: storage
    address: 10.0.0.22:22
    bmc: {address: bmc-storage-02.example, insecure_tls: true, ca_file: ca.pem, timeout: 30s}
metrics: {access: open}
notify:
  webhooks: [{url: "https://hooks.example.com/T0k3n/path", secret_env: SHUTDOWND_TEST_HOOK}]
`

func loadFull(t *testing.T) (*Config, string) {
	t.Helper()
	dir := site(t)
	t.Setenv("SHUTDOWND_TEST_BMC_PASS", testEnvPass)
	t.Setenv("SHUTDOWND_TEST_HOOK", testHookSecret)
	path := filepath.Join(dir, "shutdownd.yaml")
	writeFile(t, path, full)
	c, err := LoadWith(path, ownKeysIn(dir))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return c, dir
}

func TestLoadFull(t *testing.T) {
	c, dir := loadFull(t)
	rootSSH := SSH{
		User: "root", KeyFile: filepath.Join(dir, "id_ed25519"), KnownHosts: filepath.Join(dir, "known_hosts"),
		ConnectTimeout: 5 * time.Second, CommandTimeout: 60 * time.Second, PoweroffCommand: "systemctl poweroff",
	}
	opsSSH := rootSSH
	opsSSH.User, opsSSH.PoweroffCommand, opsSSH.ConnectTimeout = "ops", "sudo systemctl poweroff", 3*time.Second
	want := &Config{
		Path:     filepath.Join(dir, "shutdownd.yaml"),
		Listen:   "127.0.0.1:9090",
		Database: filepath.Join(dir, "data/shutdownd.db"),
		OpenStack: OpenStack{
			Source: SourceConfig, Cloud: "edge", CloudsFile: filepath.Join(dir, "clouds.yaml"), Concurrency: 8,
			StopTimeout: 4 * time.Minute, PollInterval: 2 * time.Second, RequestTimeout: 30 * time.Second,
			Exclude: []string{"router-vm", "0f1e2d3c"},
		},
		Storage: Storage{Type: "ceph", AdminHost: "storage-01", Hosts: []string{"storage-01", "storage-02"}, HealthCommand: "ceph health"},
		SSH:     rootSSH,
		BMC:     BMC{Protocol: "redfish", User: "admin", Password: testPassword, Timeout: 10 * time.Second},
		Timeouts: Timeouts{
			HostOff: 2 * time.Minute, BMCSoftOff: 30 * time.Second, BMCHardOff: time.Minute, BMCPollInterval: 2 * time.Second,
			HostBoot: DefaultHostBoot, StorageReady: DefaultStorageReady,
		},
		ResumeWindow: 15 * time.Minute,
		Hosts: []Host{
			{Name: "mgmt-01", Role: "control", Address: "10.0.0.5:22", Self: true, SSH: rootSSH,
				BMC: &BMC{Address: "10.0.1.5", Port: 443, Protocol: "redfish", User: "admin", Password: testPassword, Timeout: 10 * time.Second}},
			{Name: "compute-01", Role: "compute", Address: "10.0.0.11:22", SSH: rootSSH,
				BMC: &BMC{Address: "10.0.1.11", Port: 6230, Protocol: "ipmi", User: "admin", Password: testPassword, Timeout: 10 * time.Second}},
			{Name: "storage-01", Role: "storage", Address: "10.0.0.21:22", SSH: opsSSH,
				BMC: &BMC{Address: "10.0.1.21", Port: 623, Protocol: "ipmi", User: "root", Password: testEnvPass, Timeout: 10 * time.Second}},
			{Name: "compute-02", Role: "compute", Address: "[fd00::12]:2222", SSH: rootSSH},
			{Name: "storage-02", Role: "storage", Address: "10.0.0.22:22", SSH: rootSSH,
				BMC: &BMC{Address: "bmc-storage-02.example", Port: 443, Protocol: "redfish", User: "admin",
					Password: testPassword, InsecureTLS: true, CAFile: filepath.Join(dir, "ca.pem"), Timeout: 30 * time.Second}},
		},
		Metrics: Metrics{Access: "open"},
		Notify: Notify{Webhooks: []Webhook{
			{URL: "https://hooks.example.com/T0k3n/path", SecretEnv: "SHUTDOWND_TEST_HOOK", Secret: testHookSecret},
		}},
		Web: Web{SimulationMaxAge: DefaultSimulationMaxAge},
	}
	own, _, _, _, err := ssh.ParseAuthorizedKey([]byte(fixtureOwnKey))
	if err != nil {
		t.Fatal(err)
	}
	want.OwnHostKeys = []OwnKey{{File: filepath.Join(dir, "own", "ssh_host_ed25519_key.pub"), Key: own}}
	for i := range want.Hosts {
		if !want.Hosts[i].Self {
			want.Hosts[i].RefuseKeys = want.OwnHostKeys
		}
	}
	if !reflect.DeepEqual(c, want) {
		for i := range want.Hosts {
			if i < len(c.Hosts) && !reflect.DeepEqual(c.Hosts[i], want.Hosts[i]) {
				t.Errorf("host %d:\n got %+v %+v\nwant %+v %+v", i, c.Hosts[i], c.Hosts[i].BMC, want.Hosts[i], want.Hosts[i].BMC)
			}
		}
		c.Hosts, want.Hosts = nil, nil
		if !reflect.DeepEqual(c, want) {
			t.Errorf("config:\n got %+v\nwant %+v", c, want)
		}
	}
	if got := c.Hosts[0].BMC.Password.Reveal(); got != testPassword {
		t.Errorf("Reveal = %q, want the file content without newline", got)
	}
}

func TestDefaults(t *testing.T) {
	dir := site(t)
	c, err := parseIn(t, dir, base+"  - {name: c2, role: compute, address: 10.0.0.2, bmc: {address: 10.0.1.2, protocol: ipmi, user: u, password_file: bmc-password}}\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:8080" || c.Database != DefaultDatabase || c.Metrics.Access != "read" {
		t.Errorf("service defaults: %q %q %q", c.Listen, c.Database, c.Metrics.Access)
	}
	wantOS := OpenStack{Concurrency: 20, StopTimeout: 5 * time.Minute, PollInterval: 2 * time.Second, RequestTimeout: 30 * time.Second}
	if !reflect.DeepEqual(c.OpenStack, wantOS) {
		t.Errorf("openstack = %+v, want %+v (Cloud empty: no OpenStack)", c.OpenStack, wantOS)
	}
	if c.Storage.Type != "none" || c.Storage.Plan() != nil {
		t.Errorf("storage = %+v, want type none and an empty plan", c.Storage)
	}
	wantT := Timeouts{HostOff: 3 * time.Minute, BMCSoftOff: time.Minute, BMCHardOff: time.Minute, BMCPollInterval: 2 * time.Second,
		HostBoot: DefaultHostBoot, StorageReady: DefaultStorageReady}
	if c.Timeouts != wantT {
		t.Errorf("timeouts = %+v, want %+v", c.Timeouts, wantT)
	}
	if c.ResumeWindow != 10*time.Minute {
		t.Errorf("resume_window = %s, want 10m", c.ResumeWindow)
	}
	h := c.Hosts[0]
	if h.Address != "10.0.0.1:22" || h.SSH.User != "root" || h.SSH.PoweroffCommand != "systemctl poweroff" ||
		h.SSH.ConnectTimeout != 10*time.Second || h.SSH.CommandTimeout != 60*time.Second {
		t.Errorf("host defaults = %+v", h)
	}
	if h.BMC != nil {
		t.Errorf("host without bmc block has BMC %+v, want nil", h.BMC)
	}
	if b := c.Hosts[1].BMC; b == nil || b.Port != 623 || b.Timeout != 10*time.Second {
		t.Errorf("ipmi BMC = %+v, want port 623 and timeout 10s", b)
	}
}

// An omitted openstack section means no OpenStack; an empty one names its
// cloud through OS_CLOUD, or is an error with its line: it never silently
// skips the VM step (hosts would go down under running VMs).
func TestOpenStackOmittedOrEmpty(t *testing.T) {
	dir := site(t)
	t.Setenv("OS_CLOUD", "")
	t.Setenv("OS_AUTH_URL", "")
	c, err := parseIn(t, dir, base)
	if err != nil || c.OpenStack.Cloud != "" {
		t.Fatalf("omitted: %v, Cloud %q; want no OpenStack", err, c.OpenStack.Cloud)
	}
	for _, extra := range []string{"openstack:\n", "openstack: {}\n"} {
		_, err := parseIn(t, dir, base+extra)
		var fe *FieldError
		if !errors.As(err, &fe) || !strings.Contains(fe.Reason, "or set OS_CLOUD") {
			t.Errorf("%q without OS_CLOUD: %v; want the line and the reason", extra, err)
		}
	}
	t.Setenv("OS_CLOUD", "edge")
	for _, extra := range []string{"openstack:\n", "openstack: {}\n"} {
		c, err := parseIn(t, dir, base+extra)
		if err != nil || c.OpenStack.Cloud != "edge" {
			t.Errorf("%q with OS_CLOUD=edge: %v, Cloud %q", extra, err, c.OpenStack.Cloud)
		}
	}
	for _, extra := range []string{"storage:\n", "storage: {}\n"} {
		_, err := parseIn(t, dir, base+extra)
		var fe *FieldError
		if !errors.As(err, &fe) || !strings.Contains(fe.Reason, "required when the storage section is set") {
			t.Errorf("%q: %v; want storage.type required", extra, err)
		}
	}
}

func TestStoragePlan(t *testing.T) {
	ceph := Storage{Type: "ceph", AdminHost: "s1", Hosts: []string{"s1", "s2"}}
	want := []StorageCommand{
		{"s1", "ceph osd set noout"}, {"s1", "ceph osd set norecover"}, {"s1", "ceph osd set norebalance"},
		{"s1", "ceph osd set nobackfill"}, {"s1", "ceph osd set nodown"}, {"s1", "ceph osd set pause"},
		{"s1", "systemctl stop ceph.target"}, {"s2", "systemctl stop ceph.target"},
	}
	if got := ceph.Plan(); !reflect.DeepEqual(got, want) {
		t.Errorf("ceph plan = %v\nwant %v", got, want)
	}
	ops := []string{}
	for _, c := range ceph.Plan() {
		ops = append(ops, c.Operation())
	}
	wantOps := []string{"ceph-set-noout", "ceph-set-norecover", "ceph-set-norebalance", "ceph-set-nobackfill",
		"ceph-set-nodown", "ceph-set-pause", "stop-ceph", "stop-ceph"}
	if !reflect.DeepEqual(ops, wantOps) {
		t.Errorf("operations = %v, want %v", ops, wantOps)
	}
	cmds := Storage{Type: "commands", Commands: []StorageCommand{{"a", "x"}, {"b", "y"}}}
	if got := cmds.Plan(); !reflect.DeepEqual(got, cmds.Commands) || got[0].Operation() != "storage-command" {
		t.Errorf("commands plan = %v", got)
	}
}

func TestStorageCommandsParsed(t *testing.T) {
	dir := site(t)
	c, err := parseIn(t, dir, base+`storage:
  type: commands
  admin_host: c1
  health_command: zpool status -x
  commands:
    - {host: c1, command: zpool export tank}
    - {host: c1, command: sync}
`)
	if err != nil {
		t.Fatal(err)
	}
	want := Storage{Type: "commands", AdminHost: "c1", HealthCommand: "zpool status -x",
		Commands: []StorageCommand{{"c1", "zpool export tank"}, {"c1", "sync"}}}
	if !reflect.DeepEqual(c.Storage, want) {
		t.Errorf("storage = %+v, want %+v", c.Storage, want)
	}
}

func TestHostGroups(t *testing.T) {
	dir := site(t)
	hosts := `ssh: {key_file: id_ed25519, known_hosts: known_hosts}
hosts:
  - {name: ctl-1, role: control, address: 10.0.0.1}
  - {name: cmp-1, role: compute, address: 10.0.0.2}
  - {name: me, role: control, address: 10.0.0.3, self: true}
  - {name: sto-1, role: storage, address: 10.0.0.4}
  - {name: cmp-2, role: compute, address: 10.0.0.5}
`
	names := func(groups [][]Host) [][]string {
		var out [][]string
		for _, g := range groups {
			var ns []string
			for _, h := range g {
				ns = append(ns, h.Name)
			}
			out = append(out, ns)
		}
		return out
	}
	c, err := parseIn(t, dir, hosts)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{{"cmp-1", "cmp-2"}, {"sto-1"}, {"ctl-1"}}
	if got := names(c.HostGroups()); !reflect.DeepEqual(got, want) {
		t.Errorf("role order groups = %v, want %v", got, want)
	}
	if self, ok := c.Self(); !ok || self.Name != "me" {
		t.Errorf("Self = %v, %v", self, ok)
	}

	c, err = parseIn(t, dir, hosts+"host_order:\n  - [ctl-1, sto-1]\n  - [cmp-2]\n  - [cmp-1]\n")
	if err != nil {
		t.Fatal(err)
	}
	want = [][]string{{"ctl-1", "sto-1"}, {"cmp-2"}, {"cmp-1"}}
	if got := names(c.HostGroups()); !reflect.DeepEqual(got, want) {
		t.Errorf("host_order groups = %v, want %v", got, want)
	}
	if h, ok := c.Host("sto-1"); !ok || h.Address != "10.0.0.4:22" {
		t.Errorf("Host(sto-1) = %+v, %v", h, ok)
	}
	if _, ok := c.Host("nope"); ok {
		t.Error("Host(nope) found")
	}
}

func TestAddresses(t *testing.T) {
	ok := map[string]string{
		"10.0.0.1": "10.0.0.1:22", "10.0.0.1:2222": "10.0.0.1:2222", "host-a": "host-a:22",
		"fd00::1": "[fd00::1]:22", "[fd00::1]": "[fd00::1]:22", "[fd00::1]:23": "[fd00::1]:23",
	}
	for in, want := range ok {
		if got, err := sshAddress(in); err != nil || got != want {
			t.Errorf("sshAddress(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{":22", "a:b:c", "root@h", "h:0", "h:"} {
		if got, err := sshAddress(bad); err == nil {
			t.Errorf("sshAddress(%q) = %q, want an error", bad, got)
		}
	}
	for in, want := range map[string]string{"10.0.1.1": "10.0.1.1", "fd00::1": "fd00::1", "[fd00::1]": "fd00::1", "bmc.example": "bmc.example"} {
		if got, err := bmcAddress(in); err != nil || got != want {
			t.Errorf("bmcAddress(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"https://bmc", "bmc:443", "[fd00::1]:443"} {
		if _, err := bmcAddress(bad); err == nil {
			t.Errorf("bmcAddress(%q) accepted", bad)
		}
	}
}

// A port set in the top-level bmc block belongs to its protocol: a host
// that switches protocol without a port of its own gets its protocol's
// default, and a host that keeps the protocol keeps the port.
func TestBMCPortFollowsTheProtocol(t *testing.T) {
	dir := site(t)
	c, err := parseIn(t, dir, `ssh: {key_file: id_ed25519, known_hosts: known_hosts}
bmc: {protocol: redfish, port: 8443, user: admin, password_file: bmc-password}
hosts:
  - {name: c1, role: compute, address: 10.0.0.1, bmc: {address: 10.0.1.1}}
  - {name: c2, role: compute, address: 10.0.0.2, bmc: {address: 10.0.1.2, protocol: ipmi}}
  - {name: c3, role: compute, address: 10.0.0.3, bmc: {address: 10.0.1.3, protocol: ipmi, port: 1623}}
`)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{8443, DefaultIPMIPort, 1623} {
		if got := c.Hosts[i].BMC.Port; got != want {
			t.Errorf("%s: BMC port %d, want %d", c.Hosts[i].Name, got, want)
		}
	}
}
