package handlers

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clientFrom returns an HTTP client whose connections leave from the given
// loopback address, so one test can play two different source addresses.
func clientFrom(t *testing.T, src string) *http.Client {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// guessFlood sends n guessed tokens over one connection from 127.0.0.2,
// pipelined in batches, and hands every answer to seen.
func guessFlood(t *testing.T, addr string, worker, n int, seen func(*http.Response)) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Errorf("attacker dial: %v", err)
		return
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	const batch = 50
	for sent := 0; sent < n; sent += batch {
		var buf bytes.Buffer
		for i := sent; i < min(n, sent+batch); i++ {
			fmt.Fprintf(&buf, "GET /shutdown/status HTTP/1.1\r\nHost: shutdownd\r\nauth-token: sdt_guess%d_%06d\r\n\r\n", worker, i)
		}
		if _, err := conn.Write(buf.Bytes()); err != nil {
			t.Errorf("attacker write: %v", err)
			return
		}
		for i := sent; i < min(n, sent+batch); i++ {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Errorf("attacker read: %v", err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			seen(resp)
		}
	}
}

func get(c *http.Client, url, token string) (int, http.Header, error) {
	r, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		r.Header.Set("auth-token", token)
	}
	resp, err := c.Do(r)
	if err != nil {
		return 0, nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header, nil
}

// TestGuessingGetsNowhere fires 10,000 guessed tokens (2,000 under -race) from one address
// while the right token is used from another: exactly the burst of guesses
// is answered 403, every other guess is refused (429 with Retry-After), and
// every request with the right token succeeds promptly, from the other
// address during the attack and from the attacker's own address after it.
func TestGuessingGetsNowhere(t *testing.T) {
	t.Parallel()
	// Every guess is looked up (a request with a valid token is served from
	// a limited address too), an SQLite read that -race makes ~30 times
	// slower: the volume is scaled down there, the property is the same.
	const burst, workers = 10, 16
	guesses := 10000
	if raceEnabled {
		guesses = 2000
	}
	// Every is long so that no refill happens during the test: the count of
	// evaluated guesses is then exactly the burst.
	e := newEnv(t, func(o *Options) { o.AuthLimit = AuthLimit{Burst: burst, Every: time.Hour} })
	good := e.token("ups", []string{ScopeRead}, nil, nil)
	operator := clientFrom(t, "127.0.0.1")
	url := e.srv.URL + "/shutdown/status"

	// The attacker pipelines raw HTTP/1.1 requests over a few connections:
	// an http.Client per guess would spend most of the test in the client.
	var forbidden, limited, other atomic.Int64
	var badRetry atomic.Value
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			guessFlood(t, e.srv.Listener.Addr().String(), w, guesses/workers, func(resp *http.Response) {
				switch resp.StatusCode {
				case http.StatusForbidden:
					forbidden.Add(1)
				case http.StatusTooManyRequests:
					limited.Add(1)
					if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || n < 1 {
						badRetry.Store(resp.Header.Get("Retry-After"))
					}
				default:
					other.Add(1)
				}
			})
		}()
	}
	start := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		wg.Wait()
	}()

	// The operator's requests interleave with the attack until it ends.
	var served int
	var slowest time.Duration
	for attacking := true; attacking; {
		select {
		case <-done:
			attacking = false
		default:
		}
		t0 := time.Now()
		code, _, err := get(operator, url, good)
		if err != nil || code != http.StatusOK {
			t.Fatalf("right token during the attack: %d %v", code, err)
		}
		served++
		slowest = max(slowest, time.Since(t0))
	}
	elapsed := time.Since(start)
	t.Logf("%d guesses in %v: %d answered 403, %d refused (429); right token served %d times, slowest %v",
		guesses, elapsed, forbidden.Load(), limited.Load(), served, slowest)

	// Requests already past the check when the budget ran out are still
	// evaluated: at most one per attacking connection beyond the burst.
	if f := forbidden.Load(); f < burst || f > burst+workers {
		t.Errorf("%d guesses evaluated, want the burst %d (+ at most %d in flight)", f, burst, workers)
	}
	if limited.Load()+forbidden.Load() != int64(guesses) || other.Load() != 0 {
		t.Errorf("403: %d, 429: %d, other: %d; want %d answered 403 or 429", forbidden.Load(), limited.Load(), other.Load(), guesses)
	}
	if v := badRetry.Load(); v != nil {
		t.Errorf("429 with Retry-After %q, want a positive number of seconds", v)
	}
	if served < 2 || slowest > 2*time.Second {
		t.Errorf("right token served %d times during the attack, slowest %v", served, slowest)
	}
	// The limited address is limited for failing requests only: the right
	// token from it is served, a wrong one still refused.
	if code, _, _ := get(clientFrom(t, "127.0.0.2"), url, good); code != http.StatusOK {
		t.Errorf("right token from the limited address: %d, want 200", code)
	}
	if code, _, _ := get(clientFrom(t, "127.0.0.2"), url, "sdt_one-more-guess"); code != http.StatusTooManyRequests {
		t.Errorf("a guess from the limited address: %d, want 429", code)
	}
}

// TestAuthLimitBudget walks one source through its budget with a moved
// clock: what counts, what does not, Retry-After, and the refill.
func TestAuthLimitBudget(t *testing.T) {
	t.Parallel()
	var clock atomic.Int64
	clock.Store(time.Date(2025, 6, 24, 7, 0, 0, 0, time.UTC).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	advance := func(d time.Duration) { clock.Add(int64(d)) }
	e := newEnv(t, func(o *Options) {
		o.Now = now
		o.AuthLimit = AuthLimit{Burst: 3, Every: 10 * time.Second}
	})
	read := e.token("reader", []string{ScopeRead}, nil, nil)
	elsewhere := e.token("elsewhere", []string{ScopeRead}, []string{"10.0.0.0/8"}, nil)

	// Neither a missing token nor a missing scope is a guess.
	for range 30 {
		resp, body := e.do(req{method: "GET", path: "/jobs"})
		wantError(t, resp, body, 401, CodeMissingToken)
		resp, body = e.do(req{method: "POST", path: "/shutdown", token: read})
		wantError(t, resp, body, 403, CodeScopeNotGranted)
	}
	// An unknown token and a token from the wrong network are.
	resp, body := e.do(req{method: "GET", path: "/jobs", token: "sdt_wrong1"})
	wantError(t, resp, body, 403, CodeInvalidToken)
	resp, body = e.do(req{method: "GET", path: "/jobs", token: elsewhere})
	wantError(t, resp, body, 403, CodeUnauthorizedNetwork)
	resp, body = e.do(req{method: "GET", path: "/jobs", token: "sdt_wrong2"})
	wantError(t, resp, body, 403, CodeInvalidToken)

	for _, tc := range []struct {
		advance time.Duration
		retry   string
	}{{0, "10"}, {4 * time.Second, "6"}, {5500 * time.Millisecond, "1"}} {
		advance(tc.advance)
		resp, body = e.do(req{method: "GET", path: "/jobs", token: "sdt_wrong4"})
		wantError(t, resp, body, 429, CodeRateLimitReached)
		if got := resp.Header.Get("Retry-After"); got != tc.retry {
			t.Errorf("after +%v: Retry-After %q, want %q", tc.advance, got, tc.retry)
		}
	}
	// Unauthenticated paths stay open to a limited source.
	if resp, body := e.do(req{method: "GET", path: "/healthz"}); resp.StatusCode != 200 {
		t.Fatalf("healthz from a limited source: %d %s", resp.StatusCode, body)
	}
	// The right token is served all along; a missing token fails, so it
	// gets the 429 too (uncounted).
	if resp, body := e.do(req{method: "GET", path: "/jobs", token: read}); resp.StatusCode != 200 {
		t.Fatalf("right token from a limited source: %d %s", resp.StatusCode, body)
	}
	resp, body = e.do(req{method: "GET", path: "/jobs"})
	wantError(t, resp, body, 429, CodeRateLimitReached)
	// After the refill of one attempt, one failure is answered as such again.
	advance(500 * time.Millisecond)
	resp, body = e.do(req{method: "GET", path: "/jobs", token: "sdt_wrong3"})
	wantError(t, resp, body, 403, CodeInvalidToken)
	resp, body = e.do(req{method: "GET", path: "/jobs", token: "sdt_wrong5"})
	wantError(t, resp, body, 429, CodeRateLimitReached)
	// A full refill gives the whole burst back.
	advance(time.Hour)
	for i := range 3 {
		resp, body = e.do(req{method: "GET", path: "/jobs", token: fmt.Sprintf("sdt_again%d", i)})
		wantError(t, resp, body, 403, CodeInvalidToken)
	}
	resp, body = e.do(req{method: "GET", path: "/jobs", token: "sdt_again3"})
	wantError(t, resp, body, 429, CodeRateLimitReached)
}

// TestAuthLimitForwardedFor: behind a trusted proxy each client has its own
// budget; a client writing X-Forwarded-For itself cannot escape its own.
func TestAuthLimitForwardedFor(t *testing.T) {
	t.Parallel()
	limit := AuthLimit{Burst: 2, Every: time.Hour}
	trusted := newEnv(t, func(o *Options) {
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		o.AuthLimit = limit
	})
	read := trusted.token("reader", []string{ScopeRead}, nil, nil)
	for i := range 5 {
		resp, _ := trusted.do(req{method: "GET", path: "/jobs", token: "sdt_bad", header: map[string]string{"X-Forwarded-For": "192.0.2.66"}})
		if want := []int{403, 403, 429, 429, 429}[i]; resp.StatusCode != want {
			t.Fatalf("attempt %d through the proxy: %d, want %d", i, resp.StatusCode, want)
		}
	}
	resp, body := trusted.do(req{method: "GET", path: "/jobs", token: read, header: map[string]string{"X-Forwarded-For": "192.0.2.7"}})
	if resp.StatusCode != 200 {
		t.Fatalf("another client behind the same proxy: %d %s", resp.StatusCode, body)
	}

	untrusted := newEnv(t, func(o *Options) { o.AuthLimit = limit })
	for i := range 5 {
		xff := map[string]string{"X-Forwarded-For": fmt.Sprintf("198.51.100.%d", i)}
		resp, _ := untrusted.do(req{method: "GET", path: "/jobs", token: "sdt_bad", header: xff})
		if want := []int{403, 403, 429, 429, 429}[i]; resp.StatusCode != want {
			t.Fatalf("attempt %d with a forged X-Forwarded-For: %d, want %d", i, resp.StatusCode, want)
		}
	}
}

func TestAuthLimiterKeysAndMemory(t *testing.T) {
	t.Parallel()
	now := time.Now()
	l := newAuthLimiter(AuthLimit{Burst: 1, Every: time.Hour, MaxSources: 100}, func() time.Time { return now })
	// Addresses of one IPv6 /64 share a budget; another /64 does not.
	l.fail(netip.MustParseAddr("2001:db8:1:2::1"))
	if l.wait(netip.MustParseAddr("2001:db8:1:2:ffff::9")) == 0 {
		t.Error("another address of the same /64 is not limited")
	}
	if l.wait(netip.MustParseAddr("2001:db8:1:3::1")) != 0 {
		t.Error("another /64 is limited")
	}
	if l.wait(netip.MustParseAddr("192.0.2.1")) != 0 {
		t.Error("an IPv4 address with no failure is limited")
	}
	// A flood of distinct sources cannot grow the map past its bound.
	for i := range 5000 {
		l.fail(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
	if n := len(l.sources); n > 100 {
		t.Errorf("%d sources tracked, bound is 100", n)
	}
	// The invalid address (no peer address at all) is one shared bucket,
	// not a way around the limit.
	l.fail(netip.Addr{})
	if l.wait(netip.Addr{}) == 0 {
		t.Error("invalid source address escapes the limit")
	}
}

// TestValidTokenAlwaysServed: a UPS that shares its address with a stale
// monitor polling with a revoked token finds the address limited; every
// request with a valid token is still served (status reads, the
// simulation, the shutdown, the job list, a scope error as itself), while
// every failing request from the address gets 429, uncounted.
func TestValidTokenAlwaysServed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(o *Options) { o.AuthLimit = AuthLimit{Burst: 2, Every: time.Hour} })
	ups := e.token("ups", []string{ScopeShutdown, ScopeSimulate, ScopeRead}, nil, nil)
	reader := e.token("reader", []string{ScopeRead}, nil, nil)
	c := clientFrom(t, "127.0.0.3")
	for range 3 { // the stale monitor
		if code, _, err := get(c, e.srv.URL+"/shutdown/status", "sdt_revoked-long-ago"); err != nil || code == http.StatusOK {
			t.Fatalf("stale token: %d %v", code, err)
		}
	}
	send := func(method, path, token string) int {
		t.Helper()
		req, _ := http.NewRequest(method, e.srv.URL+path, nil)
		if token != "" {
			req.Header.Set("auth-token", token)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		method, path, token string
		want                int
	}{
		{"GET", "/shutdown/status", ups, http.StatusOK},
		{"GET", "/simulate/status", ups, http.StatusOK},
		{"POST", "/simulate", ups, http.StatusAccepted},
		{"GET", "/jobs", ups, http.StatusOK},
		{"POST", "/shutdown", ups, http.StatusAccepted},
		{"POST", "/shutdown", reader, http.StatusForbidden}, // scope_not_granted: the token is valid
		{"POST", "/shutdown", "sdt_still-wrong", http.StatusTooManyRequests},
		{"GET", "/shutdown/status", "sdt_still-wrong", http.StatusTooManyRequests},
		{"GET", "/shutdown/status", "", http.StatusTooManyRequests},
		{"GET", "/healthz", "", http.StatusOK},
	} {
		if got := send(tc.method, tc.path, tc.token); got != tc.want {
			t.Errorf("%s %s from the limited address: %d, want %d", tc.method, tc.path, got, tc.want)
		}
	}
	// The refused requests were not counted: one hour of refill (one
	// failure) makes the next wrong token a 403 again, then 429.
	if wait := e.api.authLimit.wait(netip.MustParseAddr("127.0.0.3")); wait <= 0 || wait > time.Hour {
		t.Errorf("wait %v, want the address limited for at most one refill", wait)
	}
}
