package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edgeops/shutdownd/handlers"
)

// The client subcommand talks to a running shutdownd over its HTTP API, so
// an operator (or a script on a UPS controller) needs no curl incantations.
// The token comes from a file or from SHUTDOWND_TOKEN, never from a flag:
// a flag's value is visible to every user of the machine in the process
// list and lands in shell history.

// clientActions are the client's verbs and whether they take a job id.
var clientActions = map[string]bool{
	"simulate": false, "shutdown": false, "startup": false, "status": false, "jobs": false, "job": true, "cancel": true,
}

// jobFailedError is the exit status 1 of --wait when the job ended other
// than succeeded.
type jobFailedError struct {
	id    int64
	state string
	msg   string
}

func (e jobFailedError) Error() string {
	if e.msg == "" {
		return fmt.Sprintf("job %d %s", e.id, e.state)
	}
	return fmt.Sprintf("job %d %s: %s", e.id, e.state, e.msg)
}

// apiClient is a minimal client of the shutdownd API.
type apiClient struct {
	base   string
	token  string
	http   *http.Client // requests with a deadline
	stream *http.Client // the event stream: no overall timeout
}

// apiError is an error answer of the API (the envelope's code and message).
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.status, e.code, e.message)
}

type clientOpts struct {
	url, tokenFile, caFile, reason, recovery, kind string
	wait, asJSON                                   bool
	limit                                          int
	timeout                                        time.Duration
	shutdownJob                                    int64 // startup: the shutdown to restore (0: the latest)
}

func cmdClient(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return usageError{"client: expected simulate, shutdown, startup, status, jobs, job ID or cancel ID"}
	}
	action := args[0]
	needsID, ok := clientActions[action]
	if !ok {
		return usageError{fmt.Sprintf("client: unknown action %q (simulate, shutdown, startup, status, jobs, job, cancel)", action)}
	}
	fs := newFlags("client "+action, stderr)
	var o clientOpts
	fs.StringVar(&o.url, "url", envOr("SHUTDOWND_URL", "http://127.0.0.1:8080"), "base URL of the service (env SHUTDOWND_URL)")
	fs.StringVar(&o.tokenFile, "token-file", os.Getenv("SHUTDOWND_TOKEN_FILE"), "file holding the API token (env SHUTDOWND_TOKEN_FILE; else the token itself in SHUTDOWND_TOKEN)")
	fs.StringVar(&o.caFile, "ca-file", os.Getenv("SHUTDOWND_CA_FILE"), "PEM CA bundle to verify an HTTPS service (env SHUTDOWND_CA_FILE)")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "timeout of each request (not of --wait)")
	fs.BoolVar(&o.asJSON, "json", false, "print the API's data as JSON instead of text")
	switch action {
	case "simulate", "shutdown", "startup":
		fs.StringVar(&o.reason, "reason", "", "why (stored with the job, sent in notifications)")
		fs.StringVar(&o.recovery, "expected-recovery", "", "when power is expected back (RFC 3339)")
		if action == "startup" {
			fs.Int64Var(&o.shutdownJob, "shutdown-job", 0, "the shutdown job to restore (default: the latest)")
		}
	case "jobs":
		fs.StringVar(&o.kind, "kind", "", "only simulation, shutdown or startup jobs")
		fs.IntVar(&o.limit, "limit", 20, "how many jobs (1-500)")
	}
	if action != "status" && action != "jobs" {
		fs.BoolVar(&o.wait, "wait", false, "follow the job until it ends; exit 0 only if it succeeded")
	}
	// Accept the job id before or after the flags.
	rest := args[1:]
	var id int64
	if needsID && len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		n, err := parseJobID(action, rest[0])
		if err != nil {
			return err
		}
		id, rest = n, rest[1:]
	}
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	switch {
	case needsID && id == 0 && fs.NArg() == 1:
		n, err := parseJobID(action, fs.Arg(0))
		if err != nil {
			return err
		}
		id = n
	case needsID && id == 0:
		return usageError{fmt.Sprintf("client %s: expected exactly one job id", action)}
	case fs.NArg() > 0:
		return usageError{fmt.Sprintf("client %s: unexpected argument %q", action, fs.Arg(0))}
	}
	c, err := newAPIClient(o)
	if err != nil {
		return err
	}
	switch action {
	case "simulate", "shutdown", "startup":
		return c.trigger(ctx, action, o, stdout, stderr)
	case "status":
		return c.status(ctx, o, stdout)
	case "jobs":
		return c.jobs(ctx, o, stdout)
	case "job":
		if o.wait {
			return c.follow(ctx, id, stdout)
		}
		return c.job(ctx, id, o, stdout)
	default: // cancel
		return c.cancel(ctx, id, o, stdout)
	}
}

func parseJobID(action, s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 1 {
		return 0, usageError{fmt.Sprintf("client %s: %q is not a job id", action, s)}
	}
	return n, nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// readToken returns the token from --token-file, else SHUTDOWND_TOKEN.
func readToken(file string) (string, error) {
	if file == "" {
		if t := strings.TrimSpace(os.Getenv("SHUTDOWND_TOKEN")); t != "" {
			return t, nil
		}
		return "", usageError{"client: no token: give --token-file FILE or set SHUTDOWND_TOKEN"}
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" || strings.ContainsAny(t, " \t\r\n") {
		return "", fmt.Errorf("token file %s: want exactly one token", file)
	}
	return t, nil
}

func newAPIClient(o clientOpts) (*apiClient, error) {
	u, err := url.Parse(o.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usageError{fmt.Sprintf("client: --url %q: want http://HOST:PORT or https://HOST:PORT", o.url)}
	}
	tok, err := readToken(o.tokenFile)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if o.caFile != "" {
		pem, err := os.ReadFile(o.caFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s: no PEM certificate", o.caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &apiClient{
		base:   strings.TrimSuffix(u.String(), "/"),
		token:  tok,
		http:   &http.Client{Transport: tr, Timeout: o.timeout},
		stream: &http.Client{Transport: tr},
	}, nil
}

// call does one request and decodes the envelope's data into out (which
// may be nil). Error answers become *apiError. It returns the response
// headers (Location).
func (c *apiClient) call(ctx context.Context, method, path string, body any, out any) (http.Header, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("auth-token", c.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	var env struct {
		Data  json.RawMessage `json:"data"`
		Error *string         `json:"error"`
		Code  string          `json:"code"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("%s %s: %d, not a shutdownd answer: %.200q", method, path, resp.StatusCode, raw)
	}
	if resp.StatusCode >= 300 || env.Error != nil {
		msg := ""
		if env.Error != nil {
			msg = *env.Error
		}
		return nil, fmt.Errorf("%s %s: %w", method, path, &apiError{status: resp.StatusCode, code: env.Code, message: msg})
	}
	if out != nil {
		if err := json.Unmarshal(env.Data, out); err != nil {
			return nil, fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return resp.Header, nil
}

// clientJob is a job as the API sends it; the client decodes with the
// server's own types, so the two cannot drift apart.
type clientJob = handlers.JobJSON

func (c *apiClient) trigger(ctx context.Context, action string, o clientOpts, stdout, stderr io.Writer) error {
	var body any
	if o.reason != "" || o.recovery != "" || o.shutdownJob != 0 {
		b := map[string]any{"reason": o.reason, "expected_recovery": o.recovery}
		if o.shutdownJob != 0 {
			b["shutdown_job"] = o.shutdownJob
		}
		body = b
	}
	h, err := c.call(ctx, http.MethodPost, "/"+action, body, nil)
	if err != nil {
		return err
	}
	loc := h.Get("Location")
	id, err := strconv.ParseInt(strings.TrimPrefix(loc, "/jobs/"), 10, 64)
	if err != nil {
		return fmt.Errorf("POST /%s: accepted, but Location %q names no job", action, loc)
	}
	if o.asJSON {
		fmt.Fprintf(stdout, "{\"job_id\":%d}\n", id)
	} else {
		fmt.Fprintf(stdout, "%s accepted: job %d (%s%s)\n", action, id, c.base, loc)
	}
	if !o.wait {
		return nil
	}
	return c.follow(ctx, id, stdout)
}

func (c *apiClient) status(ctx context.Context, o clientOpts, stdout io.Writer) error {
	type status struct {
		Running     bool   `json:"running"`
		StartTime   string `json:"start_time"`
		CurrentStep string `json:"current_step"`
		Error       string `json:"error"`
		JobID       int64  `json:"job_id"`
		State       string `json:"state"`
	}
	var sim, shut, up json.RawMessage
	for _, q := range []struct {
		path string
		dst  *json.RawMessage
	}{{"/simulate/status", &sim}, {"/shutdown/status", &shut}, {"/startup/status", &up}} {
		if _, err := c.call(ctx, http.MethodGet, q.path, nil, q.dst); err != nil {
			return err
		}
	}
	if o.asJSON {
		fmt.Fprintf(stdout, "{\"simulation\":%s,\"shutdown\":%s,\"startup\":%s}\n", sim, shut, up)
		return nil
	}
	for _, k := range []struct {
		name string
		raw  json.RawMessage
	}{{"simulation", sim}, {"shutdown", shut}, {"startup", up}} {
		var s status
		if err := json.Unmarshal(k.raw, &s); err != nil {
			return fmt.Errorf("decode %s status: %w", k.name, err)
		}
		switch {
		case s.JobID == 0:
			fmt.Fprintf(stdout, "%-10s  never run\n", k.name)
		case s.Running:
			fmt.Fprintf(stdout, "%-10s  job %d running since %sZ: %s\n", k.name, s.JobID, s.StartTime, s.CurrentStep)
		case s.Error != "":
			fmt.Fprintf(stdout, "%-10s  job %d %s (requested %sZ): %s\n", k.name, s.JobID, s.State, s.StartTime, s.Error)
		default:
			fmt.Fprintf(stdout, "%-10s  job %d %s (requested %sZ)\n", k.name, s.JobID, s.State, s.StartTime)
		}
	}
	return nil
}

func (c *apiClient) jobs(ctx context.Context, o clientOpts, stdout io.Writer) error {
	q := url.Values{}
	if o.kind != "" {
		q.Set("kind", o.kind)
	}
	q.Set("limit", strconv.Itoa(o.limit))
	var raw json.RawMessage
	if _, err := c.call(ctx, http.MethodGet, "/jobs?"+q.Encode(), nil, &raw); err != nil {
		return err
	}
	if o.asJSON {
		fmt.Fprintf(stdout, "%s\n", raw)
		return nil
	}
	var jobs []clientJob
	if err := json.Unmarshal(raw, &jobs); err != nil {
		return fmt.Errorf("decode jobs: %w", err)
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tSTATE\tCREATED\tDURATION\tTOKEN\tREASON / RESULT")
	for _, j := range jobs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", j.ID, j.Kind, j.State, shortTime(j.CreatedAt),
			orDash(duration(j.StartedAt, j.FinishedAt)), orDash(j.TokenName), orDash(oneLine(jobSummary(j), 80)))
	}
	return tw.Flush()
}

func jobSummary(j clientJob) string {
	parts := []string{}
	if j.Reason != "" {
		parts = append(parts, j.Reason)
	}
	if j.Error != "" {
		parts = append(parts, j.Error)
	} else if j.FinishedAt == nil && j.CurrentStep != "" {
		parts = append(parts, j.CurrentStep)
	}
	return strings.Join(parts, " / ")
}

func (c *apiClient) job(ctx context.Context, id int64, o clientOpts, stdout io.Writer) error {
	var raw json.RawMessage
	if _, err := c.call(ctx, http.MethodGet, fmt.Sprintf("/jobs/%d", id), nil, &raw); err != nil {
		return err
	}
	if o.asJSON {
		fmt.Fprintf(stdout, "%s\n", raw)
		return nil
	}
	var d handlers.JobDetailJSON
	if err := json.Unmarshal(raw, &d); err != nil {
		return fmt.Errorf("decode job %d: %w", id, err)
	}
	j := d.Job
	fmt.Fprintf(stdout, "job %d  %s  %s\n", j.ID, j.Kind, j.State)
	fmt.Fprintf(stdout, "  requested %s by %s", shortTime(j.CreatedAt), orDash(j.TokenName))
	if j.Reason != "" {
		fmt.Fprintf(stdout, ": %s", j.Reason)
	}
	fmt.Fprintln(stdout)
	if dur := duration(j.StartedAt, j.FinishedAt); dur != "" {
		fmt.Fprintf(stdout, "  took %s\n", dur)
	} else if j.CurrentStep != "" {
		fmt.Fprintf(stdout, "  now: %s\n", j.CurrentStep)
	}
	if j.Error != "" {
		fmt.Fprintf(stdout, "  error: %s\n", j.Error)
	}
	fmt.Fprintln(stdout, "\nSTEPS")
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	for _, s := range d.Steps {
		note := s.Detail
		if s.Error != "" {
			note = s.Error
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\n", s.Seq, s.Name, s.State, orDash(duration(s.StartedAt, s.FinishedAt)), oneLine(note, 100))
	}
	tw.Flush()
	counts := map[string]int{}
	var failed []string
	for _, a := range d.Actions {
		counts[a.State]++
		if a.State == "failed" {
			failed = append(failed, fmt.Sprintf("  %s %s %s: %s", a.TargetKind, a.Target, a.Operation, oneLine(a.Error, 120)))
		}
	}
	fmt.Fprintf(stdout, "\nACTIONS  %d total", len(d.Actions))
	for _, st := range []string{"succeeded", "failed", "skipped", "running", "pending"} {
		if counts[st] > 0 {
			fmt.Fprintf(stdout, ", %d %s", counts[st], st)
		}
	}
	fmt.Fprintln(stdout)
	for _, f := range failed {
		fmt.Fprintln(stdout, f)
	}
	fmt.Fprintln(stdout, "\nEVENTS")
	for _, e := range d.Events {
		fmt.Fprintf(stdout, "  %s  %-5s %s%s\n", shortTime(e.At), e.Level, e.Message, detailSuffix(e.Detail))
	}
	return nil
}

func (c *apiClient) cancel(ctx context.Context, id int64, o clientOpts, stdout io.Writer) error {
	var j clientJob
	if _, err := c.call(ctx, http.MethodPost, fmt.Sprintf("/jobs/%d/cancel", id), nil, &j); err != nil {
		return err
	}
	switch {
	case o.asJSON && !o.wait:
		b, _ := json.Marshal(j)
		fmt.Fprintf(stdout, "%s\n", b)
	case j.State == "cancelled" || (j.CancelRequested && !isFinal(j.State)):
		fmt.Fprintf(stdout, "job %d: cancel recorded (%s)\n", id, j.State)
	default:
		fmt.Fprintf(stdout, "job %d already %s; nothing to cancel\n", id, j.State)
	}
	if !o.wait {
		return nil
	}
	return c.follow(ctx, id, stdout)
}

func isFinal(state string) bool {
	return state == "succeeded" || state == "failed" || state == "cancelled"
}

// shortTime shows an API timestamp to the second.
func shortTime(s string) string {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return s
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func duration(start, end *string) string {
	if start == nil || end == nil {
		return ""
	}
	a, err1 := time.Parse(time.RFC3339Nano, *start)
	b, err2 := time.Parse(time.RFC3339Nano, *end)
	if err1 != nil || err2 != nil {
		return ""
	}
	return b.Sub(a).Round(100 * time.Millisecond).String()
}

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > max {
		return string(r[:max-1]) + "…"
	}
	return s
}

func detailSuffix(d string) string {
	if d == "" {
		return ""
	}
	return " (" + oneLine(d, 160) + ")"
}

// errStreamEnded tells follow that the stream closed without an end event.
var errStreamEnded = errors.New("event stream closed before the job ended")
