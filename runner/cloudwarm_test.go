package runner_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/runner"
	"github.com/edgeops/shutdownd/store"
)

// The runner keeps one token and logs in again only shortly before it
// expires: with tokens of 3 s, each login comes at least four fifths of a
// token's life after the one before, never on a fixed short period, and
// the health says when the token expires and when it is renewed.
func TestKeystoneLoginRenewedOnlyShortlyBeforeTheTokenExpires(t *testing.T) {
	const ttl = 3 * time.Second
	f := newFixture(t, smallSite)
	f.site.Nova.SetTokenTTL(ttl)
	r, stop := f.start()
	defer stop()
	f.waitFor("two renewals", 60*time.Second, func() bool { return len(f.site.Nova.Logins()) >= 3 })
	stop()
	logins := f.site.Nova.Logins()
	for i, l := range logins {
		if !l.OK || l.Method != "password" {
			t.Fatalf("login %d: %+v", i, l)
		}
		if i == 0 {
			continue
		}
		// The token of login i-1 was issued after it was sent: its renewal
		// cannot come before 4/5 of ttl after the request.
		if gap := l.At.Sub(logins[i-1].At); gap < ttl*4/5-50*time.Millisecond {
			t.Errorf("login %d came %s after the one before, want at least %s (4/5 of the token's life)", i, gap, ttl*4/5)
		}
	}
	h := r.CloudLogin()
	if !h.Enabled || h.Source != config.SourceConfig || h.ConsecutiveFailures != 0 || h.Succeeded != int64(len(logins)) {
		t.Errorf("health %+v after %d logins", h, len(logins))
	}
	if life := h.TokenExpiresAt.Sub(h.LastSuccess); life < ttl-time.Second || life > ttl+time.Second {
		t.Errorf("token expires %s after the login, want about %s", life, ttl)
	}
	if margin := h.TokenExpiresAt.Sub(h.NextAttempt); margin != ttl/5 && (margin < ttl/5-10*time.Millisecond || margin > ttl/5+10*time.Millisecond) {
		t.Errorf("renewal %s before expiry, want %s", margin, ttl/5)
	}
}

// After a password rotation the background login fails; it then waits
// doubling times, up to the cap, instead of trying on a fixed short
// period, and the health counts the failures without the password.
func TestFailedKeystoneLoginsBackOffDoublingUpToTheCap(t *testing.T) {
	const base, maxWait = 150 * time.Millisecond, 600 * time.Millisecond
	defer runner.SetCloudLoginTiming(base, maxWait, time.Hour)()
	f := newFixture(t, smallSite)
	f.site.Nova.SetPassword("rotated-by-the-cloud-admin")
	r, stop := f.start()
	defer stop()
	f.waitFor("five failed logins", 60*time.Second, func() bool { return len(f.site.Nova.Logins()) >= 5 })
	stop()
	logins := f.site.Nova.Logins()
	want := []time.Duration{0, base, 2 * base, maxWait, maxWait}
	for i, l := range logins {
		if l.OK {
			t.Fatalf("login %d succeeded with the old password", i)
		}
		if i == 0 || i >= len(want) {
			continue
		}
		if gap := l.At.Sub(logins[i-1].At); gap < want[i] {
			t.Errorf("failed login %d came %s after the one before, want at least %s", i, gap, want[i])
		}
	}
	h := r.CloudLogin()
	if h.ConsecutiveFailures != len(logins) || h.Failed != int64(len(logins)) || h.Succeeded != 0 || !h.LastSuccess.IsZero() {
		t.Errorf("health %+v after %d failed logins", h, len(logins))
	}
	if d := h.NextAttempt.Sub(h.LastFailure); d != maxWait {
		t.Errorf("next attempt %s after the last failure, want the cap %s", d, maxWait)
	}
	if !strings.Contains(h.LastError, "authentication failed") || strings.Contains(h.LastError, "sim-secret") {
		t.Errorf("last error %q: want the refusal, without the password", h.LastError)
	}
}

// During a long backoff a shutdown and a simulation never wait: each logs in
// at once. A successful login resets the failures, and the next shutdown
// takes the token it left. The simulation reports the background's failures
// as a warn event.
func TestShutdownAndSimulationLogInAtOnceDuringTheBackoff(t *testing.T) {
	defer runner.SetCloudLoginTiming(time.Hour, time.Hour, time.Hour)()
	f := newFixture(t, smallSite)
	f.site.Nova.SetPassword("rotated")
	r, w, stop := f.startWatched()
	defer stop()
	f.waitFor("the background login refused", 10*time.Second, func() bool { _, failed := w.counts(); return failed == 1 })
	if h := r.CloudLogin(); h.ConsecutiveFailures != 1 || time.Until(h.NextAttempt) < 50*time.Minute {
		t.Fatalf("health %+v, want one failure and the next attempt in an hour", h)
	}

	// The rotation is undone on the Keystone side (or the lockout ended);
	// clouds.yaml is unchanged.
	f.site.Nova.SetPassword("sim-secret")
	sim := f.runJob(r, store.KindSimulation)
	if sim.State != store.StateSucceeded {
		t.Fatalf("simulation %s: %s", sim.State, sim.Error)
	}
	if n := len(f.site.Nova.Logins()); n != 2 {
		t.Errorf("%d logins after the simulation, want 2 (the refused one, the simulation's)", n)
	}
	found := false
	for _, ev := range f.events(sim.ID) {
		found = found || strings.HasPrefix(ev, "openstack login: 1 consecutive failed logins")
	}
	if !found {
		t.Errorf("simulation events %q lack the background's failure", f.events(sim.ID))
	}
	check := f.action(sim.ID, "sim", "check-list-servers")
	if !strings.Contains(check.Detail, `login ok with clouds.yaml cloud "sim", token valid until`) {
		t.Errorf("check detail %q", check.Detail)
	}
	if h := r.CloudLogin(); h.ConsecutiveFailures != 0 || h.Succeeded != 1 || h.LastError != "" {
		t.Errorf("health after the simulation's login %+v, want reset", h)
	}

	shut := f.runJob(r, store.KindShutdown)
	if shut.State != store.StateSucceeded {
		t.Fatalf("shutdown %s: %s", shut.State, shut.Error)
	}
	if n := len(f.site.Nova.Logins()); n != 2 {
		t.Errorf("%d logins after the shutdown, want still 2: it takes the simulation's token", n)
	}
}

// A shutdown during the backoff, with nothing kept, logs in itself at once.
func TestShutdownLogsInAtOnceWhenTheBackgroundLoginIsBackingOff(t *testing.T) {
	defer runner.SetCloudLoginTiming(time.Hour, time.Hour, time.Hour)()
	f := newFixture(t, smallSite)
	f.site.Nova.SetPassword("rotated")
	r, w, stop := f.startWatched()
	defer stop()
	f.waitFor("the background login refused", 10*time.Second, func() bool { _, failed := w.counts(); return failed == 1 })
	f.site.Nova.SetPassword("sim-secret")
	started := time.Now()
	j := f.runJob(r, store.KindShutdown)
	if j.State != store.StateSucceeded {
		t.Fatalf("shutdown %s: %s", j.State, j.Error)
	}
	logins := f.site.Nova.Logins()
	if len(logins) != 2 || !logins[1].OK || logins[1].At.Before(started) {
		t.Fatalf("logins %+v, want the refused one and the shutdown's own", logins)
	}
	for _, vm := range f.site.Nova.Servers() {
		if vm.Status == "ACTIVE" {
			t.Errorf("vm %s still ACTIVE", vm.Name)
		}
	}
}

// An operator who fixes clouds.yaml does not wait out the backoff: the
// background sees the file change and logs in again.
func TestFixedCloudsYAMLIsTriedBeforeTheBackoffEnds(t *testing.T) {
	defer runner.SetCloudLoginTiming(time.Hour, time.Hour, 20*time.Millisecond)()
	f := newFixture(t, smallSite)
	f.site.Nova.SetPassword("rotated-Pw-2")
	r, stop := f.start()
	defer stop()
	f.waitFor("the background login refused", 10*time.Second, func() bool { return r.CloudLogin().Failed == 1 })
	if err := os.WriteFile(f.site.CloudsFile, []byte(f.site.Nova.CloudsYAML("sim")), 0o600); err != nil {
		t.Fatal(err)
	}
	f.waitFor("a login with the new password", 10*time.Second, func() bool { return r.CloudLogin().Succeeded == 1 })
	if h := r.CloudLogin(); h.ConsecutiveFailures != 0 || len(f.site.Nova.Logins()) != 2 {
		t.Errorf("health %+v after %d logins, want one failure then one success", h, len(f.site.Nova.Logins()))
	}
}

// Without an openstack section nothing logs in, and a simulation reports
// the skipped VM step as a warning.
func TestSimulationWithoutOpenStackWarnsThatHostsGoDownUnderRunningVMs(t *testing.T) {
	f := newFixture(t, smallSite)
	f.cfg.OpenStack = config.OpenStack{}
	r, stop := f.start()
	defer stop()
	j := f.runJob(r, store.KindSimulation)
	if j.State != store.StateSucceeded {
		t.Fatalf("simulation %s: %s", j.State, j.Error)
	}
	steps, err := f.store.Steps(t.Context(), j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if steps[0].Name != runner.StepOpenStack || steps[0].State != store.StepSkipped || steps[0].Detail != config.NoOpenStackWarning {
		t.Errorf("openstack step %+v", steps[0])
	}
	evs, err := f.store.Events(t.Context(), j.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	warned := false
	for _, e := range evs {
		warned = warned || (e.Level == "warn" && e.Message == config.NoOpenStackWarning)
	}
	if !warned {
		t.Errorf("no warn event %q", config.NoOpenStackWarning)
	}
	if n := len(f.site.Nova.Logins()); n != 0 || r.CloudLogin().Enabled {
		t.Errorf("%d Keystone logins, health %+v, without OpenStack", n, r.CloudLogin())
	}
}
