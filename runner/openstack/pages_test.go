package openstack_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/runner/openstack"
	"github.com/edgeops/shutdownd/sitesim"
)

// novaProxy sits in front of a simulated Keystone+Nova and rewrites its
// address in every body (the catalog, the next links) to its own. answer,
// if set, may answer a compute request itself (return true) instead of the
// simulator; it sees every request.
type novaProxy struct {
	nova *sitesim.Nova
	url  string

	mu     sync.Mutex
	answer func(w http.ResponseWriter, r *http.Request) bool
	// rewrite, if set, changes a simulator answer's body after the address
	// rewrite (a misconfigured Nova's next links).
	rewrite func(body []byte) []byte
}

func startNovaProxy(t *testing.T, n *sitesim.Nova) (*novaProxy, string) {
	t.Helper()
	p := &novaProxy{nova: n}
	target, err := url.Parse(n.URL())
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(resp *http.Response) error {
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		b = bytes.ReplaceAll(b, []byte(n.URL()), []byte(p.url))
		p.mu.Lock()
		rewrite := p.rewrite
		p.mu.Unlock()
		if rewrite != nil && strings.Contains(resp.Request.URL.Path, "/servers") {
			b = rewrite(b)
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
		resp.ContentLength = int64(len(b))
		resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
		return nil
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		answer := p.answer
		p.mu.Unlock()
		if answer != nil && strings.HasPrefix(r.URL.Path, "/compute/") && answer(w, r) {
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	p.url = srv.URL
	path := filepath.Join(t.TempDir(), "clouds.yaml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(n.CloudsYAML("edge"), n.URL(), srv.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p, path
}

func (p *novaProxy) set(answer func(w http.ResponseWriter, r *http.Request) bool) {
	p.mu.Lock()
	p.answer = answer
	p.mu.Unlock()
}

func numberedVMs(n int) []sitesim.VM {
	vms := make([]sitesim.VM, n)
	for i := range vms {
		vms[i] = sitesim.VM{ID: fmt.Sprintf("vm-%03d", i), Name: fmt.Sprintf("web-%03d", i), StopDelay: time.Millisecond}
	}
	return vms
}

// listPages runs ListServerPages and returns the pages fn received.
func listPages(c *openstack.Client, sizes []int) ([][]openstack.Server, error) {
	var pages [][]openstack.Server
	err := c.ListServerPages(context.Background(), sizes, func(p []openstack.Server) error {
		pages = append(pages, p)
		return nil
	})
	return pages, err
}

func TestListServerPagesAsksForEachPageSize(t *testing.T) {
	t.Parallel()
	vms := numberedVMs(23)
	tests := []struct {
		name      string
		sizes     []int
		wantSizes []int // servers per page handed to fn
		wantReqs  int
	}{
		{"nova's page size", nil, []int{10, 10, 3}, 3},
		{"small first page, then nova's", []int{2, 5, 0}, []int{2, 5, 10, 6}, 4},
		{"fixed size", []int{4}, []int{4, 4, 4, 4, 4, 3}, 6},
		// Nova caps a limit above its max_limit; a full last page links to
		// an empty one.
		{"above max_limit", []int{1, 50}, []int{1, 10, 10, 2}, 4},
		{"exact fit", []int{3, 20}, []int{3, 10, 10}, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n, path := startCloud(t, sitesim.NovaOptions{VMs: vms, PageSize: 10})
			c := newClient(t, fastOptions(path))
			pages, err := listPages(c, tc.sizes)
			if err != nil {
				t.Fatal(err)
			}
			var sizes []int
			var got []openstack.Server
			for _, p := range pages {
				sizes = append(sizes, len(p))
				got = append(got, p...)
			}
			if fmt.Sprint(sizes) != fmt.Sprint(tc.wantSizes) {
				t.Errorf("pages of %v servers, want %v", sizes, tc.wantSizes)
			}
			if n.ListRequests() != tc.wantReqs {
				t.Errorf("%d list requests, want %d", n.ListRequests(), tc.wantReqs)
			}
			if len(got) != len(vms) {
				t.Fatalf("listed %d servers, want %d", len(got), len(vms))
			}
			for i, s := range got {
				if s.ID != vms[i].ID || s.Name != vms[i].Name || s.Status != "ACTIVE" {
					t.Fatalf("server %d = %+v, want %s %s ACTIVE", i, s, vms[i].ID, vms[i].Name)
				}
			}
		})
	}
}

// A next link on an address only Nova itself can reach (no
// compute_link_prefix behind a proxy) is followed on the catalog's endpoint.
func TestListServerPagesFollowsNextLinksOnTheCatalogEndpoint(t *testing.T) {
	t.Parallel()
	vms := numberedVMs(25)
	n, path := startCloud(t, sitesim.NovaOptions{VMs: vms, PageSize: 10})
	p, path := startNovaProxy(t, n)
	p.rewrite = func(b []byte) []byte {
		return bytes.ReplaceAll(b, []byte(p.url), []byte("http://nova-api.internal.invalid:8774"))
	}
	c := newClient(t, fastOptions(path))
	got, err := c.ListServers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(vms) || n.ListRequests() != 3 {
		t.Fatalf("listed %d servers in %d requests, want %d in 3", len(got), n.ListRequests(), len(vms))
	}
}

// A failed page is asked again on its own: the pages before it are not
// listed twice, and fn sees every server once.
func TestListServerPagesRetriesOnlyTheFailedPage(t *testing.T) {
	t.Parallel()
	vms := numberedVMs(25)
	n, _ := startCloud(t, sitesim.NovaOptions{VMs: vms, PageSize: 10})
	p, path := startNovaProxy(t, n)
	var failed atomic.Bool
	p.set(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Query().Get("marker") == "" || !failed.CompareAndSwap(false, true) {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"serviceUnavailable":{"code":503,"message":"busy"}}`))
		return true
	})
	var retries []string
	opts := fastOptions(path)
	opts.OnRetry = func(op string, _ int, _ error, _ time.Duration) { retries = append(retries, op) }
	c := newClient(t, opts)
	pages, err := listPages(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, pg := range pages {
		for _, s := range pg {
			if seen[s.ID] {
				t.Fatalf("server %s handed over twice", s.ID)
			}
			seen[s.ID] = true
		}
	}
	if len(seen) != len(vms) || len(pages) != 3 {
		t.Fatalf("%d servers in %d pages, want %d in 3", len(seen), len(pages), len(vms))
	}
	// Three pages reached the simulator, the failed one was answered by the
	// proxy and retried once.
	if n.ListRequests() != 3 || fmt.Sprint(retries) != "[list-servers]" {
		t.Fatalf("%d list requests at Nova, retries %v; want 3 and one list-servers retry", n.ListRequests(), retries)
	}
}

// Next links that never end must end the listing with an error that says
// so, not list forever or hand the same servers over again.
func TestListServerPagesDetectsPagingLoops(t *testing.T) {
	t.Parallel()
	page := func(ids []string, next string) []byte {
		var items []string
		for _, id := range ids {
			items = append(items, fmt.Sprintf(`{"id":%q,"name":"n-%s","status":"ACTIVE","tenant_id":"t"}`, id, id))
		}
		links := ""
		if next != "" {
			links = fmt.Sprintf(`,"servers_links":[{"rel":"next","href":%q}]`, next)
		}
		return []byte(`{"servers":[` + strings.Join(items, ",") + `]` + links + `}`)
	}
	tests := []struct {
		name string
		// body answers the request of the page whose marker is given ("" for
		// the first page); base is the proxy's URL.
		body    func(base, marker string) []byte
		wantErr string
		// servers handed over before the error
		wantServers int
	}{
		{
			name: "next link repeats its marker",
			body: func(base, marker string) []byte {
				if marker == "" {
					return page([]string{"a", "b"}, base+"/compute/v2.1/servers/detail?marker=b")
				}
				return page([]string{"c"}, base+"/compute/v2.1/servers/detail?marker=b")
			},
			wantErr:     "paging loop: page 2 links to marker b again",
			wantServers: 3,
		},
		{
			name: "next link without a marker",
			body: func(base, marker string) []byte {
				return page([]string{"a"}, base+"/compute/v2.1/servers/detail?all_tenants=true")
			},
			wantErr:     "paging loop: page 1 has a next link without a marker",
			wantServers: 1,
		},
		{
			name: "new markers, same servers",
			body: func(base, marker string) []byte {
				next := base + "/compute/v2.1/servers/detail?marker=m" + strconv.Itoa(len(marker))
				return page([]string{"a", "b"}, next)
			},
			wantErr:     "paging loop: page 2 repeats 2 servers already listed",
			wantServers: 2,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n, _ := startCloud(t, sitesim.NovaOptions{VMs: numberedVMs(3)})
			p, path := startNovaProxy(t, n)
			var mu sync.Mutex
			requests := 0
			p.set(func(w http.ResponseWriter, r *http.Request) bool {
				mu.Lock()
				requests++
				mu.Unlock()
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write(tc.body(p.url, r.URL.Query().Get("marker")))
				return true
			})
			c := newClient(t, fastOptions(path))
			var got []openstack.Server
			err := c.ListServerPages(context.Background(), nil, func(pg []openstack.Server) error {
				got = append(got, pg...)
				return nil
			})
			if err == nil || !strings.HasPrefix(err.Error(), "list servers: ") || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			if len(got) != tc.wantServers {
				t.Errorf("%d servers handed over before the error, want %d", len(got), tc.wantServers)
			}
			mu.Lock()
			defer mu.Unlock()
			if requests > 3 {
				t.Errorf("%d page requests for a loop found at page 2 at the latest", requests)
			}
		})
	}
}

func TestListServerPagesStopsWhenFnFails(t *testing.T) {
	t.Parallel()
	n, path := startCloud(t, sitesim.NovaOptions{VMs: numberedVMs(30), PageSize: 10})
	c := newClient(t, fastOptions(path))
	stop := errors.New("enough")
	calls := 0
	err := c.ListServerPages(context.Background(), nil, func([]openstack.Server) error {
		calls++
		return stop
	})
	if err != stop {
		t.Fatalf("err = %v, want fn's error as is", err)
	}
	if calls != 1 || n.ListRequests() != 1 {
		t.Fatalf("fn called %d times, %d list requests; want 1 and 1", calls, n.ListRequests())
	}
}
