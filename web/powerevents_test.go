package web

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/store"
	"github.com/edgeops/shutdownd/web/timeline"
)

// TestPowerEventsOnTheTimeline: the job started by the power source shows
// the loss of the mains that led to it and the power source's decision as
// lines on its timeline; a blip long over before a job is not shown.
func TestPowerEventsOnTheTimeline(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	add := func(kind store.PowerEventKind, job *int64, detail string) {
		t.Helper()
		if _, err := e.st.AddPowerEvent(ctx, store.PowerEvent{Source: "nut/ups1", Kind: kind, Level: store.PowerWarn,
			Status: "OB DISCHRG", JobID: job, Detail: detail}); err != nil {
			t.Fatal(err)
		}
	}
	add(store.PowerOnBattery, nil, "blip")
	add(store.PowerOnMains, nil, "blip over")
	add(store.PowerOnBattery, nil, "mains lost; a shutdown can start after the grace")
	job, _, err := e.st.CreateShutdown(ctx, store.NewJob{TokenName: "power-source:nut/ups1", Reason: "on battery 31 s, the UPS flags LB"})
	if err != nil {
		t.Fatal(err)
	}
	add(store.PowerShutdown, &job.ID, "started shutdown job 1")
	if err := e.st.StartJob(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	c := e.loggedIn(t)
	_, body := e.get(t, c, fmt.Sprintf("/history/%d", job.ID))
	mustContain(t, body, `class="vline vline-power`, "mains lost", "power source: shutdown", "ups.status OB DISCHRG",
		`<span class="key key-power"></span> power`)
	if strings.Contains(body, "blip") {
		t.Error("the blip before the outage is on the job's timeline")
	}
	if n := strings.Count(body, `<span class="key key-power">`); n != 1 {
		t.Errorf("the legend names the power lines %d times, want once", n)
	}
}

func TestPowerEventsFor(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	ev := func(sec int, k store.PowerEventKind) store.PowerEvent {
		return store.PowerEvent{At: t0.Add(time.Duration(sec) * time.Second), Kind: k}
	}
	end := t0.Add(100 * time.Second)
	job := store.Job{CreatedAt: t0, FinishedAt: &end}
	for _, tc := range []struct {
		name string
		evs  []store.PowerEvent // newest first
		want int
	}{
		{"outage before the job", []store.PowerEvent{ev(1, store.PowerShutdown), ev(-30, store.PowerOnBattery), ev(-90, store.PowerOnMains)}, 2},
		{"mains back before the job", []store.PowerEvent{ev(-10, store.PowerOnMains), ev(-30, store.PowerOnBattery)}, 0},
		{"after the job", []store.PowerEvent{ev(200, store.PowerOnMains), ev(50, store.PowerConnectionLost)}, 1},
		{"none", nil, 0},
	} {
		if got := timeline.PowerEventsFor(job, tc.evs, end); len(got) != tc.want {
			t.Errorf("%s: %d events, want %d", tc.name, len(got), tc.want)
		}
	}
}

// upsNow is a power source with a fixed last reading, as the watcher would
// report it: the page only formats it.
type upsNow PowerReading

func (u upsNow) PowerReading(context.Context) (PowerReading, bool) { return PowerReading(u), true }

// TestHistoryShowsThePowerState: the history page says at the top whether
// the site runs on battery, and how much runtime the UPS reports.
func TestHistoryShowsThePowerState(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	e := newEnv(t, func(o *Options) {
		o.Power = upsNow{Source: "nut/ups1@127.0.0.1:3493", OnBattery: true, Runtime: 4 * time.Minute, At: at}
	})
	_, body := e.get(t, e.loggedIn(t), "/history")
	mustContain(t, body, `class="power-now"`, "On battery", "nut/ups1@127.0.0.1:3493", `datetime="2026-01-01T12:00:00Z"`)
}
