package timeline

import (
	"fmt"
	"time"

	"github.com/edgeops/shutdownd/store"
)

// ForecastChart lays out the forecast of a shutdown started now: the
// estimate and the worst case, each a bar stacked by step in the order
// they run, on one axis with the UPS runtime as a vertical line when a
// power source reports it. Whether the battery covers the shutdown is
// then a matter of where the bars end against the line.
type ForecastChart struct {
	Total   time.Duration // length of the axis
	Rows    []ForecastRow
	Ticks   []Tick
	Runtime *Line
	Height  int
}

// ForecastRow is the estimate or the worst case.
type ForecastRow struct {
	Label    string
	Y        int
	Total    time.Duration
	Segments []Segment
}

// BarTop is the y of the row's bar.
func (r ForecastRow) BarTop() int { return r.Y + BarY }

// TextY is the baseline of the row's label.
func (r ForecastRow) TextY() int { return r.Y + 11 }

// BarHeight is the height of every bar.
func (ForecastRow) BarHeight() int { return BarH }

// LinesBottom is where the runtime line and the grid end.
func (c ForecastChart) LinesBottom() int {
	if c.Runtime != nil {
		return c.Height - FooterH
	}
	return c.Height
}

// Segment is one step's part of a forecast bar.
type Segment struct {
	Step  string // openstack, storage, hosts
	X, W  float64
	Title string
}

// BuildForecast lays out f against the UPS runtime (nil: not known).
func BuildForecast(f store.Forecast, runtime *time.Duration) ForecastChart {
	c := ForecastChart{Total: max(f.WorstCase, f.Estimate, time.Second)}
	if runtime != nil && *runtime > c.Total {
		c.Total = *runtime
	}
	c.Total += c.Total / 50 // room for a line at the far end
	y := AxisH
	for _, worst := range []bool{false, true} {
		r := ForecastRow{Label: "estimate", Y: y, Total: f.Estimate}
		if worst {
			r.Label, r.Total = "worst case", f.WorstCase
		}
		var at time.Duration
		for _, s := range f.Steps {
			d := s.Estimate
			if worst {
				d = s.WorstCase
			}
			if d <= 0 {
				continue
			}
			seg := Segment{Step: s.Name, X: c.pct(at), W: c.pct(at+d) - c.pct(at)}
			seg.Title = fmt.Sprintf("%s: %s (%s)", s.Name, Short(d), s.Basis)
			if s.Detail != "" && !worst {
				seg.Title += ": " + s.Detail
			}
			r.Segments = append(r.Segments, seg)
			at += d
		}
		r.Label += " " + Short(r.Total)
		c.Rows = append(c.Rows, r)
		y += RowH
	}
	c.Height = y
	c.Ticks = ticks(c.Total)
	if runtime != nil {
		x := c.pct(*runtime)
		c.Runtime = &Line{Kind: "ups", X: x, At: *runtime, Label: "UPS runtime " + Short(*runtime), Anchor: anchor(x),
			Title: "the UPS reports " + Short(*runtime) + " of battery runtime"}
		c.Height += FooterH
	}
	return c
}

func (c ForecastChart) pct(d time.Duration) float64 {
	return min(100*float64(d)/float64(c.Total), 100)
}
