package handlers

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"go.yaml.in/yaml/v3"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/runner"
	"github.com/edgeops/shutdownd/sitesim"
)

// apiDoc is the parsed OpenAPI document with a small schema checker: types,
// required keys, undocumented keys, enums, nullable, patterns, lengths and
// date-time formats. That is the subset openapi.yaml uses; a keyword the
// checker does not know fails the test, so the document cannot quietly use
// a rule nobody checks.
type apiDoc struct {
	root map[string]any
}

func loadAPIDoc(t *testing.T) *apiDoc {
	t.Helper()
	var root map[string]any
	if err := yaml.Unmarshal(OpenAPI, &root); err != nil {
		t.Fatalf("parse openapi.yaml: %v", err)
	}
	if v, _ := root["openapi"].(string); !strings.HasPrefix(v, "3.") {
		t.Fatalf("openapi version = %q, want 3.x", v)
	}
	return &apiDoc{root: root}
}

// ref resolves a local JSON pointer such as #/components/schemas/Job.
func (d *apiDoc) ref(ref string) (map[string]any, error) {
	if !strings.HasPrefix(ref, "#/") {
		return nil, fmt.Errorf("unsupported $ref %q", ref)
	}
	var cur any = d.root
	for _, part := range strings.Split(ref[2:], "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("$ref %q: %q is not inside an object", ref, part)
		}
		if cur, ok = m[part]; !ok {
			return nil, fmt.Errorf("$ref %q: no %q", ref, part)
		}
	}
	m, ok := cur.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("$ref %q is not an object", ref)
	}
	return m, nil
}

// deref follows $ref chains.
func (d *apiDoc) deref(m map[string]any) (map[string]any, error) {
	for i := 0; i < 10; i++ {
		r, ok := m["$ref"].(string)
		if !ok {
			return m, nil
		}
		var err error
		if m, err = d.ref(r); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("$ref chain too long")
}

var knownSchemaKeys = map[string]bool{
	"type": true, "properties": true, "required": true, "items": true, "enum": true,
	"nullable": true, "additionalProperties": true, "pattern": true, "format": true,
	"maxLength": true, "minLength": true, "minimum": true, "maximum": true,
	"description": true, "default": true, "$ref": true,
}

// check validates v (decoded with UseNumber) against schema and returns
// every violation, each prefixed with its JSON path.
func (d *apiDoc) check(path string, schema map[string]any, v any) []string {
	s, err := d.deref(schema)
	if err != nil {
		return []string{path + ": " + err.Error()}
	}
	var errs []string
	fail := func(format string, args ...any) { errs = append(errs, path+": "+fmt.Sprintf(format, args...)) }
	for k := range s {
		if !knownSchemaKeys[k] {
			fail("schema keyword %q is not supported by the checker", k)
		}
	}
	if enum, ok := s["enum"].([]any); ok {
		if !slices.ContainsFunc(enum, func(e any) bool { return fmt.Sprint(e) == fmt.Sprint(v) && (e == nil) == (v == nil) }) {
			fail("%v is not one of %v", v, enum)
		}
	}
	if v == nil {
		if s["nullable"] != true {
			fail("null, but not nullable")
		}
		return errs
	}
	switch typ, _ := s["type"].(string); typ {
	case "object":
		obj, ok := v.(map[string]any)
		if !ok {
			fail("want object, got %T", v)
			return errs
		}
		props, _ := s["properties"].(map[string]any)
		req, _ := s["required"].([]any)
		for _, k := range req {
			if _, ok := obj[k.(string)]; !ok {
				fail("required key %q missing", k)
			}
		}
		for k, val := range obj {
			ps, ok := props[k].(map[string]any)
			if !ok {
				if s["additionalProperties"] != true {
					fail("key %q is not documented in openapi.yaml (add it to the schema)", k)
				}
				continue
			}
			errs = append(errs, d.check(path+"."+k, ps, val)...)
		}
	case "array":
		arr, ok := v.([]any)
		if !ok {
			fail("want array, got %T", v)
			return errs
		}
		items, _ := s["items"].(map[string]any)
		for i, e := range arr {
			errs = append(errs, d.check(fmt.Sprintf("%s[%d]", path, i), items, e)...)
		}
	case "string":
		str, ok := v.(string)
		if !ok {
			fail("want string, got %T", v)
			return errs
		}
		if p, ok := s["pattern"].(string); ok && !regexp.MustCompile(p).MatchString(str) {
			fail("%q does not match %s", str, p)
		}
		if n, ok := s["maxLength"].(int); ok && len([]rune(str)) > n {
			fail("longer than %d", n)
		}
		if n, ok := s["minLength"].(int); ok && len([]rune(str)) < n {
			fail("shorter than %d", n)
		}
		if s["format"] == "date-time" {
			if _, err := time.Parse(time.RFC3339Nano, str); err != nil {
				fail("%q is not an RFC 3339 date-time", str)
			}
		}
	case "integer":
		n, ok := v.(json.Number)
		if !ok {
			fail("want integer, got %T", v)
			return errs
		}
		if _, err := n.Int64(); err != nil {
			fail("want integer, got %s", n)
		}
	case "number":
		if _, ok := v.(json.Number); !ok {
			fail("want number, got %T", v)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			fail("want boolean, got %T", v)
		}
	default:
		fail("schema without a supported type (%q)", typ)
	}
	return errs
}

// operation is one documented method on one path.
type operation struct {
	method, path string
	op           map[string]any
}

func (d *apiDoc) operations(t *testing.T) []operation {
	t.Helper()
	paths, _ := d.root["paths"].(map[string]any)
	var out []operation
	for p, item := range paths {
		for m, op := range item.(map[string]any) {
			out = append(out, operation{method: strings.ToUpper(m), path: p, op: op.(map[string]any)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path+out[i].method < out[j].path+out[j].method })
	return out
}

// response returns the documented response of an operation for a status.
func (d *apiDoc) response(method, path string, status int) (map[string]any, error) {
	paths, _ := d.root["paths"].(map[string]any)
	item, ok := paths[path].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("path %s not documented", path)
	}
	op, ok := item[strings.ToLower(method)].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s %s not documented", method, path)
	}
	resps, _ := op["responses"].(map[string]any)
	r, ok := resps[fmt.Sprint(status)].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s %s: status %d not documented", method, path, status)
	}
	return d.deref(r)
}

// conformance issues real requests and checks each answer against the
// document, remembering which documented responses were exercised.
type conformance struct {
	t       *testing.T
	doc     *apiDoc
	covered map[string]bool
	seen    map[string]bool
}

// errorf reports a violation once (a drifted field would otherwise repeat
// for every job of every answer), with a shortened body for context.
func (c *conformance) errorf(body []byte, format string, args ...any) {
	c.t.Helper()
	msg := fmt.Sprintf(format, args...)
	if c.seen[msg] {
		return
	}
	c.seen[msg] = true
	if len(body) > 300 {
		body = append(body[:300:300], "..."...)
	}
	c.t.Errorf("%s; body %s", msg, body)
}

func key(method, path string, status int) string {
	return fmt.Sprintf("%s %s %d", method, path, status)
}

// verify checks one real answer against the documented response of
// (method, docPath) and returns the decoded JSON body (nil otherwise).
func (c *conformance) verify(method, docPath string, resp *http.Response, body []byte) map[string]any {
	c.t.Helper()
	c.covered[key(method, docPath, resp.StatusCode)] = true
	r, err := c.doc.response(method, docPath, resp.StatusCode)
	if err != nil {
		c.t.Errorf("%v; body %s", err, body)
		return nil
	}
	if hdrs, ok := r["headers"].(map[string]any); ok {
		for name, h := range hdrs {
			hm := h.(map[string]any)
			got := resp.Header.Get(name)
			if got == "" {
				if hm["required"] == true {
					c.t.Errorf("%s %s %d: header %s missing", method, docPath, resp.StatusCode, name)
				}
				continue
			}
			if sch, ok := hm["schema"].(map[string]any); ok {
				for _, e := range c.doc.check(name, sch, got) {
					c.t.Errorf("%s %s %d: header %s", method, docPath, resp.StatusCode, e)
				}
			}
		}
	}
	content, _ := r["content"].(map[string]any)
	if len(content) != 1 {
		c.t.Errorf("%s %s %d: want exactly one documented media type, got %d", method, docPath, resp.StatusCode, len(content))
		return nil
	}
	for mt, media := range content {
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, mt) {
			c.t.Errorf("%s %s %d: Content-Type %q, documented %q", method, docPath, resp.StatusCode, ct, mt)
		}
		if mt != "application/json" {
			return nil
		}
		sch, _ := media.(map[string]any)["schema"].(map[string]any)
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			c.t.Errorf("%s %s %d: body is not JSON: %v: %s", method, docPath, resp.StatusCode, err, body)
			return nil
		}
		for _, e := range c.doc.check("body", sch, v) {
			c.errorf(body, "%s %s %d: %s", method, docPath, resp.StatusCode, e)
		}
		m, _ := v.(map[string]any)
		return m
	}
	return nil
}

// verifySSE checks a complete event stream: every message's data against
// the schema x-sse-events names for its event type, and that the stream
// ends with an end event. It returns the event types in order.
func (c *conformance) verifySSE(docPath string, body []byte) []string {
	c.t.Helper()
	paths := c.doc.root["paths"].(map[string]any)
	op := paths[docPath].(map[string]any)["get"].(map[string]any)
	byEvent, _ := op["x-sse-events"].(map[string]any)
	var types []string
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	event := "message"
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			event = "message"
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			name, ok := byEvent[event].(string)
			if !ok {
				c.t.Errorf("SSE event type %q is not documented in x-sse-events", event)
				continue
			}
			dec := json.NewDecoder(strings.NewReader(strings.TrimPrefix(line, "data: ")))
			dec.UseNumber()
			var v any
			if err := dec.Decode(&v); err != nil {
				c.t.Errorf("SSE %s data is not JSON: %v", event, err)
				continue
			}
			for _, e := range c.doc.check(event, map[string]any{"$ref": "#/components/schemas/" + name}, v) {
				c.errorf([]byte(line), "SSE: %s", e)
			}
			types = append(types, event)
		}
	}
	if len(types) == 0 || types[len(types)-1] != "end" {
		c.t.Errorf("SSE stream did not finish with an end event: %v", types)
	}
	return types
}

// TestOpenAPIMatchesRoutes: every route of the router is documented, and
// every documented operation is a route, so the document lists the whole
// API and nothing that is not there.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	t.Parallel()
	doc := loadAPIDoc(t)
	e := newEnv(t, nil)
	e.api.MountPlan(nil)  // the program mounts /plan beside the routes
	e.api.MountPower(nil) // and /power
	documented := map[string]bool{}
	for _, op := range doc.operations(t) {
		documented[op.method+" "+op.path] = true
	}
	brace := regexp.MustCompile(`\{([a-z_]+):[^}]*\}`)
	served := map[string]bool{}
	err := e.api.Router().Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		tpl, err := route.GetPathTemplate()
		if err != nil {
			return nil
		}
		methods, _ := route.GetMethods()
		for _, m := range methods {
			if m == http.MethodHead {
				continue
			}
			served[m+" "+brace.ReplaceAllString(tpl, "{$1}")] = true
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk routes: %v", err)
	}
	for r := range served {
		if !documented[r] {
			t.Errorf("route %s is served but not documented in handlers/openapi.yaml", r)
		}
	}
	for r := range documented {
		if !served[r] {
			t.Errorf("%s is documented but not served", r)
		}
	}
}

// TestOpenAPIResponses drives every documented response of every operation
// with real requests against a real store (and, for the detail of a job,
// a real simulation of the simulated site), and checks each answer against
// its documented schema. A documented response no case exercises fails.
func TestOpenAPIResponses(t *testing.T) {
	t.Parallel()
	doc := loadAPIDoc(t)
	c := &conformance{t: t, doc: doc, covered: map[string]bool{}, seen: map[string]bool{}}

	// Part 1: a store without runner, so jobs stay where the requests put them.
	e := newEnv(t, nil)
	read, sim, shut := e.tokens()
	netTok := e.token("elsewhere", []string{ScopeRead}, []string{"10.99.0.0/16"}, nil)
	do := func(method, docPath, path, token, body string, hdr map[string]string) map[string]any {
		t.Helper()
		resp, b := e.do(req{method: method, path: path, token: token, body: body, header: hdr})
		return c.verify(method, docPath, resp, b)
	}
	wantStatus := func(got map[string]any, code string) {
		t.Helper()
		if got == nil || got["code"] != code {
			t.Errorf("answer %v, want code %s", got, code)
		}
	}

	resp, b := e.do(req{method: "GET", path: "/openapi.yaml"})
	c.verify("GET", "/openapi.yaml", resp, b)
	if !bytes.Equal(b, OpenAPI) {
		t.Errorf("GET /openapi.yaml did not serve the embedded document")
	}
	do("GET", "/healthz", "/healthz", "", "", nil)
	for _, p := range []string{"/simulate/status", "/shutdown/status"} {
		got := do("GET", p, p, read, "", nil) // no job yet: {"running": false, "start_time": null}
		if d, _ := got["data"].(map[string]any); len(d) != 2 || d["running"] != false || d["start_time"] != nil {
			t.Errorf("%s before any job: data %v, want only running=false and start_time=null", p, got["data"])
		}
		wantStatus(do("GET", p, p, "", "", nil), CodeMissingToken)
		wantStatus(do("GET", p, p, "sdt_unknown", "", nil), CodeInvalidToken)
	}

	// Simulation: 202, then 409 while it is active, and every error.
	body := `{"reason":"openapi test","expected_recovery":"2030-01-02T03:04:05Z"}`
	idem := map[string]string{IdempotencyHeader: "openapi-1"}
	do("POST", "/simulate", "/simulate", sim, body, idem)
	wantStatus(do("POST", "/simulate", "/simulate", sim, "", nil), CodeJobRunning)
	resp, b = e.do(req{method: "POST", path: "/simulate", token: sim, body: body, header: idem})
	c.verify("POST", "/simulate", resp, b)
	if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replayed Idempotency-Key: %d, Idempotent-Replayed %q", resp.StatusCode, resp.Header.Get("Idempotent-Replayed"))
	}
	wantStatus(do("POST", "/simulate", "/simulate", "", "", nil), CodeMissingToken)
	wantStatus(do("POST", "/simulate", "/simulate", read, "", nil), CodeScopeNotGranted)
	got := do("GET", "/simulate/status", "/simulate/status", read, "", nil)
	if d, _ := got["data"].(map[string]any); d["running"] != true || d["current_step"] == nil {
		t.Errorf("status of a pending simulation: %v", got["data"])
	}

	// Shutdown: preempts the simulation, answers 202 again while active.
	// A body that cannot be used is no error: a retry with one joins the
	// active shutdown like any retry.
	do("POST", "/shutdown", "/shutdown", shut, strings.Replace(body, "{", `{"force":true,`, 1), nil)
	do("POST", "/shutdown", "/shutdown", shut, "", nil)
	do("POST", "/shutdown", "/shutdown", shut, `{"bogus":true}`, nil)
	do("POST", "/shutdown", "/shutdown", shut, `"`+strings.Repeat("x", DefaultMaxBodyBytes)+`"`, nil)
	wantStatus(do("POST", "/shutdown", "/shutdown", "", "", nil), CodeMissingToken)
	wantStatus(do("POST", "/shutdown", "/shutdown", sim, "", nil), CodeScopeNotGranted)
	got = do("GET", "/simulate/status", "/simulate/status", read, "", nil)
	if d, _ := got["data"].(map[string]any); d["error"] == nil {
		t.Errorf("status of a preempted simulation has no error: %v", got["data"])
	}

	jobs := e.jobs()
	if len(jobs) != 2 {
		t.Fatalf("jobs = %d, want 2", len(jobs))
	}
	shutID := jobs[0].ID
	jp := fmt.Sprintf("/jobs/%d", shutID)

	// Cancel: 202 for the active shutdown, 200 once final.
	wantStatus(do("POST", "/jobs/{id}/cancel", jp+"/cancel", sim, "", nil), CodeScopeNotGranted)
	got = do("POST", "/jobs/{id}/cancel", jp+"/cancel", shut, "", nil)
	if d, _ := got["data"].(map[string]any); d["state"] != "cancelled" {
		t.Errorf("cancel of a pending shutdown: %v", got["data"])
	}
	do("POST", "/jobs/{id}/cancel", jp+"/cancel", shut, "", nil)
	wantStatus(do("POST", "/jobs/{id}/cancel", "/jobs/999/cancel", shut, "", nil), CodeNotFound)
	wantStatus(do("POST", "/jobs/{id}/cancel", jp+"/cancel", "", "", nil), CodeMissingToken)

	// Lists and details.
	got = do("GET", "/jobs", "/jobs?kind=shutdown&limit=5", read, "", nil)
	if d, _ := got["data"].([]any); len(d) != 1 {
		t.Errorf("GET /jobs?kind=shutdown: %d jobs, want 1", len(d))
	}
	wantStatus(do("GET", "/jobs", "/jobs?kind=bogus", read, "", nil), CodeInvalidRequest)
	wantStatus(do("GET", "/jobs", "/jobs", "", "", nil), CodeMissingToken)
	wantStatus(do("GET", "/jobs", "/jobs", netTok, "", nil), CodeUnauthorizedNetwork)
	got = do("GET", "/jobs/{id}", jp, read, "", nil)
	d, _ := got["data"].(map[string]any)
	if w, _ := d["warnings"].([]any); len(w) != 1 {
		t.Errorf("detail of a shutdown with an unknown field: warnings %v, want one", d["warnings"])
	}
	wantStatus(do("GET", "/jobs/{id}", "/jobs/999", read, "", nil), CodeNotFound)
	wantStatus(do("GET", "/jobs/{id}", jp, "", "", nil), CodeMissingToken)
	wantStatus(do("GET", "/jobs/{id}", jp, shut[:len(shut)-1], "", nil), CodeInvalidToken)

	// Events of the (final) shutdown: the stream replays and ends at once.
	resp, b = e.do(req{method: "GET", path: jp + "/events", token: read})
	c.verify("GET", "/jobs/{id}/events", resp, b)
	c.verifySSE("/jobs/{id}/events", b)
	wantStatus(do("GET", "/jobs/{id}/events", jp+"/events", read, "", map[string]string{"Last-Event-ID": "x"}), CodeInvalidRequest)
	wantStatus(do("GET", "/jobs/{id}/events", "/jobs/999/events", read, "", nil), CodeNotFound)
	wantStatus(do("GET", "/jobs/{id}/events", jp+"/events", "", "", nil), CodeMissingToken)
	wantStatus(do("GET", "/jobs/{id}/events", jp+"/events", netTok, "", nil), CodeUnauthorizedNetwork)

	// Startup: its own scope, restoring the (final) shutdown above.
	startTok := e.token("ops-startup", []string{ScopeStartup, ScopeRead}, nil, nil)
	wantStatus(do("POST", "/startup", "/startup", startTok, `{"shutdown_job":"latest"}`, nil), CodeInvalidRequest)
	do("POST", "/startup", "/startup", startTok, `{"reason":"mains back"}`, nil)
	wantStatus(do("POST", "/startup", "/startup", startTok, "", nil), CodeJobRunning)
	wantStatus(do("POST", "/startup", "/startup", "", "", nil), CodeMissingToken)
	wantStatus(do("POST", "/startup", "/startup", shut, "", nil), CodeScopeNotGranted)
	if got := do("GET", "/startup/status", "/startup/status", read, "", nil); got["data"].(map[string]any)["running"] != true {
		t.Errorf("startup status: %v", got["data"])
	}
	wantStatus(do("GET", "/startup/status", "/startup/status", "", "", nil), CodeMissingToken)
	wantStatus(do("GET", "/startup/status", "/startup/status", netTok, "", nil), CodeUnauthorizedNetwork)

	// Part 2: a broken store answers 500 and 503 in the documented shape.
	broken := newEnv(t, nil)
	brokenTok := broken.token("reader", []string{ScopeRead}, nil, nil)
	if err := broken.st.Close(); err != nil {
		t.Fatalf("close store: %v", err)
	}
	resp, b = broken.do(req{method: "GET", path: "/jobs", token: brokenTok})
	wantStatus(c.verify("GET", "/jobs", resp, b), CodeInternal)
	resp, b = broken.do(req{method: "GET", path: "/healthz"})
	wantStatus(c.verify("GET", "/healthz", resp, b), CodeServiceUnavailable)

	// A runner that is powering off this machine: /simulate answers 503.
	down := newEnv(t, func(o *Options) { o.Runner = selfDownRunner{job: 7} })
	downTok := down.token("ups", []string{ScopeSimulate, ScopeShutdown}, nil, nil)
	resp, b = down.do(req{method: "POST", path: "/simulate", token: downTok})
	wantStatus(c.verify("POST", "/simulate", resp, b), CodeServiceUnavailable)
	resp, b = down.do(req{method: "POST", path: "/startup", token: down.token("ops", []string{ScopeStartup}, nil, nil)})
	wantStatus(c.verify("POST", "/startup", resp, b), CodeServiceUnavailable)
	resp, b = down.do(req{method: "POST", path: "/shutdown", token: downTok})
	if c.verify("POST", "/shutdown", resp, b); resp.StatusCode != 202 || resp.Header.Get("Location") != "/jobs/7" {
		t.Errorf("POST /shutdown while powering off this machine: %d %q, want 202 for job 7", resp.StatusCode, resp.Header.Get("Location"))
	}

	// Part 3: a real simulation of the simulated site, followed live, so the
	// detail holds real steps, actions of every kind and events.
	live := newSimulatedSite(t)
	lsim := live.token("ups-sim", []string{ScopeSimulate, ScopeRead}, nil, nil)
	resp, b = live.do(req{method: "POST", path: "/simulate", token: lsim})
	c.verify("POST", "/simulate", resp, b)
	id := jobIDFromLocation(t, resp)
	lp := fmt.Sprintf("/jobs/%d", id)
	resp, b = live.do(req{method: "GET", path: lp + "/events", token: lsim})
	c.verify("GET", "/jobs/{id}/events", resp, b)
	types := c.verifySSE("/jobs/{id}/events", b)
	if !slices.Contains(types, "message") || !slices.Contains(types, "job") {
		t.Errorf("live stream event types %v, want messages and job updates", types)
	}
	resp, b = live.do(req{method: "GET", path: lp, token: lsim})
	got = c.verify("GET", "/jobs/{id}", resp, b)
	d, _ = got["data"].(map[string]any)
	if job, _ := d["job"].(map[string]any); job["state"] != "succeeded" {
		t.Errorf("simulation of the simulated site: job %v, want succeeded", job)
	}
	kinds := map[string]bool{}
	for _, a := range d["actions"].([]any) {
		kinds[a.(map[string]any)["target_kind"].(string)] = true
	}
	for _, k := range []string{"openstack", "host", "bmc"} {
		if !kinds[k] {
			t.Errorf("simulation detail has no %s action (kinds %v)", k, kinds)
		}
	}
	if steps, _ := d["steps"].([]any); len(steps) == 0 {
		t.Errorf("simulation detail has no steps")
	}
	resp, b = live.do(req{method: "GET", path: "/simulate/status", token: lsim})
	c.verify("GET", "/simulate/status", resp, b)
	resp, b = live.do(req{method: "GET", path: "/plan", token: lsim})
	got = c.verify("GET", "/plan", resp, b)
	if p, _ := got["data"].(map[string]any); p["simulation_job_id"] == nil || p["vms_to_stop"] == nil {
		t.Errorf("plan after a simulation does not use it: %v", got["data"])
	}
	resp, b = live.do(req{method: "GET", path: "/plan"})
	wantStatus(c.verify("GET", "/plan", resp, b), CodeMissingToken)
	simOnly := live.token("sim-only", []string{ScopeSimulate}, nil, nil)
	resp, b = live.do(req{method: "GET", path: "/plan", token: simOnly})
	wantStatus(c.verify("GET", "/plan", resp, b), CodeScopeNotGranted)
	verifyPower(t, c, live, lsim, simOnly)

	// Every documented response must have been exercised.
	for _, op := range doc.operations(t) {
		resps, _ := op.op["responses"].(map[string]any)
		for code := range resps {
			k := op.method + " " + op.path + " " + code
			if !c.covered[k] {
				t.Errorf("documented response %s is not exercised by this test", k)
			}
		}
	}
}

// newSimulatedSite starts a small simulated site, a real runner over a
// real store and the API in front of them.
func newSimulatedSite(t *testing.T) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	dir := t.TempDir()
	opts := sitesim.DemoOptions(dir)
	opts.Projects = []string{"web"}
	opts.VMsPerProject = 3
	opts.SSHLatency = 0
	opts.NovaLatency = 0
	site, err := sitesim.Start(ctx, opts)
	if err != nil {
		t.Fatalf("start simulated site: %v", err)
	}
	t.Cleanup(site.Close)
	path, err := site.WriteConfig("127.0.0.1:0", filepath.Join(dir, "shutdownd.db"))
	if err != nil {
		t.Fatalf("write config: %v", err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("load config: %v", err)
	}
	var rn *runner.Runner
	e := newEnv(t, func(o *Options) {
		rn = runner.New(cfg, o.Store, runner.Options{Logger: slog.New(slog.DiscardHandler)})
		o.Runner = rn
	})
	e.api.MountPlan(rn)
	e.api.MountPower(nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = rn.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return e
}

// selfDownRunner is a runner that has sent the power-off of the machine
// the service runs on, as shutdown job `job`.
type selfDownRunner struct{ job int64 }

func (selfDownRunner) Kick()                            {}
func (r selfDownRunner) PoweringOffSelf() (int64, bool) { return r.job, true }
