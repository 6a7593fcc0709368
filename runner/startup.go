package runner

import (
	"context"
	"strings"

	"github.com/edgeops/shutdownd/runner/openstack"
	"github.com/edgeops/shutdownd/store"
)

// jobStep is one step of a job: its name in the store and what runs it
// (the element type of jobSteps).
type jobStep = struct {
	name string
	run  func(*exec, store.Step) (store.StepState, string, error)
}

// startupSteps are a startup's steps, the shutdown's in reverse: hosts on
// (control, storage, compute), storage unfrozen once its hosts answer,
// then the VMs once their compute services are back. The step names are
// the shutdown's (stepNames), so the history page, the audit and the
// outcome read them alike.
var startupSteps = []jobStep{
	{StepHosts, (*exec).startHostsStep},
	{StepStorage, (*exec).startStorageStep},
	{StepOpenStack, (*exec).startVMsStep},
}

// steps is the job's sequence: a startup's, or the one every other kind
// runs.
func (e *exec) steps() []jobStep {
	if e.job.Kind == store.KindStartup {
		return startupSteps
	}
	return jobSteps
}

// Action operations of a startup, as stored in actions.operation.
const (
	opPowerOn       = "power-on"        // a host, from BMC power-on to SSH answering
	opBMCPowerState = "bmc-power-state" // the power state read before deciding
	opBMCPowerOn    = "bmc-power-on"    // the BMC power-on request
	opCephWaitOSDs  = "ceph-wait-osds"  // waiting until every OSD is up
	opComputeWait   = "compute-wait"    // waiting for Keystone, Nova and nova-compute
	opOSStart       = "os-start"        // one VM
	novaPoweringOn  = "powering-on"     // Nova's task_state after os-start
	serviceStateUp  = "up"              // a nova-compute service Nova hears from
)

// hostsNotBack returns the hosts whose power-on this startup recorded as
// failed, with why, read from the store so that a resumed job knows them
// too: the storage and OpenStack steps do not wait for what is known to be
// down.
func (e *exec) hostsNotBack() map[string]string {
	out := map[string]string{}
	steps, err := e.jr.Steps(e.db())
	if err != nil {
		e.log.Error("read steps", "err", err)
		return out
	}
	for _, st := range steps {
		if st.Name != StepHosts {
			continue
		}
		as, err := e.jr.StepActions(e.db(), st.ID)
		if err != nil {
			e.log.Error("read host actions", "err", err)
			return out
		}
		for _, a := range as {
			if a.TargetKind == "host" && a.Operation == opPowerOn && a.State == store.ActionFailed {
				out[a.Target] = a.Error
			}
		}
	}
	return out
}

// serviceHost maps a nova-compute service's host to a configured host name:
// Nova may know a host by its fully qualified name.
func serviceHost(h string) string {
	if i := strings.IndexByte(h, '.'); i > 0 {
		return h[:i]
	}
	return h
}

// PowerOn forwards to the session; a power-on always follows a power
// state read that succeeded, so the session is proven by then.
func (b *bmcLink) PowerOn(ctx context.Context) error { return b.ctl.PowerOn(ctx) }

// PowerOn is observed like the other BMC calls.
func (c observedBMC) PowerOn(ctx context.Context) error {
	err := c.PowerController.PowerOn(ctx)
	c.o.PeerCall(PeerBMC, "power-on", err)
	return err
}

// Start is observed like Stop.
func (c observedCloud) Start(ctx context.Context, id string) error {
	err := c.Cloud.Start(ctx, id)
	c.o.PeerCall(PeerNova, "start", err)
	return err
}

// ComputeServices is observed like the server listing.
func (c observedCloud) ComputeServices(ctx context.Context) ([]openstack.ComputeService, error) {
	s, err := c.Cloud.ComputeServices(ctx)
	c.o.PeerCall(PeerNova, "list-services", err)
	return s, err
}
