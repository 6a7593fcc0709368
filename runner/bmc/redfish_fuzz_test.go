package bmc

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/sitesim"
)

// FuzzRedfishResponses opens a real session on a simulated Redfish BMC,
// through a TLS proxy that replaces the answers of the computer system
// resource (the power-state read) and of the reset action with what the
// fuzzer decides. PowerState and SoftOff never panic, a state is always one
// of On, Off, Unknown, and an error names the BMC and never the password.
func FuzzRedfishResponses(f *testing.F) {
	b, err := sitesim.NewRedfishBMC(sitesim.RedfishOptions{Machine: sitesim.NewMachine("compute-01"), User: "admin", Password: testPassword})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(b.Close)
	target, err := url.Parse(b.URL())
	if err != nil {
		f.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: b.CertPool()}}

	var mu sync.Mutex
	status, body := 200, []byte(nil)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		st, bd := status, body
		mu.Unlock()
		fuzzed := strings.HasPrefix(r.URL.Path, "/redfish/v1/Systems/") && (r.Method == http.MethodGet || strings.Contains(r.URL.Path, "/Actions/"))
		if !fuzzed || bd == nil {
			proxy.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(st)
		_, _ = w.Write(bd)
	}))
	f.Cleanup(srv.Close)
	host, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		f.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	c, err := Open(context.Background(), Target{
		Name: "compute-01", Address: host, Port: p, Protocol: ProtocolRedfish,
		User: "admin", Password: testPassword, InsecureTLS: true, Timeout: 5 * time.Second,
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = c.Close(context.Background()) })

	for _, seed := range []struct {
		status int
		body   string
	}{
		{200, `{"@odata.id":"/redfish/v1/Systems/1","Id":"1","PowerState":"Off"}`},
		{200, `{"@odata.id":"/redfish/v1/Systems/1","Id":"1","PowerState":"PoweringOn"}`},
		{200, `{"PowerState":42}`}, {200, `{"PowerState":null}`}, {200, `[]`}, {200, `{`}, {200, ``},
		{200, `{"Actions":{"#ComputerSystem.Reset":{"target":"/redfish/v1/Systems/1/Actions/ComputerSystem.Reset","ResetType@Redfish.AllowableValues":[]}}}`},
		{401, `{"error":{"message":"session expired"}}`},
		{500, `<html>` + strings.Repeat("x", 5000) + `</html>`},
		{204, ``}, {302, ``},
	} {
		f.Add(seed.status, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, st int, bd []byte) {
		if st < 200 || st > 599 {
			st = 200 + (st%400+400)%400
		}
		if bd == nil {
			bd = []byte{}
		}
		mu.Lock()
		status, body = st, bd
		mu.Unlock()
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ps, err := c.PowerState(ctx)
		check := func(op string, err error) {
			if err == nil {
				return
			}
			msg := err.Error()
			if !strings.Contains(msg, "compute-01") || strings.Contains(msg, testPassword) {
				t.Fatalf("%s error does not name the BMC or reveals the password: %v", op, err)
			}
		}
		check("power state", err)
		if err == nil && ps != On && ps != Off && ps != Unknown {
			t.Fatalf("power state %q is not normalised", ps)
		}
		check("soft off", c.SoftOff(ctx))
		if el := time.Since(start); el > 3*time.Second {
			t.Fatalf("one answer kept the client busy for %v", el)
		}
	})
}
