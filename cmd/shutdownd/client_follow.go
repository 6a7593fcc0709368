package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// streamIdleTimeout: the service sends a keep-alive comment every 15 s, so
// a stream silent for this long is dead (the service's host lost power, a
// NAT dropped the connection) and is reopened from the last event id.
const streamIdleTimeout = 45 * time.Second

// maxReconnects bounds how often --wait reopens a broken stream in a row
// before it gives up (exit 1): the job goes on regardless, and
// `shutdownd client job ID` shows where it stands.
const maxReconnects = 20

// follow streams the job's events to the display until the job ends. It
// returns nil only when the job succeeded.
func (c *apiClient) follow(ctx context.Context, id int64, stdout io.Writer) error {
	d := newDisplay(stdout, isTerminal(stdout))
	defer d.close()
	var lastID string
	failures := 0
	for {
		end, progressed, err := c.streamOnce(ctx, id, &lastID, d)
		if err == nil {
			d.end(end)
			if end.State == "succeeded" {
				return nil
			}
			return jobFailedError{id: id, state: end.State, msg: end.Error}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ae *apiError
		if errors.As(err, &ae) && ae.status < 500 {
			return err // unknown job, bad token: retrying cannot help
		}
		if progressed {
			failures = 0
		}
		failures++
		if failures > maxReconnects {
			return fmt.Errorf("follow job %d: %w", id, err)
		}
		wait := time.Duration(min(failures, 5)) * time.Second
		d.note(fmt.Sprintf("event stream lost (%v); reconnecting in %s", err, wait))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// sseEnd is the data of the final SSE message.
type sseEnd struct {
	JobID int64  `json:"job_id"`
	State string `json:"state"`
	Error string `json:"error"`
}

type sseEvent struct {
	At      string `json:"at"`
	Level   string `json:"level"`
	Message string `json:"message"`
	Detail  string `json:"detail"`
}

// streamOnce reads one connection of the event stream. It returns the end
// message (err == nil) or why the stream broke, and whether anything was
// received (a stream that progressed resets the reconnect budget).
func (c *apiClient) streamOnce(ctx context.Context, id int64, lastID *string, d *display) (sseEnd, bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	path := fmt.Sprintf("/jobs/%d/events", id)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return sseEnd{}, false, err
	}
	req.Header.Set("auth-token", c.token)
	req.Header.Set("Accept", "text/event-stream")
	if *lastID != "" {
		req.Header.Set("Last-Event-ID", *lastID)
	}
	// The idle watchdog cancels the request when nothing, not even a
	// keep-alive, arrives for streamIdleTimeout.
	idle := time.AfterFunc(streamIdleTimeout, cancel)
	defer idle.Stop()
	resp, err := c.stream.Do(req)
	if err != nil {
		return sseEnd{}, false, fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var env struct {
			Error *string `json:"error"`
			Code  string  `json:"code"`
		}
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		_ = json.Unmarshal(raw, &env)
		msg := strings.TrimSpace(string(raw))
		if env.Error != nil {
			msg = *env.Error
		}
		return sseEnd{}, false, fmt.Errorf("GET %s: %w", path, &apiError{status: resp.StatusCode, code: env.Code, message: msg})
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var evID, evType, data string
	progressed := false
	for sc.Scan() {
		idle.Reset(streamIdleTimeout)
		line := sc.Text()
		if line != "" {
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "id":
				evID = value
			case "event":
				evType = value
			case "data":
				data += value
			}
			continue
		}
		if data != "" {
			progressed = true
			switch evType {
			case "", "message":
				var e sseEvent
				if json.Unmarshal([]byte(data), &e) == nil {
					d.event(e)
				}
			case "job":
				var j clientJob
				if json.Unmarshal([]byte(data), &j) == nil {
					d.update(j)
				}
			case "end":
				var end sseEnd
				if err := json.Unmarshal([]byte(data), &end); err != nil {
					return sseEnd{}, true, fmt.Errorf("GET %s: bad end message: %w", path, err)
				}
				return end, true, nil
			}
			if evID != "" {
				*lastID = evID
			}
		}
		evID, evType, data = "", "", ""
	}
	if err := sc.Err(); err != nil {
		return sseEnd{}, progressed, fmt.Errorf("GET %s: %w", path, err)
	}
	return sseEnd{}, progressed, errStreamEnded
}

// isTerminal reports whether w is a character device (a terminal), where a
// live, rewritten progress line makes sense; pipes and files get plain
// lines. TERM=dumb asks for plain output too.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("TERM") == "dumb" {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// display shows a followed job. On a terminal it keeps one status line
// (state, elapsed time, current step) at the bottom, rewritten in place
// with \r, and prints events above it; elsewhere every change is a plain
// line, so logs and CI output stay readable.
type display struct {
	mu      sync.Mutex
	w       io.Writer
	tty     bool
	width   int
	cur     clientJob
	started time.Time
	line    string // what the status line shows (tty)
	stop    chan struct{}
	done    chan struct{}
}

func newDisplay(w io.Writer, tty bool) *display {
	d := &display{w: w, tty: tty, width: 100, started: time.Now()}
	if n, err := strconv.Atoi(os.Getenv("COLUMNS")); err == nil && n > 20 {
		d.width = n
	}
	if tty {
		// The elapsed time ticks even when nothing else changes, so the
		// operator sees the client is alive.
		d.stop, d.done = make(chan struct{}), make(chan struct{})
		go func() {
			defer close(d.done)
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-d.stop:
					return
				case <-t.C:
					d.mu.Lock()
					d.redraw()
					d.mu.Unlock()
				}
			}
		}()
	}
	return d
}

func (d *display) close() {
	if d.stop != nil {
		close(d.stop)
		<-d.done
		d.stop = nil
	}
}

func (d *display) status() string {
	j := d.cur
	s := fmt.Sprintf("job %d %s %s", j.ID, orDash(j.Kind), orDash(j.State))
	if d.tty {
		s += " " + time.Since(d.started).Round(time.Second).String()
	}
	if j.CurrentStep != "" && !isFinal(j.State) {
		s += ": " + j.CurrentStep
	}
	if j.CancelRequested && !isFinal(j.State) {
		s += " (cancel requested)"
	}
	return s
}

// redraw rewrites the status line in place (tty only; mu held).
func (d *display) redraw() {
	if !d.tty || d.cur.ID == 0 {
		return
	}
	d.line = oneLine(d.status(), d.width-1)
	fmt.Fprintf(d.w, "\r\x1b[K%s", d.line)
}

// printAbove prints a full line, keeping the status line below it (mu held).
func (d *display) printAbove(s string) {
	if d.tty {
		fmt.Fprintf(d.w, "\r\x1b[K%s\n", s)
		d.redraw()
		return
	}
	fmt.Fprintln(d.w, s)
}

func (d *display) update(j clientJob) {
	d.mu.Lock()
	defer d.mu.Unlock()
	changed := j.State != d.cur.State || j.CurrentStep != d.cur.CurrentStep || j.CancelRequested != d.cur.CancelRequested
	d.cur = j
	if d.tty {
		d.redraw()
		return
	}
	if changed {
		fmt.Fprintf(d.w, "%s %s\n", time.Now().UTC().Format("15:04:05"), d.status())
	}
}

func (d *display) event(e sseEvent) {
	d.mu.Lock()
	defer d.mu.Unlock()
	at := e.At
	if t, err := time.Parse(time.RFC3339Nano, e.At); err == nil {
		at = t.UTC().Format("15:04:05")
	}
	d.printAbove(fmt.Sprintf("%s %-5s %s%s", at, e.Level, e.Message, detailSuffix(e.Detail)))
}

func (d *display) note(s string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.printAbove(time.Now().UTC().Format("15:04:05") + " " + s)
}

func (d *display) end(e sseEnd) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.tty {
		fmt.Fprint(d.w, "\r\x1b[K")
	}
	msg := fmt.Sprintf("job %d %s", e.JobID, e.State)
	if e.Error != "" {
		msg += ": " + e.Error
	}
	msg += fmt.Sprintf(" (followed for %s)", time.Since(d.started).Round(100*time.Millisecond))
	fmt.Fprintln(d.w, msg)
	d.cur.ID = 0 // no more redraws
}
