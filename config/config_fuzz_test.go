package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary files to the loader: it never panics, a
// rejection is a list of *FieldError each with a line inside the file (or 1)
// and a reason, and no error ever contains the content of a secret file.
func FuzzParse(f *testing.F) {
	dir := f.TempDir()
	for _, fl := range []struct {
		name, content string
		mode          os.FileMode
	}{
		{"id_ed25519", "-----BEGIN OPENSSH PRIVATE KEY-----\n" + testPassword + "\n", 0o600},
		{"known_hosts", "10.0.0.11 ssh-ed25519 AAAA\n", 0o644},
		{"bmc-password", testPassword + "\n", 0o600},
		{"open-password", testPassword + "\n", 0o644},
		{"clouds.yaml", "clouds: {edge: {auth: {password: " + testPassword + "}}}\n", 0o600},
	} {
		p := filepath.Join(dir, fl.name)
		if err := os.WriteFile(p, []byte(fl.content), fl.mode); err != nil {
			f.Fatal(err)
		}
		if err := os.Chmod(p, fl.mode); err != nil {
			f.Fatal(err)
		}
	}
	for _, s := range []string{
		base,
		base + "bmc: {protocol: ipmi, user: admin, password_file: bmc-password}\n",
		base + "bmc: {user: admin, password_file: open-password}\n",
		base + "tls: {cert_file: bmc-password, key_file: bmc-password}\n",
		base + "openstack: {cloud: edge, clouds_file: clouds.yaml, stop_timeout: 5m}\n",
		base + "trusted_proxies: [10.0.0.0/8, 10.0.0.1/8, '::1', x]\n",
		base + "storage: {type: ceph, admin_host: c1, hosts: [c1]}\nhost_order: [[c1]]\n",
		base + "power_source: {nut: {address: a, ups: u, user: x, password_file: bmc-password}, shutdown_when: {charge_below: 30.5, runtime_margin: 0s}, startup_after: 5s}\n",
		"a: &a [*a]\n", "hosts: [{name: c1, <<: {role: compute}}]\n", "{", "- - -\n", "\t", "---\n---\n",
		"hosts:\n  - name: c1\n    role: compute\n    address: '[::1]:22'\n    bmc: {address: '::1', port: 70000}\n",
	} {
		f.Add([]byte(s))
	}
	name := filepath.Join(dir, "shutdownd.yaml")
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, name)
		if err == nil {
			if c == nil || len(c.Hosts) == 0 {
				t.Fatalf("accepted without hosts: %+v", c)
			}
			return
		}
		// YAML breaks lines at \n, \r\n and a lone \r.
		lines := strings.Count(strings.ReplaceAll(strings.ReplaceAll(string(data), "\r\n", "\n"), "\r", "\n"), "\n") + 1
		var errs []error
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			errs = j.Unwrap()
		} else {
			errs = []error{err}
		}
		for _, e := range errs {
			var fe *FieldError
			if !errors.As(e, &fe) {
				t.Fatalf("error %T is not a *FieldError: %v", e, e)
			}
			if fe.Line < 1 || fe.Line > lines+1 || fe.Reason == "" || fe.File != name {
				t.Fatalf("error without a usable location or reason (file has %d lines): %+v", lines, fe)
			}
		}
		if strings.Contains(err.Error(), testPassword) && !strings.Contains(string(data), testPassword) {
			t.Fatalf("error reveals a secret file's content: %v", err)
		}
	})
}
