// Package hostctl runs commands on the site's physical hosts over SSH: the
// storage commands and the final power-off. It always verifies host keys
// against a known_hosts file (there is no "accept any key" mode), never
// forwards an agent, and classifies failures so the runner can tell "go to
// the BMC" (unreachable) from "someone must look at this" (host key).
package hostctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Classified connection failures; Dial's errors wrap exactly one of them
// (or the context's error), so callers use errors.Is.
var (
	// ErrHostKeyMismatch means known_hosts has a different key for the
	// host (or the key is revoked): possibly a man in the middle, so we
	// never connect, and never send a power-off to it.
	ErrHostKeyMismatch = errors.New("host key mismatch: refusing to connect")
	// ErrHostKeyUnknown means known_hosts has no key for the host; an
	// operator must add it (we never trust on first use).
	ErrHostKeyUnknown = errors.New("host key unknown: host not in known_hosts")
	// ErrUnreachable means no SSH server answered in time (refused, timed
	// out, no route, name not resolved, dropped during the handshake).
	ErrUnreachable = errors.New("host unreachable")
	// ErrAuth means the server refused our key for the user.
	ErrAuth = errors.New("ssh authentication failed")
	// ErrThisMachine means the host presented one of the SSH host keys of
	// the machine running shutdownd (Target.RefuseKeys): its address leads
	// here, after a DNS or NAT change, and nothing may be sent to it.
	ErrThisMachine = errors.New("the host presents this machine's own SSH host key: its address leads to the machine running shutdownd")
	// ErrNoSession means an established connection could not open a
	// session (it died, or the server did not answer within the connect
	// timeout): the command was not sent, so it is safe to send it again
	// on a new connection.
	ErrNoSession = errors.New("no session on the connection")
)

// Defaults used when a Target leaves a timeout at zero.
const (
	DefaultConnectTimeout = 10 * time.Second
	DefaultCommandTimeout = 60 * time.Second
)

// Target is one host as the runner sees it; config.Host resolves into it.
type Target struct {
	Name string
	// Address is host:port; a bare host means port 22.
	Address    string
	User       string
	KeyFile    string
	KnownHosts string
	// ConnectTimeout bounds TCP connect plus SSH handshake.
	ConnectTimeout time.Duration
	// CommandTimeout bounds each Run and PowerOff.
	CommandTimeout time.Duration
	// RefuseKeys are keys the host must never present: this machine's own
	// host keys, for every host that is not this machine. A host that
	// presents one (or a certificate of one) is refused during the
	// handshake, before we authenticate or send anything (ErrThisMachine).
	RefuseKeys []OwnKey
	// Logger receives warnings that are not errors (a power-off session
	// that hung); nil discards.
	Logger *slog.Logger
}

// OwnKey is one of this machine's SSH host keys and the file it was read
// from, which the refusal names.
type OwnKey struct {
	File string
	Key  ssh.PublicKey
}

// Conn is an authenticated SSH connection to one host. Each Run opens its
// own session, so a Conn may be used by several goroutines.
type Conn struct {
	t      Target
	log    *slog.Logger
	client *ssh.Client
	closed chan struct{} // closed when the connection has ended
}

// Dial connects and authenticates with the key in t.KeyFile, checking the
// host key against t.KnownHosts. ctx can cancel both the connect and the
// handshake.
func Dial(ctx context.Context, t Target) (*Conn, error) {
	if t.ConnectTimeout <= 0 {
		t.ConnectTimeout = DefaultConnectTimeout
	}
	if t.CommandTimeout <= 0 {
		t.CommandTimeout = DefaultCommandTimeout
	}
	addr := t.Address
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, "22")
	}
	signer, err := loadSigner(t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: %w", t.Name, err)
	}
	if t.KnownHosts == "" {
		return nil, fmt.Errorf("ssh %s: no known_hosts file configured", t.Name)
	}
	hostKeys, err := knownhosts.New(t.KnownHosts)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: read known_hosts: %w", t.Name, err)
	}

	d := net.Dialer{Timeout: t.ConnectTimeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			return nil, fmt.Errorf("ssh %s: connect %s: %w", t.Name, addr, ctx.Err())
		}
		return nil, fmt.Errorf("ssh %s: connect %s: %w: %w", t.Name, addr, ErrUnreachable, err)
	}

	cfg := &ssh.ClientConfig{
		User:              t.User,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback:   refuseOwn(t.RefuseKeys, hostKeys),
		HostKeyAlgorithms: hostKeyAlgorithms(hostKeys, addr, nc.RemoteAddr()),
	}
	// ClientConfig.Timeout would cover only the TCP connect, which we did
	// ourselves: bound the handshake with a deadline, and let ctx cut it
	// short.
	deadline := time.Now().Add(t.ConnectTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	sc, chans, reqs, err := ssh.NewClientConn(nc, addr, cfg)
	if !stop() {
		if err == nil {
			sc.Close()
		}
		nc.Close()
		return nil, fmt.Errorf("ssh %s: handshake with %s: %w", t.Name, addr, ctx.Err())
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("ssh %s: handshake with %s: %w", t.Name, addr, classify(err))
	}
	nc.SetDeadline(time.Time{})

	log := t.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Conn{t: t, log: log, client: ssh.NewClient(sc, chans, reqs), closed: make(chan struct{})}
	go func() {
		c.client.Wait()
		close(c.closed)
	}()
	return c, nil
}

// classify maps a handshake error onto the package's sentinel errors,
// keeping the original text for the operator.
func classify(err error) error {
	var keyErr *knownhosts.KeyError
	var revoked *knownhosts.RevokedError
	switch {
	case errors.Is(err, ErrThisMachine):
		return err
	case errors.As(err, &keyErr) && len(keyErr.Want) > 0:
		return fmt.Errorf("%w: %w", ErrHostKeyMismatch, err)
	case errors.As(err, &keyErr):
		return fmt.Errorf("%w: %w", ErrHostKeyUnknown, err)
	case errors.As(err, &revoked):
		return fmt.Errorf("%w: %w", ErrHostKeyMismatch, err)
	case strings.Contains(err.Error(), "unable to authenticate"):
		// x/crypto/ssh has no typed error for this.
		return fmt.Errorf("%w: %w", ErrAuth, err)
	case isDropped(err):
		return fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	return err
}

// refuseOwn checks the host key against this machine's own keys before
// known_hosts: a host whose address now leads here must be refused even
// when known_hosts would accept the key (an @cert-authority line trusting
// the CA that also signed this machine's key, or a file edited since the
// configuration was checked).
func refuseOwn(own []OwnKey, next ssh.HostKeyCallback) ssh.HostKeyCallback {
	if len(own) == 0 {
		return next
	}
	return func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		plain := key
		if cert, ok := key.(*ssh.Certificate); ok {
			plain = cert.Key
		}
		for _, k := range own {
			if k.Key.Type() == plain.Type() && bytes.Equal(k.Key.Marshal(), plain.Marshal()) {
				return fmt.Errorf("%w (%s %s, %s)", ErrThisMachine, k.Key.Type(), ssh.FingerprintSHA256(k.Key), k.File)
			}
		}
		return next(hostname, remote, key)
	}
}

// isDropped reports whether err means the TCP connection died or timed out.
func isDropped(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// Close closes the connection; open sessions end with it.
func (c *Conn) Close() error {
	return c.client.Close()
}

// Alive reports whether the connection has not ended (closed by us, by the
// server or by the network). A connection that died silently still looks
// alive until a keepalive or a session fails on it.
func (c *Conn) Alive() bool {
	select {
	case <-c.closed:
		return false
	default:
		return true
	}
}

// Keepalive sends an OpenSSH keepalive request and waits for the answer,
// at most the connect timeout. It proves the connection still works
// (and keeps NAT and firewall state fresh) without running anything on the
// host. A connection that fails the keepalive is closed.
func (c *Conn) Keepalive(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.t.ConnectTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		// Any answer, even "unsupported request", proves the peer alive.
		_, _, err := c.client.SendRequest("keepalive@openssh.com", true, nil)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			c.client.Close()
			return fmt.Errorf("ssh %s: keepalive: %w: %w", c.t.Name, ErrUnreachable, err)
		}
		return nil
	case <-ctx.Done():
		c.client.Close()
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("ssh %s: keepalive: %w: no answer within %s", c.t.Name, ErrUnreachable, c.t.ConnectTimeout)
		}
		return fmt.Errorf("ssh %s: keepalive: %w", c.t.Name, ctx.Err())
	}
}
