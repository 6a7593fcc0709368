package runner

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/store"
)

// The runner keeps one OpenStack login (an authenticated client and its
// Keystone token) for the whole service, so that a shutdown does not spend
// its first moments on Keystone, and so that Keystone sees as few logins as
// possible: every failed one counts towards the account's lockout
// (keystone [security_compliance] lockout_failure_attempts), and a locked
// account is the one the next shutdown needs.
//
//   - One token: a login at start, then again only shortly before the token
//     expires (Keystone's expires_at, less tokenRenewMargin), or when the
//     clouds.yaml it was read from changed. A token revoked meanwhile is
//     renewed by the client itself on Nova's 401 (gophercloud's reauth).
//   - After a failed login the background waits loginBackoffBase, doubling
//     with each further failure up to loginBackoffMax, instead of trying
//     again every few minutes against a password that was rotated.
//   - A shutdown takes the client if its token is still good; otherwise it,
//     like every simulation (checking the login is its job), logs in at
//     once, whatever the backoff says. Its login replaces the kept one, and
//     its failure counts as one more.
//
// config/describe.go says the same in check-config's words.
var (
	loginBackoffBase = 5 * time.Minute
	loginBackoffMax  = time.Hour
	// cloudFilesPoll is how often the background looks at clouds.yaml for
	// a change (a stat per file), so that a fixed password is tried at
	// once instead of after the backoff.
	cloudFilesPoll = 30 * time.Second
)

const (
	// tokenRenewMargin is how long before its expiry a token is renewed,
	// at most; a short-lived token is renewed at four fifths of its life.
	tokenRenewMargin = 5 * time.Minute
	// tokenUnknownLife is how long a login is kept when Keystone gave no
	// expiry (a Keystone without expires_at; its default lifetime is 1 h).
	tokenUnknownLife = 30 * time.Minute
	// tokenMinLife: a token that expires sooner than this is not handed to
	// a shutdown; logging in again costs less than a 401 mid-listing.
	tokenMinLife = 30 * time.Second
)

// CloudLogin is the health of the OpenStack login the runner keeps, for
// /metrics and the simulation's report. Times are zero when they have not
// happened.
type CloudLogin struct {
	// Enabled is false when the site has no OpenStack: nothing logs in.
	Enabled bool
	// Source is where the credentials come from (config.Source*).
	Source      string
	LastSuccess time.Time
	LastFailure time.Time
	// LastError is the last failure's message (never a secret).
	LastError string
	// ConsecutiveFailures counts failed logins since the last success,
	// the ones Keystone's lockout counts.
	ConsecutiveFailures int
	// TokenExpiresAt is when the kept token expires (zero: none kept).
	TokenExpiresAt time.Time
	// NextAttempt is when the background logs in next.
	NextAttempt time.Time
	// Succeeded and Failed count every login since the service started.
	Succeeded, Failed int64
}

// cloudWarmer holds the kept client and the login's health. Its zero value
// holds none.
type cloudWarmer struct {
	mu      sync.Mutex
	cloud   Cloud
	retries *retryRoute
	expires time.Time // on this machine's clock; zero with no client
	renewAt time.Time
	files   string // cloudsFiles fingerprint when it was authenticated
	health  CloudLogin
	// tried is the fingerprint of the files at the last attempt, success
	// or not: a change is worth an attempt before the backoff ends.
	tried string
}

// retryRoute sends the retries of a kept client's calls to the job using
// it; otherwise they are only counted by the observer.
type retryRoute struct {
	to atomic.Pointer[func(op string, attempt int, err error)]
}

func (r *retryRoute) call(op string, attempt int, err error) {
	if f := r.to.Load(); f != nil {
		(*f)(op, attempt, err)
	}
}

// CloudLogin returns the health of the OpenStack login.
func (r *Runner) CloudLogin() CloudLogin {
	r.warm.mu.Lock()
	defer r.warm.mu.Unlock()
	h := r.warm.health
	h.Enabled, h.Source = r.cfg.OpenStack.Enabled(), r.cfg.OpenStack.Source
	return h
}

// keepCloudWarm logs in now, then whenever the token is due for renewal,
// the backoff after a failure has passed, or clouds.yaml changed, until ctx
// ends.
func (r *Runner) keepCloudWarm(ctx context.Context) {
	if !r.cfg.OpenStack.Enabled() {
		return
	}
	for {
		if r.warm.due(r.cloudsFiles()) {
			r.cloudLogin(ctx, nil)
		}
		wait := time.Until(r.warm.next())
		t := time.NewTimer(max(min(wait, cloudFilesPoll), 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (r *Runner) cloudsFiles() string {
	if r.cfg.OpenStack.Source == config.SourceOpenrc {
		return "" // the environment of a running process does not change
	}
	return cloudsFiles(r.cfg.OpenStack.CloudsFile)
}

// due reports whether the background should log in now.
func (w *cloudWarmer) due(files string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return !time.Now().Before(w.health.NextAttempt) || files != w.tried
}

func (w *cloudWarmer) next() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.health.NextAttempt
}

// cloudLogin logs in, records the outcome in the login's health and, on
// success, keeps the client (replacing the one kept before). onRetry, when
// set, receives the retries of this login and of the client's later calls
// until the caller's step ends (release).
func (r *Runner) cloudLogin(ctx context.Context, onRetry func(op string, attempt int, err error)) (Cloud, *retryRoute, error) {
	files := r.cloudsFiles()
	route := &retryRoute{}
	if onRetry != nil {
		route.to.Store(&onRetry)
	}
	c, err := r.deps.OpenCloud(ctx, r.cfg.OpenStack, route.call)
	now := time.Now()
	w := &r.warm
	w.mu.Lock()
	defer w.mu.Unlock()
	w.tried = files
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, err // stopped, not refused: no verdict on the credentials
		}
		w.health.Failed++
		w.health.ConsecutiveFailures++
		w.health.LastFailure, w.health.LastError = now, err.Error()
		w.health.NextAttempt = now.Add(loginBackoff(w.health.ConsecutiveFailures))
		r.log.Warn("openstack login failed; a shutdown or simulation still logs in at once",
			"consecutive_failures", w.health.ConsecutiveFailures, "next_attempt", w.health.NextAttempt, "err", err)
		return nil, nil, err
	}
	if w.health.ConsecutiveFailures > 0 {
		r.log.Info("openstack login works again", "after_failures", w.health.ConsecutiveFailures)
	}
	expires, renewAt := tokenSchedule(c, now)
	w.cloud, w.retries, w.files, w.expires, w.renewAt = c, route, files, expires, renewAt
	w.health.Succeeded++
	w.health.ConsecutiveFailures, w.health.LastError = 0, ""
	w.health.LastSuccess, w.health.TokenExpiresAt, w.health.NextAttempt = now, expires, renewAt
	return c, route, nil
}

// tokenSchedule is when c's token expires and when to renew it.
func tokenSchedule(c Cloud, now time.Time) (expires, renewAt time.Time) {
	expires = c.TokenExpiresAt()
	if expires.IsZero() {
		return now.Add(tokenUnknownLife), now.Add(tokenUnknownLife)
	}
	life := expires.Sub(now)
	renewAt = expires.Add(-min(tokenRenewMargin, life/5))
	// A token issued already (nearly) expired must not make a busy loop.
	return expires, maxTime(renewAt, now.Add(time.Second))
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// loginBackoff is the wait after the n-th consecutive failed login.
func loginBackoff(n int) time.Duration {
	d := loginBackoffMax
	if n <= 30 {
		d = min(loginBackoffBase<<(n-1), loginBackoffMax)
	}
	return d
}

// takeCloud hands the kept client to a shutdown, with its retries reported
// through onRetry until release is called; nil if none is fit to use (none
// kept, its token about to expire, or clouds.yaml changed since).
func (r *Runner) takeCloud(onRetry func(op string, attempt int, err error)) (c Cloud, release func()) {
	files := r.cloudsFiles()
	w := &r.warm
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cloud == nil || time.Until(w.expires) < tokenMinLife || files != w.files {
		return nil, func() {}
	}
	route := w.retries
	route.to.Store(&onRetry)
	return w.cloud, func() { route.to.Store(nil) }
}

// cloudsFiles fingerprints the files a client's configuration was read from
// (the configured clouds.yaml, else the standard places, with their
// secure.yaml), so that a changed file is read again by a fresh
// authentication instead of a client made from the old one.
func cloudsFiles(configured string) string {
	var paths []string
	if configured != "" {
		paths = append(paths, configured, filepath.Join(filepath.Dir(configured), "secure.yaml"))
	} else {
		if p := os.Getenv("OS_CLIENT_CONFIG_FILE"); p != "" {
			paths = append(paths, p)
		}
		dirs := []string{"."}
		if home, err := os.UserHomeDir(); err == nil {
			dirs = append(dirs, filepath.Join(home, ".config", "openstack"))
		}
		dirs = append(dirs, "/etc/openstack")
		for _, d := range dirs {
			paths = append(paths, filepath.Join(d, "clouds.yaml"), filepath.Join(d, "secure.yaml"))
		}
	}
	var b []byte
	for _, p := range paths {
		b = append(b, p...)
		if fi, err := os.Stat(p); err == nil {
			b = fi.ModTime().AppendFormat(b, time.RFC3339Nano)
			b = append(b, ' ')
			b = strconv.AppendInt(b, fi.Size(), 10)
		}
		b = append(b, 0)
	}
	return string(b)
}

// reportCloudLogin records, on a simulation, how the kept login has fared
// since the service started: a warn event when its last attempts failed
// (the password may have been rotated, and Keystone's lockout is counting),
// an info event otherwise. The simulation then logs in itself.
func (e *exec) reportCloudLogin() {
	h := e.r.CloudLogin()
	const stamp = time.RFC3339
	switch {
	case h.ConsecutiveFailures > 0:
		e.event(store.LevelWarn, fmt.Sprintf("openstack login: %d consecutive failed logins, the last at %s; next background attempt at %s",
			h.ConsecutiveFailures, h.LastFailure.Format(stamp), h.NextAttempt.Format(stamp)), h.LastError)
	case h.Succeeded > 0:
		e.event(store.LevelInfo, fmt.Sprintf("openstack login: last success at %s, token valid until %s, renewed at %s",
			h.LastSuccess.Format(stamp), h.TokenExpiresAt.Format(stamp), h.NextAttempt.Format(stamp)))
	}
}

// loginDetail says how a login went, for the simulation's check action.
func loginDetail(c Cloud, o config.OpenStack) string {
	s := fmt.Sprintf("login ok with clouds.yaml cloud %q", o.Cloud)
	if o.Source == config.SourceOpenrc {
		s = "login ok with the openrc variables"
	}
	if exp := c.TokenExpiresAt(); !exp.IsZero() {
		s += ", token valid until " + exp.Format(time.RFC3339)
	}
	return s
}
