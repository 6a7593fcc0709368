package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeops/shutdownd/power"
)

// PowerSource is the power source watcher as the metrics read it.
type PowerSource interface {
	Status(ctx context.Context) power.Status
}

// powerMetrics exports the watcher's state at scrape time, from the same
// Status that answers GET /power, so both always agree. Without a power
// source nothing is exported.
type powerMetrics struct {
	src                                               PowerSource
	connected, onBattery, flag, charge, runtime, left *prometheus.Desc
	forecast, losses                                  *prometheus.Desc
}

// powerFlags are the ups.status flags exported as shutdownd_ups_status.
var powerFlags = []string{"OL", "OB", "LB", "FSD", "CHRG", "DISCHRG", "RB"}

// WatchPower adds the power source metrics read from src.
func (m *Metrics) WatchPower(src PowerSource) {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, append([]string{"source"}, labels...), nil)
	}
	m.reg.MustRegister(&powerMetrics{src: src,
		connected: d("power_source_connected", "1 when the last read of the NUT server succeeded, 0 when it does not answer."),
		onBattery: d("ups_on_battery", "1 while the UPS runs on battery (the last known state), 0 on mains."),
		flag:      d("ups_status", "1 for each ups.status flag the last reading carried, 0 for the others.", "flag"),
		charge:    d("ups_battery_charge_percent", "battery.charge of the last reading."),
		runtime:   d("ups_battery_runtime_seconds", "battery.runtime of the last reading."),
		forecast:  d("power_source_forecast_seconds", "The forecast duration of a shutdown started now."),
		left:      d("power_source_margin_left_seconds", "battery.runtime minus (forecast + runtime_margin): at 0 the runtime condition starts a shutdown."),
		losses:    d("power_source_connection_losses_total", "Times the NUT server stopped answering since the service started."),
	})
}

func (p *powerMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{p.connected, p.onBattery, p.flag, p.charge, p.runtime, p.forecast, p.left, p.losses} {
		ch <- d
	}
}

func (p *powerMetrics) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s := p.src.Status(ctx)
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{s.Source}, labels...)...)
	}
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	g(p.connected, b(s.Connected))
	g(p.onBattery, b(s.OnBattery))
	ch <- prometheus.MustNewConstMetric(p.losses, prometheus.CounterValue, float64(s.ConnectionLosses), s.Source)
	if r := s.Reading; r != nil {
		for _, f := range powerFlags {
			g(p.flag, b(r.Has(f)), f)
		}
		if r.HasCharge {
			g(p.charge, r.Charge)
		}
		if r.HasRuntime {
			g(p.runtime, r.Runtime.Seconds())
		}
	}
	if s.Forecast != nil {
		g(p.forecast, s.Forecast.Estimate.Seconds())
	}
	if s.MarginLeft != nil {
		g(p.left, s.MarginLeft.Seconds())
	}
}
