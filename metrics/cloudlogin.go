package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeops/shutdownd/runner"
)

// cloudLogin exports the health of the OpenStack login the runner keeps,
// read from the runner when Prometheus scrapes. A rotated password shows as
// consecutive_failures climbing long before a shutdown needs the account
// (and before Keystone's lockout takes it). A site without OpenStack
// exports none of these series.
type cloudLogin struct {
	read                                    func() runner.CloudLogin
	lastSuccess, lastFailure, failures      *prometheus.Desc
	nextAttempt, tokenExpiry, loginsCounter *prometheus.Desc
}

// WatchCloudLogin exports read's OpenStack login health (pass
// (*runner.Runner).CloudLogin). Call it once, before serving.
func (m *Metrics) WatchCloudLogin(read func() runner.CloudLogin) {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "openstack", name), help, labels, nil)
	}
	m.reg.MustRegister(&cloudLogin{
		read:        read,
		lastSuccess: d("login_last_success_timestamp_seconds", "Unix time of the last successful OpenStack (Keystone) login; 0 if none since start."),
		lastFailure: d("login_last_failure_timestamp_seconds", "Unix time of the last failed OpenStack login; 0 if none since start."),
		failures: d("login_consecutive_failures",
			"Failed OpenStack logins since the last success (Keystone's lockout counts these)."),
		nextAttempt: d("login_next_attempt_timestamp_seconds",
			"Unix time of the next background login (token renewal, or the end of the backoff after a failure)."),
		tokenExpiry:   d("token_expiry_timestamp_seconds", "Unix time the kept Keystone token expires; 0 if none is kept."),
		loginsCounter: d("logins_total", "OpenStack logins since start, by result (succeeded, failed).", "result"),
	})
}

func (c *cloudLogin) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.lastSuccess, c.lastFailure, c.failures, c.nextAttempt, c.tokenExpiry, c.loginsCounter} {
		ch <- d
	}
}

func (c *cloudLogin) Collect(ch chan<- prometheus.Metric) {
	h := c.read()
	if !h.Enabled {
		return
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	gauge(c.lastSuccess, unixOrZero(h.LastSuccess))
	gauge(c.lastFailure, unixOrZero(h.LastFailure))
	gauge(c.failures, float64(h.ConsecutiveFailures))
	gauge(c.nextAttempt, unixOrZero(h.NextAttempt))
	gauge(c.tokenExpiry, unixOrZero(h.TokenExpiresAt))
	ch <- prometheus.MustNewConstMetric(c.loginsCounter, prometheus.CounterValue, float64(h.Succeeded), "succeeded")
	ch <- prometheus.MustNewConstMetric(c.loginsCounter, prometheus.CounterValue, float64(h.Failed), "failed")
}

// unixOrZero is t in Unix seconds, 0 for the zero time ("never").
func unixOrZero(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return unix(t)
}
