package openstack

import (
	"encoding/json"
	"errors"
	"fmt"
)

// page is a decoded server page: the servers as far as we read them, and
// the servers_links list as Nova sent it.
type page struct {
	servers []wireServer
	links   []pageLink
}

// wireServer is one server as far as we read it. A field that is absent or
// not a string (null for an idle task_state, or something odd) is "".
type wireServer struct {
	ID        looseString `json:"id"`
	Name      looseString `json:"name"`
	Status    looseString `json:"status"`
	TenantID  looseString `json:"tenant_id"`
	TaskState looseString `json:"OS-EXT-STS:task_state"`
	Host      looseString `json:"OS-EXT-SRV-ATTR:host"`
}

// pageLink is one entry of servers_links; an entry that is not a link
// object reads as an empty one.
type pageLink struct {
	Rel  looseString `json:"rel"`
	Href looseString `json:"href"`
}

// looseString is a JSON string, or "" for any other JSON value: Nova sends
// null for an idle task_state, and one odd field must not fail the listing
// of a whole site during a shutdown.
type looseString string

// UnmarshalJSON keeps strings and reads every other value as "".
func (l *looseString) UnmarshalJSON(b []byte) error {
	var s string
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
	}
	*l = looseString(s)
	return nil
}

// UnmarshalJSON reads a link, or nothing from a value that is not an
// object.
func (l *pageLink) UnmarshalJSON(b []byte) error {
	*l = pageLink{}
	if len(b) == 0 || b[0] != '{' {
		return nil
	}
	type plain pageLink
	return json.Unmarshal(b, (*plain)(l))
}

// decodePage decodes a server page body with encoding/json into the few
// fields we read. A body that is not an object, has no "servers" list, or
// has an entry in it that is not an object is an error (a null entry has no
// id, which the caller refuses): the caller retries the page rather than
// acting on half a site.
func decodePage(b []byte) (page, error) {
	var wire struct {
		Servers *[]wireServer   `json:"servers"`
		Links   json.RawMessage `json:"servers_links"`
	}
	if err := json.Unmarshal(b, &wire); err != nil {
		return page{}, fmt.Errorf("decode server page: %w", err)
	}
	if wire.Servers == nil {
		return page{}, errors.New(`decode server page: no "servers" list`)
	}
	p := page{servers: *wire.Servers}
	// servers_links that is not a list is read as no links: the listing
	// ends with this page, as when Nova sends none.
	if len(wire.Links) > 0 && wire.Links[0] == '[' {
		if err := json.Unmarshal(wire.Links, &p.links); err != nil {
			p.links = nil
		}
	}
	return p, nil
}

// nextHref is the servers_links rel "next" href, "" if there is none.
func (p page) nextHref() string {
	for _, l := range p.links {
		if l.Rel == "next" {
			return string(l.Href)
		}
	}
	return ""
}
