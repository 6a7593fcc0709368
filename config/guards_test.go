package config

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// bmcHost is a host line with a BMC block, for the BMC address cases.
func bmcHost(name, addr, bmc string) string {
	return fmt.Sprintf("  - name: %s\n    role: compute\n    address: %s\n    bmc: {%s, user: u, password_file: bmc-password}\n", name, addr, bmc)
}

// The wrong-machine guards refuse the configuration with the line of the
// second host's address (SSH) or BMC address, and name the first one.
func TestParseRefusesTheWrongMachine(t *testing.T) {
	dir := site(t)
	writeFile(t, filepath.Join(dir, "own_known_hosts"), "10.0.0.9 "+fixtureOwnKey+"\n")
	writeFile(t, filepath.Join(dir, "ca_known_hosts"), "@cert-authority 10.0.0.8 "+fixtureOwnKey+"\n")
	cases := []struct {
		name string
		yml  string
		line int
		want string
	}{
		{"same ssh address, port added", base + "  - {name: c2, role: compute, address: '10.0.0.1:22'}\n", 4,
			"hosts[1].address: host c2 has the same SSH address as c1 (10.0.0.1:22, line 3)"},
		{"same ssh address as the self host", base + "  - {name: m1, role: control, address: 10.0.0.1, self: true}\n", 4,
			"hosts[1].address: host m1 has the same SSH address as c1"},
		{"same ssh address, IPv4-mapped IPv6", base + "  - {name: c2, role: compute, address: '[::ffff:10.0.0.1]:22'}\n", 4,
			"hosts[1].address: host c2 has the same SSH address as c1"},
		{"same ssh address, leading zero in the port", base + "  - {name: c2, role: compute, address: '10.0.0.1:022'}\n", 4,
			"hosts[1].address: host c2 has the same SSH address as c1"},
		{"same ssh name, other case and a trailing dot", "ssh: {key_file: id_ed25519, known_hosts: known_hosts}\nhosts:\n" +
			"  - {name: c1, role: compute, address: node1.example}\n  - {name: c2, role: compute, address: 'NODE1.example.:22'}\n", 4,
			"hosts[1].address: host c2 has the same SSH address as c1 (node1.example:22, line 3)"},
		{"same bmc, default port against the explicit one", base + bmcHost("c2", "10.0.0.2", "address: 10.0.1.2") +
			bmcHost("c3", "10.0.0.3", "address: 10.0.1.2, port: 443"), 11,
			"hosts[2].bmc.address: host c3 has the same BMC as c2 (10.0.1.2 port 443, line 7)"},
		{"same bmc, ipmi default port", base + bmcHost("c2", "10.0.0.2", "address: bmc2, protocol: ipmi") +
			bmcHost("c3", "10.0.0.3", "address: BMC2, port: 623"), 11,
			"hosts[2].bmc.address: host c3 has the same BMC as c2 (bmc2 port 623, line 7)"},
		{"known_hosts lists this machine's key", base + "  - {name: c9, role: compute, address: 10.0.0.9, ssh: {known_hosts: own_known_hosts}}\n", 4,
			"hosts[1].address: host c9 is this machine: DIR/own_known_hosts lists this machine's own host key SHA256:"},
		{"known_hosts trusts this machine's key as a CA", base + "  - {name: c8, role: compute, address: 10.0.0.8, ssh: {known_hosts: ca_known_hosts}}\n", 4,
			"hosts[1].address: host c8 is this machine"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseIn(t, dir, tc.yml)
			if err == nil {
				t.Fatal("Parse accepted the config")
			}
			want := fmt.Sprintf("%s:%d: %s", filepath.Join(dir, "shutdownd.yaml"), tc.line, strings.ReplaceAll(tc.want, "DIR", dir))
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error:\n%v\nwant it to contain:\n%s", err, want)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Errorf("error %T is not a *FieldError", err)
			}
		})
	}
}

// What the guards must not refuse: one address on other ports (NAT, a
// simulator), a BMC next to its host's SSH address, the self host whose
// known_hosts key is this machine's own, and a name against an IP literal,
// which only DNS could compare.
func TestParseAcceptsWhatIsNotTheWrongMachine(t *testing.T) {
	dir := site(t)
	writeFile(t, filepath.Join(dir, "own_known_hosts"), "10.0.0.9 "+fixtureOwnKey+"\n")
	yml := base +
		"  - {name: c2, role: compute, address: '10.0.0.1:2222'}\n" +
		bmcHost("c3", "10.0.0.3", "address: 10.0.1.3, port: 6230") +
		bmcHost("c4", "10.0.0.4", "address: 10.0.1.3, port: 6231") +
		bmcHost("c5", "10.0.0.5", "address: 10.0.0.5") +
		"  - {name: m1, role: control, address: 10.0.0.9, self: true, ssh: {known_hosts: own_known_hosts}}\n" +
		"  - {name: c6, role: compute, address: 'localhost:2200'}\n  - {name: c7, role: compute, address: '127.0.0.1:2200'}\n"
	c, err := parseIn(t, dir, yml)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range c.Hosts {
		if h.Self != (h.RefuseKeys == nil) {
			t.Errorf("host %s (self %v) refuses %d keys; want this machine's keys on every host but the self host", h.Name, h.Self, len(h.RefuseKeys))
		}
	}
}

// Where this machine's keys are read from: a file that is not a key is
// skipped (a stray file in /etc/ssh must not stop the service), and a
// location given explicitly that holds no key at all is refused, so that a
// mistyped setting cannot switch the guard off unseen.
func TestOwnHostKeysLocation(t *testing.T) {
	dir := site(t)
	writeFile(t, filepath.Join(dir, "own", "ssh_host_rsa_key.pub"), "not a key\n")
	c, err := parseIn(t, dir, base)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.OwnHostKeys) != 1 || !strings.HasSuffix(c.OwnHostKeys[0].File, "ssh_host_ed25519_key.pub") {
		t.Errorf("own keys %+v, want the ed25519 key only", c.OwnHostKeys)
	}

	empty := t.TempDir()
	_, err = ParseWith([]byte(base), filepath.Join(dir, "shutdownd.yaml"),
		Options{OwnHostKeys: filepath.Join(empty, "*.pub"), OwnHostKeysSet: true})
	if err == nil || !strings.Contains(err.Error(), "hosts: cannot tell which host is this machine") {
		t.Errorf("explicit location without keys: %v", err)
	}
	// Not given explicitly, a machine without sshd keys has nothing to
	// compare: accepted.
	c, err = ParseWith([]byte(base), filepath.Join(dir, "shutdownd.yaml"), Options{OwnHostKeys: filepath.Join(empty, "*.pub")})
	if err != nil || len(c.OwnHostKeys) != 0 {
		t.Errorf("default location without keys: %v, %d keys", err, len(c.OwnHostKeys))
	}
}
