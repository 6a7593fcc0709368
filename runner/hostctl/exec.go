package hostctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"
)

// ErrCommandTimeout is the error (wrapped) when a command outlives the
// target's CommandTimeout.
var ErrCommandTimeout = errors.New("command timed out")

// Result is what a command printed and how it ended. ExitStatus is -1 when
// the command did not report one (timeout, dropped connection).
type Result struct {
	Stdout, Stderr string
	ExitStatus     int
}

// maxOutput caps what we keep of each stream: enough for any storage
// command's status, small enough that a runaway command cannot eat memory.
const maxOutput = 1 << 20

// Run runs cmd in a new session and waits for it, at most CommandTimeout.
// A non-zero exit returns the Result and an error that wraps *ssh.ExitError
// and quotes the start of stderr.
func (c *Conn) Run(ctx context.Context, cmd string) (Result, error) {
	res, _, err := c.session(ctx, cmd)
	if err == nil {
		return res, nil
	}
	res.ExitStatus = -1
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		res.ExitStatus = ee.ExitStatus()
	}
	return res, fmt.Errorf("run %q on %s: %w%s", cmd, c.t.Name, err, excerpt(res.Stderr))
}

// PowerOff sends a power-off command and reports whether it was sent.
//
// A host that goes down under us ends the session without an exit status
// (*ssh.ExitMissingError), with a signal, with io.EOF or a reset: all count
// as sent and return nil, as does exit status 0. A non-zero exit status is
// an error (sudo refused, command missing). If the command was accepted but
// the session is still open after CommandTimeout, PowerOff also returns nil
// and logs a warning: a session hanging while the network is torn down is
// the usual way an SSH shutdown ends, and the runner confirms through the
// BMC in any case. Failing to open the session or to start the command is an
// error: the command was not sent.
func (c *Conn) PowerOff(ctx context.Context, cmd string) error {
	res, accepted, err := c.session(ctx, cmd)
	if err == nil {
		return nil
	}
	var ee *ssh.ExitError
	var missing *ssh.ExitMissingError
	switch {
	case errors.As(err, &ee) && ee.Signal() == "":
		return fmt.Errorf("power-off %s: power-off command exited %d%s", c.t.Name, ee.ExitStatus(), excerpt(res.Stderr))
	case !accepted:
		return fmt.Errorf("power-off %s: %w", c.t.Name, err)
	case errors.As(err, &ee), errors.As(err, &missing), isDropped(err):
		return nil
	case errors.Is(err, ErrCommandTimeout):
		c.log.Warn("power-off command accepted but its session is still open; confirm through the BMC",
			"host", c.t.Name, "timeout", c.t.CommandTimeout)
		return nil
	}
	return fmt.Errorf("power-off %s: command sent, wait interrupted: %w", c.t.Name, err)
}

// session runs cmd and waits until it ends, ctx is done, or CommandTimeout
// passes. accepted reports whether the server accepted the exec request, the
// last point at which we know the command reached the host.
//
// Opening the session is bounded by ConnectTimeout as well: on a connection
// that died without a reset (a pooled connection the network dropped), the
// channel open would otherwise wait for the whole command timeout. Such a
// failure wraps ErrNoSession: nothing was sent.
//
// ssh.Session has no context: a goroutine does the blocking calls and we
// select on ctx, closing the session to give up. The goroutine then ends as
// soon as the server or the connection lets go.
func (c *Conn) session(ctx context.Context, cmd string) (res Result, accepted bool, err error) {
	ctx, cancel := context.WithTimeoutCause(ctx, c.t.CommandTimeout,
		fmt.Errorf("%w after %s", ErrCommandTimeout, c.t.CommandTimeout))
	defer cancel()

	var stdout, stderr limitedBuffer
	var (
		mu     sync.Mutex
		sess   *ssh.Session
		gaveUp bool
	)
	openedCh := make(chan struct{})
	acceptedCh := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		s, err := c.client.NewSession()
		if err != nil {
			done <- fmt.Errorf("open session: %w: %w", ErrNoSession, err)
			return
		}
		defer s.Close()
		mu.Lock()
		if gaveUp {
			mu.Unlock()
			return
		}
		sess = s
		mu.Unlock()
		close(openedCh)
		s.Stdout, s.Stderr = &stdout, &stderr
		if err := s.Start(cmd); err != nil {
			done <- fmt.Errorf("start command: %w", err)
			return
		}
		close(acceptedCh)
		done <- s.Wait()
	}()

	giveUp := func() {
		mu.Lock()
		gaveUp = true
		if sess != nil {
			sess.Close()
		}
		mu.Unlock()
	}
	wait := func() {
		select {
		case err = <-done:
		case <-ctx.Done():
			giveUp()
			err = context.Cause(ctx)
		}
	}
	openTimer := time.NewTimer(c.t.ConnectTimeout)
	defer openTimer.Stop()
	select {
	case err = <-done:
	case <-ctx.Done():
		giveUp()
		err = context.Cause(ctx)
	case <-openedCh:
		wait()
	case <-openTimer.C:
		mu.Lock()
		if sess != nil {
			// Opened just now: the command may be on its way.
			mu.Unlock()
			wait()
			break
		}
		gaveUp = true // the session, if it ever opens, is closed unused
		mu.Unlock()
		err = fmt.Errorf("open session: %w: no answer within %s", ErrNoSession, c.t.ConnectTimeout)
		// The connection does not answer: close it, so that whoever holds
		// it sees it dead and dials again.
		c.client.Close()
	}
	select {
	case <-acceptedCh:
		accepted = true
	default:
	}
	return Result{Stdout: stdout.String(), Stderr: stderr.String()}, accepted, err
}

// excerpt returns ": <start of stderr>" for error messages, or "".
func excerpt(stderr string) string {
	s := strings.Join(strings.Fields(stderr), " ")
	if s == "" {
		return ""
	}
	const max = 200
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return ": " + s
}

// limitedBuffer keeps the first maxOutput bytes written and discards the
// rest. It is locked because a timed-out session may still be writing
// while we read what arrived so far.
type limitedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := maxOutput - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
