package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/sitesim"
	"github.com/edgeops/shutdownd/store"
)

// TestDemoPullThePlug follows the demo's printed instructions: the demo
// site's simulated UPS is watched by the service, pulling its plug through
// the control endpoint ends in a shutdown started by the power source, and
// the printed text says how to do it.
func TestDemoPullThePlug(t *testing.T) {
	ctx := context.Background()
	d, err := startDemo(ctx, "127.0.0.1:0", "", func(o *sitesim.Options) {
		e2eFast(o)
		o.UPSRuntime = demoUPSRuntime
	})
	if err != nil {
		t.Fatalf("start demo site: %v", err)
	}
	t.Cleanup(d.Close)
	ps := d.Config.PowerSource
	if ps == nil || ps.NUT.Address != d.Site.UPS.Addr() || ps.NUT.User == "" || !ps.NUT.StartTLS || ps.NUT.CAFile == "" {
		t.Fatalf("demo config power source: %+v", ps)
	}
	// The demo's timing, shortened for the test.
	ps.PollInterval, ps.OnBatteryGrace = 100*time.Millisecond, time.Second
	m := &Main{Config: d.Config, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := m.Run(ctx); err != nil {
		t.Fatalf("run service: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	var out bytes.Buffer
	printDemo(&out, m.URL(), "TOKEN", d)
	unplug := "curl -s -X POST " + d.Site.UPS.ControlURL() + "/unplug"
	if !strings.Contains(out.String(), unplug) || !strings.Contains(out.String(), d.Site.UPS.ControlURL()+"/plug") {
		t.Fatalf("demo text lacks the plug instructions:\n%s", out.String())
	}

	waitUntil(t, 20*time.Second, "the first reading", func() bool { return m.Power.Status(ctx).Reading != nil })
	resp, err := http.Post(d.Site.UPS.ControlURL()+"/unplug", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var job *store.Job
	waitUntil(t, 30*time.Second, "the power source's shutdown", func() bool {
		job, _ = m.Store.LatestJob(ctx, store.KindShutdown)
		return job != nil
	})
	if job.TokenName != "power-source:nut/ups" || !strings.Contains(job.Reason, "< forecast") {
		t.Fatalf("job = %+v", job)
	}
	// The whole cycle: the shutdown ends, the plug goes back in, and the
	// site comes back by itself.
	waitUntil(t, 90*time.Second, "the shutdown to end", func() bool {
		j, err := m.Store.Job(ctx, job.ID)
		return err == nil && j.State.Final()
	})
	if j, _ := m.Store.Job(ctx, job.ID); j.State != store.StateSucceeded {
		t.Fatalf("shutdown %s: %s", j.State, j.Error)
	}
	resp, err = http.Post(d.Site.UPS.ControlURL()+"/plug", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var startup *store.Job
	waitUntil(t, 60*time.Second, "the power source's startup", func() bool {
		startup, _ = m.Store.LatestJob(ctx, store.KindStartup)
		return startup != nil
	})
	if startup.TokenName != "power-source:nut/ups" || !strings.Contains(startup.Reason, "mains back") {
		t.Fatalf("startup = %+v", startup)
	}
}
