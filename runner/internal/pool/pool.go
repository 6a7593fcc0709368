// Package pool opens the SSH connections and BMC sessions of one shutdown
// job ahead of need, keeps them, and hands them to the steps that use them.
//
// While the VMs stop, a few workers log in to every host and every BMC the
// later steps will use, so that when a host's turn comes its power-off
// command leaves on a connection that is already authenticated, instead of
// waiting for a TCP, SSH and TLS handshake and a Redfish login on a machine
// busy with seventy others. Opening a connection or a session changes
// nothing on a host; the runner starts a pool for shutdown jobs only.
//
// What it guarantees:
//
//   - What is opened, in which order. Plan lists it: SSH to the storage
//     step's hosts (the admin host first), then SSH and BMC of each host
//     group in shutdown order, each once. Hosts in Options.Skip (a resumed
//     job's hosts already confirmed Off) are never opened in advance.
//   - When. Nothing is opened until the VM step has sent its os-stops (see
//     StopCounter: at least one went out since the pool started, none is in
//     flight, and none for Quiet), or until Release (the storage and host
//     steps call it when they start). The os-stops are the shutdown's
//     critical path, and a login costs CPU.
//   - How many at once. At most Workers opens run in advance at the same
//     time; opens asked for by a step (SSHConn, TakeBMC) are not counted.
//   - One connection per host. A host's SSH connection is shared by every
//     caller until DropSSH; its BMC session is handed over once (TakeBMC),
//     and a caller that finds an open still running waits for it rather
//     than opening a second one.
//   - A failed open. A warm SSH dial refused on the host key or the login,
//     or one that reached this machine, is final: the host is never dialled
//     again in this job (the same key would be refused again, and a host
//     whose key does not match is never connected to twice). Any other
//     failed warm open is tried once more when a step asks; an open a step
//     asked for (or waited for) that fails is not retried by the pool. A
//     warm SSH connection found dead when asked for is replaced by one
//     fresh dial.
//   - Idle connections are checked. Every Options.Keepalive, warm SSH
//     connections no step has used yet are sent a keepalive; one that fails
//     is closed and dialled again in the background, ahead of the plan.
//   - Cancel. Advance opens run under a context cancelled by Close; opens
//     and waits a step asks for run under the job's context, and a wait
//     cancelled with it returns the context's error (a BMC session it was
//     waiting for stays the pool's, and Close logs it out).
//   - Who closes what. Close ends the warm-up, waits for its workers, and
//     closes every SSH connection the pool still holds and logs out every
//     BMC session not handed over. A session handed over by TakeBMC is the
//     caller's to close; a connection dropped by DropSSH is closed by it. A
//     connection that finishes opening after Close is closed at once.
//
// Resume: a resumed job starts a new pool; the runner reads from the store
// which hosts the earlier run confirmed Off and passes them as Skip. Nothing
// else carries over from the earlier run.
package pool

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/runner/hostctl"
)

// Workers bounds the connections opened at once in advance: enough to warm
// a hundred hosts in about a second.
const Workers = 8

// Warm-up waits for the VM step's os-stop requests. Each login costs a few
// milliseconds of CPU (key exchange, TLS, Redfish session), and the
// os-stops are the critical path of a shutdown: the slowest VM's stop may be
// among the last sent, and a login in the middle of the listing or the
// sends delays them. So a worker opens nothing until the VM step has sent
// its stops: at least one os-stop went out, none is in flight, and none
// for Quiet (a pause between two pages of the server list is not the end).
// The VM step then only polls, and the connections are opened meanwhile.
// The storage and host steps release the warm-up at once when they start
// (a VM step with nothing to stop, or no OpenStack at all, never holds it
// back beyond its own end). Workers look again every Yield.
const (
	Quiet = 200 * time.Millisecond
	Yield = 20 * time.Millisecond
)

// DefaultKeepalive is how often idle warm SSH connections are checked. A
// VM step can last minutes, longer than some firewalls keep an idle flow.
const DefaultKeepalive = 15 * time.Second

// ErrClosed is returned for a connection asked for, or finished opening,
// after Close.
var ErrClosed = errors.New("job ended")

// Conn is what the pool needs of an SSH connection.
type Conn interface{ Close() error }

// Session is what the pool needs of a BMC session: a Redfish session is
// logged out with a context.
type Session interface {
	Close(ctx context.Context) error
}

// Live is what an SSH connection may offer to be checked while it waits
// (hostctl.Conn does).
type Live interface {
	Alive() bool
	Keepalive(ctx context.Context) error
}

// Options are what a pool needs from the runner.
type Options[C Conn, B Session] struct {
	// Config gives the plan (storage and host groups) and the hosts that
	// are dialled again after a failed keepalive.
	Config *config.Config
	// Skip names the hosts never opened in advance (a resumed job's hosts
	// already confirmed Off).
	Skip map[string]bool
	// DialHost and OpenBMC open one connection or session; the pool calls
	// them from its workers and from the callers of SSHConn and TakeBMC.
	DialHost func(ctx context.Context, h config.Host) (C, error)
	OpenBMC  func(ctx context.Context, h config.Host) (B, error)
	// Live finds what checks a connection (through any wrappers), or nil
	// when it cannot be checked; a nil Live means none can.
	Live func(C) Live
	// Stops follows the runner's os-stop requests (see Quiet); nil means
	// the warm-up waits for Release.
	Stops *StopCounter
	// Keepalive is how often idle warm connections are checked (default
	// DefaultKeepalive).
	Keepalive time.Duration
	Logger    *slog.Logger
}

// StopCounter follows the os-stop requests of the runner's cloud client.
// Its zero value is ready; it is safe for concurrent use.
type StopCounter struct {
	inFlight atomic.Int64
	total    atomic.Int64
	last     atomic.Int64 // unix nanoseconds of the last one to end
}

// Begin records an os-stop request leaving; call the returned function
// when it has ended, whatever its result.
func (n *StopCounter) Begin() (end func()) {
	n.total.Add(1)
	n.inFlight.Add(1)
	return func() {
		n.last.Store(time.Now().UnixNano())
		n.inFlight.Add(-1)
	}
}

// Pool holds the SSH connections (C) and BMC sessions (B) of one job. It
// is safe for concurrent use; the nil *Pool is one that Release ignores.
type Pool[C Conn, B Session] struct {
	o      Options[C, B]
	job    context.Context // the job's: opens and waits a step asks for
	ctx    context.Context // cancelled by Close: advance opens
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
	ssh    map[string]*Slot[C]
	bmc    map[string]*Slot[B]
	queue  []Task

	stopsBefore int64       // os-stops sent before this job
	released    atomic.Bool // see Release
}

// Task is one open the warm-up makes: an SSH connection, or a BMC session.
type Task struct {
	BMC  bool
	Host config.Host
}

// Slot is one host's connection (or session): opened by a warm-up worker
// or by the first caller, shared (SSH) or handed over (BMC).
type Slot[T any] struct {
	started bool
	done    chan struct{} // closed when the open attempt has ended
	val     T
	err     error
	warm    bool // opened in advance by a worker, not on the critical path
	used    bool // SSH only: handed to a step, which handles its failures
	taken   bool // BMC only: handed over to a host's power-off sequence
}

// Conn is the slot's connection.
func (s *Slot[T]) Conn() T { return s.val }

func newSlot[T any]() *Slot[T] { return &Slot[T]{done: make(chan struct{})} }

// Start starts warming the connections of a job whose context is job. Call
// Close when the job ends.
func Start[C Conn, B Session](job context.Context, o Options[C, B]) *Pool[C, B] {
	if o.Keepalive <= 0 {
		o.Keepalive = DefaultKeepalive
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(job)
	p := &Pool[C, B]{o: o, job: job, ctx: ctx, cancel: cancel,
		ssh: map[string]*Slot[C]{}, bmc: map[string]*Slot[B]{}}
	if o.Stops != nil {
		p.stopsBefore = o.Stops.total.Load()
	}
	p.queue = Plan(o.Config, o.Skip)
	start, total := time.Now(), len(p.queue)
	n := min(Workers, len(p.queue))
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
func (p *Pool[C, B]) logWarm(total int, took time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ssh, sshFailed := countWarm(p.ssh)
	bmcs, bmcFailed := countWarm(p.bmc)
	p.o.Logger.Info("connections opened in advance", "planned", total, "ssh", ssh, "bmc", bmcs,
		"failed", sshFailed+bmcFailed, "took", took.Round(time.Millisecond))
}

// countWarm counts the warm opens that have ended, by result; p.mu is held.
func countWarm[T any](slots map[string]*Slot[T]) (ok, failed int) {
	for _, s := range slots {
		if s.warm && isDone(s.done) {
			if s.err != nil {
				failed++
			} else {
				ok++
			}
		}
	}
	return ok, failed
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Plan lists what to open, in the order the job will need it: SSH to the
// storage step's hosts (the admin host first), then SSH and BMC of each
// host group in shutdown order. Hosts in skip are left out.
func Plan(cfg *config.Config, skip map[string]bool) []Task {
	var tasks []Task
	seen := map[string]bool{}
	add := func(h config.Host, withBMC bool) {
		if skip[h.Name] {
			return
		}
		if !seen["ssh\x00"+h.Name] {
			seen["ssh\x00"+h.Name] = true
			tasks = append(tasks, Task{Host: h})
		}
		if withBMC && h.BMC != nil && !seen["bmc\x00"+h.Name] {
			seen["bmc\x00"+h.Name] = true
			tasks = append(tasks, Task{BMC: true, Host: h})
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

func (p *Pool[C, B]) worker() {
	defer p.wg.Done()
	for {
		for !p.mayWarm() {
			select {
			case <-p.ctx.Done():
				return
			case <-time.After(Yield):
			}
		}
		run, ok := p.next()
		if !ok {
			return
		}
		if run != nil {
			run()
		}
	}
}

// next takes the next task off the queue and returns its open, nil when
// its slot was started already (a step got there first); ok is false when
// the queue is empty or the pool closed.
func (p *Pool[C, B]) next() (run func(), ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.queue) == 0 {
		return nil, false
	}
	t := p.queue[0]
	p.queue = p.queue[1:]
	if t.BMC {
		s := p.bmcSlot(t.Host.Name)
		if !s.started {
			s.started, s.warm = true, true
			return func() {
				ctl, err := p.o.OpenBMC(p.ctx, t.Host)
				p.fillBMC(s, ctl, err)
			}, true
		}
		return nil, true
	}
	s := p.sshSlot(t.Host.Name)
	if !s.started {
		s.started, s.warm = true, true
		return func() {
			conn, err := p.o.DialHost(p.ctx, t.Host)
			p.fillSSH(s, conn, err)
		}, true
	}
	return nil, true
}

// mayWarm reports whether the warm-up may open a connection now (see
// Quiet).
func (p *Pool[C, B]) mayWarm() bool {
	if p.released.Load() {
		return true
	}
	n := p.o.Stops
	if n == nil || n.total.Load() == p.stopsBefore || n.inFlight.Load() > 0 {
		return false
	}
	return time.Since(time.Unix(0, n.last.Load())) >= Quiet
}

// Release lets the warm-up go on regardless of the VM step: the step that
// needs the connections has started.
func (p *Pool[C, B]) Release() {
	if p != nil {
		p.released.Store(true)
	}
}

// sshSlot and bmcSlot return the host's current slot; p.mu is held.
func (p *Pool[C, B]) sshSlot(name string) *Slot[C] {
	s := p.ssh[name]
	if s == nil {
		s = newSlot[C]()
		p.ssh[name] = s
	}
	return s
}

func (p *Pool[C, B]) bmcSlot(name string) *Slot[B] {
	s := p.bmc[name]
	if s == nil {
		s = newSlot[B]()
		p.bmc[name] = s
	}
	return s
}

func (p *Pool[C, B]) fillSSH(s *Slot[C], conn C, err error) {
	if err != nil {
		var zero C
		conn = zero // not a typed nil pointer in the interface
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil && p.closed {
		conn.Close()
		var zero C
		conn, err = zero, ErrClosed
	}
	s.val, s.err = conn, err
	close(s.done)
}

func (p *Pool[C, B]) fillBMC(s *Slot[B], ctl B, err error) {
	if err != nil {
		var zero B
		ctl = zero
	}
	p.mu.Lock()
	closed := p.closed
	if err == nil && closed {
		defer ctl.Close(context.WithoutCancel(p.ctx))
		var zero B
		ctl, err = zero, ErrClosed
	}
	s.val, s.err = ctl, err
	close(s.done)
	p.mu.Unlock()
}

// PermanentSSH reports whether a failed dial would fail the same way again:
// the host key or our key was refused, or the host is this machine.
func PermanentSSH(err error) bool {
	return errors.Is(err, hostctl.ErrHostKeyMismatch) || errors.Is(err, hostctl.ErrHostKeyUnknown) ||
		errors.Is(err, hostctl.ErrAuth) || errors.Is(err, hostctl.ErrThisMachine)
}
