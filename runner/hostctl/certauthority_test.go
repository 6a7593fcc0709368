package hostctl

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/edgeops/shutdownd/sitesim"
)

// A site that signs its host keys lists only its CA in known_hosts
// (@cert-authority). A host that presents an ed25519 key and its ed25519
// certificate is accepted through the certificate: the CA's key type must
// not make us ask for the plain ed25519 key, which no line lists. A host
// whose certificate another CA signed is still refused.
func TestHostCertificateSignedByAKnownCA(t *testing.T) {
	ca, _, err := sitesim.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	other, _, _ := sitesim.GenerateKey()
	dial := func(signedBy ssh.Signer) error {
		hostKey, _, _ := sitesim.GenerateKey()
		cert := &ssh.Certificate{Key: hostKey.PublicKey(), CertType: ssh.HostCert,
			ValidPrincipals: []string{"127.0.0.1"}, ValidBefore: ssh.CertTimeInfinity, KeyId: "host"}
		if err := cert.SignCert(rand.Reader, signedBy); err != nil {
			t.Fatal(err)
		}
		certSigner, err := ssh.NewCertSigner(cert, hostKey)
		if err != nil {
			t.Fatal(err)
		}
		cfg := &ssh.ServerConfig{NoClientAuth: true}
		cfg.AddHostKey(hostKey)
		cfg.AddHostKey(certSigner)
		ln := handshakeServer(t, cfg)
		dir := t.TempDir()
		_, clientPEM, _ := sitesim.GenerateKey()
		keyFile := filepath.Join(dir, "id")
		if err := os.WriteFile(keyFile, clientPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		kh := filepath.Join(dir, "known_hosts")
		line := "@cert-authority [127.0.0.1]:" + port + " " + string(ssh.MarshalAuthorizedKey(ca.PublicKey()))
		if err := os.WriteFile(kh, []byte(line), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := Dial(context.Background(), Target{Name: "h", Address: ln.Addr().String(), User: "root",
			KeyFile: keyFile, KnownHosts: kh, ConnectTimeout: 5 * time.Second})
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(ca); err != nil {
		t.Errorf("host certificate signed by the listed CA: %v", err)
	}
	if err := dial(other); err == nil {
		t.Error("host certificate signed by another CA was accepted")
	}
}

// A host whose certificate a trusted CA signed, but whose key is one of
// this machine's own, is refused: known_hosts would accept it (the CA also
// signed this machine's key), and its address leads here.
func TestCertificateOfThisMachineIsRefused(t *testing.T) {
	ca, _, err := sitesim.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	hostKey, _, err := sitesim.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cert := &ssh.Certificate{Key: hostKey.PublicKey(), CertType: ssh.HostCert,
		ValidPrincipals: []string{"127.0.0.1"}, ValidBefore: ssh.CertTimeInfinity, KeyId: "mgmt"}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	certSigner, err := ssh.NewCertSigner(cert, hostKey)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{NoClientAuth: true}
	cfg.AddHostKey(certSigner)
	ln := handshakeServer(t, cfg)
	dir := t.TempDir()
	_, clientPEM, _ := sitesim.GenerateKey()
	keyFile := filepath.Join(dir, "id")
	if err := os.WriteFile(keyFile, clientPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	kh := filepath.Join(dir, "known_hosts")
	line := "@cert-authority [127.0.0.1]:" + port + " " + string(ssh.MarshalAuthorizedKey(ca.PublicKey()))
	if err := os.WriteFile(kh, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	target := Target{Name: "compute-01", Address: ln.Addr().String(), User: "root", KeyFile: keyFile, KnownHosts: kh,
		ConnectTimeout: 5 * time.Second, RefuseKeys: []OwnKey{{File: "/etc/ssh/ssh_host_ed25519_key.pub", Key: hostKey.PublicKey()}}}
	c, err := Dial(context.Background(), target)
	if err == nil {
		c.Close()
		t.Fatal("a certificate of this machine's own key was accepted")
	}
	if !errors.Is(err, ErrThisMachine) || !strings.Contains(err.Error(), "/etc/ssh/ssh_host_ed25519_key.pub") {
		t.Errorf("Dial = %v; want ErrThisMachine naming the key file", err)
	}
	target.RefuseKeys = nil // the self host: its own key is expected
	c, err = Dial(context.Background(), target)
	if err != nil {
		t.Fatalf("without refused keys: %v", err)
	}
	c.Close()
}
