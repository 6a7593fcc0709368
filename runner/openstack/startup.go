package openstack

import (
	"context"
	"fmt"
	"net/http"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/services"
)

// ComputeService is one nova-compute service as GET /os-services lists it.
type ComputeService struct {
	Host   string
	State  string // "up" or "down": whether Nova hears from it
	Status string // "enabled" or "disabled" by an operator
}

// Start sends os-start. Nova answers 202 and boots the guest
// asynchronously; the caller watches ListServers for ACTIVE. A 409 is
// ErrConflict and a 404 ErrNotFound, neither retried, as for Stop.
func (c *Client) Start(ctx context.Context, id string) error {
	err := c.retry(ctx, "os-start", func(ctx context.Context) error {
		return servers.Start(ctx, c.compute, id).ExtractErr()
	})
	switch {
	case err == nil:
		return nil
	case gophercloud.ResponseCodeIs(err, http.StatusConflict):
		return fmt.Errorf("start vm %s: %w: %s", id, ErrConflict, faultMessage(err))
	case gophercloud.ResponseCodeIs(err, http.StatusNotFound):
		return fmt.Errorf("start vm %s: %w: %s", id, ErrNotFound, faultMessage(err))
	}
	return fmt.Errorf("start vm %s: %w", id, describe(err))
}

// ComputeServices lists the nova-compute services (GET
// /os-services?binary=nova-compute), retried like every read.
func (c *Client) ComputeServices(ctx context.Context) ([]ComputeService, error) {
	var out []ComputeService
	err := c.retry(ctx, "list-services", func(ctx context.Context) error {
		pages, err := services.List(c.compute, services.ListOpts{Binary: "nova-compute"}).AllPages(ctx)
		if err != nil {
			return err
		}
		ss, err := services.ExtractServices(pages)
		if err != nil {
			return err
		}
		out = out[:0]
		for _, s := range ss {
			out = append(out, ComputeService{Host: s.Host, State: s.State, Status: s.Status})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list compute services: %w", describe(err))
	}
	return out, nil
}
