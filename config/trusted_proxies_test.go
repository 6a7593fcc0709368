package config

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestTrustedProxies(t *testing.T) {
	dir := site(t)
	c, err := parseIn(t, dir, base+"trusted_proxies:\n  - 10.0.0.0/24\n  - 192.0.2.7\n  - 2001:db8::/48\n  - ::1\n")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("192.0.2.7/32"),
		netip.MustParsePrefix("2001:db8::/48"), netip.MustParsePrefix("::1/128"),
	}
	if !slices.Equal(c.TrustedProxies, want) {
		t.Errorf("TrustedProxies = %v, want %v", c.TrustedProxies, want)
	}
	c, err = parseIn(t, dir, base)
	if err != nil || len(c.TrustedProxies) != 0 {
		t.Fatalf("default: %v %v (want none: X-Forwarded-For is ignored)", c.TrustedProxies, err)
	}

	for _, tc := range []struct {
		yml  string
		line int
		want string
	}{
		{"trusted_proxies:\n  - 10.0.0.0/24\n  - 10.0.0.1/24\n", 6, `trusted_proxies[1]: "10.0.0.1/24" has host bits set; did you mean 10.0.0.0/24?`},
		{"trusted_proxies:\n  - proxy.example.com\n", 5, `trusted_proxies[0]: "proxy.example.com" is not an IP address`},
		{"trusted_proxies:\n  - 10.0.0.0/33\n", 5, `trusted_proxies[0]: "10.0.0.0/33" is not a CIDR network`},
		{"trusted_proxies:\n  - ''\n", 5, "trusted_proxies[0]: must not be empty"},
		{"trusted_proxies: 10.0.0.0/8\n", 4, "trusted_proxies: must be a list"},
		{"trusted_proxies:\n  - [10.0.0.0/8]\n", 5, "trusted_proxies[0]: must be a single value"},
	} {
		_, err := parseIn(t, dir, base+tc.yml)
		w := fmt.Sprintf("%s/shutdownd.yaml:%d: %s", dir, tc.line, tc.want)
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("%q: error %v, want %q", tc.yml, err, w)
		}
	}
}

// TestCloudsFileIsSecret: clouds.yaml carries the OpenStack password, so a
// world-readable one is refused like any other secret file.
func TestCloudsFileIsSecret(t *testing.T) {
	dir := site(t)
	_, err := parseIn(t, dir, base+"openstack:\n  cloud: edge\n  clouds_file: open-password\n")
	want := fmt.Sprintf("%s/shutdownd.yaml:6: openstack.clouds_file: %s/open-password is readable by every user", dir, dir)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want %q", err, want)
	}
}
