package hostctl

import (
	"context"
	"crypto/rand"
	"net"
	"os"
	"path/filepath"
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
