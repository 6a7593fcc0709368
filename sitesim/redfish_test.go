package sitesim

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// rfClient talks to a RedfishBMC the way a Redfish client does, trusting
// only the BMC's own certificate.
type rfClient struct {
	t     *testing.T
	bmc   *RedfishBMC
	http  *http.Client
	token string
}

func newRFClient(t *testing.T, b *RedfishBMC) *rfClient {
	t.Helper()
	return &rfClient{t: t, bmc: b, http: &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: b.CertPool()}},
	}}
}

func (c *rfClient) do(method, path string, body any) (*http.Response, map[string]any) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		buf, err := json.Marshal(body)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(buf)
	}
	req, err := http.NewRequest(method, c.bmc.URL()+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("X-Auth-Token", c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			c.t.Fatalf("%s %s: decode %q: %v", method, path, raw, err)
		}
	}
	return resp, out
}

func (c *rfClient) login(user, pass string) *http.Response {
	c.t.Helper()
	resp, _ := c.do(http.MethodPost, rfSessions, map[string]string{"UserName": user, "Password": pass})
	c.token = resp.Header.Get("X-Auth-Token")
	return resp
}

func rfStartBMC(t *testing.T, opts RedfishOptions) *RedfishBMC {
	t.Helper()
	if opts.Machine == nil {
		opts.Machine = NewMachine("compute-01")
	}
	if opts.User == "" {
		opts.User, opts.Password = "admin", "s3cret-pw"
	}
	b, err := NewRedfishBMC(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func rfWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRedfishTLSVerifiesOnlyWithItsCert(t *testing.T) {
	t.Parallel()
	b := rfStartBMC(t, RedfishOptions{})
	if !strings.HasPrefix(b.URL(), "https://127.0.0.1:") || b.Port() == 0 {
		t.Fatalf("URL %q port %d", b.URL(), b.Port())
	}

	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b.CertPEM()) {
		t.Fatal("CertPEM is not a PEM certificate")
	}
	good := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := good.Get(b.URL() + "/redfish/v1/")
	if err != nil {
		t.Fatalf("verified client: %v", err)
	}
	resp.Body.Close()

	_, err = (&http.Client{Transport: &http.Transport{}}).Get(b.URL() + "/redfish/v1/")
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Fatalf("client without the BMC cert: want unknown authority error, got %v", err)
	}
}

func TestRedfishSessionsAndAuth(t *testing.T) {
	t.Parallel()
	b := rfStartBMC(t, RedfishOptions{})
	c := newRFClient(t, b)

	resp, root := c.do(http.MethodGet, "/redfish/v1/", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("service root: %d", resp.StatusCode)
	}
	links, _ := root["Links"].(map[string]any)
	if sess, _ := links["Sessions"].(map[string]any); sess["@odata.id"] != rfSessions {
		t.Fatalf("service root Links.Sessions = %v", links)
	}

	if resp, _ := c.do(http.MethodGet, rfSystem, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("system without auth: %d", resp.StatusCode)
	}
	resp = c.login("admin", "wrong")
	if resp.StatusCode != http.StatusUnauthorized || c.token != "" {
		t.Fatalf("wrong password: status %d token %q", resp.StatusCode, c.token)
	}
	resp = c.login("admin", "s3cret-pw")
	if resp.StatusCode != http.StatusCreated || c.token == "" {
		t.Fatalf("login: status %d token %q", resp.StatusCode, c.token)
	}
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, rfSessions+"/") || b.ActiveSessions() != 1 {
		t.Fatalf("Location %q, sessions %d", loc, b.ActiveSessions())
	}
	resp, sys := c.do(http.MethodGet, rfSystem, nil)
	if resp.StatusCode != http.StatusOK || sys["PowerState"] != "On" {
		t.Fatalf("system: %d %v", resp.StatusCode, sys["PowerState"])
	}
	if b.PowerReads() != 1 {
		t.Fatalf("PowerReads = %d, want 1", b.PowerReads())
	}
	for _, p := range []string{rfRoot + "/Systems", rfRoot + "/Managers", rfManager, rfRoot + "/Chassis", rfChassis, rfRoot + "/SessionService", rfSessions, loc} {
		if resp, _ := c.do(http.MethodGet, p, nil); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d", p, resp.StatusCode)
		}
	}

	if resp, _ := c.do(http.MethodDelete, loc, nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	if b.ActiveSessions() != 0 {
		t.Fatalf("sessions after logout: %d", b.ActiveSessions())
	}
	if resp, _ := c.do(http.MethodGet, rfSystem, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("token after logout: %d", resp.StatusCode)
	}

	// Basic auth works without a session, as on real BMCs.
	req, _ := http.NewRequest(http.MethodGet, b.URL()+rfSystem, nil)
	req.SetBasicAuth("admin", "s3cret-pw")
	r2, err := c.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != http.StatusOK {
		t.Fatalf("basic auth: %d", r2.StatusCode)
	}
}

func TestRedfishResetSemantics(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		opts      RedfishOptions
		resets    []string
		wantState PowerState
		wantCause []string // causes of the machine's power events, in order
	}{
		{"graceful shutdown powers off after the delay", RedfishOptions{SoftOffDelay: 50 * time.Millisecond}, []string{"GracefulShutdown"}, PowerOff, []string{"bmc-soft"}},
		{"force off is immediate", RedfishOptions{SoftOffDelay: time.Hour}, []string{"GracefulShutdown", "ForceOff"}, PowerOff, []string{"bmc-hard"}},
		{"hung OS ignores graceful shutdown", RedfishOptions{IgnoreSoftOff: true}, []string{"GracefulShutdown", "ForceOff"}, PowerOff, []string{"bmc-hard"}},
		{"on after force off", RedfishOptions{}, []string{"ForceOff", "On"}, PowerOn, []string{"bmc-hard", "bmc-on"}},
		{"restart keeps it running", RedfishOptions{}, []string{"GracefulRestart", "ForceRestart", "Nmi"}, PowerOn, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := rfStartBMC(t, tc.opts)
			m := b.opts.Machine
			c := newRFClient(t, b)
			c.login("admin", "s3cret-pw")
			for _, rt := range tc.resets {
				if resp, _ := c.do(http.MethodPost, rfReset, map[string]string{"ResetType": rt}); resp.StatusCode != http.StatusNoContent {
					t.Fatalf("reset %s: %d", rt, resp.StatusCode)
				}
			}
			rfWaitFor(t, "power state "+string(tc.wantState), func() bool { return m.State() == tc.wantState })
			var causes []string
			for _, e := range m.History() {
				causes = append(causes, e.Cause)
			}
			if !slices.Equal(causes, tc.wantCause) {
				t.Fatalf("power causes %v, want %v", causes, tc.wantCause)
			}
			if !slices.Equal(b.Resets(), tc.resets) {
				t.Fatalf("Resets() = %v, want %v", b.Resets(), tc.resets)
			}
		})
	}
}

func TestRedfishRejectsBadResets(t *testing.T) {
	t.Parallel()
	b := rfStartBMC(t, RedfishOptions{})
	c := newRFClient(t, b)
	if resp, _ := c.do(http.MethodPost, rfReset, map[string]string{"ResetType": "ForceOff"}); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("unauthenticated reset: %d", resp.StatusCode)
	}
	c.login("admin", "s3cret-pw")
	if resp, _ := c.do(http.MethodPost, rfReset, map[string]string{"ResetType": "Explode"}); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("unknown reset type: %d", resp.StatusCode)
	}
	if len(b.Resets()) != 0 || b.opts.Machine.State() != PowerOn {
		t.Fatalf("rejected resets changed state: %v %s", b.Resets(), b.opts.Machine.State())
	}
}

func TestRedfishReachability(t *testing.T) {
	t.Parallel()
	b := rfStartBMC(t, RedfishOptions{Unreachable: true})
	c := newRFClient(t, b)
	if _, err := c.http.Get(b.URL() + "/redfish/v1/"); err == nil {
		t.Fatal("unreachable BMC answered")
	}
	if err := b.SetReachable(true); err != nil {
		t.Fatal(err)
	}
	if resp, _ := c.do(http.MethodGet, "/redfish/v1/", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("reachable BMC: %d", resp.StatusCode)
	}
	if err := b.SetReachable(false); err != nil {
		t.Fatal(err)
	}
	if _, err := c.http.Get(b.URL() + "/redfish/v1/"); err == nil {
		t.Fatal("BMC answered after SetReachable(false)")
	}
}

func TestRedfishLatency(t *testing.T) {
	t.Parallel()
	b := rfStartBMC(t, RedfishOptions{Latency: 300 * time.Millisecond})
	c := newRFClient(t, b)
	c.http.Timeout = 50 * time.Millisecond
	if _, err := c.http.Get(b.URL() + "/redfish/v1/"); err == nil {
		t.Fatal("slow BMC answered within 50ms")
	}
	c.http.Timeout = 5 * time.Second
	start := time.Now()
	if resp, _ := c.do(http.MethodGet, "/redfish/v1/", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("answered in %v, latency not applied", d)
	}
}
