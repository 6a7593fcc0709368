package runner

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/runner/hostctl"
	"github.com/edgeops/shutdownd/store"
)

// connPool holds the SSH connections and BMC sessions of one shutdown job,
// and opens them ahead of need: while the VMs stop, a few workers log in to
// every host and every BMC the later steps will use, in the order they will
// be used (the storage hosts, then each host group). When a host's turn
// comes, its power-off command leaves on a connection that is already
// authenticated, instead of waiting for a TCP, SSH and TLS handshake and a
// Redfish login on a machine busy with seventy others.
//
// Opening a connection or a session changes nothing on a host; the pool
// only exists for shutdown jobs (a simulation makes its own checks). Every
// opened connection is closed when the job ends.
//
// A warm connection may have died by the time it is used (the network, an
// idle timeout, a BMC session expiry): the callers fall back to one fresh
// connection. A warm SSH dial that failed on the host key or the login is
// final (the same key would be refused again, and a host whose key does not
// match is never connected to twice); any other failure is tried again once
// when the host's turn comes.
type connPool struct {
	e      *exec
	ctx    context.Context // cancelled by close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
	ssh    map[string]*slot[HostConn]
	bmc    map[string]*slot[PowerController]
	queue  []warmTask

	stopsBefore int64       // os-stops the runner had sent before this job
	released    atomic.Bool // see release
}

// warmWorkers bounds the connections opened at once in advance: enough to
// warm a hundred hosts in about a second.
const warmWorkers = 8

// Warm-up waits for the VM step's os-stop requests. Each login costs a few
// milliseconds of CPU (key exchange, TLS, Redfish session), and the
// os-stops are the critical path of a shutdown: the slowest VM's stop may be
// among the last sent, and a login in the middle of the listing or the
// sends delays them. So a worker opens nothing until the VM step has sent
// its stops: at least one os-stop went out, none is in flight, and none
// for warmQuiet (a pause between two pages of the server list is not the
// end). The VM step then only polls, and the connections are opened
// meanwhile. The storage and host steps release the warm-up at once when
// they start (a VM step with nothing to stop, or no OpenStack at all, never
// holds it back beyond its own end). Workers look again every warmYield.
const (
	warmQuiet = 200 * time.Millisecond
	warmYield = 20 * time.Millisecond
)

// stopCounter follows the os-stop requests of the runner's cloud client.
type stopCounter struct {
	inFlight atomic.Int64
	total    atomic.Int64
	last     atomic.Int64 // unix nanoseconds of the last one to end
}

// warmKeepalive is how often idle warm SSH connections are checked with a
// keepalive request; one that fails is dialled again in the background.
// A VM step can last minutes, longer than some firewalls keep an idle flow.
var warmKeepalive = 15 * time.Second

type warmTask struct {
	bmc  bool
	host config.Host
}

// slot is one host's connection (or session): opened by a warm-up worker
// or by the first caller, shared (SSH) or handed over (BMC).
type slot[T any] struct {
	started bool
	done    chan struct{} // closed when the open attempt has ended
	val     T
	err     error
	warm    bool // opened in advance by a worker, not on the critical path
	used    bool // SSH only: handed to a step, which handles its failures
	taken   bool // BMC only: handed over to a host's power-off sequence
}

func newSlot[T any]() *slot[T] { return &slot[T]{done: make(chan struct{})} }

// startPool starts warming the connections of a shutdown job. hosts that a
// resumed job already confirmed Off are left out.
func startPool(e *exec) *connPool {
	ctx, cancel := context.WithCancel(e.ctx)
	p := &connPool{e: e, ctx: ctx, cancel: cancel,
		ssh: map[string]*slot[HostConn]{}, bmc: map[string]*slot[PowerController]{},
		stopsBefore: e.r.nova.total.Load()}
	p.queue = warmPlan(e.r.cfg, e.confirmedOff())
	start, total := time.Now(), len(p.queue)
	n := min(warmWorkers, len(p.queue))
	var workers sync.WaitGroup
	workers.Add(n)
	p.wg.Add(n + 1)
	for range n {
		go func() {
			defer workers.Done()
			p.worker()
		}()
	}
	go func() {
		defer p.wg.Done()
		workers.Wait()
		p.logWarm(total, time.Since(start))
	}()
	p.wg.Add(1)
	go p.keepalive()
	return p
}

// logWarm logs how the warm-up went, once its workers are done.
func (p *connPool) logWarm(total int, took time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ssh, bmcs, failed int
	for _, s := range p.ssh {
		if s.warm && isDone(s.done) {
			if s.err != nil {
				failed++
			} else {
				ssh++
			}
		}
	}
	for _, s := range p.bmc {
		if s.warm && isDone(s.done) {
			if s.err != nil {
				failed++
			} else {
				bmcs++
			}
		}
	}
	p.e.log.Info("connections opened in advance", "planned", total, "ssh", ssh, "bmc", bmcs, "failed", failed, "took", took.Round(time.Millisecond))
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// warmPlan lists what to open, in the order the job will need it: SSH to
// the storage step's hosts (the admin host first), then SSH and BMC of each
// host group in shutdown order.
func warmPlan(cfg *config.Config, skip map[string]bool) []warmTask {
	var tasks []warmTask
	seen := map[string]bool{}
	add := func(h config.Host, withBMC bool) {
		if skip[h.Name] {
			return
		}
		if !seen["ssh\x00"+h.Name] {
			seen["ssh\x00"+h.Name] = true
			tasks = append(tasks, warmTask{host: h})
		}
		if withBMC && h.BMC != nil && !seen["bmc\x00"+h.Name] {
			seen["bmc\x00"+h.Name] = true
			tasks = append(tasks, warmTask{bmc: true, host: h})
		}
	}
	for _, c := range cfg.Storage.Plan() {
		if h, ok := cfg.Host(c.Host); ok {
			add(h, false)
		}
	}
	for _, g := range cfg.HostGroups() {
		for _, h := range g {
			add(h, true)
		}
	}
	return tasks
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

func (p *connPool) worker() {
	defer p.wg.Done()
	for {
		for !p.mayWarm() {
			select {
			case <-p.ctx.Done():
				return
			case <-time.After(warmYield):
			}
		}
		p.mu.Lock()
		if p.closed || len(p.queue) == 0 {
			p.mu.Unlock()
			return
		}
		t := p.queue[0]
		p.queue = p.queue[1:]
		var run func()
		if t.bmc {
			s := p.bmcSlot(t.host.Name)
			if !s.started {
				s.started, s.warm = true, true
				run = func() {
					ctl, err := p.e.r.deps.OpenBMC(p.ctx, t.host)
					p.fillBMC(s, ctl, err)
				}
			}
		} else {
			s := p.sshSlot(t.host.Name)
			if !s.started {
				s.started, s.warm = true, true
				run = func() {
					conn, err := p.e.r.deps.DialHost(p.ctx, t.host)
					p.fillSSH(s, conn, err)
				}
			}
		}
		p.mu.Unlock()
		if run != nil {
			run()
		}
	}
}

// mayWarm reports whether the warm-up may open a connection now (see
// warmQuiet).
func (p *connPool) mayWarm() bool {
	if p.released.Load() {
		return true
	}
	n := &p.e.r.nova
	if n.total.Load() == p.stopsBefore || n.inFlight.Load() > 0 {
		return false
	}
	return time.Since(time.Unix(0, n.last.Load())) >= warmQuiet
}

// release lets the warm-up go on regardless of the VM step: the step that
// needs the connections has started.
func (p *connPool) release() {
	if p != nil {
		p.released.Store(true)
	}
}

// sshSlot and bmcSlot return the host's current slot; p.mu is held.
func (p *connPool) sshSlot(name string) *slot[HostConn] {
	s := p.ssh[name]
	if s == nil {
		s = newSlot[HostConn]()
		p.ssh[name] = s
	}
	return s
}

func (p *connPool) bmcSlot(name string) *slot[PowerController] {
	s := p.bmc[name]
	if s == nil {
		s = newSlot[PowerController]()
		p.bmc[name] = s
	}
	return s
}

func (p *connPool) fillSSH(s *slot[HostConn], conn HostConn, err error) {
	if err != nil {
		conn = nil // not a typed nil pointer in the interface
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil && p.closed {
		conn.Close()
		conn, err = nil, errPoolClosed
	}
	s.val, s.err = conn, err
	close(s.done)
}

func (p *connPool) fillBMC(s *slot[PowerController], ctl PowerController, err error) {
	if err != nil {
		ctl = nil
	}
	p.mu.Lock()
	closed := p.closed
	if err == nil && closed {
		defer ctl.Close(context.WithoutCancel(p.ctx))
		ctl, err = nil, errPoolClosed
	}
	s.val, s.err = ctl, err
	close(s.done)
	p.mu.Unlock()
}

var errPoolClosed = errors.New("job ended")

// permanentSSH reports whether a failed dial would fail the same way again:
// the host key or our key was refused, or the host is this machine.
func permanentSSH(err error) bool {
	return errors.Is(err, hostctl.ErrHostKeyMismatch) || errors.Is(err, hostctl.ErrHostKeyUnknown) ||
		errors.Is(err, hostctl.ErrAuth) || errors.Is(err, hostctl.ErrThisMachine)
}

// sshConn returns the slot of a live, authenticated connection to h,
// shared by every caller until dropSSH: the warm one when it is still
// alive, else one fresh dial. A warm connection may still turn out dead on
// first use (see exec.onHost).
// The slot identifies the connection for dropSSH (connections themselves
// may not be comparable).
func (p *connPool) sshConn(h config.Host) (*slot[HostConn], error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, errPoolClosed
		}
		s := p.sshSlot(h.Name)
		if !s.started {
			// Not warmed yet (the job got here first): dial now.
			s.started = true
			p.mu.Unlock()
			conn, err := p.e.r.deps.DialHost(p.e.ctx, h)
			p.fillSSH(s, conn, err)
			if s.err != nil {
				if !permanentSSH(s.err) {
					// The next use (a later step) tries again.
					p.forgetSSH(h.Name, s)
				}
				return nil, s.err
			}
			p.mu.Lock()
			s.used = true
			p.mu.Unlock()
			return s, nil
		}
		waited := !isDone(s.done)
		p.mu.Unlock()
		select {
		case <-s.done:
		case <-p.e.ctx.Done():
			return nil, p.e.ctx.Err()
		}
		if s.err == nil && connAlive(s.val) {
			p.mu.Lock()
			s.used = true
			p.mu.Unlock()
			return s, nil
		}
		if s.err != nil && (!s.warm || waited || permanentSSH(s.err)) {
			// A dial made for this use failed (ours or another caller's,
			// or a warm-up dial still running when we asked), or the
			// host's key is refused: no second attempt.
			return nil, s.err
		}
		// The warm connection died, or the warm dial failed: replace the
		// slot and go round once more, which dials fresh.
		p.mu.Lock()
		if p.ssh[h.Name] == s {
			delete(p.ssh, h.Name)
			if s.val != nil {
				s.val.Close()
			}
		}
		p.mu.Unlock()
	}
}

// sshWarmFailed reports whether the warm-up tried to reach h over SSH and
// failed.
func (p *connPool) sshWarmFailed(name string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.ssh[name]
	if s == nil || !s.warm {
		return false
	}
	return isDone(s.done) && s.err != nil
}

func (p *connPool) forgetSSH(name string, s *slot[HostConn]) {
	p.mu.Lock()
	if p.ssh[name] == s {
		delete(p.ssh, name)
	}
	p.mu.Unlock()
}

// dropSSH closes the connection of slot s and forgets it, so that the next
// sshConn dials again.
func (p *connPool) dropSSH(name string, s *slot[HostConn]) {
	p.mu.Lock()
	if p.ssh[name] == s {
		delete(p.ssh, name)
	}
	p.mu.Unlock()
	s.val.Close()
}

// takeBMC hands h's BMC session over to the caller, who closes it: the
// warm one when its open succeeded, else one fresh open (the BMC may have
// been busy or restarting when it was warmed). A warm session can still
// have expired: bmcLink reopens it if its first read fails.
func (p *connPool) takeBMC(h config.Host) (ctl PowerController, warm bool, err error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, false, errPoolClosed
	}
	s := p.bmcSlot(h.Name)
	if s.taken {
		// Only one power-off sequence per host and job run: never here.
		s = newSlot[PowerController]()
		p.bmc[h.Name] = s
	}
	s.taken = true
	if !s.started {
		s.started = true
		p.mu.Unlock()
		ctl, err := p.e.r.deps.OpenBMC(p.e.ctx, h)
		p.fillBMC(s, ctl, err)
		return s.val, false, s.err
	}
	waited := !isDone(s.done)
	p.mu.Unlock()
	select {
	case <-s.done:
	case <-p.e.ctx.Done():
		// Not handed over after all: close logs the session out when
		// the worker is done with it.
		p.mu.Lock()
		s.taken = false
		p.mu.Unlock()
		return nil, false, p.e.ctx.Err()
	}
	if s.err == nil {
		return s.val, s.warm, nil
	}
	if !s.warm || waited {
		// The open we waited for was as fresh as a new one.
		return nil, false, s.err
	}
	ctl, err = p.e.r.deps.OpenBMC(p.e.ctx, h)
	if err != nil {
		return nil, false, err
	}
	return ctl, false, nil
}

// keepalive checks the warm SSH connections no step has used yet every
// warmKeepalive, and dials again, in the background, the ones that died.
// Once a step uses a connection, that step handles its failures.
func (p *connPool) keepalive() {
	defer p.wg.Done()
	t := time.NewTicker(warmKeepalive)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
		p.mu.Lock()
		type check struct {
			name string
			s    *slot[HostConn]
		}
		var checks []check
		for name, s := range p.ssh {
			select {
			case <-s.done:
				if s.err == nil && s.warm && !s.used {
					checks = append(checks, check{name, s})
				}
			default:
			}
		}
		p.mu.Unlock()
		var redial []config.Host
		for _, c := range checks {
			lc := liveness(c.s.val)
			if lc == nil {
				continue
			}
			if err := lc.Keepalive(p.ctx); err == nil || p.ctx.Err() != nil {
				continue
			}
			p.mu.Lock()
			if p.ssh[c.name] == c.s {
				delete(p.ssh, c.name)
				if h, ok := p.e.r.cfg.Host(c.name); ok {
					redial = append(redial, h)
				}
			}
			p.mu.Unlock()
			c.s.val.Close()
		}
		if len(redial) == 0 {
			continue
		}
		p.mu.Lock()
		if !p.closed {
			for _, h := range redial {
				p.queue = append([]warmTask{{host: h}}, p.queue...)
			}
			p.wg.Add(1)
			go p.worker()
		}
		p.mu.Unlock()
	}
}

// close ends warm-up and closes every connection and session the pool
// still holds (those handed to a host's sequence are closed by it).
func (p *connPool) close() {
	p.mu.Lock()
	p.closed = true
	p.queue = nil
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
	p.mu.Lock()
	ssh, bmcs := p.ssh, p.bmc
	p.ssh, p.bmc = map[string]*slot[HostConn]{}, map[string]*slot[PowerController]{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	closeSlots(&wg, ssh, func(s *slot[HostConn]) { s.val.Close() })
	closeSlots(&wg, bmcs, func(s *slot[PowerController]) {
		if !s.taken {
			// A Redfish logout: BMCs have few session slots.
			s.val.Close(context.WithoutCancel(p.ctx))
		}
	})
	wg.Wait()
}

// closeSlots closes, in parallel, the connection of every started slot
// once its dial has ended, if it succeeded.
func closeSlots[T any](wg *sync.WaitGroup, slots map[string]*slot[T], closeConn func(*slot[T])) {
	for _, s := range slots {
		if !s.started {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-s.done
			if s.err == nil {
				closeConn(s)
			}
		}()
	}
}

// liveConn is what hostctl.Conn offers beyond HostConn.
type liveConn interface {
	Alive() bool
	Keepalive(ctx context.Context) error
}

// liveness finds the liveConn behind c (through the metrics wrapper), or
// nil.
func liveness(c HostConn) liveConn {
	for {
		switch v := c.(type) {
		case liveConn:
			return v
		case observedConn:
			c = v.HostConn
		default:
			return nil
		}
	}
}

func connAlive(c HostConn) bool {
	if lc := liveness(c); lc != nil {
		return lc.Alive()
	}
	return true
}

// countStops wraps the cloud opener so that the runner follows its os-stop
// requests (see warmQuiet).
func countStops(d *deps, n *stopCounter) {
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
	n *stopCounter
}

func (c countedCloud) Stop(ctx context.Context, id string) error {
	c.n.total.Add(1)
	c.n.inFlight.Add(1)
	defer func() {
		c.n.last.Store(time.Now().UnixNano())
		c.n.inFlight.Add(-1)
	}()
	return c.Cloud.Stop(ctx, id)
}
