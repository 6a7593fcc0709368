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

// listedServer decodes only the fields we use, so an odd field elsewhere in
// a cloud's server body (dates, image, config_drive) cannot break a shutdown.
type listedServer struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Status    string `json:"status"`
	TenantID  string `json:"tenant_id"`
	TaskState string `json:"OS-EXT-STS:task_state"`
}

// ListServers returns every server of every project (all_tenants), following
// Nova's pagination to the end. A failure on any page restarts the whole
// listing, so the result is never a partial list.
func (c *Client) ListServers(ctx context.Context) ([]Server, error) {
	var out []Server
	err := c.retry(ctx, "list-servers", func(ctx context.Context) error {
		out = out[:0]
		pager := servers.List(c.compute, servers.ListOpts{AllTenants: true})
		return pager.EachPage(ctx, func(_ context.Context, p pagination.Page) (bool, error) {
			var page []listedServer
			if err := servers.ExtractServersInto(p, &page); err != nil {
				return false, fmt.Errorf("decode server page: %w", err)
			}
			for _, s := range page {
				out = append(out, Server(s))
			}
			return true, nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list servers: %w", describe(err))
	}
	return out, nil
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
