package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/edgeops/shutdownd/store"
)

// FuzzTriggerBody feeds arbitrary bodies to the decoder that POST /simulate
// and POST /shutdown share. It never panics and never refuses; what it
// keeps respects the limits; every warning is a bounded request warning; a
// body ignored whole yields nothing; and a body the strict decoder of
// earlier versions accepted yields the same reason and timestamps, with a
// warning only for what is out of bounds (a long reason, a bad timestamp).
func FuzzTriggerBody(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `null`, `[]`, `"x"`, `{"reason":"utility power lost"}`,
		`{"reason":"x","expected_recovery":"2025-06-24T09:00:00Z"}`,
		`{"expected_recovery":"tomorrow"}`, `{"reason":1}`, `{"reasn":"x"}`,
		`{"reason":"a"} {"reason":"b"}`, `{"reason":"\ud800"}`, `{"reason":"` + strings.Repeat("é", 1001) + `"}`,
		`{"reason":` + strings.Repeat("[", 100) + `}`, `{"expected_recovery":"2025-06-24T09:00:00+99:00"}`,
		`{"REASON":"x","Deadline":"2025-06-24T09:00:00Z"}`, `reason=x&force=1`, `{"reason":null}`,
		`{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11}`,
	} {
		f.Add([]byte(s))
	}
	const limit = 4096
	s := New(Options{MaxBodyBytes: limit})
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/shutdown", strings.NewReader(string(body)))
		tr := s.decodeTrigger(r)
		if n := utf8.RuneCountInString(tr.reason); n > MaxReasonChars || !utf8.ValidString(tr.reason) {
			t.Fatalf("kept a reason of %d characters (valid UTF-8: %v)", n, utf8.ValidString(tr.reason))
		}
		if len(tr.warnings) > 5 {
			t.Fatalf("%d warnings: %q", len(tr.warnings), tr.warnings)
		}
		ignoredWhole := false
		for _, w := range tr.warnings {
			if !strings.HasPrefix(w, WarningPrefix) || len(w) > 1024 {
				t.Fatalf("warning %q: want the prefix %q and at most 1 KiB", w, WarningPrefix)
			}
			ignoredWhole = ignoredWhole || strings.HasPrefix(w, WarningPrefix+"body ignored")
		}
		if ignoredWhole && (tr.reason != "" || tr.expectedRecovery != nil || tr.deadline != nil || len(tr.warnings) != 1) {
			t.Fatalf("body ignored, yet kept %+v", tr)
		}
		if len(body) > limit {
			if !ignoredWhole {
				t.Fatalf("a body over the limit was not ignored: %+v", tr)
			}
			return
		}
		strict, ok := strictTrigger(body)
		if !ok {
			return
		}
		want := 0
		wantReason := strict.Reason
		if n := utf8.RuneCountInString(wantReason); n > MaxReasonChars {
			want++
			wantReason = string([]rune(wantReason)[:MaxReasonChars])
		}
		for _, ts := range []struct {
			raw string
			got *time.Time
		}{{strict.ExpectedRecovery, tr.expectedRecovery}, {strict.Deadline, tr.deadline}} {
			parsed, err := time.Parse(time.RFC3339, ts.raw)
			switch {
			case ts.raw == "":
				if ts.got != nil {
					t.Fatalf("a timestamp from nowhere: %v", ts.got)
				}
			case err != nil:
				want++
				if ts.got != nil {
					t.Fatalf("kept %v from the bad timestamp %q", ts.got, ts.raw)
				}
			case ts.got == nil || !ts.got.Equal(parsed):
				t.Fatalf("timestamp %q kept as %v", ts.raw, ts.got)
			}
		}
		if tr.reason != wantReason || len(tr.warnings) != want {
			t.Fatalf("body %q: reason %q, warnings %q; want reason %q and %d warnings", body, tr.reason, tr.warnings, wantReason, want)
		}
	})
}

// strictTrigger decodes body as the strict decoder of earlier versions
// did: one JSON object of known fields, nothing after it.
func strictTrigger(body []byte) (TriggerRequest, bool) {
	var req TriggerRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		return req, false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return req, false
	}
	return req, true
}

// decodeErrorEnvelope checks that an answer is the JSON error envelope with
// a non-empty message and returns its code.
func decodeErrorEnvelope(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var env struct {
		Data   any     `json:"data"`
		Error  *string `json:"error"`
		Code   string  `json:"code"`
		Status string  `json:"status"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil {
		t.Fatalf("answer is not JSON: %v: %q", err, rec.Body.String())
	}
	if env.Status != "error" || env.Error == nil || *env.Error == "" || env.Code == "" || env.Data != nil {
		t.Fatalf("not an error envelope: %s", rec.Body.String())
	}
	return env.Code
}

// FuzzTokenHeaders sends arbitrary auth-token, Authorization and
// X-Forwarded-For headers through the whole server (real store): the answer
// is always the JSON envelope with one of the authentication outcomes, only
// the real token gets in, and no error message repeats the presented token.
func FuzzTokenHeaders(f *testing.F) {
	st, err := store.Open(context.Background(), filepath.Join(f.TempDir(), "fuzz.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = st.Close() })
	secret, err := store.NewTokenSecret()
	if err != nil {
		f.Fatal(err)
	}
	if _, err := st.CreateToken(context.Background(), "reader", store.HashToken(secret), []string{ScopeRead}, []string{"192.0.2.0/24"}, nil); err != nil {
		f.Fatal(err)
	}
	// Rate limiting would turn every answer after the burst into 429 and
	// hide the authentication path from the fuzzer; it has its own tests.
	s := New(Options{Store: st, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		AuthLimit: AuthLimit{Burst: 1 << 30}})

	f.Add("", "", "", "203.0.113.9:5000")
	f.Add(secret, "", "192.0.2.4", "10.1.2.3:5000")
	f.Add("", "Bearer "+secret, "192.0.2.4, 10.0.0.1", "10.1.2.3:5000")
	f.Add("", "bearer  "+secret+" ", "", "[::ffff:10.0.0.1]:1")
	f.Add("sdt_"+strings.Repeat("A", 43), "Basic dXNlcjpwYXNz", "junk,,,", "garbage")
	f.Add(secret+"\x00", "Bearer", "::1%eth0, 2001:db8::1", "[fe80::1%lo]:80")
	f.Fuzz(func(t *testing.T, authToken, authorization, xff, remote string) {
		r := httptest.NewRequest(http.MethodGet, "/jobs", nil)
		r.RemoteAddr = remote
		// Set the raw values as a client could send them, bypassing the
		// validation that http.Header.Set does not do anyway.
		r.Header["Auth-Token"] = []string{authToken}
		r.Header["Authorization"] = []string{authorization}
		r.Header["X-Forwarded-For"] = []string{xff}
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, r)
		if rec.Code == http.StatusOK {
			if tokenFromRequest(r) != secret {
				t.Fatalf("authenticated without the token: %q %q", authToken, authorization)
			}
			return
		}
		code := decodeErrorEnvelope(t, rec)
		switch code {
		case CodeMissingToken, CodeInvalidToken, CodeUnauthorizedNetwork:
		default:
			t.Fatalf("unexpected answer %d %s: %s", rec.Code, code, rec.Body.String())
		}
		if rec.Code != StatusForCode(code) {
			t.Fatalf("%s answered with %d", code, rec.Code)
		}
		for _, presented := range []string{strings.TrimSpace(authToken), tokenFromRequest(r)} {
			if len(presented) >= 8 && strings.Contains(rec.Body.String(), presented) {
				t.Fatalf("error answer repeats the presented token: %s", rec.Body.String())
			}
		}
		if strings.Contains(rec.Body.String(), secret) {
			t.Fatalf("error answer contains the real token: %s", rec.Body.String())
		}
	})
}

// FuzzClientIP: whatever a client writes into X-Forwarded-For, an untrusted
// peer is always its own address, and the result is a valid address or
// none at all.
func FuzzClientIP(f *testing.F) {
	s := New(Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}})
	f.Add("10.0.0.1:80", "192.0.2.1, 10.0.0.2")
	f.Add("203.0.113.1:80", "10.0.0.1")
	f.Add("[::1]:80", "2001:db8::1%zone, ::ffff:192.0.2.9")
	f.Add("nonsense", "")
	f.Fuzz(func(t *testing.T, remote, xff string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = remote
		r.Header["X-Forwarded-For"] = []string{xff}
		got := s.clientIP(r)
		peer := peerAddr(remote)
		if !s.trusted(peer) && got != peer {
			t.Fatalf("untrusted peer %q with X-Forwarded-For %q resolved to %v", remote, xff, got)
		}
		if got.IsValid() && (got.Zone() != "" || got.Is4In6()) {
			t.Fatalf("client address %v is not normalised", got)
		}
		if peer.IsValid() && !got.IsValid() {
			t.Fatalf("valid peer %v lost", peer)
		}
	})
}
