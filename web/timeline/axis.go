package timeline

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// tickSteps are the spacings the axis may use: round numbers an operator
// reads at a glance.
var tickSteps = []time.Duration{
	100 * time.Millisecond, 200 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
	time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour,
}

// maxTicks keeps the labels apart on a phone (about 70 px each at 390 px).
const maxTicks = 5

// ticks labels the axis of a chart total long: the smallest round spacing
// that gives at most maxTicks intervals, from 0.
func ticks(total time.Duration) []Tick {
	step := tickSteps[len(tickSteps)-1]
	for _, s := range tickSteps {
		if total/s <= maxTicks {
			step = s
			break
		}
	}
	var out []Tick
	for at := time.Duration(0); at <= total; at += step {
		x := 100 * float64(at) / float64(total)
		out = append(out, Tick{X: x, Label: Offset(at), Anchor: anchor(x)})
	}
	return out
}

// Offset writes a time from the chart's start: "0", "+1.5s", "+2m30s",
// "−5s" before it.
func Offset(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d < 0:
		return "−" + Short(-d)
	}
	return "+" + Short(d)
}

// Short writes a duration as an operator reads it: 850ms, 4.2s, 12s, 2m,
// 2m05s, 1h, 1h02m.
func Short(d time.Duration) string {
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < 10*time.Second:
		return strconv.FormatFloat(math.Round(d.Seconds()*10)/10, 'f', -1, 64) + "s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour && int(d.Seconds())%60 == 0:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case int(d.Minutes())%60 == 0:
		return fmt.Sprintf("%dh", int(d.Hours()))
	default:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
}
