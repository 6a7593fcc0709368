package nut

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Status flags of ups.status that shutdownd acts on (RFC 9271 section 5.1
// lists them all; the others are kept in Reading.Status as read).
const (
	StatusOnline      = "OL"
	StatusOnBattery   = "OB"
	StatusLowBattery  = "LB"
	StatusForced      = "FSD"
	StatusCharging    = "CHRG"
	StatusDischarging = "DISCHRG"
	StatusReplace     = "RB"
)

// Reading is one read of a UPS: its status flags and the battery.
type Reading struct {
	// At is when the answer arrived.
	At time.Time
	// Status is ups.status split into flags, e.g. ["OB", "DISCHRG"].
	Status []string
	// Charge is battery.charge in percent; HasCharge is false when the UPS
	// does not report it.
	Charge    float64
	HasCharge bool
	// Runtime is battery.runtime; HasRuntime is false when not reported.
	Runtime    time.Duration
	HasRuntime bool
}

// Has reports whether ups.status carries the flag.
func (r Reading) Has(flag string) bool { return slices.Contains(r.Status, flag) }

// OnBattery reports whether the UPS runs on its battery (OB): the mains are
// gone.
func (r Reading) OnBattery() bool { return r.Has(StatusOnBattery) }

// StatusText is ups.status as upsd sent it.
func (r Reading) StatusText() string { return strings.Join(r.Status, " ") }

// ParseReading turns the variables of LIST VAR into a Reading. A UPS without
// ups.status is an error: nothing can be decided from it.
func ParseReading(vars map[string]string, at time.Time) (Reading, error) {
	st, ok := vars["ups.status"]
	if !ok {
		return Reading{}, fmt.Errorf("no ups.status among %d variables", len(vars))
	}
	r := Reading{At: at, Status: strings.Fields(st)}
	if v, ok := vars["battery.charge"]; ok {
		if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && f >= 0 {
			r.Charge, r.HasCharge = f, true
		}
	}
	if v, ok := vars["battery.runtime"]; ok {
		if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && f >= 0 {
			r.Runtime, r.HasRuntime = time.Duration(f*float64(time.Second)), true
		}
	}
	return r, nil
}

// Session keeps one connection to upsd for a watcher: Read dials when there
// is no connection, and after a failure waits out a backoff (doubling from
// MinBackoff to MaxBackoff) before dialling again, so that a dead upsd is
// not hammered, yet a poll never blocks longer than one timeout.
type Session struct {
	opts                   Options
	minBackoff, maxBackoff time.Duration

	mu       sync.Mutex
	c        *Client
	failures int
	retryAt  time.Time
	lastErr  error
}

// NewSession returns a session; nothing is dialled until the first Read.
// minBackoff <= 0 means one second, maxBackoff below minBackoff means 30 s.
func NewSession(o Options, minBackoff, maxBackoff time.Duration) *Session {
	if minBackoff <= 0 {
		minBackoff = time.Second
	}
	if maxBackoff < minBackoff {
		maxBackoff = max(minBackoff, 30*time.Second)
	}
	return &Session{opts: o, minBackoff: minBackoff, maxBackoff: maxBackoff}
}

// Read reads the UPS, dialling first when needed. While a backoff runs it
// returns the last error at once, without touching the network.
func (s *Session) Read(ctx context.Context) (Reading, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == nil {
		if now := time.Now(); now.Before(s.retryAt) {
			return Reading{}, fmt.Errorf("reconnect to upsd in %s: %w", s.retryAt.Sub(now).Round(time.Millisecond), s.lastErr)
		}
		c, err := Dial(ctx, s.opts)
		if err != nil {
			return Reading{}, s.fail(err)
		}
		s.c = c
	}
	vars, err := s.c.Vars(ctx, s.opts.UPS)
	if err != nil {
		// A protocol-level ERR (DATA-STALE: the driver lost the UPS) keeps
		// the connection; anything else breaks it.
		if _, isERR := err.(*Error); !isERR {
			s.c.conn.Close()
			s.c = nil
		}
		return Reading{}, s.fail(fmt.Errorf("read UPS %s: %w", s.opts.UPS, err))
	}
	r, err := ParseReading(vars, time.Now())
	if err != nil {
		return Reading{}, s.fail(fmt.Errorf("read UPS %s: %w", s.opts.UPS, err))
	}
	s.failures, s.retryAt, s.lastErr = 0, time.Time{}, nil
	return r, nil
}

func (s *Session) fail(err error) error {
	s.failures++
	d := s.minBackoff << min(s.failures-1, 16)
	s.retryAt, s.lastErr = time.Now().Add(min(d, s.maxBackoff)), err
	return err
}

// Close ends the connection with LOGOUT, if there is one.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == nil {
		return nil
	}
	err := s.c.Close()
	s.c = nil
	return err
}
