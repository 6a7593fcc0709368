// Package bmc reads and sets a host's power through its BMC with bmclib v2,
// restricted to exactly one provider per client (gofish for Redfish,
// ipmitool for IPMI).
//
// bmclib by default registers every provider it knows and tries them in
// turn; for a power-off that means one request can reach the BMC several
// times through different drivers (gofish, then dell, ...), and a failure in
// one is hidden by another. Pinning one provider makes every request happen
// once, over the protocol the operator configured.
//
// TLS: bmclib defaults to skipping certificate verification. This package
// defaults to verifying: against CAFile when set, else against the system
// roots. Only InsecureTLS=true (and no CAFile) turns verification off.
package bmc

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	bmclib "github.com/bmc-toolbox/bmclib/v2"
	"github.com/go-logr/logr"
)

// Protocols a Target may name.
const (
	ProtocolRedfish = "redfish"
	ProtocolIPMI    = "ipmi"
)

// bmclib provider names we pin per protocol.
const (
	providerGofish   = "gofish"
	providerIpmitool = "ipmitool"
)

// DefaultTimeout bounds each BMC operation (the login, each power read or
// command) when Target.Timeout is zero. It matches the configuration's
// default bmc.timeout: a BMC that has not answered in 10 s is treated as
// unreachable rather than holding a host's power-off for half a minute.
const DefaultTimeout = 10 * time.Second

// Target is one BMC as the configuration describes it.
type Target struct {
	Name        string // host name, for errors
	Address     string // IP or DNS name of the BMC
	Port        int    // 0: 443 for redfish, 623 for ipmi
	Protocol    string // "redfish" or "ipmi"
	User        string
	Password    string
	InsecureTLS bool   // redfish only: skip certificate verification (needs no CAFile)
	CAFile      string // redfish only: PEM bundle to verify the BMC certificate
	// Timeout bounds Open and each later call; zero means DefaultTimeout.
	Timeout time.Duration
}

// Client is an open connection (a Redfish session, or a checked ipmitool
// login) to one BMC through exactly one bmclib provider.
type Client struct {
	name, protocol, addr string
	secret               string // only used to scrub errors
	timeout              time.Duration

	// busy serialises calls (bmclib clients keep per-call metadata): a
	// one-slot semaphore rather than a mutex, so a caller can stop waiting
	// for a call it gave up on (see call).
	busy chan struct{}
	cl   *bmclib.Client
}

// errClosed is the error of a call on a closed client.
var errClosed = errors.New("client closed")

// call runs f on the client, one call at a time, under the client's timeout,
// and returns when f does or ctx ends, whichever comes first. bmclib's
// gofish provider does not look at ctx (gofish uses context.Background),
// so a slow BMC would otherwise hold the runner for several HTTP timeouts,
// past host_off and past a service stop. A call given up on keeps the
// client until it ends; the next call waits for it within its own ctx.
func (c *Client) call(ctx context.Context, f func(ctx context.Context, cl *bmclib.Client) error) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	select {
	case c.busy <- struct{}{}:
	case <-ctx.Done():
		cancel()
		return ctx.Err()
	}
	done := make(chan error, 1)
	go func() {
		defer cancel()
		defer func() { <-c.busy }()
		if c.cl == nil {
			done <- errClosed
			return
		}
		done <- f(ctx, c.cl)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Open connects to the BMC described by t and checks that exactly one
// provider is active. Errors name the BMC and protocol, never the password.
func Open(ctx context.Context, t Target) (*Client, error) {
	c := &Client{name: t.Name, protocol: t.Protocol, secret: t.Password, timeout: t.Timeout, busy: make(chan struct{}, 1)}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	host, port, err := hostPort(t)
	if err != nil {
		return nil, c.wrap("open", err)
	}
	c.addr = net.JoinHostPort(strings.Trim(host, "[]"), strconv.Itoa(port))

	opts := []bmclib.Option{
		bmclib.WithLogger(logr.Discard()), // bmclib's own logs are not needed; we report through errors
		bmclib.WithPerProviderTimeout(c.timeout),
	}
	var provider string
	switch t.Protocol {
	case ProtocolRedfish:
		provider = providerGofish
		opts = append(opts, bmclib.WithRedfishPort(strconv.Itoa(port)))
		tlsOpt, err := secureTLS(t)
		if err != nil {
			return nil, c.wrap("open", err)
		}
		if tlsOpt != nil {
			opts = append(opts, tlsOpt)
		}
	case ProtocolIPMI:
		provider = providerIpmitool
		opts = append(opts, bmclib.WithIpmitoolPort(strconv.Itoa(port)))
	default:
		return nil, c.wrap("open", fmt.Errorf("unknown protocol %q (want redfish or ipmi)", t.Protocol))
	}

	cl := bmclib.NewClient(host, t.User, t.Password, opts...)
	cl.Registry.Drivers = cl.Registry.For(provider)
	if n := len(cl.Registry.Drivers); n != 1 {
		if provider == providerIpmitool && n == 0 {
			return nil, c.wrap("open", errors.New("ipmitool provider unavailable (is ipmitool installed?)"))
		}
		return nil, c.wrap("open", fmt.Errorf("want exactly one %s provider, have %d", provider, n))
	}
	octx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := cl.Open(octx); err != nil {
		return nil, c.wrap("open", err)
	}
	if n := len(cl.Registry.Drivers); n != 1 || cl.Registry.Drivers[0].Name != provider {
		_ = cl.Close(context.WithoutCancel(ctx))
		return nil, c.wrap("open", fmt.Errorf("want exactly one active %s provider, have %d", provider, n))
	}
	c.cl = cl
	return c, nil
}

// hostPort resolves the address and port bmclib should use. An IPv6
// literal is bracketed because bmclib appends ":port" to the host itself.
func hostPort(t Target) (string, int, error) {
	host, port := t.Address, t.Port
	if h, p, err := net.SplitHostPort(t.Address); err == nil {
		host = h
		if port == 0 {
			n, err := strconv.Atoi(p)
			if err != nil {
				return "", 0, fmt.Errorf("bad port in address %q", t.Address)
			}
			port = n
		}
	}
	if host == "" {
		return "", 0, errors.New("no BMC address")
	}
	if port == 0 {
		port = 443
		if t.Protocol == ProtocolIPMI {
			port = 623
		}
	}
	if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
		host = "[" + host + "]"
	}
	return host, port, nil
}

// secureTLS returns the bmclib option that turns certificate verification
// on, or nil when the target explicitly asked for insecure TLS.
func secureTLS(t Target) (bmclib.Option, error) {
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", t.CAFile)
		}
		return bmclib.WithSecureTLS(pool), nil
	}
	if t.InsecureTLS {
		return nil, nil
	}
	// bmclib's gofish provider only verifies when handed a non-nil pool.
	pool, err := x509.SystemCertPool()
	if err != nil {
		return nil, fmt.Errorf("load system CA pool: %w", err)
	}
	return bmclib.WithSecureTLS(pool), nil
}

// Close ends the session (a Redfish logout); it runs even when ctx is done,
// because BMCs have few session slots.
func (c *Client) Close(ctx context.Context) error {
	err := c.call(context.WithoutCancel(ctx), func(ctx context.Context, cl *bmclib.Client) error {
		c.cl = nil
		return cl.Close(ctx)
	})
	if err != nil && !errors.Is(err, errClosed) {
		return c.wrap("close", err)
	}
	return nil
}

// bmcError names the BMC and protocol and scrubs the password from the
// message; Unwrap keeps errors.Is/As working on the cause.
type bmcError struct {
	op, name, protocol, addr string
	secret                   string
	err                      error
}

func (e *bmcError) Error() string {
	msg := e.err.Error()
	if e.secret != "" {
		msg = strings.ReplaceAll(msg, e.secret, "[redacted]")
	}
	// bmclib joins provider errors over several indented lines; keep one
	// line so the message fits an action row and a log line.
	msg = strings.Join(strings.Fields(msg), " ")
	return fmt.Sprintf("%s bmc %s (%s %s): %s", e.op, e.name, e.protocol, e.addr, msg)
}

func (e *bmcError) Unwrap() error { return e.err }

func (c *Client) wrap(op string, err error) error {
	return &bmcError{op: op, name: c.name, protocol: c.protocol, addr: c.addr, secret: c.secret, err: err}
}
