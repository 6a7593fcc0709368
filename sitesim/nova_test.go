package sitesim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/config"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
)

func novaStart(t *testing.T, opts NovaOptions) *Nova {
	t.Helper()
	n := NewNova(opts)
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n
}

type novaResp struct {
	code   int
	header http.Header
	body   map[string]any
	raw    string
}

func novaDo(t *testing.T, method, u, token string, body any) novaResp {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := novaResp{code: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			t.Fatalf("%s %s: body is not JSON: %q", method, u, raw)
		}
	}
	return r
}

func novaPasswordAuth(user, password, domain, project string) map[string]any {
	return map[string]any{"auth": map[string]any{
		"identity": map[string]any{"methods": []string{"password"}, "password": map[string]any{
			"user": map[string]any{"name": user, "password": password, "domain": map[string]any{"name": domain}},
		}},
		"scope": map[string]any{"project": map[string]any{"name": project, "domain": map[string]any{"name": domain}}},
	}}
}

func novaLogin(t *testing.T, n *Nova) string {
	t.Helper()
	r := novaDo(t, "POST", n.AuthURL()+"/auth/tokens", "", novaPasswordAuth("admin", "pw", "Default", "admin"))
	if r.code != http.StatusCreated {
		t.Fatalf("auth: %d %s", r.code, r.raw)
	}
	return r.header.Get("X-Subject-Token")
}

func novaWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestNovaKeystoneAuth(t *testing.T) {
	t.Parallel()
	n := novaStart(t, NovaOptions{Password: "pw", Projects: []string{"edge"}})
	tests := []struct {
		name                      string
		user, pw, domain, project string
		want                      int
	}{
		{"ok", "admin", "pw", "Default", "admin", 201},
		{"other project", "admin", "pw", "Default", "edge", 201},
		{"wrong password", "admin", "nope", "Default", "admin", 401},
		{"wrong user", "root", "pw", "Default", "admin", 401},
		{"wrong domain", "admin", "pw", "Other", "admin", 401},
		{"unknown project", "admin", "pw", "Default", "ghost", 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := novaDo(t, "POST", n.AuthURL()+"/auth/tokens", "", novaPasswordAuth(tc.user, tc.pw, tc.domain, tc.project))
			if r.code != tc.want {
				t.Fatalf("status %d, want %d: %s", r.code, tc.want, r.raw)
			}
			if strings.Contains(r.raw, `"pw"`) {
				t.Fatalf("password echoed: %s", r.raw)
			}
			if tc.want == 401 {
				e, _ := r.body["error"].(map[string]any)
				if e["code"] != float64(401) || e["title"] != "Unauthorized" {
					t.Fatalf("keystone error body: %s", r.raw)
				}
				return
			}
			if r.header.Get("X-Subject-Token") == "" {
				t.Fatal("no X-Subject-Token")
			}
			tok := r.body["token"].(map[string]any)
			if got := tok["project"].(map[string]any)["id"]; got != n.ProjectID(tc.project) {
				t.Fatalf("project id %v, want %s", got, n.ProjectID(tc.project))
			}
			var ifaces []string
			for _, e := range tok["catalog"].([]any) {
				e := e.(map[string]any)
				if e["type"] != "compute" {
					continue
				}
				for _, ep := range e["endpoints"].([]any) {
					ep := ep.(map[string]any)
					if ep["url"] != n.URL()+"/compute/v2.1" || ep["region"] != "RegionOne" {
						t.Fatalf("compute endpoint %v", ep)
					}
					ifaces = append(ifaces, ep["interface"].(string))
				}
			}
			if strings.Join(ifaces, ",") != "public,internal,admin" {
				t.Fatalf("compute interfaces %v", ifaces)
			}
		})
	}
	if r := novaDo(t, "POST", n.AuthURL()+"/auth/tokens", "", "not an object"); r.code != 400 {
		t.Fatalf("malformed auth: %d", r.code)
	}
	if n.Auths() != 2 {
		t.Fatalf("Auths = %d, want 2", n.Auths())
	}
}

func TestNovaVersionDocuments(t *testing.T) {
	t.Parallel()
	n := novaStart(t, NovaOptions{})
	r := novaDo(t, "GET", n.URL()+"/identity", "", nil)
	if r.code != 300 || !strings.Contains(r.raw, n.URL()+"/identity/v3/") {
		t.Fatalf("identity versions: %d %s", r.code, r.raw)
	}
	r = novaDo(t, "GET", n.AuthURL(), "", nil)
	if r.code != 200 || r.body["version"].(map[string]any)["status"] != "stable" {
		t.Fatalf("identity v3: %d %s", r.code, r.raw)
	}
	r = novaDo(t, "GET", n.URL()+"/compute/v2.1/", "", nil)
	if r.code != 200 || r.body["version"].(map[string]any)["id"] != "v2.1" {
		t.Fatalf("compute v2.1: %d %s", r.code, r.raw)
	}
	r = novaDo(t, "GET", n.URL()+"/nowhere", "", nil)
	if r.code != 404 || r.body["itemNotFound"] == nil {
		t.Fatalf("unknown path: %d %s", r.code, r.raw)
	}
}

func TestNovaRequiresValidToken(t *testing.T) {
	t.Parallel()
	n := novaStart(t, NovaOptions{Password: "pw", VMs: []VM{{ID: "a", Name: "a"}}})
	list := n.URL() + "/compute/v2.1/servers/detail"
	if r := novaDo(t, "GET", list, "", nil); r.code != 401 {
		t.Fatalf("no token: %d", r.code)
	}
	if r := novaDo(t, "GET", list, "bogus", nil); r.code != 401 {
		t.Fatalf("bogus token: %d", r.code)
	}
	tok := novaLogin(t, n)
	if r := novaDo(t, "GET", list, tok, nil); r.code != 200 {
		t.Fatalf("valid token: %d %s", r.code, r.raw)
	}
	n.ExpireTokens()
	if r := novaDo(t, "GET", list, tok, nil); r.code != 401 {
		t.Fatalf("expired token: %d", r.code)
	}
	if n.ListRequests() != 1 {
		t.Fatalf("ListRequests = %d, want 1 (unauthenticated calls are not counted)", n.ListRequests())
	}
}

// novaPage fetches one list page and returns ids and the next link.
func novaPage(t *testing.T, u, tok string) ([]string, string) {
	t.Helper()
	r := novaDo(t, "GET", u, tok, nil)
	if r.code != 200 {
		t.Fatalf("GET %s: %d %s", u, r.code, r.raw)
	}
	var ids []string
	for _, s := range r.body["servers"].([]any) {
		ids = append(ids, s.(map[string]any)["id"].(string))
	}
	next := ""
	if links, ok := r.body["servers_links"].([]any); ok {
		for _, l := range links {
			l := l.(map[string]any)
			if l["rel"] == "next" {
				next = l["href"].(string)
			}
		}
	}
	return ids, next
}

func TestNovaListPagination(t *testing.T) {
	t.Parallel()
	var vms []VM
	for i := range 25 {
		p := "edge"
		if i%5 == 0 {
			p = "admin"
		}
		vms = append(vms, VM{ID: fmt.Sprintf("vm-%02d", i), Name: fmt.Sprintf("web-%02d", i), Project: p})
	}
	n := novaStart(t, NovaOptions{Password: "pw", VMs: vms, PageSize: 10})
	tok := novaLogin(t, n)
	base := n.URL() + "/compute/v2.1/servers/detail"

	var all []string
	sizes := []int{}
	next := base + "?all_tenants=1"
	for next != "" {
		ids, nx := novaPage(t, next, tok)
		sizes = append(sizes, len(ids))
		all = append(all, ids...)
		if nx != "" {
			u, _ := url.Parse(nx)
			if u.Query().Get("all_tenants") != "1" || u.Query().Get("marker") != ids[len(ids)-1] {
				t.Fatalf("next link %s lost the query or has the wrong marker", nx)
			}
		}
		next = nx
	}
	if fmt.Sprint(sizes) != "[10 10 5]" || len(all) != 25 || all[0] != "vm-00" || all[24] != "vm-24" {
		t.Fatalf("pages %v, ids %v", sizes, all)
	}
	if n.ListRequests() != 3 {
		t.Fatalf("ListRequests = %d, want 3", n.ListRequests())
	}

	own, next := novaPage(t, base, tok)
	if len(own) != 5 || next != "" {
		t.Fatalf("without all_tenants: %v next %q", own, next)
	}
	ids, next := novaPage(t, base+"?all_tenants=true&limit=3", tok)
	if len(ids) != 3 || !strings.Contains(next, "limit=3") {
		t.Fatalf("limit=3: %v next %q", ids, next)
	}
	if ids, _ := novaPage(t, base+"?all_tenants=1&limit=500", tok); len(ids) != 10 {
		t.Fatalf("limit above max_limit gave %d, want 10", len(ids))
	}
	if ids, _ := novaPage(t, base+"?all_tenants=1&status=shutoff", tok); len(ids) != 0 {
		t.Fatalf("status filter: %v", ids)
	}
	// A full last page carries a next link to an empty page, as in Nova.
	ids, next = novaPage(t, base+"?all_tenants=1&marker=vm-14", tok)
	if len(ids) != 10 || next == "" {
		t.Fatalf("full last page: %v next %q", ids, next)
	}
	if ids, next := novaPage(t, next, tok); len(ids) != 0 || next != "" {
		t.Fatalf("page after the last: %v %q", ids, next)
	}
	if r := novaDo(t, "GET", base+"?marker=ghost", tok, nil); r.code != 400 || r.body["badRequest"] == nil {
		t.Fatalf("bad marker: %d %s", r.code, r.raw)
	}
	if r := novaDo(t, "GET", n.URL()+"/compute/v2.1/servers?all_tenants=1", tok, nil); r.code != 200 || len(r.body["servers"].([]any)) != 10 {
		t.Fatalf("simple list: %d %s", r.code, r.raw)
	}
}

func novaStopReq(t *testing.T, n *Nova, tok, id string) novaResp {
	t.Helper()
	return novaDo(t, "POST", n.URL()+"/compute/v2.1/servers/"+id+"/action", tok, map[string]any{"os-stop": nil})
}

func novaShow(t *testing.T, n *Nova, tok, id string) map[string]any {
	t.Helper()
	r := novaDo(t, "GET", n.URL()+"/compute/v2.1/servers/"+id, tok, nil)
	if r.code != 200 {
		t.Fatalf("show %s: %d %s", id, r.code, r.raw)
	}
	return r.body["server"].(map[string]any)
}

func TestNovaStopLifecycle(t *testing.T) {
	t.Parallel()
	n := novaStart(t, NovaOptions{Password: "pw", VMs: []VM{
		{ID: "active", Name: "web-1", StopDelay: 30 * time.Millisecond},
		{ID: "error", Name: "db-1", Status: "ERROR", StopDelay: time.Millisecond},
		{ID: "off", Name: "old", Status: "SHUTOFF"},
		{ID: "paused", Name: "p", Status: "PAUSED"},
		{ID: "stuck", Name: "win", StopDelay: 5 * time.Millisecond, NeverStops: true},
	}})
	tok := novaLogin(t, n)
	if !n.FirstStopAt().IsZero() {
		t.Fatal("FirstStopAt set before any stop")
	}

	before := time.Now()
	if r := novaStopReq(t, n, tok, "active"); r.code != 202 || r.raw != "" {
		t.Fatalf("stop active: %d %q", r.code, r.raw)
	}
	if at := n.FirstStopAt(); at.Before(before.Add(-time.Second)) || at.IsZero() {
		t.Fatalf("FirstStopAt %v", at)
	}
	s := novaShow(t, n, tok, "active")
	if s["status"] != "ACTIVE" || s["OS-EXT-STS:task_state"] != "powering-off" || s["OS-EXT-STS:vm_state"] != "active" {
		t.Fatalf("during stop: %v %v %v", s["status"], s["OS-EXT-STS:task_state"], s["OS-EXT-STS:vm_state"])
	}
	r := novaStopReq(t, n, tok, "active")
	if r.code != 409 || !strings.Contains(r.raw, "task_state powering-off") || r.body["conflictingRequest"] == nil {
		t.Fatalf("second stop: %d %s", r.code, r.raw)
	}
	novaWaitFor(t, "active to be SHUTOFF", func() bool { return n.Status("active") == "SHUTOFF" })
	s = novaShow(t, n, tok, "active")
	if s["OS-EXT-STS:task_state"] != nil || s["OS-EXT-STS:vm_state"] != "stopped" || s["OS-EXT-STS:power_state"] != float64(4) {
		t.Fatalf("after stop: %v %v %v", s["OS-EXT-STS:task_state"], s["OS-EXT-STS:vm_state"], s["OS-EXT-STS:power_state"])
	}

	tests := []struct {
		id       string
		want     int
		contains string
	}{
		{"active", 409, "vm_state stopped"},
		{"off", 409, "vm_state stopped"},
		{"paused", 409, "vm_state paused"},
		{"error", 202, ""},
		{"ghost", 404, "Instance ghost could not be found."},
	}
	for _, tc := range tests {
		r := novaStopReq(t, n, tok, tc.id)
		if r.code != tc.want || !strings.Contains(r.raw, tc.contains) {
			t.Errorf("stop %s: %d %s, want %d %q", tc.id, r.code, r.raw, tc.want, tc.contains)
		}
	}
	novaWaitFor(t, "error to be SHUTOFF", func() bool { return n.Status("error") == "SHUTOFF" })

	if r := novaStopReq(t, n, tok, "stuck"); r.code != 202 {
		t.Fatalf("stop stuck: %d", r.code)
	}
	novaWaitFor(t, "stuck's stop to give up", func() bool {
		return novaShow(t, n, tok, "stuck")["OS-EXT-STS:task_state"] == nil
	})
	if n.Status("stuck") != "ACTIVE" {
		t.Fatalf("NeverStops VM is %s", n.Status("stuck"))
	}

	if got := n.StopRequests(); got != 8 {
		t.Fatalf("StopRequests = %d, want 8", got)
	}
	if got := n.StopRequestsFor("active"); got != 3 {
		t.Fatalf("StopRequestsFor(active) = %d, want 3", got)
	}
	if r := novaDo(t, "POST", n.URL()+"/compute/v2.1/servers/off/action", tok, map[string]any{"reboot": map[string]string{"type": "HARD"}}); r.code != 400 {
		t.Fatalf("unsupported action: %d", r.code)
	}

	n.SetStatus("off", "active")
	if r := novaStopReq(t, n, tok, "off"); r.code != 202 {
		t.Fatalf("stop after SetStatus: %d %s", r.code, r.raw)
	}
	if r := novaDo(t, "GET", n.URL()+"/compute/v2.1/servers/ghost", tok, nil); r.code != 404 || r.body["itemNotFound"] == nil {
		t.Fatalf("show unknown: %d %s", r.code, r.raw)
	}
	if n.ShowRequests() < 4 {
		t.Fatalf("ShowRequests = %d", n.ShowRequests())
	}
	var offCount int
	for _, vm := range n.Servers() {
		if vm.Status == "SHUTOFF" {
			offCount++
		}
	}
	if offCount < 2 {
		t.Fatalf("Servers() shows %d SHUTOFF", offCount)
	}
}

func TestNovaFaultInjection(t *testing.T) {
	t.Parallel()
	n := novaStart(t, NovaOptions{Password: "pw", VMs: []VM{{ID: "a"}}, FailRate: 0.4, RateLimit429: 0.2, RetryAfter: "0", Seed: 7})
	tok := novaLogin(t, n)
	codes := map[int]int{}
	const total = 300
	for range total {
		r := novaDo(t, "GET", n.URL()+"/compute/v2.1/servers/detail", tok, nil)
		codes[r.code]++
		switch r.code {
		case 429:
			if r.header.Get("Retry-After") != "0" || r.body["overLimit"] == nil {
				t.Fatalf("429 without Retry-After or overLimit: %v %s", r.header, r.raw)
			}
		case 500:
			if r.body["computeFault"] == nil {
				t.Fatalf("500 body: %s", r.raw)
			}
		case 503:
			if r.body["serviceUnavailable"] == nil {
				t.Fatalf("503 body: %s", r.raw)
			}
		case 200:
		default:
			t.Fatalf("unexpected status %d", r.code)
		}
	}
	faults := codes[500] + codes[503] + codes[429]
	if n.Faults() != faults {
		t.Fatalf("Faults() = %d, served %d", n.Faults(), faults)
	}
	// Expect about 120 5xx and 60 429s; the bounds are wide, the point is
	// that each kind shows up in roughly its share.
	if x := codes[500] + codes[503]; x < 80 || x > 160 || codes[500] == 0 || codes[503] == 0 {
		t.Fatalf("5xx count %v", codes)
	}
	if codes[429] < 30 || codes[429] > 90 {
		t.Fatalf("429 count %v", codes)
	}
	// Keystone is never faulted: a client can always authenticate.
	for range 20 {
		novaLogin(t, n)
	}
}

func TestNovaLatency(t *testing.T) {
	t.Parallel()
	n := novaStart(t, NovaOptions{Latency: 30 * time.Millisecond})
	start := time.Now()
	novaDo(t, "GET", n.AuthURL(), "", nil)
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Fatalf("request took %v, want >= 30ms", d)
	}
	n.SetLatency(0)
	if n.Requests() != 1 {
		t.Fatalf("Requests = %d", n.Requests())
	}
}

// TestNovaWithGophercloud drives the simulator with the unmodified client the
// service uses, from a clouds.yaml the simulator wrote.
func TestNovaWithGophercloud(t *testing.T) {
	t.Parallel()
	vms := GenerateVMs([]string{"edge", "ci"}, 60, 1, time.Millisecond, 2*time.Millisecond)
	n := novaStart(t, NovaOptions{VMs: vms, PageSize: 50})
	path := filepath.Join(t.TempDir(), "clouds.yaml")
	if err := os.WriteFile(path, []byte(n.CloudsYAML("sim")), 0o600); err != nil {
		t.Fatal(err)
	}
	ao, eo, _, err := clouds.Parse(clouds.WithCloudName("sim"), clouds.WithLocations(path))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	pc, err := config.NewProviderClient(ctx, ao)
	if err != nil {
		t.Fatal(err)
	}
	c, err := openstack.NewComputeV2(pc, eo)
	if err != nil {
		t.Fatal(err)
	}
	pages, err := servers.List(c, servers.ListOpts{AllTenants: true}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := servers.ExtractServers(pages)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 120 || n.ListRequests() != 3 {
		t.Fatalf("listed %d servers in %d requests, want 120 in 3", len(got), n.ListRequests())
	}
	if got[0].TenantID != n.ProjectID("edge") || got[0].Created.IsZero() || got[0].LaunchedAt.IsZero() {
		t.Fatalf("first server %+v", got[0])
	}
	var target string
	for _, s := range got {
		if s.Status == "ACTIVE" {
			target = s.ID
			break
		}
	}
	if err := servers.Stop(ctx, c, target).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	err = servers.Stop(ctx, c, "ghost").ExtractErr()
	if !gophercloud.ResponseCodeIs(err, 404) {
		t.Fatalf("stop ghost: %v", err)
	}
	novaWaitFor(t, "target off", func() bool { return n.Status(target) == "SHUTOFF" })
	s, err := servers.Get(ctx, c, target).Extract()
	if err != nil || s.Status != "SHUTOFF" {
		t.Fatalf("get: %v %v", s, err)
	}
}

func TestGenerateVMs(t *testing.T) {
	t.Parallel()
	a := GenerateVMs([]string{"p1", "p2", "p3"}, 200, 42, 10*time.Millisecond, 20*time.Millisecond)
	b := GenerateVMs([]string{"p1", "p2", "p3"}, 200, 42, 10*time.Millisecond, 20*time.Millisecond)
	if len(a) != 600 || fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatal("GenerateVMs is not deterministic for a seed or has the wrong count")
	}
	ids := map[string]bool{}
	names := map[string]bool{}
	statuses := map[string]int{}
	for _, vm := range a {
		if ids[vm.ID] {
			t.Fatalf("duplicate id %s", vm.ID)
		}
		ids[vm.ID] = true
		if names[vm.Project+"/"+vm.Name] {
			t.Fatalf("duplicate name %s in %s", vm.Name, vm.Project)
		}
		names[vm.Project+"/"+vm.Name] = true
		if vm.StopDelay < 10*time.Millisecond || vm.StopDelay > 20*time.Millisecond {
			t.Fatalf("delay %v out of range", vm.StopDelay)
		}
		statuses[vm.Status]++
	}
	if statuses["ACTIVE"] < 450 || statuses["SHUTOFF"] == 0 || statuses["ERROR"] == 0 {
		t.Fatalf("status mix %v", statuses)
	}
	if c := GenerateVMs([]string{"p1"}, 5, 43, 0, 0); fmt.Sprint(c) == fmt.Sprint(a[:5]) {
		t.Fatal("different seeds gave the same VMs")
	}
}

func TestNovaCloudsYAMLQuotes(t *testing.T) {
	t.Parallel()
	n := NewNova(NovaOptions{Password: `p: "#x'`})
	path := filepath.Join(t.TempDir(), "clouds.yaml")
	if err := os.WriteFile(path, []byte(n.CloudsYAML("edge")), 0o600); err != nil {
		t.Fatal(err)
	}
	ao, eo, _, err := clouds.Parse(clouds.WithCloudName("edge"), clouds.WithLocations(path))
	if err != nil {
		t.Fatal(err)
	}
	if ao.Password != `p: "#x'` || ao.Username != "admin" || ao.DomainName != "Default" || eo.Region != "RegionOne" || eo.Availability != gophercloud.AvailabilityPublic {
		t.Fatalf("parsed %+v %+v", ao, eo)
	}
	if ao.Scope == nil || ao.Scope.ProjectName != "admin" || ao.Scope.DomainName != "Default" {
		t.Fatalf("scope %+v", ao.Scope)
	}
}

// A rotated password is refused from then on, every attempt is recorded as
// Keystone's lockout would count it, and tokens carry the configured
// lifetime in expires_at.
func TestNovaRotatedPasswordLoginsAndTokenLifetime(t *testing.T) {
	t.Parallel()
	n := novaStart(t, NovaOptions{Password: "pw", TokenTTL: 90 * time.Second})
	auth := n.AuthURL() + "/auth/tokens"
	r := novaDo(t, "POST", auth, "", novaPasswordAuth("admin", "pw", "Default", "admin"))
	if r.code != http.StatusCreated {
		t.Fatalf("login: %d %s", r.code, r.raw)
	}
	tok := r.body["token"].(map[string]any)
	issued, err1 := time.Parse(keystoneTimeFormat, tok["issued_at"].(string))
	expires, err2 := time.Parse(keystoneTimeFormat, tok["expires_at"].(string))
	if err1 != nil || err2 != nil || expires.Sub(issued) != 90*time.Second {
		t.Fatalf("issued_at %v, expires_at %v (%v %v), want 90s apart", tok["issued_at"], tok["expires_at"], err1, err2)
	}
	old := r.header.Get("X-Subject-Token")

	n.SetPassword("pw-2")
	if r := novaDo(t, "POST", auth, "", novaPasswordAuth("admin", "pw", "Default", "admin")); r.code != http.StatusUnauthorized {
		t.Fatalf("old password after rotation: %d", r.code)
	}
	if r := novaDo(t, "POST", auth, "", novaPasswordAuth("admin", "pw-2", "Default", "admin")); r.code != http.StatusCreated {
		t.Fatalf("new password: %d %s", r.code, r.raw)
	}
	if r := novaDo(t, "GET", n.URL()+"/compute/v2.1/servers/detail", old, nil); r.code != http.StatusOK {
		t.Fatalf("token issued before the rotation: %d", r.code)
	}
	if !strings.Contains(n.CloudsYAML("x"), "password: pw-2") {
		t.Error("CloudsYAML does not carry the rotated password")
	}
	var got []string
	for _, l := range n.Logins() {
		got = append(got, fmt.Sprintf("%s:%v", l.Method, l.OK))
	}
	if strings.Join(got, " ") != "password:true password:false password:true" {
		t.Errorf("logins %v", got)
	}
}

// An application credential authenticates by id or by name and user, is
// scoped to its project by Keystone, and refuses a scope in the request.
func TestNovaApplicationCredential(t *testing.T) {
	t.Parallel()
	n := novaStart(t, NovaOptions{AppCredentialID: "ac-1", AppCredentialName: "shutdownd", AppCredentialSecret: "s3cret"})
	auth := n.AuthURL() + "/auth/tokens"
	appCred := func(cred map[string]any, scope any) map[string]any {
		a := map[string]any{"identity": map[string]any{"methods": []string{"application_credential"}, "application_credential": cred}}
		if scope != nil {
			a["scope"] = scope
		}
		return map[string]any{"auth": a}
	}
	tests := []struct {
		name string
		body map[string]any
		want int
	}{
		{"by id", appCred(map[string]any{"id": "ac-1", "secret": "s3cret"}, nil), http.StatusCreated},
		{"by name and user", appCred(map[string]any{"name": "shutdownd", "secret": "s3cret",
			"user": map[string]any{"name": "admin", "domain": map[string]any{"name": "Default"}}}, nil), http.StatusCreated},
		{"wrong secret", appCred(map[string]any{"id": "ac-1", "secret": "nope"}, nil), http.StatusUnauthorized},
		{"with a scope", appCred(map[string]any{"id": "ac-1", "secret": "s3cret"},
			map[string]any{"project": map[string]any{"name": "admin", "domain": map[string]any{"name": "Default"}}}), http.StatusUnauthorized},
	}
	for _, tc := range tests {
		r := novaDo(t, "POST", auth, "", tc.body)
		if r.code != tc.want {
			t.Errorf("%s: %d, want %d: %s", tc.name, r.code, tc.want, r.raw)
			continue
		}
		if tc.want == http.StatusCreated {
			tok := r.body["token"].(map[string]any)
			if tok["project"].(map[string]any)["id"] != n.ProjectID("admin") || tok["methods"].([]any)[0] != "application_credential" {
				t.Errorf("%s: token %v", tc.name, tok)
			}
		}
	}
	env := n.OpenrcEnv(true)
	if env["OS_APPLICATION_CREDENTIAL_ID"] != "ac-1" || env["OS_PASSWORD"] != "" {
		t.Errorf("openrc of the application credential: %v", env)
	}
}
