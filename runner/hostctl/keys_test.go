package hostctl

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/edgeops/shutdownd/sitesim"
)

func TestHostKeyAlgorithms(t *testing.T) {
	t.Parallel()
	ed, _, err := sitesim.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaPub, err := ssh.NewPublicKey(&rsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "known_hosts")
	lines := []string{
		knownhosts.Line([]string{"127.0.0.1:2222"}, ed.PublicKey()),
		knownhosts.Line([]string{"127.0.0.1:2223"}, rsaPub),
		knownhosts.Line([]string{"127.0.0.1:2224"}, ed.PublicKey()),
		knownhosts.Line([]string{"127.0.0.1:2224"}, rsaPub),
	}
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cb, err := knownhosts.New(file)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		addr string
		want []string // plain algorithms, before the certificate ones
	}{
		{"127.0.0.1:2222", []string{ssh.KeyAlgoED25519}},
		{"127.0.0.1:2223", []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}},
		{"127.0.0.1:2224", []string{ssh.KeyAlgoED25519, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}},
		{"127.0.0.1:2225", nil},
	}
	for _, tt := range tests {
		remote, _ := net.ResolveTCPAddr("tcp", tt.addr)
		got := hostKeyAlgorithms(cb, tt.addr, remote)
		if tt.want == nil {
			if got != nil {
				t.Errorf("%s: %v, want nil (unknown host: library defaults)", tt.addr, got)
			}
			continue
		}
		if len(got) < len(tt.want) || !slices.Equal(got[:len(tt.want)], tt.want) {
			t.Errorf("%s: %v, want prefix %v", tt.addr, got, tt.want)
		}
		if !slices.Contains(got, ssh.CertAlgoED25519v01) {
			t.Errorf("%s: %v lacks certificate algorithms", tt.addr, got)
		}
	}
}

// TestDialPicksKnownHostKey: a server with two host keys, known_hosts
// listing only one. Whichever one the library would prefer, Dial must ask
// for the listed one instead of reporting a mismatch.
func TestDialPicksKnownHostKey(t *testing.T) {
	t.Parallel()
	ed, _, err := sitesim.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ssh.NewSignerFromKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{NoClientAuth: true}
	cfg.AddHostKey(ed)
	cfg.AddHostKey(ec)
	ln := handshakeServer(t, cfg)

	dir := t.TempDir()
	_, pemBytes, err := sitesim.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "id")
	if err := os.WriteFile(keyFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, s := range []ssh.Signer{ed, ec} {
		kh := filepath.Join(dir, "kh-"+s.PublicKey().Type())
		if err := os.WriteFile(kh, []byte(sitesim.KnownHostsLine(ln.Addr().String(), s.PublicKey())+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Dial(context.Background(), Target{
			Name: "two-keys", Address: ln.Addr().String(), User: "root",
			KeyFile: keyFile, KnownHosts: kh, ConnectTimeout: 2 * time.Second,
		})
		if err != nil {
			t.Errorf("known_hosts with only %s: %v", s.PublicKey().Type(), err)
			continue
		}
		c.Close()
	}
}

func TestLoadSigner(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "id_ed25519")
	write := func(data []byte, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	first, pem1, err := sitesim.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	write(pem1, t0)
	a, err := loadSigner(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := loadSigner(path)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Error("second load parsed again instead of using the cache")
	}
	if string(a.PublicKey().Marshal()) != string(first.PublicKey().Marshal()) {
		t.Error("loaded the wrong key")
	}

	// A rotated key (same size, new mtime) is picked up.
	second, pem2, err := sitesim.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	write(pem2, t0.Add(time.Minute))
	c, err := loadSigner(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(c.PublicKey().Marshal()) != string(second.PublicKey().Marshal()) {
		t.Error("rotated key not picked up")
	}

	// Errors name the file, never its contents.
	garbage := "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0LXNlY3JldC1zZWNyZXQ=\n-----END OPENSSH PRIVATE KEY-----\n"
	write([]byte(garbage), t0.Add(2*time.Minute))
	if _, err := loadSigner(path); err == nil || strings.Contains(err.Error(), "c2VjcmV0") {
		t.Errorf("garbage key: %v", err)
	}

	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKeyWithPassphrase(ecKey, "", []byte("pass"))
	if err != nil {
		t.Fatal(err)
	}
	write(pem.EncodeToMemory(block), t0.Add(3*time.Minute))
	if _, err := loadSigner(path); err == nil || !strings.Contains(err.Error(), "passphrase-protected") {
		t.Errorf("encrypted key: %v, want passphrase-protected", err)
	}
	if _, err := loadSigner(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing key file: no error")
	}
}

// handshakeServer serves SSH handshakes with cfg on a loopback port until
// the test ends, and refuses every channel: enough to test host key
// checking and login, nothing else.
func handshakeServer(t *testing.T, cfg *ssh.ServerConfig) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if sc, chans, reqs, err := ssh.NewServerConn(c, cfg); err == nil {
					go ssh.DiscardRequests(reqs)
					for nc := range chans {
						nc.Reject(ssh.Prohibited, "test server")
					}
					sc.Close()
				}
			}()
		}
	}()
	return ln
}
