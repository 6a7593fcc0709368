package handlers

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/store"
)

// detail reads GET /jobs/{id} with token.
func (e *env) detail(id int64, token string) JobDetailJSON {
	e.t.Helper()
	resp, b := e.do(req{method: "GET", path: fmt.Sprintf("/jobs/%d", id), token: token})
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("GET /jobs/%d: %d %s", id, resp.StatusCode, b)
	}
	var d struct{ Data JobDetailJSON }
	if err := json.Unmarshal(b, &d); err != nil {
		e.t.Fatalf("job detail: %v: %s", err, b)
	}
	if d.Data.Warnings == nil {
		e.t.Fatalf("job detail has warnings null, want a list: %s", b)
	}
	return d.Data
}

// finish ends job id, so that the next trigger creates a new job.
func (e *env) finish(id int64) {
	e.t.Helper()
	if _, err := e.st.FinishJob(context.Background(), id, store.StateSucceeded, ""); err != nil {
		e.t.Fatalf("finish job %d: %v", id, err)
	}
}

// wantWarnings checks that the job's detail lists exactly one warning per
// fragment, each containing it, and that each is a warn event of the job.
func wantWarnings(t *testing.T, d JobDetailJSON, fragments ...string) {
	t.Helper()
	if len(d.Warnings) != len(fragments) {
		t.Fatalf("warnings %q, want %d containing %q", d.Warnings, len(fragments), fragments)
	}
	for i, f := range fragments {
		if !strings.HasPrefix(d.Warnings[i], WarningPrefix) || !strings.Contains(d.Warnings[i], f) {
			t.Errorf("warning %q, want it to contain %q", d.Warnings[i], f)
		}
		if !slices.ContainsFunc(d.Events, func(e EventJSON) bool { return e.Level == "warn" && e.Message == d.Warnings[i] }) {
			t.Errorf("warning %q is not a warn event of the job", d.Warnings[i])
		}
	}
}

func orNull(s *string) string {
	if s == nil {
		return "null"
	}
	return *s
}

// TestTriggerBodiesNeverRefused: on both POST /simulate and POST /shutdown,
// every body starts the job (202). What cannot be used is left out and
// named in the job's warnings (warn events); what can be used is kept.
func TestTriggerBodiesNeverRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	read, sim, shut := e.tokens()
	recovery := time.Date(2025, 6, 24, 9, 0, 0, 0, time.UTC)
	tests := []struct {
		name, body, contentType string
		reason                  string
		recovery                *time.Time
		warnings                []string
	}{
		{"empty", ``, "", "", nil, nil},
		{"valid", `{"reason":"mains lost","expected_recovery":"2025-06-24T11:00:00+02:00"}`, "application/json", "mains lost", &recovery, nil},
		{"null", `null`, "application/json", "", nil, nil},
		{"unknown fields", `{"reason":"x","force":true,"zone":"b"}`, "", "x", nil,
			[]string{`unknown fields ignored: "force", "zone" (known: reason, expected_recovery, deadline)`}},
		{"reason not a string", `{"reason":5,"expected_recovery":"2025-06-24T09:00:00Z"}`, "", "", &recovery,
			[]string{"reason ignored: expected a string, got number"}},
		{"bad timestamp", `{"reason":"mains lost","expected_recovery":"tomorrow"}`, "", "mains lost", nil,
			[]string{`expected_recovery ignored: "tomorrow" is not an RFC 3339 timestamp`}},
		{"timestamp without zone", `{"expected_recovery":"2025-06-24T09:00:00"}`, "", "", nil,
			[]string{"is not an RFC 3339 timestamp"}},
		{"bad deadline", `{"reason":"r","deadline":"in ten minutes"}`, "", "r", nil,
			[]string{`deadline ignored: "in ten minutes" is not an RFC 3339 timestamp`}},
		{"reason too long", `{"reason":"` + strings.Repeat("é", MaxReasonChars+1) + `"}`, "", strings.Repeat("é", MaxReasonChars), nil,
			[]string{"reason cut to its first 1000 characters (it had 1001)"}},
		{"reason of exactly the limit", `{"reason":"` + strings.Repeat("é", MaxReasonChars) + `"}`, "", strings.Repeat("é", MaxReasonChars), nil, nil},
		{"not an object", `["reason"]`, "", "", nil, []string{"body ignored: a JSON array, not an object"}},
		{"truncated", `{"reason":`, "", "", nil, []string{"body ignored: truncated JSON"}},
		{"form body", `reason=mains+lost&force=1`, "application/x-www-form-urlencoded", "", nil,
			[]string{"body ignored: not JSON (invalid character 'r' looking for beginning of value"}},
		{"two objects", `{"reason":"a"} {"reason":"b"}`, "", "a", nil, []string{"data after the JSON object ignored"}},
		{"too large", `{"reason":"` + strings.Repeat("a", DefaultMaxBodyBytes) + `"}`, "", "", nil,
			[]string{fmt.Sprintf("body ignored: larger than %d bytes", DefaultMaxBodyBytes)}},
	}
	for _, tc := range tests {
		for _, ep := range []struct {
			path, token string
			kind        store.Kind
		}{{"/simulate", sim, store.KindSimulation}, {"/shutdown", shut, store.KindShutdown}} {
			hdr := map[string]string{}
			if tc.contentType != "" {
				hdr["Content-Type"] = tc.contentType
			}
			resp, body := e.do(req{method: "POST", path: ep.path, token: ep.token, body: tc.body, header: hdr})
			if resp.StatusCode != http.StatusAccepted || string(body) != acceptedBody {
				t.Fatalf("%s %s: %d %s, want 202", tc.name, ep.path, resp.StatusCode, body)
			}
			id := jobIDFromLocation(t, resp)
			d := e.detail(id, read)
			if d.Job.Kind != string(ep.kind) || d.Job.Reason != tc.reason {
				t.Errorf("%s %s: job %s with reason %q, want %s with %q", tc.name, ep.path, d.Job.Kind, d.Job.Reason, ep.kind, tc.reason)
			}
			if got, want := orNull(d.Job.ExpectedRecovery), orNull(fmtTimePtr(tc.recovery)); got != want {
				t.Errorf("%s %s: expected_recovery %s, want %s", tc.name, ep.path, got, want)
			}
			t.Run(tc.name+" "+ep.path, func(t *testing.T) { wantWarnings(t, d, tc.warnings...) })
			e.finish(id)
		}
	}
	if n, want := len(e.jobs()), 2*len(tests); n != want {
		t.Fatalf("%d jobs, want %d: every request started one", n, want)
	}
}

// TestHugeBodyDoesNotDelayShutdown: a client announces a 100 MiB body and
// sends only its first 100 KiB. The shutdown starts and is answered at
// once, without waiting for the rest; the job says the body was ignored.
func TestHugeBodyDoesNotDelayShutdown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	read, _, shut := e.tokens()
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /shutdown HTTP/1.1\r\nHost: shutdownd\r\nauth-token: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
		shut, 100<<20)
	if _, err := conn.Write([]byte(`{"reason":"` + strings.Repeat("x", 100<<10))); err != nil {
		t.Fatal(err)
	}
	// The rest never comes: the answer must not depend on it.
	if err := conn.SetReadDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer while the body is unfinished: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d, want 202", resp.StatusCode)
	}
	d := e.detail(jobIDFromLocation(t, resp), read)
	if d.Job.Kind != string(store.KindShutdown) {
		t.Fatalf("job %+v, want a shutdown", d.Job)
	}
	wantWarnings(t, d, fmt.Sprintf("body ignored: larger than %d bytes", DefaultMaxBodyBytes))
}

// TestWarningsOnlyOnTheJobTheyConcern: a retry that joins the active
// shutdown does not add its body's warnings to that job (its body is not
// used), and a job created without any problem has an empty list.
func TestWarningsOnlyOnTheJobTheyConcern(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	read, _, shut := e.tokens()
	resp, _ := e.do(req{method: "POST", path: "/shutdown", token: shut, body: `{"reason":"mains lost"}`})
	id := jobIDFromLocation(t, resp)
	resp, b := e.do(req{method: "POST", path: "/shutdown", token: shut, body: `{"reason":"again","bogus":1}`})
	if resp.StatusCode != http.StatusAccepted || jobIDFromLocation(t, resp) != id {
		t.Fatalf("retry: %d %s, want 202 for job %d", resp.StatusCode, b, id)
	}
	d := e.detail(id, read)
	wantWarnings(t, d)
	if d.Job.Reason != "mains lost" {
		t.Errorf("reason %q: a retry must not change the active job", d.Job.Reason)
	}
}
