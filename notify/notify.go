// Package notify sends webhook notifications about jobs ("inform us after
// the shutdown and the expected recovery time"): a signed JSON POST when a
// job starts, when each step ends and when the job ends.
//
// Deliveries leave from a queue per webhook, each drained by its own
// goroutine, so a webhook that hangs or fails never delays the shutdown (the
// runner only enqueues) nor the other webhooks, and each webhook still gets
// the messages of a job in order. Failed attempts are retried with
// exponential backoff and recorded as events of the job, so the audit trail
// says who was told and who was not. The payload is documented in
// docs/notifications.md.
package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/runner"
	"github.com/edgeops/shutdownd/store"
)

// SignatureHeader carries "t=<unix seconds>,v1=<hex HMAC-SHA256>" of the
// string "<t>.<body>" with the webhook's secret. The timestamp is signed
// so that a receiver can reject replays of an old message.
const SignatureHeader = "X-Shutdownd-Signature"

// Event names, in the payload's "event" field and the X-Shutdownd-Event
// header.
const (
	EventJobStarted   = "job.started"
	EventStepFinished = "step.finished"
	EventJobFinished  = "job.finished"
)

// Defaults of Options.
const (
	DefaultTimeout     = 10 * time.Second
	DefaultMaxAttempts = 6
	DefaultBackoff     = time.Second
	DefaultMaxBackoff  = time.Minute
	DefaultQueueSize   = 256
)

// Options configure a Notifier. Zero values take the defaults above.
type Options struct {
	Webhooks []config.Webhook
	// Store receives an event on the job for every failed attempt and for
	// the final outcome of a failed delivery. May be nil (tests).
	Store  *store.Store
	Logger *slog.Logger
	// Client sends the requests; its Timeout is replaced by Timeout.
	Client *http.Client
	// Timeout bounds one attempt, so that a webhook that hangs costs one
	// timeout per attempt and no more.
	Timeout time.Duration
	// MaxAttempts per delivery; Backoff doubles from Backoff up to
	// MaxBackoff between attempts.
	MaxAttempts         int
	Backoff, MaxBackoff time.Duration
	QueueSize           int
	Now                 func() time.Time
}

// Notifier is a runner.Observer that sends webhooks.
type Notifier struct {
	opts   Options
	log    *slog.Logger
	hooks  []*hook
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// pending counts deliveries queued or being sent; idle waiters are
	// released when it reaches zero (Drain).
	mu      sync.Mutex
	pending int
	idle    []chan struct{}
}

var (
	_ runner.Observer = (*Notifier)(nil)
	_ runner.Drainer  = (*Notifier)(nil)
)

// hook is one webhook and its queue.
type hook struct {
	url    string
	origin string // scheme://host, the only part of the URL ever logged
	secret []byte
	queue  chan delivery
}

// delivery is one message to one webhook.
type delivery struct {
	id    string
	event string
	jobID int64
	body  []byte
}

// New starts one sender goroutine per webhook; Close stops them.
func New(opts Options) *Notifier {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	if opts.Backoff <= 0 {
		opts.Backoff = DefaultBackoff
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = DefaultMaxBackoff
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = DefaultQueueSize
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	client := &http.Client{}
	if opts.Client != nil {
		c := *opts.Client
		client = &c
	}
	client.Timeout = opts.Timeout
	// A redirect would carry the signed body elsewhere: not followed.
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	opts.Client = client

	ctx, cancel := context.WithCancel(context.Background())
	n := &Notifier{opts: opts, log: opts.Logger, ctx: ctx, cancel: cancel}
	for _, w := range opts.Webhooks {
		h := &hook{url: w.URL, origin: origin(w.URL), secret: []byte(w.Secret.Reveal()), queue: make(chan delivery, opts.QueueSize)}
		n.hooks = append(n.hooks, h)
		n.wg.Add(1)
		go n.run(h)
	}
	return n
}

// Close stops the senders. Deliveries still queued or being retried are
// dropped (and logged): the service is stopping.
func (n *Notifier) Close() {
	n.cancel()
	n.wg.Wait()
}

// JobStarted implements runner.Observer.
func (n *Notifier) JobStarted(ctx context.Context, j store.Job) {
	n.enqueue(ctx, EventJobStarted, j, nil)
}

// StepFinished implements runner.Observer.
func (n *Notifier) StepFinished(ctx context.Context, j store.Job, s store.Step) {
	n.enqueue(ctx, EventStepFinished, j, &s)
}

// JobFinished implements runner.Observer.
func (n *Notifier) JobFinished(ctx context.Context, j store.Job) {
	n.enqueue(ctx, EventJobFinished, j, nil)
}

// PeerCall implements runner.Observer; peers are not notified about.
func (n *Notifier) PeerCall(string, string, error) {}

// enqueue builds the payload once and queues it for every webhook. It never
// blocks: with a queue full (a webhook down for a long time), the message is
// dropped for that webhook and the drop recorded.
func (n *Notifier) enqueue(ctx context.Context, event string, j store.Job, s *store.Step) {
	if len(n.hooks) == 0 {
		return
	}
	id := newID()
	body, err := json.Marshal(newPayload(id, event, n.opts.Now(), j, s))
	if err != nil {
		n.log.Error("notify: encode payload", "err", err)
		return
	}
	for _, h := range n.hooks {
		n.addPending(1)
		select {
		case h.queue <- delivery{id: id, event: event, jobID: j.ID, body: body}:
		default:
			n.addPending(-1)
			n.record(ctx, j.ID, "error", fmt.Sprintf("webhook %s: %s notification dropped: queue full", h.origin, event), "")
		}
	}
}

func (n *Notifier) addPending(d int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.pending += d
	if n.pending == 0 {
		for _, ch := range n.idle {
			close(ch)
		}
		n.idle = nil
	}
}

// Drain waits until every queued delivery has been delivered or given up
// (retries included), or until ctx ends, and returns how many are still
// pending. The runner calls it before powering off the machine it runs on,
// so that the job.finished message leaves first.
func (n *Notifier) Drain(ctx context.Context) int {
	n.mu.Lock()
	if n.pending == 0 {
		n.mu.Unlock()
		return 0
	}
	ch := make(chan struct{})
	n.idle = append(n.idle, ch)
	n.mu.Unlock()
	select {
	case <-ch:
		return 0
	case <-ctx.Done():
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.pending
	}
}

// run sends the deliveries of one webhook, one at a time, in order.
func (n *Notifier) run(h *hook) {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			return
		case d := <-h.queue:
			n.deliver(h, d)
			n.addPending(-1)
		}
	}
}

// deliver tries a delivery up to MaxAttempts times.
func (n *Notifier) deliver(h *hook, d delivery) {
	wait := n.opts.Backoff
	for attempt := 1; ; attempt++ {
		retry, err := n.send(h, d)
		if err == nil {
			if attempt > 1 {
				n.record(n.ctx, d.jobID, "info", fmt.Sprintf("webhook %s: %s delivered at attempt %d", h.origin, d.event, attempt), "delivery "+d.id)
			}
			return
		}
		if n.ctx.Err() != nil {
			n.log.Warn("notify: stopping with a delivery pending", "webhook", h.origin, "event", d.event, "job_id", d.jobID)
			return
		}
		if !retry || attempt >= n.opts.MaxAttempts {
			n.record(n.ctx, d.jobID, "error", fmt.Sprintf("webhook %s: %s not delivered after %d attempts", h.origin, d.event, attempt),
				err.Error()+"; delivery "+d.id)
			return
		}
		n.record(n.ctx, d.jobID, "warn", fmt.Sprintf("webhook %s: %s attempt %d failed; retrying in %s", h.origin, d.event, attempt, wait),
			err.Error())
		t := time.NewTimer(wait)
		select {
		case <-n.ctx.Done():
			t.Stop()
			n.log.Warn("notify: stopping with a delivery pending", "webhook", h.origin, "event", d.event, "job_id", d.jobID)
			return
		case <-t.C:
		}
		wait = min(2*wait, n.opts.MaxBackoff)
	}
}

// send makes one attempt. The error never contains the URL's path or
// query (they may hold a token), only the origin.
func (n *Notifier) send(h *hook, d delivery) (retry bool, err error) {
	req, err := http.NewRequestWithContext(n.ctx, http.MethodPost, h.url, bytes.NewReader(d.body))
	if err != nil {
		return false, errors.New("invalid webhook URL")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "shutdownd")
	req.Header.Set("X-Shutdownd-Event", d.event)
	req.Header.Set("X-Shutdownd-Delivery", d.id)
	if len(h.secret) > 0 {
		req.Header.Set(SignatureHeader, Sign(h.secret, n.opts.Now(), d.body))
	}
	resp, err := n.opts.Client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the full URL
		}
		return true, fmt.Errorf("POST %s: %v", h.origin, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return false, nil
	case resp.StatusCode >= 500, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode == http.StatusRequestTimeout:
		return true, fmt.Errorf("POST %s: HTTP %d", h.origin, resp.StatusCode)
	default:
		// Another 4xx (or a redirect) will not change by asking again.
		return false, fmt.Errorf("POST %s: HTTP %d", h.origin, resp.StatusCode)
	}
}

// record adds an event to the job (and logs it); the store write uses a
// context that survives Close, so a recorded failure is not lost.
func (n *Notifier) record(ctx context.Context, jobID int64, level store.Level, msg, detail string) {
	n.log.Info("notify: "+msg, "job_id", jobID, "level", level, "detail", detail)
	if n.opts.Store == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := n.opts.Store.AddEvent(ctx, jobID, level, msg, detail); err != nil {
		n.log.Warn("notify: record event", "job_id", jobID, "err", err)
	}
}

// Sign returns the signature header value of body at time t:
// "t=<unix>,v1=<hex HMAC-SHA256(secret, "<unix>.<body>")>".
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts))
	mac.Write([]byte("."))
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

func origin(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(invalid URL)"
	}
	return u.Scheme + "://" + u.Host
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ErrBadSignature is returned by Verify for a missing, malformed, wrong or
// stale signature.
var ErrBadSignature = errors.New("bad webhook signature")

// Verify checks a signature header value against body, as a receiver
// written in Go would: the HMAC must match (compared in constant time) and
// the timestamp must be within tolerance of now, so a captured message
// cannot be replayed later.
func Verify(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts, sig string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sig == "" {
		return fmt.Errorf("%w: malformed header", ErrBadSignature)
	}
	want := Sign(secret, time.Unix(unix, 0), body)
	_, wantSig, _ := strings.Cut(want, ",v1=")
	if !hmac.Equal([]byte(sig), []byte(wantSig)) {
		return fmt.Errorf("%w: mismatch", ErrBadSignature)
	}
	if d := now.Sub(time.Unix(unix, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: timestamp outside tolerance", ErrBadSignature)
	}
	return nil
}
