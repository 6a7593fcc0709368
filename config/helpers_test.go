package config

import (
	"os"
	"path/filepath"
	"testing"
)

// Secret values used by the tests; no output may ever contain them.
const (
	testPassword   = "bmc-pass-Zq81xK"
	testEnvPass    = "env-pass-Ww72pL"
	testHookSecret = "hook-secret-Pp55rT"
	// testLongPass is 24 bytes: too long for IPMI v2, fine for Redfish.
	testLongPass = "long-pass-Hh40tRq9Lm2Xv8"
)

// site writes the files a config refers to (relative names, resolved
// against the config's directory) and returns the directory.
func site(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := []struct {
		name, content string
		mode          os.FileMode
	}{
		{"id_ed25519", "-----BEGIN OPENSSH PRIVATE KEY-----\nnot a real key\n", 0o600},
		{"known_hosts", "10.0.0.11 ssh-ed25519 AAAA\n", 0o644},
		{"bmc-password", testPassword + "\n", 0o600},
		{"long-password", testLongPass + "\n", 0o600},
		{"open-password", "visible\n", 0o644},
		{"open-key", "key\n", 0o644},
		{"empty-password", "\n", 0o600},
		{"clouds.yaml", "clouds: {edge: {}}\n", 0o600},
		{"ca.pem", "cert\n", 0o644},
		{"tls.crt", "cert\n", 0o644},
		{"tls.key", "key\n", 0o600},
	}
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if err := os.WriteFile(p, []byte(f.content), f.mode); err != nil {
			t.Fatal(err)
		}
		// WriteFile's mode is filtered by the umask; set it exactly.
		if err := os.Chmod(p, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func parseIn(t *testing.T, dir, yml string) (*Config, error) {
	t.Helper()
	return Parse([]byte(yml), filepath.Join(dir, "shutdownd.yaml"))
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
