package runner

import (
	"context"
	"errors"
	"net"
	"os"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/runner/bmc"
	"github.com/edgeops/shutdownd/runner/hostctl"
	"github.com/edgeops/shutdownd/runner/openstack"
	"github.com/edgeops/shutdownd/store"
)

// Observer learns about a job's life as it happens; metrics and webhook
// notifications hang off it, so the engine knows neither. The runner calls
// it on its own goroutines, in the middle of a shutdown: an implementation
// must return at once and never wait on the network (queue instead), or it
// would delay the shutdown it observes.
type Observer interface {
	// JobStarted is called when a job starts running (also when a shutdown
	// resumes after a restart).
	JobStarted(ctx context.Context, job store.Job)
	// StepFinished is called after a step's final state is stored.
	StepFinished(ctx context.Context, job store.Job, step store.Step)
	// JobFinished is called after the job's final state is stored, before
	// a self host is powered off.
	JobFinished(ctx context.Context, job store.Job)
	// PeerCall is called after every request to a peer (PeerNova, PeerSSH,
	// PeerBMC); err is nil on success. op names the request ("stop",
	// "list-servers", "dial", "run", "power-state", ...).
	PeerCall(peer, op string, err error)
}

// Peers named in Observer.PeerCall.
const (
	PeerNova = "nova"
	PeerSSH  = "ssh"
	PeerBMC  = "bmc"
)

// Drainer is an Observer with deliveries of its own in flight (the
// notifier's webhooks). Before the self host is powered off, the runner
// gives it a bounded time to finish them, so the job.finished message is
// not lost with the machine. Drain returns how many are still pending when
// it gives up (0: all done).
type Drainer interface {
	Drain(ctx context.Context) (pending int)
}

// StoreObserver is an Observer that also learns when the store refuses a
// write (disk full, I/O error, read-only) and how many records the runner
// holds in memory because of it (metrics).
type StoreObserver interface {
	// StoreWriteFailed is called for every write the store refused,
	// retries included.
	StoreWriteFailed()
	// RecordsUnsaved is called with the number of records held in memory
	// whenever it changes.
	RecordsUnsaved(n int)
}

// Observers fans calls out to several observers, in order; nil entries are
// skipped.
func Observers(obs ...Observer) Observer {
	var list multiObserver
	for _, o := range obs {
		if o != nil {
			list = append(list, o)
		}
	}
	return list
}

type multiObserver []Observer

func (m multiObserver) JobStarted(ctx context.Context, j store.Job) {
	for _, o := range m {
		o.JobStarted(ctx, j)
	}
}

func (m multiObserver) StepFinished(ctx context.Context, j store.Job, s store.Step) {
	for _, o := range m {
		o.StepFinished(ctx, j, s)
	}
}

func (m multiObserver) JobFinished(ctx context.Context, j store.Job) {
	for _, o := range m {
		o.JobFinished(ctx, j)
	}
}

func (m multiObserver) PeerCall(peer, op string, err error) {
	for _, o := range m {
		o.PeerCall(peer, op, err)
	}
}

// StoreWriteFailed tells every member that is a StoreObserver.
func (m multiObserver) StoreWriteFailed() {
	for _, o := range m {
		if so, ok := o.(StoreObserver); ok {
			so.StoreWriteFailed()
		}
	}
}

// RecordsUnsaved tells every member that is a StoreObserver.
func (m multiObserver) RecordsUnsaved(n int) {
	for _, o := range m {
		if so, ok := o.(StoreObserver); ok {
			so.RecordsUnsaved(n)
		}
	}
}

// Drain drains every member that is a Drainer, one after the other, within
// the one ctx.
func (m multiObserver) Drain(ctx context.Context) (pending int) {
	for _, o := range m {
		if d, ok := o.(Drainer); ok {
			pending += d.Drain(ctx)
		}
	}
	return pending
}

// ErrorKind classifies a peer error for metrics labels: a small fixed set,
// never the error text (which may hold addresses or grow without bound).
func ErrorKind(err error) string {
	var ne net.Error
	switch {
	case err == nil:
		return ""
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.Is(err, hostctl.ErrCommandTimeout), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, hostctl.ErrUnreachable):
		return "unreachable"
	case errors.Is(err, hostctl.ErrAuth):
		return "auth"
	case errors.Is(err, hostctl.ErrHostKeyMismatch), errors.Is(err, hostctl.ErrHostKeyUnknown):
		return "host_key"
	case errors.Is(err, openstack.ErrConflict):
		return "conflict"
	case errors.Is(err, openstack.ErrNotFound):
		return "not_found"
	case errors.Is(err, bmc.ErrUnexpectedState):
		return "unexpected_state"
	}
	return "other"
}

// observe reports the job's state to the observer; the job is re-read so
// the observer sees what the store holds (final state, times, on_track).
func (e *exec) observe(call func(o Observer, j store.Job)) {
	o := e.r.obs
	if o == nil {
		return
	}
	j, err := e.r.store.Job(e.db(), e.job.ID)
	if err != nil {
		e.log.Error("read job for observer", "err", err)
		return
	}
	call(o, j)
}

func (e *exec) jobStarted() {
	e.checkDeadline(nil)
	e.observe(func(o Observer, j store.Job) { o.JobStarted(e.db(), j) })
}

func (e *exec) stepFinished(stepID int64) {
	steps, err := e.jr.Steps(e.db())
	if err != nil {
		e.log.Error("read steps", "err", err)
		return
	}
	e.checkDeadline(steps)
	if e.r.obs == nil {
		return
	}
	for _, st := range steps {
		if st.ID == stepID {
			e.observe(func(o Observer, j store.Job) { o.StepFinished(e.db(), j, st) })
			return
		}
	}
}

func (e *exec) jobFinished() {
	e.observe(func(o Observer, j store.Job) { o.JobFinished(e.db(), j) })
}

// jobFinishedHeld tells the observer about a job whose final state the
// store could not take yet: the job as it will be stored, not as it is.
func (e *exec) jobFinishedHeld(state store.State, msg string) {
	e.observe(func(o Observer, j store.Job) {
		now := time.Now()
		j.State, j.Error, j.FinishedAt, j.CurrentStep = state, msg, &now, ""
		o.JobFinished(e.db(), j)
	})
}

// observeDeps wraps the peer openers so that every request is reported to
// o. Wrapping the seams keeps the engine's code free of metrics calls.
func observeDeps(d deps, o Observer) deps {
	openCloud, dialHost, openBMC := d.OpenCloud, d.DialHost, d.OpenBMC
	d.OpenCloud = func(ctx context.Context, cfg config.OpenStack, onRetry func(op string, attempt int, err error)) (Cloud, error) {
		c, err := openCloud(ctx, cfg, func(op string, attempt int, err error) {
			// A retry is a request that failed.
			o.PeerCall(PeerNova, op, err)
			if onRetry != nil {
				onRetry(op, attempt, err)
			}
		})
		o.PeerCall(PeerNova, "authenticate", err)
		if err != nil {
			return nil, err
		}
		return observedCloud{c, o}, nil
	}
	d.DialHost = func(ctx context.Context, h config.Host) (HostConn, error) {
		c, err := dialHost(ctx, h)
		o.PeerCall(PeerSSH, "dial", err)
		if err != nil {
			return nil, err
		}
		return observedConn{c, o}, nil
	}
	d.OpenBMC = func(ctx context.Context, h config.Host) (PowerController, error) {
		c, err := openBMC(ctx, h)
		o.PeerCall(PeerBMC, "open", err)
		if err != nil {
			return nil, err
		}
		return observedBMC{c, o}, nil
	}
	return d
}

type observedCloud struct {
	Cloud
	o Observer
}

func (c observedCloud) ListServers(ctx context.Context) ([]openstack.Server, error) {
	s, err := c.Cloud.ListServers(ctx)
	c.o.PeerCall(PeerNova, "list-servers", err)
	return s, err
}

func (c observedCloud) ListServerPages(ctx context.Context, sizes []int, fn func([]openstack.Server) error) error {
	err := c.Cloud.ListServerPages(ctx, sizes, fn)
	c.o.PeerCall(PeerNova, "list-servers", err)
	return err
}

func (c observedCloud) Stop(ctx context.Context, id string) error {
	err := c.Cloud.Stop(ctx, id)
	c.o.PeerCall(PeerNova, "stop", err)
	return err
}

type observedConn struct {
	HostConn
	o Observer
}

func (c observedConn) Run(ctx context.Context, cmd string) (hostctl.Result, error) {
	r, err := c.HostConn.Run(ctx, cmd)
	c.o.PeerCall(PeerSSH, "run", err)
	return r, err
}

func (c observedConn) PowerOff(ctx context.Context, cmd string) error {
	err := c.HostConn.PowerOff(ctx, cmd)
	c.o.PeerCall(PeerSSH, "poweroff", err)
	return err
}

type observedBMC struct {
	PowerController
	o Observer
}

func (c observedBMC) PowerState(ctx context.Context) (bmc.PowerState, error) {
	s, err := c.PowerController.PowerState(ctx)
	c.o.PeerCall(PeerBMC, "power-state", err)
	return s, err
}

func (c observedBMC) SoftOff(ctx context.Context) error {
	err := c.PowerController.SoftOff(ctx)
	c.o.PeerCall(PeerBMC, "soft-off", err)
	return err
}

func (c observedBMC) HardOff(ctx context.Context) error {
	err := c.PowerController.HardOff(ctx)
	c.o.PeerCall(PeerBMC, "hard-off", err)
	return err
}
