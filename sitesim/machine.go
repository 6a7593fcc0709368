// Package sitesim is the simulated edge site: a Keystone+Nova API, SSH hosts
// that record and emulate commands, and Redfish BMCs, all real network peers
// on 127.0.0.1. The demo, the tests and the benchmarks all use it, so the
// service is always exercised over the same protocols it meets on a real site.
//
// Nothing here ever executes a command: the SSH hosts only record what they
// are asked and change simulated state.
package sitesim

import (
	"sync"
	"time"
)

// PowerState is a simulated machine's power state.
type PowerState string

// Power states of a simulated machine.
const (
	PowerOn  PowerState = "On"
	PowerOff PowerState = "Off"
)

// Machine is one physical host's power state, shared by its SSH server and
// its BMC, so that powering off through either is seen by both.
type Machine struct {
	Name string

	mu        sync.Mutex
	state     PowerState
	offAt     time.Time // when a pending power-off completes; zero if none
	offTimer  *time.Timer
	listeners []func(PowerState)
	history   []PowerEvent
	// bootDelay is how long the OS takes after power-on before its
	// services (sshd, nova-compute, the Ceph OSDs) answer; booting is
	// true from power-on until then.
	bootDelay time.Duration
	booting   bool
	bootTimer *time.Timer
}

// PowerEvent records one power transition and what caused it.
type PowerEvent struct {
	At    time.Time
	State PowerState
	Cause string // "ssh", "bmc-soft", "bmc-hard", "test"
}

// NewMachine returns a machine that is powered on.
func NewMachine(name string) *Machine {
	return &Machine{Name: name, state: PowerOn}
}

// State returns the current power state.
func (m *Machine) State() PowerState {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state
}

// OnChange registers f to be called (outside the lock) after every power
// transition; the SSH server uses it to stop accepting connections.
func (m *Machine) OnChange(f func(PowerState)) {
	m.mu.Lock()
	m.listeners = append(m.listeners, f)
	m.mu.Unlock()
}

// PowerOffAfter schedules a power-off after d (an OS shutting down). A second
// call while one is pending keeps the earlier deadline.
func (m *Machine) PowerOffAfter(d time.Duration, cause string) {
	m.mu.Lock()
	if m.state == PowerOff || m.offTimer != nil {
		m.mu.Unlock()
		return
	}
	m.offAt = time.Now().Add(d)
	m.offTimer = time.AfterFunc(d, func() { m.SetState(PowerOff, cause) })
	m.mu.Unlock()
}

// SetState changes the power state at once (a hard off, a BMC power-on, or
// a test). A machine powered on boots for its boot delay (SetBootDelay)
// before Ready reports true.
func (m *Machine) SetState(s PowerState, cause string) {
	m.mu.Lock()
	if m.offTimer != nil {
		m.offTimer.Stop()
		m.offTimer = nil
		m.offAt = time.Time{}
	}
	if m.state == s {
		m.mu.Unlock()
		return
	}
	m.state = s
	m.history = append(m.history, PowerEvent{At: time.Now(), State: s, Cause: cause})
	if m.bootTimer != nil {
		m.bootTimer.Stop()
		m.bootTimer = nil
	}
	m.booting = s == PowerOn && m.bootDelay > 0
	if m.booting {
		m.bootTimer = time.AfterFunc(m.bootDelay, m.booted)
	}
	m.notifyLocked()
}

// notifyLocked calls the listeners with the current state, after releasing
// m.mu (which it expects held).
func (m *Machine) notifyLocked() {
	s := m.state
	ls := append([]func(PowerState){}, m.listeners...)
	m.mu.Unlock()
	for _, f := range ls {
		f(s)
	}
}

// booted ends a boot: the OS is up, its services answer.
func (m *Machine) booted() {
	m.mu.Lock()
	if !m.booting || m.state != PowerOn {
		m.mu.Unlock()
		return
	}
	m.booting = false
	m.bootTimer = nil
	m.history = append(m.history, PowerEvent{At: time.Now(), State: PowerOn, Cause: "booted"})
	m.notifyLocked()
}

// SetBootDelay sets how long the machine takes, after a power-on, before
// its OS answers (SSH, nova-compute, Ceph); 0 (the default) is at once.
func (m *Machine) SetBootDelay(d time.Duration) {
	m.mu.Lock()
	m.bootDelay = d
	m.mu.Unlock()
}

// Ready reports whether the machine is on and done booting: its sshd,
// nova-compute and OSD daemons can run.
func (m *Machine) Ready() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state == PowerOn && !m.booting
}

// OnAt returns when the machine was last powered on (zero if never since
// it was created).
func (m *Machine) OnAt() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := len(m.history) - 1; i >= 0; i-- {
		if m.history[i].State == PowerOn && m.history[i].Cause != "booted" {
			return m.history[i].At
		}
	}
	return time.Time{}
}

// History returns the power transitions so far.
func (m *Machine) History() []PowerEvent {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]PowerEvent(nil), m.history...)
}

// OffAt returns when the machine went off (zero if it is on).
func (m *Machine) OffAt() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := len(m.history) - 1; i >= 0; i-- {
		if m.history[i].State == PowerOff {
			return m.history[i].At
		}
	}
	return time.Time{}
}
