package power_test

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/nut/upsdtest"
	"github.com/edgeops/shutdownd/power"
	"github.com/edgeops/shutdownd/runner"
	"github.com/edgeops/shutdownd/store"
)

// siteConfig is a one-host site whose forecast, never measured, is the
// worst case of its timeouts: 10 s + 20 s + 60 s = 90 s.
func siteConfig() *config.Config {
	return &config.Config{
		Timeouts: config.Timeouts{HostOff: time.Minute},
		Hosts: []config.Host{{Name: "compute-01", Role: config.RoleCompute,
			SSH: config.SSH{ConnectTimeout: 10 * time.Second, CommandTimeout: 20 * time.Second}}},
	}
}

// kicks counts the runner's doorbell: the test watches that the watcher
// rings it, the job itself is read from the store.
type kicks struct{ n atomic.Int32 }

func (k *kicks) Kick() { k.n.Add(1) }

type rig struct {
	t        *testing.T
	ups      *upsdtest.Server
	st       *store.Store
	w        *power.Watcher
	kicks    *kicks
	cfg      *config.PowerSource
	runner   *runner.Runner
	estimate time.Duration
}

// start runs upsd with the dummy UPS, a store, the runner's forecast and a
// watcher polling every poll.
func start(t *testing.T, poll, grace time.Duration, when config.ShutdownWhen, tune ...func(*config.PowerSource)) *rig {
	t.Helper()
	ups := upsdtest.Start(t, upsdtest.Options{User: "shutdownd", Password: "nut-pass"})
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "shutdownd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	run := runner.New(siteConfig(), st, runner.Options{})
	f, err := run.Forecast(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.PowerSource{
		NUT:          config.NUT{Address: ups.Addr, UPS: ups.UPS, User: "shutdownd", Password: "nut-pass", Timeout: 2 * time.Second},
		PollInterval: poll, OnBatteryGrace: grace, ShutdownWhen: when,
	}
	for _, f := range tune {
		f(cfg)
	}
	r := &rig{t: t, ups: ups, st: st, kicks: &kicks{}, cfg: cfg, runner: run, estimate: f.Estimate}
	r.w, err = power.New(power.Options{Config: cfg, Store: st, Forecaster: run, Runner: r.kicks})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = r.w.Run(wctx) }()
	t.Cleanup(func() { cancel(); <-done })
	r.waitFor("the first reading", 20*time.Second, func() bool { return r.w.Status(ctx).Reading != nil })
	return r
}

func (r *rig) waitFor(what string, timeout time.Duration, cond func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out after %s waiting for %s\nstatus: %+v\n%s", timeout, what, r.w.Status(context.Background()), r.ups.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *rig) events() []store.PowerEvent {
	evs, err := r.st.PowerEvents(context.Background(), store.PowerEventFilter{})
	if err != nil {
		r.t.Fatal(err)
	}
	return evs
}

func (r *rig) event(kind store.PowerEventKind) *store.PowerEvent {
	for _, e := range r.events() {
		if e.Kind == kind {
			return &e
		}
	}
	return nil
}

func (r *rig) jobs() []store.Job {
	js, err := r.st.ListJobs(context.Background(), store.JobFilter{})
	if err != nil {
		r.t.Fatal(err)
	}
	return js
}

// settle waits until the watcher has polled n more times and time has
// passed beyond until: "nothing happened" is only true once it had the
// chance to happen.
func (r *rig) settle(until time.Time, n int) {
	r.t.Helper()
	r.waitFor("the watcher to poll past the deadline", 30*time.Second, func() bool { return time.Now().After(until) })
	seen := r.readAt()
	for i := 0; i < n; i++ {
		r.waitFor("another poll", 20*time.Second, func() bool { return r.readAt().After(seen) })
		seen = r.readAt()
	}
}

func (r *rig) readAt() time.Time {
	if s := r.w.Status(context.Background()); s.Reading != nil {
		return s.Reading.At
	}
	return time.Time{}
}

func onBattery(status string, runtime int) map[string]string {
	return map[string]string{"ups.status": status, "battery.runtime": fmt.Sprint(runtime)}
}

// TestBlipIsNoShutdown: on battery for less than the grace, then mains
// back: no job, and exactly the two power events of the blip.
func TestBlipIsNoShutdown(t *testing.T) {
	t.Parallel()
	r := start(t, 200*time.Millisecond, 8*time.Second, config.ShutdownWhen{RuntimeMargin: time.Minute, LowBattery: true})
	r.ups.Set(onBattery("OB DISCHRG", 5)) // far below the forecast: only the grace holds it
	r.waitFor("the on_battery event", 10*time.Second, func() bool { return r.event(store.PowerOnBattery) != nil })
	r.ups.Set(map[string]string{"ups.status": "OL CHRG"})
	r.waitFor("the on_mains event", 10*time.Second, func() bool { return r.event(store.PowerOnMains) != nil })
	ob := r.event(store.PowerOnBattery)
	r.settle(ob.At.Add(r.cfg.OnBatteryGrace), 3)
	if js := r.jobs(); len(js) != 0 {
		t.Fatalf("a blip started %d job(s): %+v", len(js), js[0])
	}
	evs := r.events()
	if len(evs) != 2 || evs[1].Kind != store.PowerOnBattery || evs[0].Kind != store.PowerOnMains {
		t.Fatalf("power events = %+v, want on_battery then on_mains", evs)
	}
	if evs[1].Status != "OB DISCHRG" || evs[1].Runtime == nil || *evs[1].Runtime != 5*time.Second {
		t.Errorf("on_battery event carries %+v", evs[1])
	}
	if r.kicks.n.Load() != 0 {
		t.Error("the runner was kicked for a blip")
	}
}

var reasonRe = regexp.MustCompile(`^on battery \d+ s, runtime 100 s < forecast 90 s \+ margin 60 s$`)

// TestRuntimeBelowForecast: on battery past the grace with a runtime above
// forecast + margin is no shutdown; the runtime dropping below starts one,
// within two poll intervals, named and explained.
func TestRuntimeBelowForecast(t *testing.T) {
	t.Parallel()
	poll := time.Second
	r := start(t, poll, 2*time.Second, config.ShutdownWhen{RuntimeMargin: time.Minute, ChargeBelow: 10, LowBattery: true})
	if r.estimate != 90*time.Second {
		t.Fatalf("forecast %s, the test expects 90s", r.estimate)
	}
	r.ups.Set(onBattery("OB DISCHRG", 600))
	r.waitFor("the on_battery event", 10*time.Second, func() bool { return r.event(store.PowerOnBattery) != nil })
	ob := r.event(store.PowerOnBattery)
	r.settle(ob.At.Add(r.cfg.OnBatteryGrace), 2)
	if js := r.jobs(); len(js) != 0 {
		t.Fatalf("runtime 600 s > 90 s + 60 s started a job: %+v", js[0])
	}
	s := r.w.Status(context.Background())
	if s.MarginLeft == nil || *s.MarginLeft != 450*time.Second || !strings.Contains(s.Next, "shutdown in about") {
		t.Errorf("status on battery: margin left %v, next %q", s.MarginLeft, s.Next)
	}

	r.ups.Set(onBattery("OB DISCHRG", 100))
	served := time.Now()
	r.waitFor("the shutdown job", 3*poll+10*time.Second, func() bool { return len(r.jobs()) > 0 })
	js := r.jobs()
	j := js[0]
	late := j.CreatedAt.Sub(served)
	t.Logf("shutdown created %s after upsd served the low runtime (poll %s)", late, poll)
	if late > 2*poll {
		t.Errorf("job created %s after upsd served the runtime, want within two polls (%s)", late, 2*poll)
	}
	if len(js) != 1 || j.Kind != store.KindShutdown || j.TokenName != "power-source:nut/"+r.ups.UPS || !reasonRe.MatchString(j.Reason) {
		t.Fatalf("job = %+v", j)
	}
	r.waitFor("the kick", 5*time.Second, func() bool { return r.kicks.n.Load() == 1 })
	e := r.event(store.PowerShutdown)
	if e == nil || e.JobID == nil || *e.JobID != j.ID || e.Level != store.PowerCritical {
		t.Fatalf("shutdown power event = %+v", e)
	}
}

// TestLowBatteryAfterGrace: OB LB starts the shutdown once the grace has
// passed, not before, and only one however long it stays so.
func TestLowBatteryAfterGrace(t *testing.T) {
	t.Parallel()
	grace := 3 * time.Second
	r := start(t, 200*time.Millisecond, grace, config.ShutdownWhen{RuntimeMargin: time.Minute, LowBattery: true})
	r.ups.Set(onBattery("OB DISCHRG LB", 3600))
	r.waitFor("the shutdown job", grace+15*time.Second, func() bool { return len(r.jobs()) > 0 })
	ob := r.event(store.PowerOnBattery)
	j := r.jobs()[0]
	if d := j.CreatedAt.Sub(ob.At); d < grace {
		t.Errorf("shutdown %s after the mains went away, before the grace of %s", d, grace)
	}
	if !strings.Contains(j.Reason, "the UPS flags LB (low battery)") {
		t.Errorf("reason %q", j.Reason)
	}
	r.settle(time.Now(), 5)
	if js := r.jobs(); len(js) != 1 {
		t.Fatalf("%d jobs after staying OB LB, want 1", len(js))
	}
}

// TestForcedShutdownAtOnce: FSD does not wait for the grace.
func TestForcedShutdownAtOnce(t *testing.T) {
	t.Parallel()
	grace := 5 * time.Minute
	r := start(t, 200*time.Millisecond, grace, config.ShutdownWhen{RuntimeMargin: time.Minute, LowBattery: true})
	r.ups.Set(onBattery("OB FSD", 3600))
	r.waitFor("the shutdown job", 15*time.Second, func() bool { return len(r.jobs()) > 0 })
	if j := r.jobs()[0]; !strings.Contains(j.Reason, "FSD") {
		t.Errorf("reason %q", j.Reason)
	}
}

// TestUpsdLostOnBattery: upsd killed while the UPS was on battery is
// critical: the shutdown starts once the grace has passed.
func TestUpsdLostOnBattery(t *testing.T) {
	t.Parallel()
	r := start(t, 200*time.Millisecond, 2*time.Second, config.ShutdownWhen{RuntimeMargin: time.Minute, LowBattery: true})
	r.ups.Set(onBattery("OB DISCHRG", 3600))
	r.waitFor("the on_battery event", 10*time.Second, func() bool { return r.event(store.PowerOnBattery) != nil })
	r.ups.Kill()
	r.waitFor("the shutdown job", 20*time.Second, func() bool { return len(r.jobs()) > 0 })
	j := r.jobs()[0]
	if !strings.Contains(j.Reason, "NUT server lost") {
		t.Errorf("reason %q", j.Reason)
	}
	if e := r.event(store.PowerConnectionLost); e == nil || e.Level != store.PowerCritical {
		t.Errorf("connection_lost event = %+v, want critical", e)
	}
}

// TestUpsdLostOnMains: upsd killed while on mains is a warning event, no
// job; the status says so; upsd back is an event too.
func TestUpsdLostOnMains(t *testing.T) {
	t.Parallel()
	r := start(t, 200*time.Millisecond, time.Second, config.ShutdownWhen{RuntimeMargin: time.Minute, LowBattery: true})
	r.ups.Kill()
	r.waitFor("the connection_lost event", 10*time.Second, func() bool { return r.event(store.PowerConnectionLost) != nil })
	e := r.event(store.PowerConnectionLost)
	if e.Level != store.PowerWarn {
		t.Errorf("connection_lost on mains has level %s, want warn", e.Level)
	}
	s := r.w.Status(context.Background())
	if s.Connected || s.ConnectionLosses != 1 || !strings.HasPrefix(s.Next, "nothing") {
		t.Errorf("status: %+v", s)
	}
	deadline := time.Now().Add(3 * r.cfg.OnBatteryGrace)
	r.waitFor("time to pass", 30*time.Second, func() bool { return time.Now().After(deadline) })
	if js := r.jobs(); len(js) != 0 {
		t.Fatalf("upsd lost on mains started a job: %+v", js[0])
	}
	r.ups.Restart()
	r.waitFor("the connection_back event", 20*time.Second, func() bool { return r.event(store.PowerConnectionBack) != nil })
	if js := r.jobs(); len(js) != 0 {
		t.Fatalf("upsd back on mains started a job: %+v", js[0])
	}
}

// TestManualShutdownDuringGraceWins: a POST /shutdown (the same store call)
// during the grace is the outage's job; the watcher adds none, even with
// LB after the grace, and records which job handles the outage.
func TestManualShutdownDuringGraceWins(t *testing.T) {
	t.Parallel()
	grace := 3 * time.Second
	r := start(t, 200*time.Millisecond, grace, config.ShutdownWhen{RuntimeMargin: time.Minute, LowBattery: true})
	r.ups.Set(onBattery("OB DISCHRG LB", 3600))
	r.waitFor("the on_battery event", 10*time.Second, func() bool { return r.event(store.PowerOnBattery) != nil })
	manual, created, err := r.st.CreateShutdown(context.Background(), store.NewJob{TokenName: "ups-controller", Reason: "manual"})
	if err != nil || !created {
		t.Fatalf("manual shutdown: %v, created %v", err, created)
	}
	if s := r.w.Status(context.Background()); s.ShutdownJob != 0 && time.Since(r.event(store.PowerOnBattery).At) < grace {
		t.Fatalf("the watcher took a job during the grace: %+v", s)
	}
	r.waitFor("the watcher to name the manual job", grace+15*time.Second, func() bool { return r.event(store.PowerShutdown) != nil })
	e := r.event(store.PowerShutdown)
	if *e.JobID != manual.ID || !strings.Contains(e.Detail, "already handles this outage") {
		t.Errorf("shutdown power event = %+v", e)
	}
	r.settle(time.Now(), 5)
	if js := r.jobs(); len(js) != 1 || js[0].ID != manual.ID {
		t.Fatalf("jobs = %+v, want only the manual one", js)
	}
	if r.kicks.n.Load() != 0 {
		t.Error("the runner was kicked though no job was created")
	}
}

// TestStartupWhenMainsBack: after the outage's shutdown succeeded, mains
// back for startup_after with the charge at startup_min_charge start one
// startup job restoring that shutdown, named after the power source; a
// charge below the minimum waits.
func TestStartupWhenMainsBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	after := 2 * time.Second
	r := start(t, 200*time.Millisecond, time.Second, config.ShutdownWhen{RuntimeMargin: time.Minute, LowBattery: true},
		func(c *config.PowerSource) { c.StartupAfter, c.StartupMinCharge = after, 50 })
	r.ups.Set(map[string]string{"ups.status": "OB LB", "battery.runtime": "60", "battery.charge": "20"})
	r.waitFor("the shutdown job", 15*time.Second, func() bool { return len(r.jobs()) == 1 })
	shutdown := r.jobs()[0]
	if err := r.st.StartJob(ctx, shutdown.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := r.st.FinishJob(ctx, shutdown.ID, store.StateSucceeded, ""); err != nil {
		t.Fatal(err)
	}
	// Mains back, but the battery is not charged enough: no startup.
	r.ups.Set(map[string]string{"ups.status": "OL CHRG", "battery.runtime": "300", "battery.charge": "40"})
	r.settle(time.Now().Add(after+time.Second), 3)
	if js := r.jobs(); len(js) != 1 {
		t.Fatalf("%d jobs with the charge at 40%% < 50%%; want the shutdown only", len(js))
	}
	r.ups.Set(map[string]string{"ups.status": "OL CHRG", "battery.runtime": "900", "battery.charge": "60"})
	r.waitFor("the startup job", 15*time.Second, func() bool { return len(r.jobs()) == 2 })
	startup := r.jobs()[0]
	restores, err := r.st.RestoredShutdown(ctx, startup.ID)
	if err != nil {
		t.Fatal(err)
	}
	if startup.Kind != store.KindStartup || startup.TokenName != power.TokenPrefix+r.cfg.Source() ||
		restores != shutdown.ID || !strings.Contains(startup.Reason, "charge 60% >= 50%") {
		t.Errorf("startup job %+v restoring %d; want a startup of the power source restoring %d", startup, restores, shutdown.ID)
	}
	r.waitFor("the startup power event", 15*time.Second, func() bool { return r.event(store.PowerStartup) != nil })
	if e := r.event(store.PowerStartup); e.JobID == nil || *e.JobID != startup.ID {
		t.Errorf("startup power event %+v", e)
	}
	r.settle(time.Now(), 3)
	if js := r.jobs(); len(js) != 2 {
		t.Errorf("%d jobs after more polls; want one startup only", len(js))
	}
}
