package openstack_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/runner/openstack"
	"github.com/edgeops/shutdownd/sitesim"
)

// fuzzNova sits in front of a simulated Keystone+Nova: authentication and
// the service catalog are real (the catalog rewritten to point here), and
// the compute answers are whatever the fuzzer decides.
type fuzzNova struct {
	mu     sync.Mutex
	status int
	body   []byte
	pages  int // compute requests answered in the current round
}

func (fn *fuzzNova) set(status int, body []byte) {
	fn.mu.Lock()
	fn.status, fn.body, fn.pages = status, body, 0
	fn.mu.Unlock()
}

func startFuzzNova(f *testing.F) (*fuzzNova, openstack.Options) {
	n := sitesim.NewNova(sitesim.NovaOptions{Projects: []string{"p"}, VMs: []sitesim.VM{}, RetryAfter: "0"})
	if err := n.Start(); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(n.Close)
	target, err := url.Parse(n.URL())
	if err != nil {
		f.Fatal(err)
	}
	fn := &fuzzNova{status: 200, body: []byte(`{"servers":[]}`)}
	var self string
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(resp *http.Response) error {
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		b = bytes.ReplaceAll(b, []byte(n.URL()), []byte(self))
		resp.Body = io.NopCloser(bytes.NewReader(b))
		resp.ContentLength = int64(len(b))
		resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
		return nil
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/compute/v2.1/servers") {
			proxy.ServeHTTP(w, r)
			return
		}
		fn.mu.Lock()
		status, body := fn.status, fn.body
		fn.pages++
		if fn.pages > 3 {
			// A next link that loops back must not keep the client
			// listing forever; after three pages the fuzzer's body is
			// replaced by an empty page so each round ends.
			status, body = 200, []byte(`{"servers":[]}`)
		}
		fn.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write(body)
	}))
	f.Cleanup(srv.Close)
	self = srv.URL

	path := filepath.Join(f.TempDir(), "clouds.yaml")
	clouds := strings.ReplaceAll(n.CloudsYAML("edge"), n.URL(), srv.URL)
	if err := os.WriteFile(path, []byte(clouds), 0o600); err != nil {
		f.Fatal(err)
	}
	return fn, openstack.Options{
		Cloud: "edge", CloudsFile: path, RequestTimeout: 2 * time.Second,
		MaxRetries: -1, // one answer per call: the fuzzer's
	}
}

// FuzzNovaResponses runs ListServers and Stop against arbitrary Nova
// answers (status and body): no panic, a listing is either a full list of
// servers with ids or an error saying "list servers", and a stop either
// succeeds or names the VM, and neither repeats the password.
func FuzzNovaResponses(f *testing.F) {
	fn, opts := startFuzzNova(f)
	c, err := openstack.New(context.Background(), opts)
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []struct {
		status int
		body   string
	}{
		{200, `{"servers":[{"id":"a","name":"vm","status":"ACTIVE","tenant_id":"t","OS-EXT-STS:task_state":null}]}`},
		{200, `{"servers":[{"id":"a"}],"servers_links":[{"rel":"next","href":"` + "/compute/v2.1/servers/detail?marker=a" + `"}]}`},
		{200, `{"servers":[{"name":"no id"}]}`},
		{200, `{"servers":{"id":"a"}}`},
		{200, `{"servers":[1,"x",null]}`},
		{200, `[]`}, {200, `null`}, {200, `{`}, {200, ``}, {204, ``},
		{409, `{"conflictingRequest":{"message":"Cannot 'stop' instance while it is in vm_state stopped","code":409}}`},
		{404, `{"itemNotFound":{"message":"Instance x could not be found."}}`},
		{500, `<html>` + strings.Repeat("x", 300) + `</html>`},
		{429, `{"overLimit":{"message":"slow down"}}`},
		{202, `{"servers":[{"id":"` + strings.Repeat("é", 100) + `","status":{"nested":true}}]}`},
	} {
		f.Add(seed.status, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		if status < 200 || status > 599 {
			status = 200 + (status%400+400)%400
		}
		fn.set(status, body)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		list, err := c.ListServers(ctx)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "list servers: ") {
				t.Fatalf("unclear listing error: %v", err)
			}
			if strings.Contains(err.Error(), "sim-secret") {
				t.Fatalf("listing error reveals the password: %v", err)
			}
		}
		fn.mu.Lock()
		reached := fn.pages
		fn.mu.Unlock()
		if reached == 0 {
			t.Fatalf("the listing never reached the fuzzed Nova (err %v)", err)
		}
		for _, s := range list {
			if s.ID == "" {
				t.Fatalf("server without id accepted: %+v", s)
			}
		}
		fn.set(status, body)
		if err := c.Stop(ctx, "vm-1"); err != nil {
			if !strings.HasPrefix(err.Error(), "stop vm vm-1: ") {
				t.Fatalf("unclear stop error: %v", err)
			}
			if strings.Contains(err.Error(), "sim-secret") {
				t.Fatalf("stop error reveals the password: %v", err)
			}
		}
	})
}
