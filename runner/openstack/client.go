// Package openstack is shutdownd's Nova client: it authenticates from
// clouds.yaml or the openrc variables like every OpenStack tool, lists the servers of all projects and
// sends os-stop, retrying what a busy or restarting API answers (5xx, 429,
// timeouts) so that a flaky control plane does not abort a shutdown.
//
// Retries live here and only here: gophercloud's own 429 backoff
// (ProviderClient.RetryBackoffFunc) and RetryFunc are left unset, so one
// policy (Options.MaxRetries, BaseBackoff, MaxBackoff, Retry-After) covers
// every call and every retry is reported through Options.OnRetry.
// gophercloud still re-authenticates once on a 401 (AllowReauth), which is not
// a retry of the failure but a token refresh.
package openstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	gcopenstack "github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/config"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"
)

// Defaults for Options fields left zero. They favour finishing a shutdown:
// a few seconds of patience per call, bounded so one stuck call cannot eat
// the whole stop timeout.
const (
	DefaultRequestTimeout = 30 * time.Second
	DefaultConcurrency    = 20
	DefaultMaxRetries     = 8
	DefaultBaseBackoff    = 250 * time.Millisecond
	DefaultMaxBackoff     = 10 * time.Second
)

// ErrConflict is Nova's 409: the server's state does not allow the action
// (already stopped, or a task such as powering-off in progress). The caller
// re-reads the server instead of failing.
var ErrConflict = errors.New("conflict: server state does not allow the action")

// ErrNotFound is Nova's 404: the server is gone (deleted since the listing).
var ErrNotFound = errors.New("server not found")

// Options says which cloud to use and how patient to be with it.
type Options struct {
	// Cloud is the clouds.yaml entry; empty falls back to OS_CLOUD.
	Cloud string
	// CloudsFile is the clouds.yaml path; empty uses the standard search
	// (OS_CLIENT_CONFIG_FILE, ./clouds.yaml, ~/.config/openstack/,
	// /etc/openstack/).
	CloudsFile string
	// Openrc takes the credentials from the openrc variables (OS_AUTH_URL,
	// OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME, the domains, OS_REGION_NAME,
	// or OS_APPLICATION_CREDENTIAL_ID and _SECRET) instead of clouds.yaml;
	// Cloud and CloudsFile are then ignored.
	Openrc bool
	// RequestTimeout bounds each HTTP request (a timeout is retried).
	RequestTimeout time.Duration
	// Concurrency is how many calls the caller runs in parallel; it sizes
	// the idle connection pool so parallel stops reuse connections.
	Concurrency int
	// MaxRetries is how many times a failed call is retried: 0 means
	// DefaultMaxRetries, negative means never.
	MaxRetries int
	// BaseBackoff and MaxBackoff shape the exponential backoff with jitter;
	// MaxBackoff also caps a server's Retry-After.
	BaseBackoff, MaxBackoff time.Duration
	// OnRetry, if set, is called before each retry's wait, so the job log
	// shows a flaky API. op is "auth", "list-servers" or "os-stop"; attempt
	// is the number of the attempt that failed, starting at 1.
	OnRetry func(op string, attempt int, err error, wait time.Duration)
	// Logger receives retry warnings and the authenticated endpoint; nil
	// discards.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	switch {
	case o.MaxRetries == 0:
		o.MaxRetries = DefaultMaxRetries
	case o.MaxRetries < 0:
		o.MaxRetries = 0
	}
	if o.BaseBackoff <= 0 {
		o.BaseBackoff = DefaultBaseBackoff
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.MaxBackoff < o.BaseBackoff {
		o.MaxBackoff = o.BaseBackoff
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Client is an authenticated Nova client, safe for concurrent use.
type Client struct {
	opts     Options
	log      *slog.Logger
	provider *gophercloud.ProviderClient
	compute  *gophercloud.ServiceClient
	// skew is this machine's clock minus Keystone's, measured when the
	// first token was issued, so that a token's expiry is read on this
	// machine's clock.
	skew time.Duration
}

// New reads clouds.yaml, authenticates against Keystone (retrying transient
// failures) and locates the compute endpoint. Authentication failures are
// reported as "openstack auth: ..."; the password never appears in errors or
// logs.
func New(ctx context.Context, opts Options) (*Client, error) {
	opts = opts.withDefaults()
	c := &Client{opts: opts, log: opts.Logger}

	parse, source, err := parseOptions(opts)
	if err != nil {
		return nil, err
	}
	ao, eo, tlsConfig, err := clouds.Parse(parse...)
	if err != nil {
		return nil, fmt.Errorf("openstack config: %s: %w", source, err)
	}
	ao.AllowReauth = true
	authURL := redactURL(ao.IdentityEndpoint)

	tr := http.DefaultTransport.(*http.Transport).Clone()
	if tlsConfig != nil {
		tr.TLSClientConfig = tlsConfig
	}
	// The parallel stops, plus a listing running beside them.
	tr.MaxIdleConnsPerHost = opts.Concurrency + 2
	hc := http.Client{Transport: tr, Timeout: opts.RequestTimeout}

	var pc *gophercloud.ProviderClient
	err = c.retry(ctx, "auth", func(ctx context.Context) error {
		var err error
		pc, err = config.NewProviderClient(ctx, ao, config.WithHTTPClient(hc))
		return err
	})
	switch {
	case gophercloud.ResponseCodeIs(err, http.StatusUnauthorized):
		return nil, fmt.Errorf("openstack auth: authentication failed at %s (check username, password, user/project domain and project in %s): %w",
			authURL, source, describe(err))
	case err != nil:
		return nil, fmt.Errorf("openstack auth: %s: %w", authURL, describe(err))
	}
	pc.UserAgent.Prepend("shutdownd")

	compute, err := gcopenstack.NewComputeV2(pc, eo)
	if err != nil {
		return nil, fmt.Errorf("openstack auth: no compute endpoint (region %q, interface %q) in the catalog: %w",
			eo.Region, eo.Availability, err)
	}
	c.provider, c.compute = pc, compute
	if issued, _, ok := tokenTimes(pc); ok {
		c.skew = time.Since(issued)
	}
	c.log.Info("openstack authenticated", "source", source, "auth_url", authURL, "compute", compute.Endpoint,
		"token_expires_at", c.TokenExpiresAt())
	return c, nil
}

// parseOptions says where the credentials come from: the openrc variables,
// or a clouds.yaml entry. source names it in errors, never with a secret.
func parseOptions(opts Options) (parse []clouds.ParseOption, source string, err error) {
	if opts.Openrc {
		parse, err := openrcParse()
		if err != nil {
			return nil, "", fmt.Errorf("openstack config: openrc variables: %w", err)
		}
		return parse, "the openrc variables (OS_*)", nil
	}
	if opts.Cloud != "" {
		parse = append(parse, clouds.WithCloudName(opts.Cloud))
	}
	if opts.CloudsFile != "" {
		parse = append(parse, clouds.WithLocations(opts.CloudsFile))
	}
	return parse, fmt.Sprintf("clouds.yaml (cloud %q)", opts.Cloud), nil
}

// TokenExpiresAt is when the client's current token expires (Keystone's
// expires_at), on this machine's clock; zero when Keystone did not say.
// gophercloud replaces the token on a 401, and this follows it.
func (c *Client) TokenExpiresAt() time.Time {
	issued, expires, ok := tokenTimes(c.provider)
	if !ok || expires.Before(issued) {
		return time.Time{}
	}
	return expires.Add(c.skew)
}

// tokenTimes reads issued_at and expires_at of the provider's current token
// (Keystone v3).
func tokenTimes(pc *gophercloud.ProviderClient) (issued, expires time.Time, ok bool) {
	r, isV3 := pc.GetAuthResult().(tokens.CreateResult)
	if !isV3 {
		return time.Time{}, time.Time{}, false
	}
	var t struct {
		IssuedAt  time.Time `json:"issued_at"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := r.ExtractInto(&t); err != nil || t.ExpiresAt.IsZero() {
		return time.Time{}, time.Time{}, false
	}
	if t.IssuedAt.IsZero() {
		t.IssuedAt = time.Now()
	}
	return t.IssuedAt, t.ExpiresAt, true
}

// redactURL hides a password embedded in a URL before it reaches a log or an
// error.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable auth_url)"
	}
	return u.Redacted()
}
