package openstack

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/pagination"
)

// Server is what the runner needs to know about a Nova server to decide
// whether to stop it and to see that it is off.
type Server struct {
	ID, Name, Status, TenantID, TaskState string
}

// ListServers returns every server of every project (all_tenants), following
// Nova's pagination to the end. A failure on any page restarts the whole
// listing, so the result is never a partial list.
func (c *Client) ListServers(ctx context.Context) ([]Server, error) {
	var out []Server
	err := c.retry(ctx, "list-servers", func(ctx context.Context) error {
		out = out[:0]
		pager := servers.List(c.compute, servers.ListOpts{AllTenants: true})
		if pager.Err != nil {
			return pager.Err
		}
		pager = pager.WithPageCreator(func(r pagination.PageResult) pagination.Page {
			return serverPage{pagination.LinkedPageBase{PageResult: r}}
		})
		return pager.EachPage(ctx, func(_ context.Context, p pagination.Page) (bool, error) {
			page, err := p.(serverPage).servers()
			if err != nil {
				return false, err
			}
			out = append(out, page...)
			return true, nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list servers: %w", describe(err))
	}
	return out, nil
}

// serverPage reads a Nova server page straight from the decoded JSON.
// gophercloud's ServerPage re-encodes and re-decodes every page twice
// (IsEmpty, then Extract) into full Server structs: seconds of CPU per listing
// of a few thousand servers, and the runner polls the listing every couple of
// seconds during a shutdown, on a control host running on battery. Reading
// only the fields we use also means an odd field elsewhere in a cloud's server
// body cannot break a shutdown.
type serverPage struct {
	pagination.LinkedPageBase
}

func (p serverPage) items() ([]any, error) {
	body, ok := p.Body.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("decode server page: body is %T, not an object", p.Body)
	}
	list, ok := body["servers"].([]any)
	if !ok {
		return nil, errors.New(`decode server page: no "servers" list`)
	}
	return list, nil
}

// IsEmpty ends the paging on an empty page, as Nova's last-page-was-full
// next link leads to one.
func (p serverPage) IsEmpty() (bool, error) {
	if p.StatusCode == http.StatusNoContent {
		return true, nil
	}
	list, err := p.items()
	return len(list) == 0, err
}

// NextPageURL follows servers_links rel "next".
func (p serverPage) NextPageURL() (string, error) {
	body, _ := p.Body.(map[string]any)
	links, _ := body["servers_links"].([]any)
	for _, l := range links {
		link, _ := l.(map[string]any)
		if link["rel"] == "next" {
			href, _ := link["href"].(string)
			return href, nil
		}
	}
	return "", nil
}

func (p serverPage) servers() ([]Server, error) {
	list, err := p.items()
	if err != nil {
		return nil, err
	}
	out := make([]Server, 0, len(list))
	for i, item := range list {
		m, ok := item.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("decode server page: entry %d is %T, not an object", i, item)
		}
		s := Server{
			ID: str(m["id"]), Name: str(m["name"]), Status: str(m["status"]),
			TenantID: str(m["tenant_id"]), TaskState: str(m["OS-EXT-STS:task_state"]),
		}
		if s.ID == "" {
			return nil, fmt.Errorf("decode server page: entry %d has no id", i)
		}
		out = append(out, s)
	}
	return out, nil
}

// str reads a JSON string; null or absent (task_state when idle) is "".
func str(v any) string {
	s, _ := v.(string)
	return s
}

// Stop sends os-stop. Nova answers 202 and powers the guest off
// asynchronously; the caller watches ListServers for SHUTOFF. A 409 is
// ErrConflict and a 404 is ErrNotFound, neither retried. A retried stop whose
// first attempt did reach Nova may come back as ErrConflict (task_state
// powering-off), which the caller treats like any conflict: re-read.
func (c *Client) Stop(ctx context.Context, id string) error {
	err := c.retry(ctx, "os-stop", func(ctx context.Context) error {
		return servers.Stop(ctx, c.compute, id).ExtractErr()
	})
	switch {
	case err == nil:
		return nil
	case gophercloud.ResponseCodeIs(err, http.StatusConflict):
		return fmt.Errorf("stop vm %s: %w: %s", id, ErrConflict, faultMessage(err))
	case gophercloud.ResponseCodeIs(err, http.StatusNotFound):
		return fmt.Errorf("stop vm %s: %w: %s", id, ErrNotFound, faultMessage(err))
	}
	return fmt.Errorf("stop vm %s: %w", id, describe(err))
}

// apiError shortens gophercloud's "Expected HTTP response code [...] when
// accessing [...], but got N instead: <body>" to "HTTP N: <message>" for
// events and logs, while errors.As still finds the original.
type apiError struct {
	code int
	msg  string
	err  error
}

func (e *apiError) Error() string {
	if e.msg == "" {
		return fmt.Sprintf("HTTP %d", e.code)
	}
	return fmt.Sprintf("HTTP %d: %s", e.code, e.msg)
}

func (e *apiError) Unwrap() error { return e.err }

// describe wraps an HTTP status error in apiError; other errors pass through.
func describe(err error) error {
	var ae *apiError
	if errors.As(err, &ae) {
		return err
	}
	var ue gophercloud.ErrUnexpectedResponseCode
	if !errors.As(err, &ue) {
		return err
	}
	return &apiError{code: ue.Actual, msg: faultMessage(err), err: err}
}
