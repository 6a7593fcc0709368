package runner

import (
	"context"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/runner/bmc"
	"github.com/edgeops/shutdownd/runner/hostctl"
	"github.com/edgeops/shutdownd/runner/openstack"
)

// Cloud is what the runner needs from OpenStack. The real implementation is
// *openstack.Client; the seam exists so the engine does not care how the
// client was authenticated.
type Cloud interface {
	ListServers(ctx context.Context) ([]openstack.Server, error)
	// ListServerPages hands over each page of the listing as it arrives
	// (see openstack.Client.ListServerPages).
	ListServerPages(ctx context.Context, sizes []int, fn func([]openstack.Server) error) error
	Stop(ctx context.Context, id string) error
	// Start sends os-start (a startup job).
	Start(ctx context.Context, id string) error
	// ComputeServices lists the nova-compute services (a startup waits for
	// them before it starts VMs).
	ComputeServices(ctx context.Context) ([]openstack.ComputeService, error)
	// TokenExpiresAt is when the client's Keystone token expires, on this
	// machine's clock (zero: unknown), so the runner renews it just before.
	TokenExpiresAt() time.Time
}

// HostConn is an SSH connection to one host.
type HostConn interface {
	Run(ctx context.Context, cmd string) (hostctl.Result, error)
	PowerOff(ctx context.Context, cmd string) error
	Close() error
}

// PowerController is one host's BMC.
type PowerController interface {
	PowerState(ctx context.Context) (bmc.PowerState, error)
	SoftOff(ctx context.Context) error
	HardOff(ctx context.Context) error
	// PowerOn switches the host on (a startup job).
	PowerOn(ctx context.Context) error
	Close(ctx context.Context) error
}

// deps opens the connections the runner uses: the real adapters, wrapped
// by the runner to count os-stop requests and report every peer request to
// its observer. Tests do not replace them; they point the configuration at
// the simulated site instead.
type deps struct {
	OpenCloud func(ctx context.Context, cfg config.OpenStack, onRetry func(op string, attempt int, err error)) (Cloud, error)
	DialHost  func(ctx context.Context, h config.Host) (HostConn, error)
	OpenBMC   func(ctx context.Context, h config.Host) (PowerController, error)
}

func realDeps() deps {
	return deps{OpenCloud: openCloud, DialHost: dialHost, OpenBMC: openBMC}
}
