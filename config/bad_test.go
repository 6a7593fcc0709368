package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// base is a minimal valid config of three lines; cases append from line 4.
const base = `ssh: {key_file: id_ed25519, known_hosts: known_hosts}
hosts:
  - {name: c1, role: compute, address: 10.0.0.1}
`

func TestParseRejects(t *testing.T) {
	dir := site(t)
	t.Setenv("SHUTDOWND_TEST_EMPTY", "")
	cases := []struct {
		name string
		yml  string
		line int
		want string // "path: reason" substring
	}{
		{"unknown top-level key", base + "listn: 127.0.0.1:80\n", 4, "listn: unknown key (known keys: listen,"},
		{"unknown host key", `ssh: {key_file: id_ed25519, known_hosts: known_hosts}
hosts:
  - name: c1
    role: compute
    adress: 10.0.0.1
    address: 10.0.0.1
`, 5, "hosts[0].adress: unknown key"},
		{"unknown role", `ssh: {key_file: id_ed25519, known_hosts: known_hosts}
hosts:
  - {name: c1, role: compute, address: 10.0.0.1}
  - {name: c2, role: compute, address: 10.0.0.2}
  - name: g1
    role: gpu
    address: 10.0.0.3
`, 6, `hosts[2].role: "gpu" is not one of compute, storage, control`},
		{"negative duration", base + "openstack: {cloud: edge, stop_timeout: -5m}\n", 4, "openstack.stop_timeout: must be positive"},
		{"zero duration", base + "timeouts:\n  host_off: 0s\n", 5, "timeouts.host_off: must be positive"},
		{"zero resume window", base + "resume_window: 0s\n", 4, "resume_window: must be positive"},
		{"resume window without unit", base + "resume_window: 10\n", 4, `resume_window: "10" is not a duration`},
		{"duration without unit", base + "openstack:\n  cloud: edge\n  poll_interval: 5\n", 6, `openstack.poll_interval: "5" is not a duration`},
		{"duplicate key", base + "ssh: {}\n", 4, "ssh: duplicate key (first set at line 1)"},
		{"concurrency zero", base + "openstack: {cloud: edge, concurrency: 0}\n", 4, "openstack.concurrency: must be at least 1, got 0"},
		{"concurrency not a number", base + "openstack: {cloud: edge, concurrency: many}\n", 4, "openstack.concurrency: must be an integer"},
		{"unknown bmc protocol", base + "bmc:\n  protocol: snmp\n", 5, `bmc.protocol: "snmp" is not one of redfish, ipmi`},
		{"unknown storage type", base + "storage: {type: nfs}\n", 4, `storage.type: "nfs" is not one of ceph, commands, none`},
		{"duplicate host name", base + "  - {name: c1, role: storage, address: 10.0.0.2}\n", 4, `hosts[1].name: duplicate host name "c1" (first used at line 3)`},
		{"storage admin_host unknown", base + "storage:\n  type: ceph\n  admin_host: s9\n  hosts: [c1]\n", 6, `storage.admin_host: "s9" is not a host of the hosts list`},
		{"storage hosts unknown", base + "storage:\n  type: ceph\n  admin_host: c1\n  hosts:\n    - c1\n    - s2\n", 9, `storage.hosts[1]: "s2" is not a host of the hosts list`},
		{"storage ceph without hosts", base + "storage:\n  type: ceph\n  admin_host: c1\n", 4, "storage.hosts: required with type ceph"},
		{"storage ceph without admin_host", base + "storage: {type: ceph, hosts: [c1]}\n", 4, "storage.admin_host: required with type ceph"},
		{"storage none with hosts", base + "storage:\n  hosts: [c1]\n", 4, "storage.type: required when the storage section is set"},
		{"storage none with admin_host", base + "storage:\n  type: none\n  admin_host: c1\n", 6, "storage.admin_host: not used with type none"},
		{"storage ceph with commands", base + "storage:\n  type: ceph\n  admin_host: c1\n  hosts: [c1]\n  commands: []\n", 8, "storage.commands: not used with type ceph"},
		{"storage command unknown host", base + "storage:\n  type: commands\n  commands:\n    - {host: x, command: stop}\n", 7, `storage.commands[0].host: "x" is not a host of the hosts list`},
		{"broken second document", base + "---\n: : [\n", 4, "invalid YAML after the first document"},
		{"storage command twice on one host", base + "storage:\n  type: commands\n  commands:\n    - {host: c1, command: sync}\n    - {host: c1, command: sync}\n", 8, "storage.commands[1]: the same command on the same host as storage.commands[0]; each runs once"},
		{"storage command without command", base + "storage:\n  type: commands\n  commands:\n    - {host: c1}\n", 7, "storage.commands[0].command: required"},
		{"host_order unknown host", base + "  - {name: c2, role: compute, address: 10.0.0.2}\nhost_order:\n  - [c1]\n  - [c2, c3]\n", 7, `host_order[1][1]: "c3" is not a host of the hosts list`},
		{"host_order missing host", base + "  - {name: c2, role: compute, address: 10.0.0.2}\nhost_order:\n  - [c1]\n", 5, `host_order: host "c2" is missing`},
		{"host_order lists self", base + "  - {name: m1, role: control, address: 10.0.0.2, self: true}\nhost_order:\n  - [c1, m1]\n", 6, `host_order[0][1]: "m1" is the self host`},
		{"host_order twice", base + "host_order:\n  - [c1]\n  - [c1]\n", 6, `host_order[1][0]: "c1" is listed twice`},
		{"host_order flat list", base + "host_order: [c1]\n", 4, "host_order[0]: must be a list of host names"},
		{"two self hosts", base + "  - {name: m1, role: control, address: 10.0.0.2, self: true}\n  - {name: m2, role: control, address: 10.0.0.3, self: true}\n", 5, "hosts[2].self: a second self host: m1 (line 4)"},
		{"self not a bool", base + "  - {name: m1, role: control, address: 10.0.0.2, self: yes}\n", 4, "hosts[1].self: must be true or false"},
		{"ssh port out of range", base + "  - {name: c2, role: compute, address: '10.0.0.2:99999'}\n", 4, `hosts[1].address: "10.0.0.2:99999": port "99999" is not a number from 1 to 65535`},
		{"ssh port not a number", base + "  - {name: c2, role: compute, address: '10.0.0.2:ssh'}\n", 4, `hosts[1].address: "10.0.0.2:ssh": port "ssh"`},
		{"ssh address is a URL", base + "  - {name: c2, role: compute, address: 'ssh://10.0.0.2'}\n", 4, "hosts[1].address: \"ssh://10.0.0.2\" is not host:port"},
		{"host without address", base + "  - {name: c2, role: compute}\n", 4, "hosts[1].address: required"},
		{"host without role", base + "  - {name: c2, address: 10.0.0.2}\n", 4, "hosts[1].role: required"},
		{"empty hosts list", "ssh: {key_file: id_ed25519, known_hosts: known_hosts}\nhosts: []\n", 2, "hosts: at least one host is required"},
		{"no hosts key", "listen: 127.0.0.1:8080\n", 1, "hosts: at least one host is required"},
		{"bmc without address", base + "  - name: c2\n    role: compute\n    address: 10.0.0.2\n    bmc: {protocol: ipmi, user: u, password_file: bmc-password}\n", 7, "hosts[1].bmc.address: required"},
		{"bmc address with port", base + "  - name: c2\n    role: compute\n    address: 10.0.0.2\n    bmc: {address: '10.0.1.2:623', user: u, password_file: bmc-password}\n", 7, `hosts[1].bmc.address: "10.0.1.2:623" includes a port`},
		{"bmc port zero", base + "  - name: c2\n    role: compute\n    address: 10.0.0.2\n    bmc: {address: 10.0.1.2, port: 0, user: u, password_file: bmc-password}\n", 7, "hosts[1].bmc.port: must be between 1 and 65535, got 0"},
		{"bmc without user", base + "  - name: c2\n    role: compute\n    address: 10.0.0.2\n    bmc: {address: 10.0.1.2, password_file: bmc-password}\n", 7, "hosts[1].bmc.user: required"},
		{"bmc without password", base + "  - name: c2\n    role: compute\n    address: 10.0.0.2\n    bmc: {address: 10.0.1.2, user: u}\n", 7, "hosts[1].bmc: no password"},
		{"top-level bmc address", base + "bmc:\n  address: 10.0.1.1\n", 5, "bmc.address: a BMC address belongs to one host"},
		{"password file missing", base + "bmc:\n  password_file: nope\n", 5, "bmc.password_file: cannot read " + "DIR/nope: no such file or directory"},
		{"password file world-readable", base + "bmc:\n  user: admin\n  password_file: open-password\n", 6, "bmc.password_file: DIR/open-password is readable by every user (mode 0644)"},
		{"password file empty", base + "bmc:\n  password_file: empty-password\n", 5, "bmc.password_file: DIR/empty-password is empty"},
		{"password env unset", base + "bmc:\n  password_env: SHUTDOWND_TEST_UNSET_VAR\n", 5, "bmc.password_env: environment variable SHUTDOWND_TEST_UNSET_VAR is not set or empty"},
		{"password env empty", base + "bmc:\n  password_env: SHUTDOWND_TEST_EMPTY\n", 5, "bmc.password_env: environment variable SHUTDOWND_TEST_EMPTY is not set or empty"},
		{"password file and env", base + "bmc:\n  password_file: bmc-password\n  password_env: X\n", 6, "bmc.password_env: set either password_file or password_env, not both"},
		{"bmc timeout zero", base + "bmc:\n  timeout: 0s\n", 5, "bmc.timeout: must be positive"},
		{"host bmc timeout not a duration", base + "  - name: c2\n    role: compute\n    address: 10.0.0.2\n    bmc: {address: 10.0.1.2, user: u, password_file: bmc-password, timeout: 10}\n", 7, `hosts[1].bmc.timeout: "10" is not a duration`},
		{"ipmi password too long", base + "  - name: c2\n    role: compute\n    address: 10.0.0.2\n    bmc:\n      address: 10.0.1.2\n      protocol: ipmi\n      user: u\n      password_file: long-password\n", 11,
			"hosts[1].bmc.password_file: the password is longer than 20 bytes, the most IPMI v2 can send; host c2 uses protocol ipmi"},
		{"ssh key world-readable", base + "  - name: c2\n    role: compute\n    address: 10.0.0.2\n    ssh: {key_file: open-key}\n", 7, "hosts[1].ssh.key_file: DIR/open-key is readable by every user"},
		{"ssh key missing", "ssh: {key_file: /nonexistent/key, known_hosts: known_hosts}\nhosts: [{name: c1, role: compute, address: 10.0.0.1}]\n", 1, "ssh.key_file: cannot read /nonexistent/key: no such file or directory"},
		{"known_hosts missing", "ssh:\n  key_file: id_ed25519\n  known_hosts: kh\nhosts: [{name: c1, role: compute, address: 10.0.0.1}]\n", 3, "ssh.known_hosts: cannot read DIR/kh"},
		{"no key file at all", "ssh: {known_hosts: known_hosts}\nhosts:\n  - {name: c1, role: compute, address: 10.0.0.1}\n", 3, "hosts[0].ssh.key_file: required"},
		{"no key file for any host", "hosts:\n  - {name: c1, role: compute, address: 10.0.0.1}\n  - {name: c2, role: compute, address: 10.0.0.2}\n", 1, "ssh.key_file: required by every host: set it in the top-level ssh block"},
		{"empty ssh user override", base + "  - name: c2\n    role: compute\n    address: 10.0.0.2\n    ssh: {user: ''}\n", 7, "hosts[1].ssh.user: must not be empty"},
		{"clouds_file missing", base + "openstack:\n  cloud: edge\n  clouds_file: missing.yaml\n", 6, "openstack.clouds_file: cannot read DIR/missing.yaml"},
		{"openstack without cloud", base + "openstack:\n  concurrency: 4\n", 4, "openstack.cloud: required when the openstack section is present"},
		{"webhook not http", base + "notify:\n  webhooks:\n    - url: ftp://hooks.example.com/x\n", 6, "notify.webhooks[0].url: must be an http:// or https:// URL"},
		{"webhook secret env unset", base + "notify:\n  webhooks:\n    - {url: 'https://h.example.com', secret_env: SHUTDOWND_TEST_UNSET_VAR}\n", 6, "notify.webhooks[0].secret_env: environment variable SHUTDOWND_TEST_UNSET_VAR is not set"},
		{"metrics access", base + "metrics: {access: public}\n", 4, `metrics.access: "public" is not one of open, read, off`},
		{"listen without port", base + "listen: localhost\n", 4, `listen: "localhost" is not host:port`},
		{"ssh key is a public key", "ssh: {key_file: id_ed25519.pub, known_hosts: known_hosts}\nhosts:\n  - {name: c1, role: compute, address: 10.0.0.1}\n", 1, "ssh.key_file: not an SSH private key"},
		{"ssh key with a passphrase", "ssh: {key_file: id_locked, known_hosts: known_hosts}\nhosts:\n  - {name: c1, role: compute, address: 10.0.0.1}\n", 1, "ssh.key_file: the key is protected by a passphrase"},
		{"known_hosts garbage", "ssh: {key_file: id_ed25519, known_hosts: bad_known_hosts}\nhosts:\n  - {name: c1, role: compute, address: 10.0.0.1}\n", 1, "ssh.known_hosts: not a known_hosts file"},
		{"tls files not a certificate and key", base + "tls:\n  cert_file: ca.pem\n  key_file: tls.key\n", 4, "tls: cert_file and key_file are not a PEM certificate and its private key"},
		{"tls cert without key", base + "tls:\n  cert_file: tls.crt\n", 4, "tls: cert_file and key_file must be set together"},
		{"hosts not a list", "ssh: {key_file: id_ed25519, known_hosts: known_hosts}\nhosts: {c1: x}\n", 2, "hosts: must be a list"},
		{"invalid yaml", base + "listen: [\n", 4, "invalid YAML"},
		{"two documents", base + "---\nlisten: x\n", 4, "more than one YAML document"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseIn(t, dir, tc.yml)
			if err == nil {
				t.Fatal("Parse accepted the config")
			}
			name := dir + "/shutdownd.yaml"
			want := fmt.Sprintf("%s:%d: %s", name, tc.line, strings.ReplaceAll(tc.want, "DIR", dir))
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error does not contain\n  %s\ngot:\n  %s", want, err)
			}
		})
	}
}

// TestParseCollectsAllErrors checks that one load reports every problem,
// sorted by line, each a *FieldError.
func TestParseCollectsAllErrors(t *testing.T) {
	dir := site(t)
	yml := `hosts:
  - name: c1
    role: gpu
    address: 10.0.0.1
    ssh: {key_file: id_ed25519, known_hosts: known_hosts}
timeouts:
  bmc_poll_interval: -1s
openstack:
  cloud: edge
  concurrency: 0
listen: 127.0.0.1:8080
bogus: 1
`
	_, err := parseIn(t, dir, yml)
	if err == nil {
		t.Fatal("Parse accepted the config")
	}
	lines := strings.Split(err.Error(), "\n")
	wantOrder := []string{":3: hosts[0].role", ":7: timeouts.bmc_poll_interval", ":10: openstack.concurrency", ":12: bogus"}
	if len(lines) != len(wantOrder) {
		t.Fatalf("got %d errors, want %d:\n%s", len(lines), len(wantOrder), err)
	}
	for i, w := range wantOrder {
		if !strings.Contains(lines[i], w) {
			t.Errorf("error %d = %q, want it to contain %q", i, lines[i], w)
		}
	}
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Line != 3 || fe.Path != "hosts[0].role" {
		t.Errorf("errors.As FieldError = %+v", fe)
	}
}

// TestIPMIPasswordLength checks that a password IPMI v2 cannot carry is
// rejected once, where it is set, for the IPMI hosts that inherit it, while
// Redfish hosts may use it; the error never shows the password.
func TestIPMIPasswordLength(t *testing.T) {
	dir := site(t)
	yml := `ssh: {key_file: id_ed25519, known_hosts: known_hosts}
bmc:
  user: u
  protocol: ipmi
  password_file: long-password
hosts:
  - {name: c1, role: compute, address: 10.0.0.1, bmc: {address: 10.0.1.1}}
  - {name: c2, role: compute, address: 10.0.0.2, bmc: {address: 10.0.1.2}}
  - {name: r3, role: compute, address: 10.0.0.3, bmc: {address: 10.0.1.3, protocol: redfish}}
`
	_, err := parseIn(t, dir, yml)
	if err == nil {
		t.Fatal("Parse accepted a 24-byte password for IPMI hosts")
	}
	lines := strings.Split(err.Error(), "\n")
	want := fmt.Sprintf("%s/shutdownd.yaml:5: bmc.password_file: the password is longer than 20 bytes", dir)
	if len(lines) != 1 || !strings.Contains(lines[0], want) || !strings.Contains(lines[0], "host c1 uses protocol ipmi") {
		t.Errorf("got %d errors:\n%s\nwant one containing %q", len(lines), err, want)
	}
	if strings.Contains(err.Error(), testLongPass) {
		t.Error("the error shows the password")
	}

	// The same password for Redfish only: accepted, and 20 bytes exactly
	// is still fine for IPMI.
	redfish := strings.Replace(yml, "protocol: ipmi", "protocol: redfish", 1)
	if _, err := parseIn(t, dir, redfish); err != nil {
		t.Errorf("redfish hosts with a 24-byte password: %v", err)
	}
	writeFile(t, dir+"/twenty", strings.Repeat("p", 20)+"\n")
	if _, err := parseIn(t, dir, strings.Replace(yml, "long-password", "twenty", 1)); err != nil {
		t.Errorf("ipmi hosts with a 20-byte password: %v", err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(t.TempDir() + "/none.yaml")
	if err == nil || !strings.Contains(err.Error(), "read config") {
		t.Fatalf("Load of a missing file: %v", err)
	}
}
