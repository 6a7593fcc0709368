package metrics_test

import (
	"context"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/metrics"
	"github.com/edgeops/shutdownd/runner"
	"github.com/edgeops/shutdownd/sitesim"
	"github.com/edgeops/shutdownd/store"
)

// loginSite runs a runner against a simulated Keystone+Nova (password
// rotated or not) and serves its metrics; it returns the runner and a
// scrape function.
func loginSite(t *testing.T, rotated bool) (*runner.Runner, func() string) {
	t.Helper()
	dir := t.TempDir()
	nova := sitesim.NewNova(sitesim.NovaOptions{})
	if err := nova.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nova.Close)
	clouds := filepath.Join(dir, "clouds.yaml")
	if err := os.WriteFile(clouds, []byte(nova.CloudsYAML("edge")), 0o600); err != nil {
		t.Fatal(err)
	}
	if rotated {
		nova.SetPassword("rotated-elsewhere")
	}
	st, err := store.Open(context.Background(), filepath.Join(dir, "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := &config.Config{OpenStack: config.OpenStack{Source: config.SourceConfig, Cloud: "edge", CloudsFile: clouds,
		Concurrency: 4, StopTimeout: time.Minute, PollInterval: time.Second, RequestTimeout: 5 * time.Second}}
	m := metrics.New(st, nil)
	r := runner.New(cfg, st, runner.Options{Observer: m})
	m.WatchCloudLogin(r.CloudLogin)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	srv := httptest.NewServer(m.Handler())
	t.Cleanup(srv.Close)
	return r, func() string {
		resp, err := srv.Client().Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
}

func sample(t *testing.T, body, series string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no sample %s in:\n%s", series, body)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func waitLogin(t *testing.T, r *runner.Runner, cond func(runner.CloudLogin) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond(r.CloudLogin()) {
		if time.Now().After(deadline) {
			t.Fatalf("login health %+v", r.CloudLogin())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// /metrics shows the OpenStack login as Keystone saw it: a working login
// with its token's expiry and renewal, and a refused one counted with the
// backed-off next attempt.
func TestOpenStackLoginHealthMetrics(t *testing.T) {
	t.Parallel()
	t.Run("working", func(t *testing.T) {
		t.Parallel()
		r, scrape := loginSite(t, false)
		waitLogin(t, r, func(h runner.CloudLogin) bool { return h.Succeeded == 1 })
		body := scrape()
		h := r.CloudLogin()
		if v := sample(t, body, "shutdownd_openstack_login_consecutive_failures"); v != 0 {
			t.Errorf("consecutive failures %v", v)
		}
		if v := sample(t, body, `shutdownd_openstack_logins_total{result="succeeded"}`); v != 1 {
			t.Errorf("succeeded logins %v", v)
		}
		if v := sample(t, body, "shutdownd_openstack_login_last_failure_timestamp_seconds"); v != 0 {
			t.Errorf("last failure %v, want 0 (never)", v)
		}
		exp := sample(t, body, "shutdownd_openstack_token_expiry_timestamp_seconds")
		succ := sample(t, body, "shutdownd_openstack_login_last_success_timestamp_seconds")
		if life := exp - succ; life < 3590 || life > 3610 {
			t.Errorf("token lives %vs after the login, want Keystone's hour", life)
		}
		if next := sample(t, body, "shutdownd_openstack_login_next_attempt_timestamp_seconds"); exp-next < 299 || exp-next > 301 {
			t.Errorf("renewal %vs before expiry, want 300 (health %+v)", exp-next, h)
		}
	})
	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		r, scrape := loginSite(t, true)
		waitLogin(t, r, func(h runner.CloudLogin) bool { return h.Failed == 1 })
		body := scrape()
		if v := sample(t, body, "shutdownd_openstack_login_consecutive_failures"); v != 1 {
			t.Errorf("consecutive failures %v", v)
		}
		if v := sample(t, body, `shutdownd_openstack_logins_total{result="failed"}`); v != 1 {
			t.Errorf("failed logins %v", v)
		}
		fail := sample(t, body, "shutdownd_openstack_login_last_failure_timestamp_seconds")
		if next := sample(t, body, "shutdownd_openstack_login_next_attempt_timestamp_seconds"); next-fail < 299 || next-fail > 301 {
			t.Errorf("next attempt %vs after the failure, want the first backoff, 300", next-fail)
		}
		if v := sample(t, body, "shutdownd_openstack_token_expiry_timestamp_seconds"); v != 0 {
			t.Errorf("token expiry %v with no token", v)
		}
	})
	t.Run("no openstack", func(t *testing.T) {
		t.Parallel()
		st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "db.sqlite"))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		m := metrics.New(st, nil)
		r := runner.New(&config.Config{}, st, runner.Options{})
		m.WatchCloudLogin(r.CloudLogin)
		srv := httptest.NewServer(m.Handler())
		defer srv.Close()
		resp, err := srv.Client().Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if regexp.MustCompile(`shutdownd_openstack_`).Match(b) {
			t.Errorf("openstack series without OpenStack:\n%s", b)
		}
	})
}
