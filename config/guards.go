package config

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// DefaultOwnHostKeys is where OpenSSH keeps this machine's public host
// keys: what a client sees when it reaches this machine over SSH.
const DefaultOwnHostKeys = "/etc/ssh/ssh_host_*_key.pub"

// Options change what Load and Parse read besides the file itself. The
// zero value is what the service uses.
type Options struct {
	// OwnHostKeys is a glob of this machine's SSH public host keys
	// (DefaultOwnHostKeys when empty). Tests point it at keys of their
	// own: the machine running them may have an sshd of its own.
	OwnHostKeys string
	// OwnHostKeysSet says OwnHostKeys was given explicitly: a pattern that
	// then matches no readable key is an error, so a mistyped setting
	// cannot switch the guard off unseen.
	OwnHostKeysSet bool
}

// OwnKey is one of this machine's SSH host keys and the file it came from.
type OwnKey struct {
	File string
	Key  ssh.PublicKey
}

// hostNodes locates what the wrong-machine guards report on, for the host
// of the same index in Config.Hosts.
type hostNodes struct {
	address *yaml.Node // the address value, or the host item without one
	bmc     *yaml.Node // the bmc block's address value (or the block), nil without a BMC
}

// readOwnKeys reads the public keys matching pattern. A file that cannot be
// read or parsed is skipped: a stray file in /etc/ssh must not stop the
// service that shuts the site down. It fails only when an explicitly given
// pattern yields no key at all.
func readOwnKeys(pattern string, explicit bool) ([]OwnKey, error) {
	files, err := filepath.Glob(pattern)
	if err != nil {
		return nil, fmt.Errorf("own host keys %q: %w", pattern, err)
	}
	var out []OwnKey
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		key, _, _, _, err := ssh.ParseAuthorizedKey(data)
		if err != nil {
			continue
		}
		out = append(out, OwnKey{File: f, Key: key})
	}
	if explicit && len(out) == 0 {
		return nil, fmt.Errorf("own host keys %q: no readable public key matches", pattern)
	}
	return out, nil
}

// guards refuses configurations that could power off the wrong machine:
// two hosts on one SSH address, two hosts on one BMC, and a host not marked
// self that known_hosts says is this machine. Two self hosts are refused
// where the second is read (hosts).
func (d *decoder) guards(c *Config, nodes []hostNodes, hostsKey *yaml.Node) {
	d.sameSSH(c, nodes)
	d.sameBMC(c, nodes)
	own, err := readOwnKeys(d.ownPattern(), d.opts.OwnHostKeysSet)
	if err != nil {
		d.fail(hostsKey, "hosts", "cannot tell which host is this machine: %v", err)
		return
	}
	c.OwnHostKeys = own
	for i := range c.Hosts {
		h := &c.Hosts[i]
		if h.Self {
			continue
		}
		h.RefuseKeys = own
		if k, ok := d.knownAsSelf(*h, own); ok {
			d.fail(nodes[i].address, fmt.Sprintf("hosts[%d].address", i),
				"host %s is this machine: %s lists this machine's own host key %s (%s) for %s; mark it self: true, or correct its address or known_hosts",
				h.Name, h.SSH.KnownHosts, ssh.FingerprintSHA256(k.Key), k.File, h.Address)
		}
	}
}

func (d *decoder) ownPattern() string {
	if d.opts.OwnHostKeys != "" {
		return d.opts.OwnHostKeys
	}
	return DefaultOwnHostKeys
}

// sameSSH refuses a second host on an SSH address:port already used: one
// machine would be told to power off twice, and the machine that should
// have been never would.
func (d *decoder) sameSSH(c *Config, nodes []hostNodes) {
	first := map[string]int{}
	for i, h := range c.Hosts {
		if h.Address == "" {
			continue
		}
		host, port, err := net.SplitHostPort(h.Address)
		if err != nil {
			continue
		}
		key := endpoint(host, port)
		if j, dup := first[key]; dup {
			d.fail(nodes[i].address, fmt.Sprintf("hosts[%d].address", i),
				"host %s has the same SSH address as %s (%s, line %d): one machine cannot be two hosts",
				h.Name, c.Hosts[j].Name, c.Hosts[j].Address, nodes[j].address.Line)
			continue
		}
		first[key] = i
	}
}

// sameBMC refuses a second host on a BMC address:port already used (after
// the protocol's default port is applied): forcing one host off through it
// would force off the other.
func (d *decoder) sameBMC(c *Config, nodes []hostNodes) {
	first := map[string]int{}
	for i, h := range c.Hosts {
		if h.BMC == nil || h.BMC.Address == "" || nodes[i].bmc == nil {
			continue
		}
		key := endpoint(h.BMC.Address, strconv.Itoa(h.BMC.Port))
		if j, dup := first[key]; dup {
			o := c.Hosts[j].BMC
			d.fail(nodes[i].bmc, fmt.Sprintf("hosts[%d].bmc.address", i),
				"host %s has the same BMC as %s (%s port %d, line %d): forcing one off would force off the other",
				h.Name, c.Hosts[j].Name, o.Address, o.Port, nodes[j].bmc.Line)
			continue
		}
		first[key] = i
	}
}

// endpoint normalises host and port for comparison: an IP in its canonical
// form (an IPv4-mapped IPv6 address as IPv4), a name in lower case without
// a trailing dot, the port as a number. A name is never resolved: what
// DNS answers at load time need not be what it answers during an outage,
// and the load must not depend on DNS being up.
func endpoint(host, port string) string {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if a, err := netip.ParseAddr(host); err == nil {
		host = a.Unmap().String()
	} else {
		host = strings.TrimSuffix(strings.ToLower(host), ".")
	}
	if n, err := strconv.Atoi(port); err == nil {
		port = strconv.Itoa(n)
	}
	return net.JoinHostPort(host, port)
}

// probeKey is a key no known_hosts file lists: checking it makes knownhosts
// name every key it has for an address.
var probeKey = func() ssh.PublicKey {
	k, err := ssh.NewPublicKey(ed25519.PublicKey(make([]byte, ed25519.PublicKeySize)))
	if err != nil {
		panic(err)
	}
	return k
}()

// knownAsSelf reports the first of own that h's known_hosts lists for h's
// address (plain or @cert-authority lines alike).
func (d *decoder) knownAsSelf(h Host, own []OwnKey) (OwnKey, bool) {
	if len(own) == 0 || h.SSH.KnownHosts == "" || !readable(h.SSH.KnownHosts) || h.Address == "" {
		return OwnKey{}, false
	}
	cb, err := knownhosts.New(h.SSH.KnownHosts)
	if err != nil {
		return OwnKey{}, false // reported by sshBlock
	}
	// The remote address is used only when the address is empty.
	remote := &net.TCPAddr{IP: net.IPv4zero, Port: 22}
	var keyErr *knownhosts.KeyError
	if err := cb(h.Address, remote, probeKey); !errors.As(err, &keyErr) {
		return OwnKey{}, false
	}
	for _, w := range keyErr.Want {
		i := slices.IndexFunc(own, func(k OwnKey) bool { return sameKey(k.Key, w.Key) })
		if i >= 0 {
			return own[i], true
		}
	}
	return OwnKey{}, false
}

func sameKey(a, b ssh.PublicKey) bool {
	return a.Type() == b.Type() && string(a.Marshal()) == string(b.Marshal())
}

// valueOf returns the value node of key in mapping n, or def.
func valueOf(n *yaml.Node, key string, def *yaml.Node) *yaml.Node {
	if n = deref(n); n == nil || n.Kind != yaml.MappingNode {
		return def
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return def
}
