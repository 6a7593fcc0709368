package nut_test

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/nut"
	"github.com/edgeops/shutdownd/sitesim"
)

// TestStartTLS upgrades the connection before the login and reads the UPS
// over TLS; a certificate from another CA is refused before the password
// is sent. The peer is the simulated UPS: Debian's upsd is built with NSS
// and needs a certificate database made with certutil, which the test
// machine does not have.
func TestStartTLS(t *testing.T) {
	t.Parallel()
	u, err := sitesim.StartUPS("ups", 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(u.Close)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(u.CertPEM()) {
		t.Fatal("no certificate")
	}
	o := nut.Options{Address: u.Addr(), UPS: u.Name, User: u.User, Password: u.Password(), Timeout: 2 * time.Second,
		TLS: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	c, err := nut.Dial(ctx(t), o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.TLS() || !c.LoggedIn() {
		t.Errorf("TLS %v, logged in %v", c.TLS(), c.LoggedIn())
	}
	if v, err := c.Var(ctx(t), u.Name, "ups.status"); err != nil || v != "OL" {
		t.Errorf("ups.status over TLS = %q, %v", v, err)
	}

	o.TLS = &tls.Config{RootCAs: x509.NewCertPool(), MinVersion: tls.VersionTLS12}
	if _, err := nut.Dial(ctx(t), o); err == nil {
		t.Fatal("a certificate from an unknown CA was accepted")
	}
}
