package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"golang.org/x/crypto/ssh"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/store"
)

// limConfig writes a minimal valid configuration (one host that is never
// contacted: no job runs) into dir, with extra YAML appended, and loads it.
func limConfig(t *testing.T, dir, extra string) (*config.Config, error) {
	t.Helper()
	// A real key and known_hosts: the loader parses both.
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]struct {
		data []byte
		mode os.FileMode
	}{
		"id_ed25519":  {pem.EncodeToMemory(block), 0o600},
		"known_hosts": {[]byte("127.0.0.1 " + string(ssh.MarshalAuthorizedKey(signer.PublicKey()))), 0o644},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), f.data, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	yml := fmt.Sprintf("listen: 127.0.0.1:0\ndatabase: %s\nssh: {key_file: id_ed25519, known_hosts: known_hosts}\nhosts:\n  - {name: c1, role: compute, address: 127.0.0.1:1}\n%s",
		filepath.Join(dir, "shutdownd.db"), extra)
	p := filepath.Join(dir, "shutdownd.yaml")
	if err := os.WriteFile(p, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	return config.Load(p)
}

func limStart(t *testing.T, cfg *config.Config, tune func(*Main)) *Main {
	t.Helper()
	m := &Main{Config: cfg, Logger: slog.New(slog.DiscardHandler)}
	if tune != nil {
		tune(m)
	}
	if err := m.Run(context.Background()); err != nil {
		t.Fatalf("run: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestSlowClientsCannotHoldTheServer holds 200 connections that send their
// headers one byte at a time and never finish (slowloris): a normal request
// is still served at once, and the slow connections are cut when the
// header timeout passes, however slowly they keep dribbling.
func TestSlowClientsCannotHoldTheServer(t *testing.T) {
	t.Parallel()
	cfg, err := limConfig(t, t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	const headerTimeout = 1500 * time.Millisecond
	m := limStart(t, cfg, func(m *Main) { m.readHeaderTimeout = headerTimeout })
	if m.srv.ReadTimeout <= 0 || m.srv.MaxHeaderBytes <= 0 || m.srv.IdleTimeout <= 0 {
		t.Fatalf("server limits not set: %+v", m.srv)
	}

	const slow = 200
	conns := make([]net.Conn, 0, slow)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	opened := time.Now()
	for range slow {
		c, err := net.Dial("tcp", m.Addr())
		if err != nil {
			t.Fatalf("slow client %d: %v", len(conns), err)
		}
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n"); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	// One of them keeps dribbling a header byte every 100 ms.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				if _, err := io.WriteString(conns[0], "X"); err != nil {
					return
				}
			}
		}
	}()

	t0 := time.Now()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(m.URL() + "/healthz")
	if err != nil {
		t.Fatalf("normal request while %d slow clients hold connections: %v", slow, err)
	}
	resp.Body.Close()
	took := time.Since(t0)
	if resp.StatusCode != 200 || took > time.Second {
		t.Fatalf("normal request: %d after %v", resp.StatusCode, took)
	}

	// Every slow connection, the dribbling one included, is closed by the
	// server once the header timeout has passed.
	for i, c := range conns {
		_ = c.SetReadDeadline(opened.Add(headerTimeout + 5*time.Second))
		_, err := bufio.NewReader(c).ReadString('\n')
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("slow connection %d still open %v after it started", i, time.Since(opened))
		}
	}
	t.Logf("normal request served in %v with %d slow clients; all cut after %v (header timeout %v)",
		took, slow, time.Since(opened).Round(time.Millisecond), headerTimeout)
}

// selfSigned writes a certificate for 127.0.0.1 and its key (mode 0600).
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "shutdownd test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestTLSFromConfig serves HTTPS from the configured files: TLS 1.2 and
// 1.3 handshakes succeed, TLS 1.0 and 1.1 are refused.
func TestTLSFromConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cert, key, pool := selfSigned(t, dir)
	cfg, err := limConfig(t, dir, fmt.Sprintf("tls: {cert_file: %s, key_file: %s}\n", cert, key))
	if err != nil {
		t.Fatal(err)
	}
	m := limStart(t, cfg, nil)
	if !strings.HasPrefix(m.URL(), "https://") {
		t.Fatalf("URL %s is not https", m.URL())
	}
	for _, tc := range []struct {
		name    string
		version uint16
		ok      bool
	}{
		{"TLS 1.0", tls.VersionTLS10, false},
		{"TLS 1.1", tls.VersionTLS11, false},
		{"TLS 1.2", tls.VersionTLS12, true},
		{"TLS 1.3", tls.VersionTLS13, true},
	} {
		conn, err := tls.Dial("tcp", m.Addr(), &tls.Config{RootCAs: pool, MinVersion: tc.version, MaxVersion: tc.version})
		if tc.ok != (err == nil) {
			t.Errorf("%s handshake: err %v, want success %v", tc.name, err, tc.ok)
		}
		if err == nil {
			if v := conn.ConnectionState().Version; v != tc.version {
				t.Errorf("%s: negotiated %x", tc.name, v)
			}
			conn.Close()
		}
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 5 * time.Second}
	resp, err := c.Get(m.URL() + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /healthz over TLS: %v %v", resp, err)
	}
	resp.Body.Close()
	// Plain HTTP to the TLS port gets no API answer.
	if resp, err := http.Get("http://" + m.Addr() + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP served on the TLS port")
		}
	}
}

// TestRefusesWorldReadableSecrets: the service does not start when a key or
// password file can be read by every user, and says which file and why.
func TestRefusesWorldReadableSecrets(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, file, extra string
	}{
		{"bmc password", "bmc-password", "bmc: {user: admin, password_file: bmc-password}\n"},
		{"ssh key", "id_ed25519", ""},
		{"tls key", "tls.key", "tls: {cert_file: tls.crt, key_file: tls.key}\n"},
		{"clouds.yaml", "clouds.yaml", "openstack: {cloud: edge, clouds_file: clouds.yaml}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range []string{"bmc-password", "clouds.yaml"} {
				if err := os.WriteFile(filepath.Join(dir, f), []byte("s3cr3t-value\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			selfSigned(t, dir) // tls.crt, tls.key: the loader parses them
			if _, err := limConfig(t, dir, tc.extra); err != nil {
				t.Fatalf("private files rejected: %v", err)
			}
			if err := os.Chmod(filepath.Join(dir, tc.file), 0o644); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr strings.Builder
			err := dispatch(context.Background(), []string{"serve", "--config", filepath.Join(dir, "shutdownd.yaml")}, &stdout, &stderr)
			if err == nil {
				t.Fatal("serve started with a world-readable secret file")
			}
			want := filepath.Join(dir, tc.file) + " is readable by every user (mode 0644)"
			if !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "s3cr3t-value") {
				t.Fatalf("error %q, want it to contain %q and no secret", err, want)
			}
			if _, statErr := os.Stat(filepath.Join(dir, "shutdownd.db")); statErr == nil {
				t.Fatal("database created by a service that refused to start")
			}
		})
	}
}

// TestTokensAtRest: a token secret carries 256 random bits, only its
// SHA-256 reaches the database file (read back raw, WAL included), the
// database is mode 0600, and a revocation or an expiry takes effect on the
// very next request to the running service.
func TestTokensAtRest(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg, err := limConfig(t, dir, "")
	if err != nil {
		t.Fatal(err)
	}
	m := limStart(t, cfg, nil)
	ctx := context.Background()

	seen := map[string]bool{}
	for range 200 {
		s, err := store.NewTokenSecret()
		if err != nil {
			t.Fatal(err)
		}
		raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(s, "sdt_"))
		if !strings.HasPrefix(s, "sdt_") || err != nil || len(raw) != 32 {
			t.Fatalf("secret %q: %d random bytes (%v), want 32", s, len(raw), err)
		}
		if seen[s] {
			t.Fatalf("secret repeated: %s", s)
		}
		seen[s] = true
	}

	// The operator's CLI creates the token against the live database.
	var out, errOut strings.Builder
	if err := dispatch(ctx, []string{"token", "create", "--database", cfg.Database, "--scopes", "read", "--name", "ops"}, &out, &errOut); err != nil {
		t.Fatalf("token create: %v %s", err, errOut.String())
	}
	secret := strings.TrimSpace(out.String())
	get := func() int {
		req, _ := http.NewRequest("GET", m.URL()+"/jobs", nil)
		req.Header.Set("auth-token", secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(); code != 200 {
		t.Fatalf("new token: %d", code)
	}

	db, err := sql.Open("sqlite", "file:"+cfg.Database+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var hash []byte
	if err := db.QueryRow(`SELECT hash FROM tokens WHERE name = 'ops'`).Scan(&hash); err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256([]byte(secret)); string(hash) != string(want[:]) {
		t.Fatalf("stored hash %x is not the SHA-256 of the secret", hash)
	}
	for _, suffix := range []string{"", "-wal"} {
		b, err := os.ReadFile(cfg.Database + suffix)
		if err != nil {
			if suffix != "" && os.IsNotExist(err) {
				continue
			}
			t.Fatal(err)
		}
		if strings.Contains(string(b), secret) || strings.Contains(string(b), strings.TrimPrefix(secret, "sdt_")) {
			t.Fatalf("the secret is in %s", cfg.Database+suffix)
		}
		fi, err := os.Stat(cfg.Database + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %04o, want 0600", cfg.Database+suffix, fi.Mode().Perm())
		}
	}

	if err := dispatch(ctx, []string{"token", "revoke", "--database", cfg.Database, "ops"}, &out, &errOut); err != nil {
		t.Fatalf("token revoke: %v %s", err, errOut.String())
	}
	if code := get(); code != http.StatusForbidden {
		t.Fatalf("first request after revocation: %d, want 403", code)
	}

	// Expiry: a token whose expiry passes between two requests.
	exp := time.Now().Add(1500 * time.Millisecond)
	secret, err = store.NewTokenSecret()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Store.CreateToken(ctx, "short", store.HashToken(secret), []string{"read"}, nil, &exp); err != nil {
		t.Fatal(err)
	}
	if code := get(); code != 200 {
		t.Fatalf("token before expiry: %d", code)
	}
	for time.Now().Before(exp) {
		time.Sleep(time.Until(exp)) // waiting for the clock, not for async work
	}
	if code := get(); code != http.StatusForbidden {
		t.Fatalf("first request after expiry: %d, want 403", code)
	}
}

// TestNoSSHAgent: the SSH client cannot forward an agent because the
// packages that run on a site never link the agent package at all.
func TestNoSSHAgent(t *testing.T) {
	t.Parallel()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not on PATH")
	}
	out, err := exec.Command(goTool, "list", "-deps", "github.com/edgeops/shutdownd/cmd/shutdownd").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == "golang.org/x/crypto/ssh/agent" {
			t.Fatal("shutdownd links golang.org/x/crypto/ssh/agent: agent forwarding is possible")
		}
	}
	if !strings.Contains(string(out), "golang.org/x/crypto/ssh\n") {
		t.Fatal("go list output does not list the ssh package: the check proves nothing")
	}
}
