package runner

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// A shutdown should not spend its first milliseconds on Keystone: the runner
// keeps an authenticated OpenStack client ready (authenticated at start, then
// again every cloudWarmEvery, re-reading clouds.yaml each time) and a
// shutdown takes it. A simulation always authenticates itself, because
// checking that authentication works is its job. A shutdown authenticates
// itself, as before, when no client is ready: the last attempt failed, the
// client is older than cloudWarmMaxAge, clouds.yaml changed since, or another
// shutdown took it. A token that expired or was revoked meanwhile is renewed
// by the client itself on Nova's 401 (gophercloud re-authenticates once).
const (
	cloudWarmEvery  = 4 * time.Minute
	cloudWarmMaxAge = 5 * time.Minute
)

// cloudWarmer holds the ready client. Its zero value holds none.
type cloudWarmer struct {
	mu      sync.Mutex
	cloud   Cloud
	retries *retryRoute
	at      time.Time
	files   string // cloudsFiles fingerprint when it was authenticated
	failing bool
}

// retryRoute sends the retries of a ready client's calls to the job that
// took it; before that they are only counted by the observer.
type retryRoute struct {
	to atomic.Pointer[func(op string, attempt int, err error)]
}

func (r *retryRoute) call(op string, attempt int, err error) {
	if f := r.to.Load(); f != nil {
		(*f)(op, attempt, err)
	}
}

// keepCloudWarm authenticates now and every cloudWarmEvery until ctx ends.
func (r *Runner) keepCloudWarm(ctx context.Context) {
	if r.cfg.OpenStack.Cloud == "" {
		return
	}
	for {
		r.warm.refresh(ctx, r)
		t := time.NewTimer(cloudWarmEvery)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (w *cloudWarmer) refresh(ctx context.Context, r *Runner) {
	files := cloudsFiles(r.cfg.OpenStack.CloudsFile)
	route := &retryRoute{}
	c, err := r.deps.OpenCloud(ctx, r.cfg.OpenStack, route.call)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil && !w.failing {
			r.log.Warn("openstack pre-authentication failed; a shutdown will authenticate when it starts", "err", err)
		}
		w.failing = ctx.Err() == nil
		return // a client still young enough stays usable
	}
	if w.failing {
		r.log.Info("openstack pre-authentication works again")
	}
	w.failing = false
	w.cloud, w.retries, w.at, w.files = c, route, time.Now(), files
}

// take hands the ready client to one shutdown, with its retries reported
// through onRetry from now on; nil if none is fit to use.
func (w *cloudWarmer) take(cloudsFile string, onRetry func(op string, attempt int, err error)) Cloud {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := w.cloud
	w.cloud = nil
	if c == nil || time.Since(w.at) > cloudWarmMaxAge || cloudsFiles(cloudsFile) != w.files {
		return nil
	}
	w.retries.to.Store(&onRetry)
	return c
}

// cloudsFiles fingerprints the files a client's configuration was read from
// (the configured clouds.yaml, else the standard places, with their
// secure.yaml), so that a changed file is read again by a fresh
// authentication instead of a client made from the old one.
func cloudsFiles(configured string) string {
	var paths []string
	if configured != "" {
		paths = append(paths, configured, filepath.Join(filepath.Dir(configured), "secure.yaml"))
	} else {
		if p := os.Getenv("OS_CLIENT_CONFIG_FILE"); p != "" {
			paths = append(paths, p)
		}
		dirs := []string{"."}
		if home, err := os.UserHomeDir(); err == nil {
			dirs = append(dirs, filepath.Join(home, ".config", "openstack"))
		}
		dirs = append(dirs, "/etc/openstack")
		for _, d := range dirs {
			paths = append(paths, filepath.Join(d, "clouds.yaml"), filepath.Join(d, "secure.yaml"))
		}
	}
	var b []byte
	for _, p := range paths {
		b = append(b, p...)
		if fi, err := os.Stat(p); err == nil {
			b = fi.ModTime().AppendFormat(b, time.RFC3339Nano)
			b = append(b, ' ')
			b = strconv.AppendInt(b, fi.Size(), 10)
		}
		b = append(b, 0)
	}
	return string(b)
}
