package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/metrics"
	"github.com/edgeops/shutdownd/notify"
	"github.com/edgeops/shutdownd/runner"
	"github.com/edgeops/shutdownd/store"
)

// Main is the whole service: store, runner and HTTP server. Tests start it
// in-process on port 0 with a temp-dir database, exactly as `serve` does.
type Main struct {
	Config *config.Config
	Logger *slog.Logger
	// BootIDFile is where the runner reads this machine's boot id (empty:
	// the kernel's); tests set it to play a reboot.
	BootIDFile string

	Store  *store.Store
	Runner *runner.Runner
	// Metrics and Notifier observe the runner (see observer in wire.go).
	Metrics  *metrics.Metrics
	Notifier *notify.Notifier

	// readHeaderTimeout overrides how long a client may take to send its
	// request headers (default 10 s); tests shorten it.
	readHeaderTimeout time.Duration

	ln         net.Listener
	srv        *http.Server
	cancel     context.CancelFunc
	cancelBase context.CancelFunc
	wg         sync.WaitGroup
}

// Run opens the store (running migrations), starts the runner and starts
// serving. It returns once the service accepts requests; a failure to open
// the store or the listener is returned, never half-started.
func (m *Main) Run(ctx context.Context) error {
	if m.Logger == nil {
		m.Logger = slog.Default()
	}
	st, err := store.Open(ctx, m.Config.Database)
	if err != nil {
		return fmt.Errorf("open store %s: %w", m.Config.Database, err)
	}
	m.Store = st
	m.Runner = runner.New(m.Config, st, runner.Options{Logger: m.Logger, Observer: m.observer(st),
		BootIDFile: m.BootIDFile})
	m.Metrics.WatchCloudLogin(m.Runner.CloudLogin)
	// Any failure from here on undoes what was started: the notifier's
	// delivery goroutine and the store, so a failed start leaves nothing
	// running (tests start and fail services many times in one process).
	fail := func(ln net.Listener, err error) error {
		if ln != nil {
			ln.Close()
		}
		if m.Notifier != nil {
			m.Notifier.Close()
		}
		st.Close()
		return err
	}

	if err := m.Runner.Settle(ctx); err != nil {
		return fail(nil, err)
	}
	ln, err := net.Listen("tcp", m.Config.Listen)
	if err != nil {
		return fail(nil, fmt.Errorf("listen %s: %w", m.Config.Listen, err))
	}
	api, err := m.handler(st)
	if err != nil {
		return fail(ln, err)
	}
	if m.Config.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(m.Config.TLS.CertFile, m.Config.TLS.KeyFile)
		if err != nil {
			return fail(ln, fmt.Errorf("load TLS certificate: %w", err))
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	// Requests (event streams above all) get a context that Close cancels:
	// http.Server.Shutdown does not end streams by itself.
	baseCtx, cancelBase := context.WithCancel(context.WithoutCancel(ctx))
	m.cancelBase = cancelBase
	m.srv = &http.Server{
		Handler:           api,
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
		ReadHeaderTimeout: cmp.Or(m.readHeaderTimeout, 10*time.Second),
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(m.Logger.Handler(), slog.LevelWarn),
	}
	m.ln = ln

	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m.cancel = cancel
	m.wg.Add(2)
	go func() {
		defer m.wg.Done()
		if err := m.Runner.Run(rctx); err != nil {
			m.Logger.Error("runner stopped", "err", err)
		}
	}()
	go func() {
		defer m.wg.Done()
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.Logger.Error("http server stopped", "err", err)
		}
	}()
	m.Logger.Info("shutdownd serving", "addr", ln.Addr().String(), "tls", m.Config.TLS.CertFile != "", "database", m.Config.Database)
	return nil
}

// Addr is the address the service listens on (useful with port 0).
func (m *Main) Addr() string { return m.ln.Addr().String() }

// URL is the base URL of the API.
func (m *Main) URL() string {
	scheme := "http"
	if m.Config.TLS.CertFile != "" {
		scheme = "https"
	}
	return scheme + "://" + m.Addr()
}

// Close stops accepting requests, lets the runner finish writing its
// current action, and closes the store. A shutdown job still running stays
// running in the store and resumes at the next start.
func (m *Main) Close() error {
	if m.srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m.cancelBase()
	err := m.srv.Shutdown(ctx)
	m.cancel()
	m.wg.Wait()
	if m.Notifier != nil {
		m.Notifier.Close() // after the runner: it may still have enqueued
	}
	if cerr := m.Store.Close(); err == nil {
		err = cerr
	}
	return err
}
