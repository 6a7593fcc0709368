package config

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
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
		{"id_ed25519", fixtureKey, 0o600},
		{"known_hosts", "10.0.0.11 " + fixtureHostKey + "\n", 0o644},
		{"bmc-password", testPassword + "\n", 0o600},
		{"long-password", testLongPass + "\n", 0o600},
		{"open-password", "visible\n", 0o644},
		{"open-key", "key\n", 0o644},
		{"empty-password", "\n", 0o600},
		{"clouds.yaml", "clouds: {edge: {}}\n", 0o600},
		{"ca.pem", "cert\n", 0o644},
		{"tls.crt", fixtureCert, 0o644},
		{"tls.key", fixtureCertKey, 0o600},
		{"id_ed25519.pub", fixtureHostKey + "\n", 0o600},
		{"id_locked", fixtureLockedKey, 0o600},
		{"bad_known_hosts", "this is not a known_hosts line\n", 0o644},
		// This machine's own SSH host key, as the tests see it: the
		// machine running them may have an sshd with keys of its own.
		{"own/ssh_host_ed25519_key.pub", fixtureOwnKey + "\n", 0o644},
	}
	if err := os.Mkdir(filepath.Join(dir, "own"), 0o755); err != nil {
		t.Fatal(err)
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
	return ParseWith([]byte(yml), filepath.Join(dir, "shutdownd.yaml"), ownKeysIn(dir))
}

// ownKeysIn points the loader at the own host key site() writes.
func ownKeysIn(dir string) Options {
	return Options{OwnHostKeys: filepath.Join(dir, "own", "ssh_host_*_key.pub"), OwnHostKeysSet: true}
}

// fixtureOwnKey is this machine's host key in the tests (public key line).
var fixtureOwnKey = func() string {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		panic(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}()

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// The key, host key and certificate files of site(): real ones, since the
// loader parses them (check-config refuses what serve would), made once.
var fixtureKey, fixtureHostKey, fixtureCert, fixtureCertKey = makeFixtureKeys()

// fixtureLockedKey is an SSH private key protected by a passphrase.
var fixtureLockedKey = func() string {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	b, err := ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte("passphrase"))
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(b))
}()

func makeFixtureKeys() (key, hostKey, cert, certKey string) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	pemKey, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		panic(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		panic(err)
	}
	hostKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "shutdownd.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"shutdownd.test"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		panic(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(pemKey)), hostKey,
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}))
}
