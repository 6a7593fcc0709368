package web

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/handlers"
	"github.com/edgeops/shutdownd/store"
)

func TestLoginLogout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	c := e.client(t)

	resp, _ := e.get(t, c, "/history/7")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login?next=%2Fhistory%2F7" {
		t.Fatalf("anonymous: %d %q, want a redirect to the login form", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, body := e.get(t, c, "/login?next=%2Fhistory%2F7")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login form: %d", resp.StatusCode)
	}
	mustContain(t, body, `<label for="token">`, `name="next" value="/history/7"`, `method="post"`)

	// Wrong tokens of every kind get the same answer and no cookie.
	ctx := context.Background()
	noRead := e.newToken(t, "ups", []string{"shutdown"})
	revoked := e.newToken(t, "old", []string{"read"})
	if err := e.st.RevokeToken(ctx, "old"); err != nil {
		t.Fatal(err)
	}
	var first string
	for _, bad := range []string{"sdt_wrong", noRead, revoked, ""} {
		form := url.Values{"token": {bad}, "next": {"/history/7"}}
		resp, err := c.PostForm(e.srv.URL+"/login", form)
		if err != nil {
			t.Fatal(err)
		}
		b := readAll(t, resp)
		if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
			t.Fatalf("bad token: %d cookies %v", resp.StatusCode, resp.Cookies())
		}
		mustContain(t, b, loginFailed, `<form class="login"`)
		if bad != "" && strings.Contains(b, bad) {
			t.Fatal("the refused token is echoed back")
		}
		msg := b[strings.Index(b, `role="alert"`):]
		if first == "" {
			first = msg
		} else if msg != first {
			t.Fatal("refusals differ, revealing why")
		}
	}

	resp = e.login(t, c, e.token, "/history/7")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/history/7" {
		t.Fatalf("login: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	ck := resp.Cookies()
	if len(ck) != 1 || ck[0].Name != cookieName || !ck[0].HttpOnly || ck[0].SameSite != http.SameSiteStrictMode ||
		ck[0].Secure || ck[0].Path != "/" {
		t.Fatalf("cookie %+v, want HttpOnly SameSite=Strict Path=/ (not Secure without TLS)", ck)
	}
	if ck[0].Value == e.token || strings.Contains(ck[0].Value, "sdt_") || len(ck[0].Value) < 40 {
		t.Fatal("the cookie must hold a random session id, not the token")
	}
	if _, err := e.st.SessionByHash(ctx, store.HashToken(ck[0].Value), time.Hour); err != nil {
		t.Fatalf("session not stored by its hash: %v", err)
	}

	resp, body = e.get(t, c, "/history")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("history after login: %d", resp.StatusCode)
	}
	mustContain(t, body, "Signed in as <strong>viewer</strong>", "No job yet.")
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("CSP %q", csp)
	}

	// A form posted from another site is refused.
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/logout", nil)
	req.Header.Set("Origin", "https://evil.example")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), `"code":"invalid_request"`) {
		t.Fatalf("cross-origin logout: %d %s; want the 400 envelope", resp.StatusCode, b)
	}

	resp, err = c.Post(e.srv.URL+"/logout", "application/x-www-form-urlencoded", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	if _, err := e.st.SessionByHash(ctx, store.HashToken(ck[0].Value), time.Hour); err == nil {
		t.Fatal("session survives logout")
	}
	// Even replaying the old cookie gets nowhere.
	req, _ = http.NewRequest(http.MethodGet, e.srv.URL+"/history", nil)
	req.AddCookie(ck[0])
	resp, err = e.client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("old cookie after logout: %d", resp.StatusCode)
	}
}

func TestLoginRedirectStaysLocal(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	for _, next := range []string{"//evil.example/x", "https://evil.example", `/\evil.example`, "history",
		"/\t/evil.example/x", "/\n/evil.example", "/\r\n/evil.example", "/ /evil.example", "/\x7f/x"} {
		resp := e.login(t, e.client(t), e.token, next)
		if loc := resp.Header.Get("Location"); loc != "/" {
			t.Errorf("next=%q redirected to %q, want the overview", next, loc)
		}
	}
	// A local path, query included, is kept.
	if loc := e.login(t, e.client(t), e.token, "/history/7?x=1").Header.Get("Location"); loc != "/history/7?x=1" {
		t.Errorf("local next redirected to %q", loc)
	}
}

func TestSecureCookieUnderTLS(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(o *Options) { o.TLS = true })
	ck := e.login(t, e.client(t), e.token, "").Cookies()
	if len(ck) != 1 || !ck[0].Secure {
		t.Fatalf("cookie %+v, want Secure", ck)
	}
}

const xss = `<script>alert(1)</script>`

func TestOutputEscaped(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	job := finishedJob(t, e.st, xss, map[string]string{xss: xss, "compute-01": ""})
	if err := e.st.AddEvent(context.Background(), job.ID, "warn", xss, xss); err != nil {
		t.Fatal(err)
	}
	c := e.loggedIn(t)
	for _, p := range []string{"/history", fmt.Sprintf("/history/%d", job.ID), fmt.Sprintf("/history/%d/live", job.ID)} {
		resp, body := e.get(t, c, p)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d", p, resp.StatusCode)
		}
		if strings.Contains(body, xss) {
			t.Fatalf("%s: raw markup from data in the page", p)
		}
		mustContain(t, body, "&lt;script&gt;alert(1)&lt;/script&gt;")
	}
}

func TestJobPageShowsFailures(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	job := finishedJob(t, e.st, "utility power lost", map[string]string{
		"compute-01": "", "storage-02": "ssh: host key mismatch",
	})
	c := e.loggedIn(t)
	_, body := e.get(t, c, fmt.Sprintf("/history/%d", job.ID))
	mustContain(t, body,
		`<meta name="viewport"`,
		`class="failures"`, "1 failed target", "storage-02", "ssh: host key mismatch",
		`class="row-failed"`, `<span class="badge state-failed"><span aria-hidden="true">✖</span> failed</span>`,
		"Checking hosts", "check-ssh", "ups", "10.0.9.7", "utility power lost",
		"Event log", "simulation job created", "Audit chain", "intact",
		`<th scope="col">Attempts</th>`, `<caption>`)
	if strings.Contains(body, `http-equiv="refresh"`) {
		t.Error("a finished job page refreshes itself")
	}
	_, list := e.get(t, c, "/history")
	mustContain(t, list, fmt.Sprintf(`href="/history/%d"`, job.ID), "1 done", "1 failed", "checks failed", "from 10.0.9.7")

	resp, body := e.get(t, c, "/history/999")
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "There is no job 999") {
		t.Fatalf("missing job: %d", resp.StatusCode)
	}
}

func TestRunningJobRefreshesWithoutJS(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	job, _, err := e.st.CreateShutdown(ctx, store.NewJob{TokenName: "ups"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.st.StartJob(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	if err := setCurrentStep(ctx, e.st, job.ID, "Stopping OpenStack VMs (3/10 off)"); err != nil {
		t.Fatal(err)
	}
	_, body := e.get(t, e.loggedIn(t), fmt.Sprintf("/history/%d", job.ID))
	mustContain(t, body, `<noscript><meta http-equiv="refresh" content="5"></noscript>`,
		`data-active="true"`, "Stopping OpenStack VMs (3/10 off)", `aria-live="polite"`)
}

func TestHistoryPaging(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil) // page size 5
	var ids []int64
	for i := range 7 {
		ids = append(ids, finishedJob(t, e.st, fmt.Sprintf("reason %d", i), nil).ID)
	}
	c := e.loggedIn(t)
	_, body := e.get(t, c, "/history")
	// Newest first: jobs 7..3, then a link to older ones.
	if strings.Index(body, "reason 6") > strings.Index(body, "reason 2") || strings.Contains(body, "reason 1") {
		t.Fatal("first page not newest first or too long")
	}
	mustContain(t, body, fmt.Sprintf(`href="/history?before=%d"`, ids[2]))
	_, body = e.get(t, c, fmt.Sprintf("/history?before=%d", ids[2]))
	mustContain(t, body, "reason 1", "reason 0", `href="/history">Newest jobs`)
	if strings.Contains(body, "reason 2") || strings.Contains(body, "Older jobs") {
		t.Fatal("second page repeats jobs or offers a third")
	}
}

func TestEventStreamNeedsSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	job := finishedJob(t, e.st, "", map[string]string{"compute-01": ""})
	resp, body := e.get(t, e.client(t), fmt.Sprintf("/history/%d/events", job.ID))
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `"code":"missing_api_token"`) {
		t.Fatalf("anonymous stream: %d %s", resp.StatusCode, body)
	}
	c := e.loggedIn(t)
	resp, err := c.Get(e.srv.URL + fmt.Sprintf("/history/%d/events", job.ID))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	var lines []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() { // the stream ends after "end" for a finished job
		lines = append(lines, sc.Text())
	}
	all := strings.Join(lines, "\n")
	mustContain(t, all, "id: ", `"message":"simulation job created"`, "event: job", `"state":"succeeded"`, "event: end")
	resp, body = e.get(t, c, "/history/999/events")
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, `"code":"not_found"`) {
		t.Fatalf("missing job stream: %d %s", resp.StatusCode, body)
	}
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		b.WriteString(sc.Text())
		b.WriteString("\n")
	}
	return b.String()
}

// TestDeadlineShown: a job created with a deadline shows it, and whether it
// is on track, on its page and in the list; a missed deadline is marked as a
// failure is.
func TestDeadlineShown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	// A job without a deadline says nothing about one.
	plain := finishedJob(t, e.st, "weekly check", map[string]string{"compute-01": ""})
	deadline := time.Date(2025, 6, 24, 8, 0, 0, 0, time.UTC)
	behind, _, err := e.st.CreateShutdown(ctx, store.NewJob{TokenName: "ups", Deadline: &deadline})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.st.StartJob(ctx, behind.ID); err != nil {
		t.Fatal(err)
	}
	c := e.loggedIn(t)
	_, body := e.get(t, c, fmt.Sprintf("/history/%d", behind.ID))
	mustContain(t, body, "<dt>Deadline</dt>", `datetime="2025-06-24T08:00:00Z"`, "on track: not known yet")

	if _, err := e.st.SetOnTrack(ctx, behind.ID, false); err != nil {
		t.Fatal(err)
	}
	_, body = e.get(t, c, fmt.Sprintf("/history/%d", behind.ID))
	mustContain(t, body, `class="bad deadline-miss"`, "not on track")
	_, list := e.get(t, c, "/history")
	mustContain(t, list, "(deadline at risk)")

	if _, err := e.st.SetOnTrack(ctx, behind.ID, true); err != nil {
		t.Fatal(err)
	}
	_, body = e.get(t, c, fmt.Sprintf("/history/%d", behind.ID))
	mustContain(t, body, `class="ok deadline-ok"`, "on track")
	if strings.Contains(body, "deadline-miss") {
		t.Error("an on-track job is shown as missing its deadline")
	}

	_, body = e.get(t, c, fmt.Sprintf("/history/%d", plain.ID))
	if strings.Contains(body, "Deadline") {
		t.Error("a job without a deadline shows one")
	}
}

// TestLoginBehindATLSProxy: behind a trusted proxy that forwards the public
// host and scheme, a login posted from the public name is this site's own
// form and gets a Secure cookie; the same headers from a peer that is not a
// trusted proxy change nothing.
func TestLoginBehindATLSProxy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "shutdownd.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	secret, _ := store.NewTokenSecret()
	if _, err := st.CreateToken(ctx, "viewer", store.HashToken(secret), []string{"read"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	post := func(trusted []netip.Prefix) *http.Response {
		api := handlers.New(handlers.Options{Store: st, TrustedProxies: trusted})
		if _, err := Mount(api.Router(), Options{Store: st, API: api}); err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(api)
		defer srv.Close()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/login", strings.NewReader(url.Values{"token": {secret}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", "https://shutdownd.site.example")
		req.Header.Set("X-Forwarded-Host", "shutdownd.site.example")
		req.Header.Set("X-Forwarded-Proto", "https")
		c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	resp := post([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login through a trusted proxy: %d", resp.StatusCode)
	}
	if ck := resp.Cookies(); len(ck) != 1 || !ck[0].Secure || !ck[0].HttpOnly {
		t.Errorf("cookie through a TLS proxy: %+v; want Secure and HttpOnly", ck)
	}
	if resp := post(nil); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("forwarded headers from an untrusted peer: %d; want the cross-origin refusal", resp.StatusCode)
	}
}
