package web

import (
	"context"
	"log/slog"
	"time"

	"github.com/edgeops/shutdownd/store"
	"github.com/edgeops/shutdownd/web/timeline"
)

// powerLookbehind is how far before a job the timeline looks for the loss
// of the mains that led to it: far more than any on_battery_grace.
const powerLookbehind = time.Hour

// powerEvents reads the power events a job's timeline marks. A failed
// read leaves them out (logged): the timeline is still worth showing.
func (w *Web) powerEvents(ctx context.Context, j store.Job, now time.Time) []store.PowerEvent {
	end := now
	if j.FinishedAt != nil {
		end = *j.FinishedAt
	}
	evs, err := w.store.PowerEvents(ctx, store.PowerEventFilter{Since: j.CreatedAt.Add(-powerLookbehind),
		Until: end.Add(time.Microsecond), Limit: 200})
	if err != nil {
		w.log.LogAttrs(ctx, slog.LevelWarn, "read power events", slog.Int64("job", j.ID), slog.Any("err", err))
		return nil
	}
	return timeline.PowerEventsFor(j, evs, now)
}
