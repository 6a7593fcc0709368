package openstack

import (
	"net/http"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
)

func tooMany(retryAfter string) error {
	h := http.Header{}
	if retryAfter != "" {
		h.Set("Retry-After", retryAfter)
	}
	return gophercloud.ErrUnexpectedResponseCode{Actual: http.StatusTooManyRequests, ResponseHeader: h}
}

// Retry-After is honoured in both of its forms (seconds, HTTP date), never
// negative, and capped at MaxBackoff so one answer cannot stall a shutdown.
func TestBackoffHonoursRetryAfterWithinMaxBackoff(t *testing.T) {
	c := &Client{opts: Options{BaseBackoff: 250 * time.Millisecond, MaxBackoff: 10 * time.Second}}
	date := func(d time.Duration) string { return time.Now().Add(d).UTC().Format(http.TimeFormat) }
	for _, tc := range []struct {
		header   string
		min, max time.Duration
	}{
		{"3", 3 * time.Second, 3 * time.Second},
		{"0", 0, 0},
		{"-5", 0, 0},
		{"120", 10 * time.Second, 10 * time.Second}, // capped
		{date(5 * time.Second), 3 * time.Second, 5 * time.Second},
		{date(-time.Minute), 0, 0},                            // a date in the past: at once
		{date(time.Hour), 10 * time.Second, 10 * time.Second}, // capped
	} {
		got := c.backoff(1, tooMany(tc.header))
		if got < tc.min || got > tc.max {
			t.Errorf("Retry-After %q: wait %s, want %s..%s", tc.header, got, tc.min, tc.max)
		}
	}
	// Without a usable Retry-After: exponential with jitter, capped.
	for _, h := range []string{"", "soon"} {
		if got := c.backoff(1, tooMany(h)); got < 125*time.Millisecond || got > 250*time.Millisecond {
			t.Errorf("Retry-After %q, attempt 1: wait %s, want 125ms..250ms", h, got)
		}
	}
	if got := c.backoff(40, tooMany("")); got < 5*time.Second || got > 10*time.Second {
		t.Errorf("attempt 40: wait %s, want 5s..10s", got)
	}
}
