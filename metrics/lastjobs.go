package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeops/shutdownd/store"
)

// lastJobs exports the last job of each kind as the store holds it when
// Prometheus scrapes, not as the runner last reported it: a simulation
// settled as "interrupted by restart", a pending job cancelled before it
// started or preempted by a shutdown never pass through the runner's
// observer, and the gauges must not say "running" for them. The read is
// the one /shutdown/status makes (newest job of a kind, by primary key).
type lastJobs struct {
	st                *store.Store
	start, end, state *prometheus.Desc
}

func newLastJobs(st *store.Store) *lastJobs {
	return &lastJobs{
		st: st,
		start: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "last_job_start_timestamp_seconds"),
			"Unix time the last job of each kind was requested.", []string{"kind"}, nil),
		end: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "last_job_end_timestamp_seconds"),
			"Unix time the last job of each kind ended; 0 while it runs.", []string{"kind"}, nil),
		state: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "last_job_result"),
			"1 for the state of the last job of each kind, 0 for the other states.", []string{"kind", "result"}, nil),
	}
}

func (l *lastJobs) Describe(ch chan<- *prometheus.Desc) {
	ch <- l.start
	ch <- l.end
	ch <- l.state
}

// Collect reads the newest job of each kind; a kind never run exports
// nothing. A failed read is reported to the registry, which answers the
// scrape 500 rather than a wrong value.
func (l *lastJobs) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, k := range []store.Kind{store.KindSimulation, store.KindShutdown, store.KindStartup} {
		j, err := l.st.LatestJob(ctx, k)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(l.state, err)
			continue
		}
		if j == nil {
			continue
		}
		kind := string(j.Kind)
		ch <- prometheus.MustNewConstMetric(l.start, prometheus.GaugeValue, unix(j.CreatedAt), kind)
		end := 0.0
		if j.FinishedAt != nil {
			end = unix(*j.FinishedAt)
		}
		ch <- prometheus.MustNewConstMetric(l.end, prometheus.GaugeValue, end, kind)
		for _, s := range jobStates {
			v := 0.0
			if s == j.State {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(l.state, prometheus.GaugeValue, v, kind, string(s))
		}
	}
}
