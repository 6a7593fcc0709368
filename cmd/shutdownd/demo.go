package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/sitesim"
	"github.com/edgeops/shutdownd/store"
)

// demoSetup is a running simulated site with the service's configuration
// written for it and a token with every scope.
type demoSetup struct {
	Site   *sitesim.Site
	Config *config.Config
	Token  string
	dir    string
	tmp    bool
}

func (d *demoSetup) Close() {
	d.Site.Close()
	if d.tmp {
		os.RemoveAll(d.dir)
	}
}

// startDemo starts the simulated site on 127.0.0.1 and writes a config for
// it. The database is fresh in a temp dir unless database is given.
func startDemo(ctx context.Context, listen, database string, tune func(*sitesim.Options)) (*demoSetup, error) {
	dir, err := os.MkdirTemp("", "shutdownd-demo-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	d := &demoSetup{dir: dir, tmp: true}
	opts := sitesim.DemoOptions(dir)
	if tune != nil {
		tune(&opts)
	}
	d.Site, err = sitesim.Start(ctx, opts)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start simulated site: %w", err)
	}
	if database == "" {
		database = filepath.Join(dir, "shutdownd.db")
	}
	path, err := d.Site.WriteConfig(listen, database)
	if err != nil {
		d.Close()
		return nil, err
	}
	d.Config, err = loadConfig(path)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("demo config: %w", err)
	}
	return d, nil
}

// createDemoToken adds a token with every scope to the store.
func createDemoToken(ctx context.Context, st *store.Store) (string, error) {
	secret, err := store.NewTokenSecret()
	if err != nil {
		return "", err
	}
	name := "demo"
	for i := 2; ; i++ {
		_, err = st.CreateToken(ctx, name, store.HashToken(secret), []string{"read", "simulate", "shutdown", "startup"}, nil, nil)
		if err == nil {
			return secret, nil
		}
		if !errors.Is(err, store.ErrNameTaken) || i > 100 {
			return "", fmt.Errorf("create demo token: %w", err)
		}
		name = fmt.Sprintf("demo-%d", i)
	}
}

func cmdDemo(ctx context.Context, args []string, logger *slog.Logger, stdout, stderr io.Writer) error {
	fs := newFlags("demo", stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "listen address (loopback only)")
	database := fs.String("database", "", "database file (default: fresh, in a temp dir)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if !loopback(*listen) {
		return usageError{fmt.Sprintf("demo: --listen %s: the demo only listens on 127.0.0.1", *listen)}
	}
	// The demo site has a UPS: pulling its plug is how a newcomer sees a
	// power cut end in a shutdown (printDemo says how).
	d, err := startDemo(ctx, *listen, *database, func(o *sitesim.Options) { o.UPSRuntime = demoUPSRuntime })
	if err != nil {
		return err
	}
	defer d.Close()
	m := &Main{Config: d.Config, Logger: logger}
	if err := m.Run(ctx); err != nil {
		return err
	}
	tok, err := createDemoToken(ctx, m.Store)
	if err != nil {
		m.Close()
		return err
	}
	printDemo(stdout, m.URL(), tok, d)
	<-ctx.Done()
	return m.Close()
}

func loopback(addr string) bool {
	host := addr
	if i := strings.LastIndex(addr, ":"); i >= 0 {
		host = addr[:i]
	}
	host = strings.Trim(host, "[]")
	return host == "127.0.0.1" || host == "localhost" || host == "::1" || strings.HasPrefix(host, "127.")
}

// demoUPSRuntime is the simulated UPS's runtime on a full battery: below
// the demo site's forecast before any shutdown was measured, so a pulled
// plug starts the shutdown as soon as the 10 s grace has passed.
const demoUPSRuntime = 5 * time.Minute

func printDemo(w io.Writer, url, tok string, d *demoSetup) {
	vms := d.Site.Nova.Servers()
	fmt.Fprintf(w, `shutdownd demo: a simulated site on 127.0.0.1 (nothing real is ever powered off)
  OpenStack: %s (%d VMs in %d projects)
  hosts:     %d (SSH servers that record commands, Redfish BMCs)
  config:    %s
  database:  %s

Token with every scope (read, simulate, shutdown, startup):
export TOKEN=%s

Try:
  curl -si -X POST -H "auth-token: $TOKEN" %[8]s/simulate
  curl -s -H "auth-token: $TOKEN" %[8]s/simulate/status
  curl -si -X POST -H "auth-token: $TOKEN" -H 'Content-Type: application/json' -d '{"reason":"utility power lost"}' %[8]s/shutdown
  curl -s -H "Authorization: Bearer $TOKEN" %[8]s/shutdown/status
  # once the shutdown has ended, power is back: the whole cycle
  curl -si -X POST -H "auth-token: $TOKEN" -H 'Content-Type: application/json' -d '{"reason":"mains back"}' %[8]s/startup
  curl -s -H "auth-token: $TOKEN" %[8]s/startup/status
  curl -s -H "auth-token: $TOKEN" %[8]s/jobs
  curl -s -H "auth-token: $TOKEN" %[8]s/jobs/1
  curl -sN -H "auth-token: $TOKEN" %[8]s/jobs/1/events
  curl -s %[8]s/healthz

In a browser: %[8]s/ (the site overview; log in with the token above), job history at %[8]s/history
Metrics: curl -s -H "auth-token: $TOKEN" %[8]s/metrics
API document: %[8]s/openapi.yaml
`, d.Site.Nova.URL(), len(vms), len(d.Site.Opts.Projects), len(d.Site.Hosts), filepath.Join(d.dir, "shutdownd.yaml"), d.Config.Database, tok, url)
	if u := d.Site.UPS; u != nil {
		fmt.Fprintf(w, `
Power cut: shutdownd watches a simulated UPS (NUT protocol over STARTTLS, %[1]s, ups %[2]s).
  pull the plug:   curl -s -X POST %[3]s/unplug
  put it back:     curl -s -X POST %[3]s/plug
  what it decides: curl -s -H "auth-token: $TOKEN" %[4]s/power
  Back within 10 s: a blip, nothing happens. On battery longer, a shutdown
  starts when the runtime is below the forecast plus 30 s (at once on a
  fresh database), the charge below 30%%, or the UPS flags low battery.
  Plug back in after the shutdown succeeded: 10 s later, with the battery
  at least half full, the startup job brings the site back by itself.
  The power events: shutdownd audit power --database %[5]s
`, u.Addr(), u.Name, u.ControlURL(), url, d.Config.Database)
	}
	fmt.Fprintln(w, "\nPress Ctrl-C to stop.")
}
