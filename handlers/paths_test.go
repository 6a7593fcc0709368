package handlers

import (
	"net/http"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/store"
)

// TestUncleanPathsServedNotRedirected: a doubled slash, a trailing slash or
// dot segments are served as the clean path, never answered with a
// redirect (which many clients follow as a GET): a UPS script with
// "//shutdown" in its URL shuts the site down. Authentication still
// applies to the clean path.
func TestUncleanPathsServedNotRedirected(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	read, _, shut := e.tokens()
	client := &http.Client{Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	send := func(method, path, token string) *http.Response {
		t.Helper()
		// Write the request line as given: url.Parse would keep "//shutdown"
		// as a host, so the URL is built from its parts.
		hr, err := http.NewRequest(method, e.srv.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		hr.URL.Path, hr.URL.RawPath = path, path
		if token != "" {
			hr.Header.Set("auth-token", token)
		}
		resp, err := client.Do(hr)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		resp.Body.Close()
		return resp
	}
	for _, tc := range []struct {
		method, path, token string
		status              int
	}{
		{"POST", "//shutdown", shut, http.StatusAccepted},
		{"POST", "/shutdown/", shut, http.StatusAccepted},
		{"POST", "/./shutdown", shut, http.StatusAccepted},
		{"GET", "//shutdown//status", read, http.StatusOK},
		{"GET", "/jobs/", read, http.StatusOK},
		{"GET", "/nope/../healthz", "", http.StatusOK},
		{"POST", "//shutdown", "", http.StatusUnauthorized},
		{"POST", "//shutdown", read, http.StatusForbidden},
		{"GET", "//shutdown", read, http.StatusMethodNotAllowed},
		{"GET", "//nope", read, http.StatusNotFound},
	} {
		resp := send(tc.method, tc.path, tc.token)
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s: %d (Location %q), want %d", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Location"), tc.status)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: Content-Type %q, want the JSON envelope", tc.method, tc.path, ct)
		}
	}
	jobs := e.jobs()
	if len(jobs) != 1 || jobs[0].Kind != store.KindShutdown {
		t.Fatalf("jobs %+v, want the one shutdown that the three POSTs started and joined", jobs)
	}
}
