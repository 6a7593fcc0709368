package openstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/pagination"
)

// Server is what the runner needs to know about a Nova server to decide
// whether to stop it and to see that it is off.
type Server struct {
	ID, Name, Status, TenantID, TaskState string
	// Host is the compute host (OS-EXT-SRV-ATTR:host, admin only): a
	// startup does not start a VM whose compute host is down.
	Host string
}

// MaxListPages bounds one listing: a cloud whose next links never end (a
// proxy rewriting markers, a bug) gets an error instead of an endless
// listing. At Nova's default page size it is ten million servers.
const MaxListPages = 10000

// ListServers returns every server of every project (all_tenants), following
// Nova's pagination to the end at Nova's own page size. A failed page is
// retried on its own; an error that retrying cannot fix ends the listing, so
// the result is never a partial list.
func (c *Client) ListServers(ctx context.Context) ([]Server, error) {
	var out []Server
	err := c.ListServerPages(ctx, nil, func(page []Server) error {
		out = append(out, page...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ListServerPages lists every server of every project (all_tenants) and
// calls fn with each page as soon as it is decoded, so a caller can act on
// the first servers while Nova renders the rest. Page i asks for sizes[i]
// servers, pages past the end of sizes for its last entry; 0 (or nil sizes)
// sends no limit, which is Nova's max_limit (1000 by default). Nova's marker
// paging allows any page size, so a small first page comes back at once. Each page is retried on its own (5xx, 429, timeouts), so fn
// never sees a server twice because of a retry; a server Nova repeats on a
// later page is dropped. A next link that repeats a marker or a page, or more
// than MaxListPages pages, is an error ("paging loop"). An error returned by
// fn ends the listing and is returned as is; every other error starts with
// "list servers: ".
func (c *Client) ListServerPages(ctx context.Context, sizes []int, fn func([]Server) error) error {
	base := c.compute.ServiceURL("servers", "detail")
	q := url.Values{"all_tenants": {"true"}}
	setLimit(q, pageSize(sizes, 0))
	next := base + "?" + q.Encode()
	requested := map[string]bool{}
	markers := map[string]bool{}
	seen := map[string]bool{}
	for pageNo := 1; next != ""; pageNo++ {
		if pageNo > MaxListPages {
			return fmt.Errorf("list servers: paging loop: more than %d pages (last next link %s)", MaxListPages, redactURL(next))
		}
		requested[next] = true
		var pg page
		err := c.retry(ctx, "list-servers", func(ctx context.Context) error {
			var err error
			pg, err = c.fetchPage(ctx, next)
			return err
		})
		if err != nil {
			return fmt.Errorf("list servers: %w", describe(err))
		}
		servers, dups, err := pg.list(seen)
		if err != nil {
			return fmt.Errorf("list servers: page %d: %w", pageNo, err)
		}
		if len(servers) == 0 && dups > 0 {
			return fmt.Errorf("list servers: paging loop: page %d repeats %d servers already listed", pageNo, dups)
		}
		if len(servers) == 0 {
			break // Nova links a full last page to an empty one
		}
		if err := fn(servers); err != nil {
			return err
		}
		href := pg.nextHref()
		if href == "" {
			break
		}
		u, err := url.Parse(href)
		if err != nil {
			return fmt.Errorf("list servers: page %d: unparsable next link: %w", pageNo, err)
		}
		// The link's query (marker and the filters) on the catalog's
		// endpoint: a Nova behind a proxy often links to its internal
		// address, which the control host may not reach.
		nq := u.Query()
		marker := nq.Get("marker")
		switch {
		case marker == "":
			return fmt.Errorf("list servers: paging loop: page %d has a next link without a marker", pageNo)
		case markers[marker]:
			return fmt.Errorf("list servers: paging loop: page %d links to marker %s again", pageNo, marker)
		}
		markers[marker] = true
		setLimit(nq, pageSize(sizes, pageNo))
		next = base + "?" + nq.Encode()
		if requested[next] {
			return fmt.Errorf("list servers: paging loop: page %d links back to a page already listed", pageNo)
		}
	}
	return nil
}

// pageSize is the limit of page i (from 0).
func pageSize(sizes []int, i int) int {
	if len(sizes) == 0 {
		return 0
	}
	return sizes[min(i, len(sizes)-1)]
}

func setLimit(q url.Values, limit int) {
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	} else {
		q.Del("limit")
	}
}

// fetchPage GETs one page of servers through gophercloud (token, 401
// re-authentication, status checks) and decodes it with decodePage into
// the five fields we read, not gophercloud's ServerPage, which decodes
// every page into generic maps and then again into full Server structs.
func (c *Client) fetchPage(ctx context.Context, u string) (page, error) {
	resp, err := pagination.Request(ctx, c.compute, nil, u)
	if err != nil {
		return page{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		// The answer broke off: a transport failure, worth another try.
		return page{}, &url.Error{Op: "read", URL: redactURL(u), Err: err}
	}
	if resp.StatusCode == http.StatusNoContent {
		return page{}, nil
	}
	return decodePage(body)
}

// list converts the page, dropping servers already in seen (and adding the
// others); dups counts the dropped ones.
func (p page) list(seen map[string]bool) (out []Server, dups int, err error) {
	out = make([]Server, 0, len(p.servers))
	for i, w := range p.servers {
		id := string(w.ID)
		if id == "" {
			return nil, 0, fmt.Errorf("decode server page: entry %d has no id", i)
		}
		if seen[id] {
			dups++
			continue
		}
		seen[id] = true
		out = append(out, Server{ID: id, Name: string(w.Name), Status: string(w.Status),
			TenantID: string(w.TenantID), TaskState: string(w.TaskState), Host: string(w.Host)})
	}
	return out, dups, nil
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
