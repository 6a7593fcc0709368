package handlers

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/edgeops/shutdownd/store"
)

// Token scopes (openapi.yaml lists which route needs which).
const (
	ScopeRead     = "read"
	ScopeSimulate = "simulate"
	ScopeShutdown = "shutdown"
	// ScopeStartup powers the site on again (POST /startup): a scope of
	// its own, never given to existing tokens, since a UPS controller that
	// may shut the site down must not be able to start it on a flapping
	// mains.
	ScopeStartup = "startup"
)

// touchInterval limits last_used_at writes: a monitor polling a status
// endpoint every second must not turn every read into an fsync'd write
// (the store runs synchronous=FULL on one writer connection).
const touchInterval = time.Minute

type ctxKey int

const callerKey ctxKey = 0

// Caller is who made an authenticated request; job creation stores it.
type Caller struct {
	Token      store.Token
	RemoteAddr string // client IP after X-Forwarded-For resolution
}

// CallerFrom returns the caller put in the context by Authenticate.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey).(Caller)
	return c, ok
}

// Authenticate resolves the request's token and checks its validity and
// network; the scope is checked separately (RequireScope, or the cancel
// handler whose scope depends on the job).
//
// Rate limiting counts failures and throttles only failing requests: a
// request with a valid token is always served, whatever other requests
// from its address did (a UPS controller behind the same NAT as a
// misconfigured monitor must keep its status reads and its shutdown). A
// request that fails authentication from a source whose failure budget is
// spent gets 429 rather than its 401/403, and is not counted again, so the
// guesser learns nothing more than "refused" and the log stays quiet. The
// cost of evaluating a guess is one SHA-256 and a map lookup.
func (s *Server) Authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		caller, err := s.authenticate(r)
		if err == nil {
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey, caller)))
			return
		}
		if wait := s.authLimit.wait(s.clientIP(r)); wait > 0 {
			s.writeLimited(w, r, wait)
			return
		}
		s.noteAuthFailure(r, err)
		s.WriteError(w, r, err)
	})
}

// RequireScope authenticates the request and requires scope on its token.
func (s *Server) RequireScope(scope string, next http.Handler) http.Handler {
	return s.Authenticate(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := CallerFrom(r.Context())
		if err := checkScope(c.Token, scope); err != nil {
			s.WriteError(w, r, err)
			return
		}
		next.ServeHTTP(w, r)
	}))
}

func checkScope(t store.Token, scope string) error {
	if !slices.Contains(t.Scopes, scope) {
		return Errorf(CodeScopeNotGranted, "token %q lacks scope %q", t.Name, scope)
	}
	return nil
}

// authenticate returns the caller or an *Error. The secret is never compared
// directly: it is hashed (SHA-256) and the hash is looked up by equality,
// in the tokens table. Any timing difference of the lookup depends on the
// hash, which
// an attacker cannot steer byte by byte towards a stored one (preimage
// resistance), so it leaks nothing usable about the secret; this is why no
// constant-time comparison appears here. The secret itself never reaches a
// log or an error message.
//
// The token is read from the database on every request, so a token revoked
// or changed by any process, the CLI included, is refused from the first
// request that arrives after the change was committed. Expiry is checked
// here against the request's time.
func (s *Server) authenticate(r *http.Request) (Caller, error) {
	ctx := r.Context()
	secret := tokenFromRequest(r)
	if secret == "" {
		return Caller{}, Errorf(CodeMissingToken, "missing API token: send header auth-token or Authorization: Bearer")
	}
	tok, err := s.store.TokenByHash(ctx, store.HashToken(secret))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return Caller{}, Errorf(CodeInvalidToken, "invalid API token")
	case err != nil:
		return Caller{}, err
	}
	now := s.now()
	if tok.RevokedAt != nil {
		return Caller{}, Errorf(CodeInvalidToken, "API token %q is revoked", tok.Name)
	}
	if tok.ExpiresAt != nil && !now.Before(*tok.ExpiresAt) {
		return Caller{}, Errorf(CodeInvalidToken, "API token %q expired", tok.Name)
	}
	ip := s.clientIP(r)
	if len(tok.CIDRs) > 0 && !s.ipAllowed(ctx, tok, ip) {
		return Caller{}, Errorf(CodeUnauthorizedNetwork, "API token %q is not allowed from %s", tok.Name, ip)
	}
	if s.touchDue(tok, now) {
		// Best effort: a failed bookkeeping write must not refuse a shutdown.
		if err := s.store.TouchToken(ctx, tok.ID); err != nil {
			s.logger.LogAttrs(ctx, slog.LevelWarn, "touch token", slog.String("token", tok.Name), slog.Any("err", err))
		}
	}
	return Caller{Token: tok, RemoteAddr: ip.String()}, nil
}

// touchDue reports whether this request should record last_used_at, at most
// once per touchInterval per token. The time of the last touch is kept in
// memory, so that concurrent requests do not queue for the same touch: the
// first one claims it.
func (s *Server) touchDue(tok store.Token, now time.Time) bool {
	s.touchMu.Lock()
	defer s.touchMu.Unlock()
	last, ok := s.touched[tok.ID]
	if !ok && tok.LastUsedAt != nil {
		last, ok = *tok.LastUsedAt, true
	}
	if ok && now.Sub(last) < touchInterval {
		return false
	}
	s.touched[tok.ID] = now
	return true
}

// tokenFromRequest reads the auth-token header (the existing API's) or a
// bearer token.
func tokenFromRequest(r *http.Request) string {
	if t := strings.TrimSpace(r.Header.Get("auth-token")); t != "" {
		return t
	}
	h := strings.TrimSpace(r.Header.Get("Authorization"))
	if len(h) > len("bearer ") && strings.EqualFold(h[:len("bearer ")], "bearer ") {
		return strings.TrimSpace(h[len("bearer "):])
	}
	return ""
}

// ipAllowed reports whether ip lies in one of the token's networks. Entries
// are CIDRs or bare addresses; an unparsable entry matches nothing (and is
// logged), so a typo narrows access instead of widening it.
func (s *Server) ipAllowed(ctx context.Context, tok store.Token, ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	for _, c := range tok.CIDRs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			a, aerr := netip.ParseAddr(c)
			if aerr != nil {
				s.logger.LogAttrs(ctx, slog.LevelWarn, "bad network on token", slog.String("token", tok.Name), slog.String("cidr", c))
				continue
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		if p.Masked().Contains(ip) {
			return true
		}
	}
	return false
}

// clientIP is the address of the client: the TCP peer, or, when the peer is
// a trusted proxy, the right-most X-Forwarded-For entry that is not itself a
// trusted proxy. Entries left of it could have been written by the client
// and are never believed.
func (s *Server) clientIP(r *http.Request) netip.Addr {
	peer := peerAddr(r.RemoteAddr)
	if !s.trusted(peer) {
		return peer
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break // garbage: stop at the last hop a trusted proxy vouched for
		}
		client = a.Unmap().WithZone("")
		if !s.trusted(client) {
			break
		}
	}
	return client
}

// FromTrustedProxy reports whether r reached us from one of the configured
// trusted proxies, whose X-Forwarded-* headers may then be believed (the
// history pages use it for the public host and scheme behind a TLS proxy).
func (s *Server) FromTrustedProxy(r *http.Request) bool {
	return s.trusted(peerAddr(r.RemoteAddr))
}

func (s *Server) trusted(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	for _, p := range s.trustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func peerAddr(remote string) netip.Addr {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap().WithZone("")
}
