package pool

import (
	"context"
	"sync"
	"time"

	"github.com/edgeops/shutdownd/config"
)

// SSHConn returns the slot of a live, authenticated connection to h,
// shared by every caller until DropSSH: the warm one when it is still
// alive, else one fresh dial. A warm connection may still turn out dead on
// first use; the caller then drops it and asks again.
// The slot identifies the connection for DropSSH (connections themselves
// may not be comparable).
func (p *Pool[C, B]) SSHConn(h config.Host) (*Slot[C], error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrClosed
		}
		s := p.sshSlot(h.Name)
		if !s.started {
			// Not warmed yet (the job got here first): dial now.
			s.started = true
			p.mu.Unlock()
			return p.dialNow(h, s)
		}
		waited := !isDone(s.done)
		p.mu.Unlock()
		select {
		case <-s.done:
		case <-p.job.Done():
			return nil, p.job.Err()
		}
		if s.err == nil && p.alive(s.val) {
			p.mu.Lock()
			s.used = true
			p.mu.Unlock()
			return s, nil
		}
		if s.err != nil && (!s.warm || waited || PermanentSSH(s.err)) {
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
			if s.err == nil {
				// The connection died: an open that failed left none.
				s.val.Close()
			}
		}
		p.mu.Unlock()
	}
}

// dialNow dials h for a caller into s, which the caller started.
func (p *Pool[C, B]) dialNow(h config.Host, s *Slot[C]) (*Slot[C], error) {
	conn, err := p.o.DialHost(p.job, h)
	p.fillSSH(s, conn, err)
	if s.err != nil {
		if !PermanentSSH(s.err) {
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

// alive reports whether c can still serve, as far as can be told.
func (p *Pool[C, B]) alive(c C) bool {
	if lc := p.live(c); lc != nil {
		return lc.Alive()
	}
	return true
}

func (p *Pool[C, B]) live(c C) Live {
	if p.o.Live == nil {
		return nil
	}
	return p.o.Live(c)
}

// SSHWarmFailed reports whether the warm-up tried to reach the host over
// SSH and failed.
func (p *Pool[C, B]) SSHWarmFailed(name string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.ssh[name]
	if s == nil || !s.warm {
		return false
	}
	return isDone(s.done) && s.err != nil
}

func (p *Pool[C, B]) forgetSSH(name string, s *Slot[C]) {
	p.mu.Lock()
	if p.ssh[name] == s {
		delete(p.ssh, name)
	}
	p.mu.Unlock()
}

// DropSSH closes the connection of slot s and forgets it, so that the next
// SSHConn dials again.
func (p *Pool[C, B]) DropSSH(name string, s *Slot[C]) {
	p.forgetSSH(name, s)
	s.val.Close()
}

// TakeBMC hands the host's BMC session over to the caller, who closes it:
// the warm one when its open succeeded, else one fresh open (the BMC may
// have been busy or restarting when it was warmed). warm reports a session
// opened in advance, which can still have expired: the caller reopens it
// if its first read fails.
func (p *Pool[C, B]) TakeBMC(h config.Host) (ctl B, warm bool, err error) {
	var zero B
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return zero, false, ErrClosed
	}
	s := p.bmcSlot(h.Name)
	if s.taken {
		// Only one power-off sequence per host and job run: never here.
		s = newSlot[B]()
		p.bmc[h.Name] = s
	}
	s.taken = true
	if !s.started {
		s.started = true
		p.mu.Unlock()
		ctl, err := p.o.OpenBMC(p.job, h)
		p.fillBMC(s, ctl, err)
		return s.val, false, s.err
	}
	waited := !isDone(s.done)
	p.mu.Unlock()
	select {
	case <-s.done:
	case <-p.job.Done():
		// Not handed over after all: Close logs the session out when
		// the worker is done with it.
		p.mu.Lock()
		s.taken = false
		p.mu.Unlock()
		return zero, false, p.job.Err()
	}
	if s.err == nil {
		return s.val, s.warm, nil
	}
	if !s.warm || waited {
		// The open we waited for was as fresh as a new one.
		return zero, false, s.err
	}
	ctl, err = p.o.OpenBMC(p.job, h)
	if err != nil {
		return zero, false, err
	}
	return ctl, false, nil
}

// keepalive checks the warm SSH connections no step has used yet every
// Options.Keepalive, and dials again, in the background, the ones that
// died. Once a step uses a connection, that step handles its failures.
func (p *Pool[C, B]) keepalive() {
	defer p.wg.Done()
	t := time.NewTicker(p.o.Keepalive)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
		p.requeue(p.checkIdle())
	}
}

// idle is a warm connection no step has used yet.
type idle[C any] struct {
	name string
	s    *Slot[C]
}

// checkIdle sends a keepalive on every idle warm connection, closes and
// forgets those that fail, and returns their hosts.
func (p *Pool[C, B]) checkIdle() []config.Host {
	p.mu.Lock()
	var checks []idle[C]
	for name, s := range p.ssh {
		select {
		case <-s.done:
			if s.err == nil && s.warm && !s.used {
				checks = append(checks, idle[C]{name, s})
			}
		default:
		}
	}
	p.mu.Unlock()
	var redial []config.Host
	for _, c := range checks {
		lc := p.live(c.s.val)
		if lc == nil {
			continue
		}
		if err := lc.Keepalive(p.ctx); err == nil || p.ctx.Err() != nil {
			continue
		}
		p.mu.Lock()
		if p.ssh[c.name] == c.s {
			delete(p.ssh, c.name)
			if h, ok := p.o.Config.Host(c.name); ok {
				redial = append(redial, h)
			}
		}
		p.mu.Unlock()
		c.s.val.Close()
	}
	return redial
}

// requeue puts the hosts at the head of the queue and starts a worker for
// them, unless the pool is closed.
func (p *Pool[C, B]) requeue(redial []config.Host) {
	if len(redial) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	for _, h := range redial {
		p.queue = append([]Task{{Host: h}}, p.queue...)
	}
	p.wg.Add(1)
	go p.worker()
}

// Close ends warm-up and closes every connection and session the pool
// still holds (those handed over by TakeBMC are closed by their taker).
func (p *Pool[C, B]) Close() {
	p.mu.Lock()
	p.closed = true
	p.queue = nil
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
	p.mu.Lock()
	ssh, bmcs := p.ssh, p.bmc
	p.ssh, p.bmc = map[string]*Slot[C]{}, map[string]*Slot[B]{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	closeSlots(&wg, ssh, func(s *Slot[C]) { s.val.Close() })
	closeSlots(&wg, bmcs, func(s *Slot[B]) {
		if !s.taken {
			// A Redfish logout: BMCs have few session slots.
			s.val.Close(context.WithoutCancel(p.ctx))
		}
	})
	wg.Wait()
}

// closeSlots closes, in parallel, the connection of every started slot
// once its dial has ended, if it succeeded.
func closeSlots[T any](wg *sync.WaitGroup, slots map[string]*Slot[T], closeConn func(*Slot[T])) {
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
