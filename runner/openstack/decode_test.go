package openstack

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// referencePage decodes a page with encoding/json into generic values, as
// the client did before decodePage, and reads the same fields: it is the
// specification decodePage is checked against.
func referencePage(b []byte) (servers []wireServer, next string, err error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var body any
	if err := dec.Decode(&body); err != nil {
		return nil, "", err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, "", fmt.Errorf("data after the value: %v", err)
	}
	m, ok := body.(map[string]any)
	if !ok {
		return nil, "", errors.New("not an object")
	}
	list, ok := m["servers"].([]any)
	if !ok {
		return nil, "", errors.New("no servers list")
	}
	str := func(v any) string { s, _ := v.(string); return s }
	for _, item := range list {
		s, ok := item.(map[string]any)
		if !ok {
			return nil, "", errors.New("entry not an object")
		}
		servers = append(servers, wireServer{
			ID: str(s["id"]), Name: str(s["name"]), Status: str(s["status"]),
			TenantID: str(s["tenant_id"]), TaskState: str(s["OS-EXT-STS:task_state"]),
		})
	}
	links, _ := m["servers_links"].([]any)
	for _, l := range links {
		link, _ := l.(map[string]any)
		if link["rel"] == "next" {
			next, _ = link["href"].(string)
			break
		}
	}
	return servers, next, nil
}

// decodeChecked is decodePage with the checks fetchPage adds.
func decodeChecked(b []byte) ([]wireServer, string, error) {
	p, err := decodePage(b)
	switch {
	case err != nil:
		return nil, "", err
	case !p.present:
		return nil, "", errors.New("no servers list")
	case p.badItem > 0:
		return nil, "", errors.New("entry not an object")
	}
	return p.servers, p.nextHref(), nil
}

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
		`{"servers":[{"id":"\ud800\udc00\ud800"}]}`, `{"servers":[{"id":"\x"}]}`, `{"servers":[{"id":"` + "\x01" + `"}]}`,
		`{"a":01}`, `{"a":-}`, `{"a":1.}`, `{"a":1e}`, `{"a":.5}`, `{"a":1e999}`, `{"a":-0.0e-0}`, `{"a":tru}`, `{"a":nul}`,
		`{"a":[1,]}`, `{"a":{"b":1,}}`, `{"a" 1}`, `{,}`, `{"a":1 "b":2}`,
		`{"servers":[` + strings.Repeat(`[`, 10001) + strings.Repeat(`]`, 10001) + `]}`,
		`{"servers":[` + strings.Repeat(`[`, 9998) + strings.Repeat(`]`, 9998) + `]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		wantServers, wantNext, wantErr := referencePage(body)
		servers, next, err := decodeChecked(body)
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("decodePage error %v, encoding/json error %v", err, wantErr)
		}
		if err != nil {
			return
		}
		if fmt.Sprintf("%q", servers) != fmt.Sprintf("%q", wantServers) || next != wantNext {
			t.Fatalf("decodePage: %q next %q\nencoding/json: %q next %q", servers, next, wantServers, wantNext)
		}
	})
}

func TestDecodePageReadsNovaPage(t *testing.T) {
	servers, next, err := decodeChecked([]byte(novaPage))
	if err != nil {
		t.Fatal(err)
	}
	want := []wireServer{
		{ID: "8e1c4a5e-62b8-4a0b-9f1e-2f5f3b7c9d01", Name: "web-03", Status: "ACTIVE", TenantID: "6f70656e737461636b20342065766572"},
		{ID: "b2", Name: `Ubuntu 22.04 dev é"q"`, Status: "ERROR", TenantID: "t", TaskState: "powering-off"},
	}
	if fmt.Sprint(servers) != fmt.Sprint(want) {
		t.Errorf("servers %q, want %q", servers, want)
	}
	if next != "http://nova/compute/v2.1/servers/detail?all_tenants=True&limit=2&marker=b2" {
		t.Errorf("next %q", next)
	}
}

// The point of decodePage: one pass over a page of 1,000 servers as the
// simulator renders them.
func BenchmarkDecodePage(b *testing.B) {
	item := strings.TrimRight(novaPage[len(`{"servers": [`):strings.Index(novaPage, `{"id": "b2"`)], ", \n")
	body := []byte(`{"servers": [` + strings.TrimSuffix(strings.Repeat(item+", ", 1000), ", ") + `]}`)
	b.SetBytes(int64(len(body)))
	b.Run("decodePage", func(b *testing.B) {
		for b.Loop() {
			if _, err := decodePage(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			var v struct {
				Servers []struct {
					ID, Name, Status string
					TenantID         string  `json:"tenant_id"`
					TaskState        *string `json:"OS-EXT-STS:task_state"`
				} `json:"servers"`
			}
			if err := json.Unmarshal(body, &v); err != nil {
				b.Fatal(err)
			}
		}
	})
}
