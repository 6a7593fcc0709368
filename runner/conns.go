package runner

import (
	"context"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/runner/internal/pool"
	"github.com/edgeops/shutdownd/store"
)

// connPool holds the SSH connections and BMC sessions of one shutdown job,
// opened ahead of need while the VMs stop (runner/internal/pool says what
// it guarantees). The pool only exists for shutdown jobs: a simulation
// makes its own checks.
type connPool = pool.Pool[HostConn, PowerController]

// warmKeepalive is how often idle warm SSH connections are checked with a
// keepalive request; one that fails is dialled again in the background.
var warmKeepalive = pool.DefaultKeepalive

// startPool starts warming the connections of a shutdown job. Hosts that a
// resumed job already confirmed Off are left out.
func startPool(e *exec) *connPool {
	return pool.Start(e.ctx, pool.Options[HostConn, PowerController]{
		Config:    e.r.cfg,
		Skip:      e.confirmedOff(),
		DialHost:  e.r.deps.DialHost,
		OpenBMC:   e.r.deps.OpenBMC,
		Live:      liveness,
		Stops:     &e.r.nova,
		Keepalive: warmKeepalive,
		Logger:    e.log,
	})
}

// confirmedOff returns the hosts a previous run of this job confirmed Off;
// nothing is opened to them again.
func (e *exec) confirmedOff() map[string]bool {
	off := map[string]bool{}
	if !e.resumed {
		return off
	}
	steps, err := e.r.store.Steps(e.db(), e.job.ID)
	if err != nil {
		return off
	}
	for _, st := range steps {
		if st.Name != StepHosts {
			continue
		}
		actions, err := e.r.store.StepActions(e.db(), st.ID)
		if err != nil {
			return off
		}
		for _, a := range actions {
			if a.TargetKind == store.TargetHost && a.Operation == store.OpPowerOff && a.State == store.ActionSucceeded {
				off[a.Target] = true
			}
		}
	}
	return off
}

// liveness finds what checks c (hostctl.Conn, behind the metrics wrapper),
// or nil.
func liveness(c HostConn) pool.Live {
	for {
		switch v := c.(type) {
		case pool.Live:
			return v
		case observedConn:
			c = v.HostConn
		default:
			return nil
		}
	}
}

// countStops wraps the cloud opener so that the runner follows its os-stop
// requests: the pool's warm-up waits for them (see pool.Quiet).
func countStops(d *deps, n *pool.StopCounter) {
	open := d.OpenCloud
	d.OpenCloud = func(ctx context.Context, cfg config.OpenStack, onRetry func(op string, attempt int, err error)) (Cloud, error) {
		c, err := open(ctx, cfg, onRetry)
		if err != nil {
			return nil, err
		}
		return countedCloud{c, n}, nil
	}
}

type countedCloud struct {
	Cloud
	n *pool.StopCounter
}

func (c countedCloud) Stop(ctx context.Context, id string) error {
	defer c.n.Begin()()
	return c.Cloud.Stop(ctx, id)
}
