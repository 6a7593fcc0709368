package config

import (
	"fmt"
	"net"
	"strconv"
	"strings"
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
