package openstack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"
)

// retry runs f until it succeeds, fails with an error that retrying cannot
// fix, exhausts MaxRetries, or ctx ends. Waits honour Retry-After when the
// server sends one, otherwise back off exponentially with jitter.
func (c *Client) retry(ctx context.Context, op string, f func(context.Context) error) error {
	for attempt := 1; ; attempt++ {
		err := f(ctx)
		if err == nil {
			return nil
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			if errors.Is(err, ctxErr) {
				return err
			}
			return fmt.Errorf("%w (last error: %v)", ctxErr, describe(err))
		}
		if !retryable(err) {
			return err
		}
		if attempt > c.opts.MaxRetries {
			if attempt == 1 {
				return err
			}
			return fmt.Errorf("giving up after %d attempts: %w", attempt, describe(err))
		}
		wait := c.backoff(attempt, err)
		c.log.Warn("openstack call failed, will retry", "op", op, "attempt", attempt, "wait", wait, "err", describe(err))
		if c.opts.OnRetry != nil {
			c.opts.OnRetry(op, attempt, describe(err), wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), describe(err))
		case <-t.C:
		}
	}
}

// retryable says whether another attempt can succeed: server errors, rate
// limiting and transport failures (timeouts, refused or reset connections,
// an API restarting) can; 4xx answers and malformed bodies cannot.
func retryable(err error) bool {
	var ue gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &ue) {
		return ue.Actual >= 500 || ue.Actual == http.StatusTooManyRequests
	}
	var reauth *gophercloud.ErrUnableToReauthenticate
	if errors.As(err, &reauth) {
		return retryable(reauth.ErrReauth)
	}
	var urlErr *url.Error
	return errors.As(err, &urlErr)
}

// backoff is the wait before retry number attempt: the server's Retry-After
// if it sent one, else BaseBackoff doubled per attempt with equal jitter
// (half fixed, half random, so parallel stops do not retry in lockstep);
// both capped at MaxBackoff so a shutdown keeps moving.
func (c *Client) backoff(attempt int, err error) time.Duration {
	if d, ok := retryAfter(err); ok {
		return min(d, c.opts.MaxBackoff)
	}
	d := c.opts.MaxBackoff
	if attempt <= 30 {
		d = min(c.opts.BaseBackoff<<(attempt-1), c.opts.MaxBackoff)
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// retryAfter reads a Retry-After header (seconds or HTTP date) from an HTTP
// error.
func retryAfter(err error) (time.Duration, bool) {
	var ue gophercloud.ErrUnexpectedResponseCode
	if !errors.As(err, &ue) || ue.ResponseHeader == nil {
		return 0, false
	}
	v := strings.TrimSpace(ue.ResponseHeader.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.Atoi(v); err == nil {
		return max(time.Duration(secs)*time.Second, 0), true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0), true
	}
	return 0, false
}

// faultMessage extracts the message of a Nova or Keystone error body
// ({"itemNotFound": {"message": ...}} or {"error": {"message": ...}}).
func faultMessage(err error) string {
	var ue gophercloud.ErrUnexpectedResponseCode
	if !errors.As(err, &ue) {
		return err.Error()
	}
	var body map[string]struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(ue.Body, &body) == nil {
		for _, f := range body {
			if f.Message != "" {
				return f.Message
			}
		}
	}
	s := strings.TrimSpace(string(ue.Body))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}
