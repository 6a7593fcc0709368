package handlers

import (
	"errors"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// Defaults of AuthLimit. They are generous on purpose: a stale monitoring
// script that polls once every few seconds with a revoked token must never
// lock out the UPS controller that shares its address, while a guesser
// gets one attempt per second after the burst (and a token has 256 random
// bits, so guessing is hopeless anyway: the limit keeps the noise down).
const (
	DefaultAuthBurst      = 20
	DefaultAuthEvery      = time.Second
	DefaultAuthMaxSources = 10000
)

// AuthLimit bounds failed authentications per source address.
type AuthLimit struct {
	// Burst is how many failures a source may make before it is limited.
	Burst int
	// Every is how often one more failure is allowed once the burst is spent.
	Every time.Duration
	// MaxSources bounds the memory the limiter uses: beyond it, sources
	// whose budget is full again are forgotten first, then arbitrary ones.
	MaxSources int
}

// authLimiter is a token bucket per source: each failed authentication
// takes one token, the bucket refills at one token per every. A source with
// an empty bucket gets 429 for every request that fails authentication
// (uncounted), instead of the 401/403 that would tell a guesser which kind
// of wrong its token is; a request with a valid token from that source is
// served as usual (see Authenticate).
//
// Sources are keyed by client address after trusted-proxy resolution (a
// proxy does not pool its clients into one bucket); IPv6 clients by their
// /64, since one host usually owns a whole /64 and could otherwise rotate
// addresses to escape the limit.
type authLimiter struct {
	burst      float64
	every      time.Duration
	maxSources int
	now        func() time.Time

	mu      sync.Mutex
	sources map[netip.Prefix]*authBucket
}

type authBucket struct {
	tokens float64
	at     time.Time // when tokens was last brought up to date
	logged bool      // the "limited" warning went out for this episode
}

func newAuthLimiter(cfg AuthLimit, now func() time.Time) *authLimiter {
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultAuthBurst
	}
	if cfg.Every <= 0 {
		cfg.Every = DefaultAuthEvery
	}
	if cfg.MaxSources <= 0 {
		cfg.MaxSources = DefaultAuthMaxSources
	}
	return &authLimiter{
		burst: float64(cfg.Burst), every: cfg.Every, maxSources: cfg.MaxSources,
		now: now, sources: make(map[netip.Prefix]*authBucket),
	}
}

func limitKey(a netip.Addr) netip.Prefix {
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, err := a.Prefix(64)
	if err != nil { // invalid address: one shared bucket for all of them
		return netip.Prefix{}
	}
	return p
}

// refill brings b up to date at now.
func (l *authLimiter) refill(b *authBucket, now time.Time) {
	if el := now.Sub(b.at); el > 0 {
		b.tokens = math.Min(l.burst, b.tokens+float64(el)/float64(l.every))
		b.at = now
	}
}

// wait returns how long the source must wait before its next attempt is
// evaluated, zero when it may try now.
func (l *authLimiter) wait(a netip.Addr) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.sources[limitKey(a)]
	if !ok {
		return 0
	}
	now := l.now()
	l.refill(b, now)
	if b.tokens >= 1 {
		return 0
	}
	return time.Duration((1 - b.tokens) * float64(l.every))
}

// fail records one failed authentication from a and reports whether the
// source has just become limited (its budget is spent).
func (l *authLimiter) fail(a netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	key := limitKey(a)
	b, ok := l.sources[key]
	if !ok {
		l.makeRoom(now)
		b = &authBucket{tokens: l.burst, at: now}
		l.sources[key] = b
	}
	l.refill(b, now)
	if b.tokens >= l.burst {
		b.logged = false // a new episode: the budget was full again
	}
	b.tokens = math.Max(0, b.tokens-1)
	if b.tokens < 1 && !b.logged {
		b.logged = true
		return true
	}
	return false
}

// makeRoom keeps the map under maxSources: full buckets carry no state and
// go first; if every tracked source is still limited, an arbitrary one is
// dropped (map order), which at worst gives that source a fresh burst.
func (l *authLimiter) makeRoom(now time.Time) {
	if len(l.sources) < l.maxSources {
		return
	}
	for k, b := range l.sources {
		l.refill(b, now)
		if b.tokens >= l.burst {
			delete(l.sources, k)
		}
	}
	for k := range l.sources {
		if len(l.sources) < l.maxSources {
			return
		}
		delete(l.sources, k)
	}
}

// writeLimited answers 429 rate_limit_reached with Retry-After to a failing
// request from a source that has spent its failure budget for wait more.
func (s *Server) writeLimited(w http.ResponseWriter, r *http.Request, wait time.Duration) {
	secs := int(math.Ceil(wait.Seconds()))
	if secs < 1 {
		secs = 1
	}
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	s.WriteError(w, r, Errorf(CodeRateLimitReached,
		"too many failed authentications from this address; retry in %d s", secs))
}

// noteAuthFailure counts a failed authentication against the request's
// source. Only guesses count: an unknown, revoked or expired token, or a
// valid token used from the wrong network. A missing token guesses nothing
// and a scope error comes from a valid token.
func (s *Server) noteAuthFailure(r *http.Request, err error) {
	var apiErr *Error
	if !errors.As(err, &apiErr) || (apiErr.Code != CodeInvalidToken && apiErr.Code != CodeUnauthorizedNetwork) {
		return
	}
	ip := s.clientIP(r)
	if s.authLimit.fail(ip) {
		// Once per episode, so an attack does not flood the log either.
		s.logger.LogAttrs(r.Context(), slog.LevelWarn, "failed authentications rate-limited",
			slog.String("source", ip.String()), slog.String("path", r.URL.Path))
	}
}
