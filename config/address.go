package config

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// port checks the port of a host:port string, which must be in
// [min, 65535].
func port(hostport string, min int) (int, error) {
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return 0, fmt.Errorf("%q is not host:port", hostport)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < min || n > 65535 {
		return 0, fmt.Errorf("%q: port %q is not a number from %d to 65535", hostport, p, min)
	}
	return n, nil
}

// sshAddress normalises an SSH address to host:port, appending the SSH
// default port 22 when the file gives a bare host name or IP: that is what
// every ssh client does, and "10.0.0.11" in a config means just that.
func sshAddress(s string) (string, error) {
	if strings.ContainsAny(s, " /@") {
		return "", fmt.Errorf("%q is not host:port (no user@, no URL)", s)
	}
	if host, _, err := net.SplitHostPort(s); err == nil {
		if host == "" {
			return "", fmt.Errorf("%q has no host", s)
		}
		if _, err := port(s, 1); err != nil {
			return "", err
		}
		return s, nil
	}
	h := strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	if h == "" || (strings.Contains(h, ":") && net.ParseIP(h) == nil) {
		return "", fmt.Errorf("%q is not host:port", s)
	}
	return net.JoinHostPort(h, DefaultSSHPort), nil
}

// bmcAddress checks a BMC address: a host name or IP only. The port is a
// field of its own because its default depends on the protocol, and one
// place to set it avoids "which one wins" questions.
func bmcAddress(s string) (string, error) {
	if strings.Contains(s, "://") || strings.ContainsAny(s, " /@") {
		return "", fmt.Errorf("%q must be a host name or IP, not a URL", s)
	}
	if _, _, err := net.SplitHostPort(s); err == nil {
		return "", fmt.Errorf("%q includes a port: give the host only and set port", s)
	}
	h := strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	if strings.Contains(h, ":") && net.ParseIP(h) == nil {
		return "", fmt.Errorf("%q is not a host name or IP", s)
	}
	return h, nil
}

// prefixes reads a list of networks in CIDR notation; a bare address means
// that one address. A network with host bits set ("10.0.0.1/24") is
// rejected: it usually means a typo, and trusting the wrong network would
// let its hosts forge their client address.
func (d *decoder) prefixes(n *yaml.Node, path string) []netip.Prefix {
	var out []netip.Prefix
	for i, item := range d.sequence(n, path) {
		p := fmt.Sprintf("%s[%d]", path, i)
		s, ok := d.nonEmpty(item, p)
		if !ok {
			continue
		}
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				d.fail(item, p, "%q is not an IP address or a CIDR network like 10.0.0.0/24", s)
				continue
			}
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		pr, err := netip.ParsePrefix(s)
		if err != nil {
			d.fail(item, p, "%q is not a CIDR network like 10.0.0.0/24", s)
			continue
		}
		if pr != pr.Masked() {
			d.fail(item, p, "%q has host bits set; did you mean %s?", s, pr.Masked())
			continue
		}
		out = append(out, pr)
	}
	return out
}
