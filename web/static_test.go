package web

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestStaticServesFilesOnly: /static/ serves the embedded files and
// nothing else. No directory listing (with or without a session), no Go
// plain-text 404, no redirect: every other answer is the API's JSON
// envelope, and a 405 names the allowed methods.
func TestStaticServesFilesOnly(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	css, err := staticFS.ReadFile("static/style.css")
	if err != nil {
		t.Fatal(err)
	}
	c := e.client(t)
	send := func(method, path string, hdr map[string]string) (*http.Response, []byte) {
		t.Helper()
		r, err := http.NewRequest(method, e.srv.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		r.URL.Path, r.URL.RawPath = path, path // sent as written, dot segments included
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		resp, err := c.Do(r)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, b
	}

	for _, tc := range []struct {
		method, path string
		hdr          map[string]string
	}{
		{"GET", "/static/style.css", nil},
		{"GET", "/static/../static/style.css", nil},
		{"GET", "//static//style.css", nil},
		{"GET", "/static/style.css", map[string]string{"Range": "bytes=100000-"}}, // no 416 text page
	} {
		resp, b := send(tc.method, tc.path, tc.hdr)
		if resp.StatusCode != http.StatusOK || string(b) != string(css) ||
			!strings.HasPrefix(resp.Header.Get("Content-Type"), "text/css") {
			t.Errorf("%s %s %v: %d %q, %d bytes; want 200 with the stylesheet", tc.method, tc.path, tc.hdr,
				resp.StatusCode, resp.Header.Get("Content-Type"), len(b))
		}
	}
	resp, b := send("HEAD", "/static/live.js", nil)
	if resp.StatusCode != http.StatusOK || len(b) != 0 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/javascript") {
		t.Errorf("HEAD /static/live.js: %d %q, %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), len(b))
	}

	// Log in first: a session must not unlock a listing either.
	if resp := e.login(t, c, e.token, "/"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	for _, tc := range []struct {
		method, path, code, allow string
		status                    int
	}{
		{"GET", "/static/", "not_found", "", 404},
		{"GET", "/static", "not_found", "", 404},
		{"GET", "/static/.", "not_found", "", 404},
		{"GET", "/static/nope", "not_found", "", 404},
		{"GET", "/static/index.html", "not_found", "", 404},
		{"POST", "/static/style.css", "method_not_allowed", "GET, HEAD", 405},
	} {
		resp, b := send(tc.method, tc.path, nil)
		var env struct {
			Data   any    `json:"data"`
			Code   string `json:"code"`
			Status string `json:"status"`
		}
		if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != "application/json" ||
			json.Unmarshal(b, &env) != nil || env.Code != tc.code || env.Status != "error" {
			t.Errorf("%s %s: %d %q %s; want %d with code %s in the envelope", tc.method, tc.path,
				resp.StatusCode, resp.Header.Get("Content-Type"), b, tc.status, tc.code)
		}
		if got := resp.Header.Get("Allow"); got != tc.allow {
			t.Errorf("%s %s: Allow %q, want %q", tc.method, tc.path, got, tc.allow)
		}
		// Go's listing is a <pre> of links; none of these paths names live.js.
		if strings.Contains(string(b), "<a href") || strings.Contains(string(b), "live.js") {
			t.Errorf("%s %s lists files: %s", tc.method, tc.path, b)
		}
	}
}
