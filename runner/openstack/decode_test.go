package openstack

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// A page as Nova renders it at microversion 2.1 (trimmed to two servers).
const novaPage = `{"servers": [{"id": "8e1c4a5e-62b8-4a0b-9f1e-2f5f3b7c9d01", "name": "web-03", "status": "ACTIVE",
 "tenant_id": "6f70656e737461636b20342065766572", "user_id": "fake", "metadata": {"role": "frontend", "tier": "1"},
 "hostId": "e4ecf2b2a0b4", "created": "2024-03-01T08:00:00Z", "updated": "2024-03-01T08:00:41Z", "progress": 0,
 "accessIPv4": "", "accessIPv6": "", "key_name": null, "config_drive": "",
 "image": {"id": "70a599e0-31e7-49b7-b260-868f441e862b", "links": [{"rel": "bookmark", "href": "http://nova/compute/images/70a5"}]},
 "flavor": {"id": "2", "links": [{"rel": "bookmark", "href": "http://nova/compute/flavors/2"}]},
 "addresses": {"private": [{"addr": "10.0.0.2", "version": 4, "OS-EXT-IPS:type": "fixed", "OS-EXT-IPS-MAC:mac_addr": "fa:16:3e:00:00:00"}]},
 "links": [{"rel": "self", "href": "http://nova/compute/v2.1/servers/8e1c"}],
 "security_groups": [{"name": "default"}], "os-extended-volumes:volumes_attached": [],
 "OS-DCF:diskConfig": "MANUAL", "OS-EXT-AZ:availability_zone": "nova", "OS-EXT-SRV-ATTR:host": "compute-1",
 "OS-EXT-STS:vm_state": "active", "OS-EXT-STS:task_state": null, "OS-EXT-STS:power_state": 1,
 "OS-SRV-USG:launched_at": "2024-03-01T08:00:40.000000", "OS-SRV-USG:terminated_at": null},
 {"id": "b2", "name": "Ubuntu 22.04 dev \u00e9\"q\"", "status": "ERROR", "tenant_id": "t",
  "OS-EXT-STS:task_state": "powering-off", "progress": -1.5e-3, "x": [true, false, null, {}, [], 0, -0.0, 1E+9]}],
 "servers_links": [{"rel": "next", "href": "http://nova/compute/v2.1/servers/detail?all_tenants=True&limit=2&marker=b2"}]}`

// FuzzDecodePage checks decodePage on any body: it never panics, it
// accepts only valid JSON, and what it reads survives a round trip through
// a page written the way Nova writes one.
func FuzzDecodePage(f *testing.F) {
	for _, seed := range []string{
		novaPage,
		`{"servers":[]}`, `{"servers":[],"servers_links":[]}`, ` {"servers" : [ ] } `,
		`{"servers":[{"id":"a"}],"servers_links":[1,{"rel":"next","href":"h"}]}`,
		`{"servers":[{"id":"a"}],"servers_links":[{"rel":"next","href":5},{"rel":"next","href":"h"}]}`,
		`{"servers":[{"id":"a","id":"b","name":1,"name":"n","status":"x","status":null}]}`,
		`{"servers":[{"\u0069d":"esc-key","st\u0061tus":"ACTIVE"}]}`,
		`{"servers":[{"id":"bad-utf8-` + "\xff\xfe" + `"}]}`,
		`{"servers":[{"id":"a"}],"servers":null}`, `{"servers":null}`, `{"servers":{"id":"a"}}`,
		`{"servers":[1,"x",null]}`, `{"servers":[{"id":"a"},2]}`, `{"servers":[{"id":"a"}]} x`, `{"servers":[{"id":"a"}]}{}`,
		`[]`, `null`, `"s"`, `1`, `{`, ``, ` `, `{"servers":[{"id":"a"}`, `{"servers":[{"id":"a\`,
		`{"servers":[` + strings.Repeat(`[`, 10001) + strings.Repeat(`]`, 10001) + `]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := decodePage(body)
		if err != nil {
			return
		}
		if !json.Valid(body) {
			t.Fatalf("decodePage accepted invalid JSON %q", body)
		}
		again, err := decodePage(rewrite(t, p))
		if err != nil {
			t.Fatalf("decodePage refused its own result: %v", err)
		}
		if fmt.Sprintf("%q", again.servers) != fmt.Sprintf("%q", p.servers) || again.nextHref() != p.nextHref() {
			t.Fatalf("round trip changed the page: %q next %q, then %q next %q", p.servers, p.nextHref(), again.servers, again.nextHref())
		}
	})
}

// rewrite writes p back as Nova would, with the fields we read.
func rewrite(t *testing.T, p page) []byte {
	t.Helper()
	type server struct {
		ID        string `json:"id"`
		Name      string `json:"name"`
		Status    string `json:"status"`
		TenantID  string `json:"tenant_id"`
		TaskState string `json:"OS-EXT-STS:task_state"`
		Host      string `json:"OS-EXT-SRV-ATTR:host"`
	}
	out := struct {
		Servers []server            `json:"servers"`
		Links   []map[string]string `json:"servers_links"`
	}{Servers: []server{}}
	for _, w := range p.servers {
		out.Servers = append(out.Servers, server{string(w.ID), string(w.Name), string(w.Status), string(w.TenantID), string(w.TaskState), string(w.Host)})
	}
	if n := p.nextHref(); n != "" {
		out.Links = append(out.Links, map[string]string{"rel": "next", "href": n})
	}
	b, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodePageReadsNovaPage(t *testing.T) {
	p, err := decodePage([]byte(novaPage))
	if err != nil {
		t.Fatal(err)
	}
	want := []wireServer{
		{ID: "8e1c4a5e-62b8-4a0b-9f1e-2f5f3b7c9d01", Name: "web-03", Status: "ACTIVE", TenantID: "6f70656e737461636b20342065766572", Host: "compute-1"},
		{ID: "b2", Name: `Ubuntu 22.04 dev é"q"`, Status: "ERROR", TenantID: "t", TaskState: "powering-off"},
	}
	if fmt.Sprint(p.servers) != fmt.Sprint(want) {
		t.Errorf("servers %q, want %q", p.servers, want)
	}
	if next := p.nextHref(); next != "http://nova/compute/v2.1/servers/detail?all_tenants=True&limit=2&marker=b2" {
		t.Errorf("next %q", next)
	}
}

// The edges of a page: what is an error (the page is fetched again) and
// what reads as empty (one odd field never fails a site's listing).
func TestDecodePageEdges(t *testing.T) {
	for _, c := range []struct {
		body, servers, next, err string
	}{
		{body: `{"servers":[]}`, servers: `[]`},
		{body: `{"servers":[{"id":"a","name":1,"status":null,"OS-EXT-STS:task_state":{"x":1}}]}`, servers: `[{"a" "" "" "" "" ""}]`},
		{body: `{"servers":[{"id":"a"}],"servers_links":[1,{"rel":"next","href":"h"}]}`, servers: `[{"a" "" "" "" "" ""}]`, next: "h"},
		{body: `{"servers":[{"id":"a"}],"servers_links":{"rel":"next"}}`, servers: `[{"a" "" "" "" "" ""}]`},
		{body: `{"servers":[{"id":"a"}],"servers_links":[{"rel":"next","href":5}]}`, servers: `[{"a" "" "" "" "" ""}]`},
		{body: `{"servers":[{"id":"a","id":"b"}]}`, servers: `[{"b" "" "" "" "" ""}]`},
		{body: `{"servers":null}`, err: `no "servers" list`},
		{body: `{}`, err: `no "servers" list`},
		{body: `{"servers":{"id":"a"}}`, err: "cannot unmarshal"},
		{body: `{"servers":[{"id":"a"},2]}`, err: "cannot unmarshal"},
		{body: `[]`, err: "cannot unmarshal"},
		{body: `{"servers":[{"id":"a"}]} x`, err: "invalid character"},
		{body: ``, err: "unexpected end"},
	} {
		p, err := decodePage([]byte(c.body))
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: error %v, want one with %q", c.body, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.body, err)
			continue
		}
		if got := fmt.Sprintf("%q", p.servers); got != c.servers || p.nextHref() != c.next {
			t.Errorf("%s: servers %s next %q, want %s next %q", c.body, got, p.nextHref(), c.servers, c.next)
		}
	}
}

// BenchmarkDecodePage decodes a page of 1,000 servers as the simulator
// renders them.
func BenchmarkDecodePage(b *testing.B) {
	item := strings.TrimRight(novaPage[len(`{"servers": [`):strings.Index(novaPage, `{"id": "b2"`)], ", \n")
	body := []byte(`{"servers": [` + strings.TrimSuffix(strings.Repeat(item+", ", 1000), ", ") + `]}`)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := decodePage(body); err != nil {
			b.Fatal(err)
		}
	}
}
