// Package nut is a small client of the Network UPS Tools server (upsd), in
// the network protocol of RFC 9271: what shutdownd needs to watch one UPS,
// nothing more. It reads variables (LIST VAR, GET VAR), logs in as a
// secondary when a user is configured (USERNAME, PASSWORD, LOGIN), so that a
// upsmon primary waits for shutdownd before it cuts the UPS's output, and
// upgrades to TLS with STARTTLS when asked.
//
// Every call has a deadline (the client's timeout, or the context's when
// sooner), because a watcher stuck on a dead TCP peer would not notice that
// the UPS went on battery. Session adds what a long-running watcher needs on
// top: one connection kept open, redialled with backoff when it breaks.
package nut

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// DefaultTimeout bounds one request and its answer, or a dial, when Options
// says nothing: upsd answers from memory, so a second is already slow.
const DefaultTimeout = 5 * time.Second

// maxLine bounds one line of an answer, so that a peer that is not upsd
// cannot make the client buffer without end.
const maxLine = 64 << 10

// Options says where upsd is and how to talk to it.
type Options struct {
	// Address is host:port of upsd (port 3493 by convention).
	Address string
	// User and Password log in (USERNAME, PASSWORD) before anything else;
	// empty User: no login, read only what upsd shows to anyone.
	User     string
	Password string
	// UPS is the UPS name on that server; LOGIN names it when User is set.
	UPS string
	// TLS, when not nil, upgrades the connection with STARTTLS before the
	// login, so the password never crosses the network in clear.
	TLS *tls.Config
	// Timeout bounds each dial and each request/answer; 0 is DefaultTimeout.
	Timeout time.Duration
}

// Error is an ERR answer of upsd, like "ERR ACCESS-DENIED".
type Error struct {
	// Code is the error name, e.g. "VAR-NOT-SUPPORTED", "DATA-STALE".
	Code string
	// Command is what was sent (never the password).
	Command string
}

func (e *Error) Error() string { return fmt.Sprintf("upsd answered ERR %s to %s", e.Code, e.Command) }

// IsCode reports whether err is an ERR answer with that code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// Client is one connection to upsd. It is not safe for concurrent use:
// the protocol is one request, one answer, in order.
type Client struct {
	conn    net.Conn
	r       *bufio.Reader
	timeout time.Duration
	tls     bool
	login   bool
}

// Dial connects to upsd, upgrades to TLS and logs in as Options ask. On any
// failure the connection is closed.
func Dial(ctx context.Context, o Options) (*Client, error) {
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(dctx, "tcp", o.Address)
	if err != nil {
		return nil, fmt.Errorf("dial upsd %s: %w", o.Address, err)
	}
	c := &Client{conn: conn, r: bufio.NewReaderSize(conn, 4096), timeout: timeout}
	if err := c.setup(ctx, o); err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

func (c *Client) setup(ctx context.Context, o Options) error {
	if o.TLS != nil {
		if err := c.startTLS(ctx, o.TLS); err != nil {
			return err
		}
	}
	if o.User == "" {
		return nil
	}
	if _, err := c.simple(ctx, "USERNAME "+quote(o.User), "USERNAME"); err != nil {
		return fmt.Errorf("log in to upsd as %s: %w", o.User, err)
	}
	if _, err := c.simple(ctx, "PASSWORD "+quote(o.Password), "PASSWORD"); err != nil {
		return fmt.Errorf("log in to upsd as %s: %w", o.User, err)
	}
	if o.UPS != "" {
		if _, err := c.simple(ctx, "LOGIN "+o.UPS, "LOGIN "+o.UPS); err != nil {
			return fmt.Errorf("log in to upsd as %s: %w", o.User, err)
		}
		c.login = true
	}
	return nil
}

// startTLS sends STARTTLS and runs the handshake with cfg.
func (c *Client) startTLS(ctx context.Context, cfg *tls.Config) error {
	if _, err := c.simple(ctx, "STARTTLS", "STARTTLS"); err != nil {
		return fmt.Errorf("start TLS with upsd: %w", err)
	}
	if c.r.Buffered() > 0 {
		return errors.New("start TLS with upsd: data after OK STARTTLS")
	}
	cfg = cfg.Clone()
	if cfg.ServerName == "" {
		host, _, _ := net.SplitHostPort(c.conn.RemoteAddr().String())
		cfg.ServerName = host
	}
	tc := tls.Client(c.conn, cfg)
	hctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return fmt.Errorf("start TLS with upsd: %w", err)
	}
	c.conn, c.r, c.tls = tc, bufio.NewReaderSize(tc, 4096), true
	return nil
}

// TLSConfig is the TLS configuration for STARTTLS: TLS 1.2 or later, the
// server's certificate verified against caFile when set, else against the
// system's CAs.
func TLSConfig(caFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile == "" {
		return cfg, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read NUT CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("read NUT CA file %s: no PEM certificate", caFile)
	}
	cfg.RootCAs = pool
	return cfg, nil
}

// TLS reports whether the connection was upgraded with STARTTLS.
func (c *Client) TLS() bool { return c.tls }

// LoggedIn reports whether LOGIN succeeded.
func (c *Client) LoggedIn() bool { return c.login }

// Var reads one variable (GET VAR).
func (c *Client) Var(ctx context.Context, ups, name string) (string, error) {
	line, err := c.simple(ctx, "GET VAR "+ups+" "+name, "GET VAR "+ups+" "+name)
	if err != nil {
		return "", err
	}
	f, err := fields(line)
	if err != nil || len(f) != 4 || f[0] != "VAR" || f[1] != ups || f[2] != name {
		return "", fmt.Errorf("GET VAR %s %s: unexpected answer %q", ups, name, line)
	}
	return f[3], nil
}

// Vars reads every variable of the UPS (LIST VAR), in one request.
func (c *Client) Vars(ctx context.Context, ups string) (map[string]string, error) {
	cmd := "LIST VAR " + ups
	first, err := c.simple(ctx, cmd, cmd)
	if err != nil {
		return nil, err
	}
	if first != "BEGIN "+cmd {
		return nil, fmt.Errorf("%s: unexpected answer %q", cmd, first)
	}
	vars := make(map[string]string)
	for {
		line, err := c.readLine()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cmd, err)
		}
		if line == "END "+cmd {
			return vars, nil
		}
		f, err := fields(line)
		if err != nil || len(f) != 4 || f[0] != "VAR" || f[1] != ups {
			return nil, fmt.Errorf("%s: unexpected line %q", cmd, line)
		}
		vars[f[2]] = f[3]
	}
}

// Close says LOGOUT (so upsd counts one login less at once, not at its
// timeout) and closes the connection.
func (c *Client) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), min(c.timeout, time.Second))
	defer cancel()
	_, _ = c.simple(ctx, "LOGOUT", "LOGOUT")
	return c.conn.Close()
}

// simple sends one command line and reads one answer line; an ERR answer is
// an *Error naming shown (the command without secrets).
func (c *Client) simple(ctx context.Context, cmd, shown string) (string, error) {
	deadline := time.Now().Add(c.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := c.conn.SetDeadline(deadline); err != nil {
		return "", fmt.Errorf("%s: %w", shown, err)
	}
	// A cancelled context ends a blocked read at once.
	stop := context.AfterFunc(ctx, func() { _ = c.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := c.conn.Write([]byte(cmd + "\n")); err != nil {
		return "", fmt.Errorf("send %s: %w", shown, err)
	}
	line, err := c.readLine()
	if err != nil {
		return "", fmt.Errorf("read answer to %s: %w", shown, err)
	}
	if code, ok := strings.CutPrefix(line, "ERR "); ok {
		code, _, _ = strings.Cut(code, " ")
		return "", &Error{Code: code, Command: shown}
	}
	return line, nil
}

func (c *Client) readLine() (string, error) {
	var b []byte
	for {
		part, isPrefix, err := c.r.ReadLine()
		if err != nil {
			return "", err
		}
		b = append(b, part...)
		if len(b) > maxLine {
			return "", errors.New("answer line too long")
		}
		if !isPrefix {
			return string(b), nil
		}
	}
}

// quote makes an argument safe for one command line: RFC 9271 strings are
// double-quoted with backslash escapes.
func quote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}

// fields splits an answer line into words, where a double-quoted string
// (with backslash escapes) is one word.
func fields(line string) ([]string, error) {
	var out []string
	for i := 0; i < len(line); {
		switch {
		case line[i] == ' ':
			i++
		case line[i] == '"':
			var sb strings.Builder
			i++
			for ; i < len(line) && line[i] != '"'; i++ {
				if line[i] == '\\' && i+1 < len(line) {
					i++
				}
				sb.WriteByte(line[i])
			}
			if i >= len(line) {
				return nil, fmt.Errorf("unterminated string in %q", line)
			}
			i++
			out = append(out, sb.String())
		default:
			j := strings.IndexByte(line[i:], ' ')
			if j < 0 {
				j = len(line) - i
			}
			out = append(out, line[i:i+j])
			i += j
		}
	}
	return out, nil
}
