package main

import (
	"context"
	"io"
	"strconv"

	"github.com/edgeops/shutdownd/store"
)

// auditPower lists the power source's events newest first, with the reading
// that went with each, so an operator can tell why a shutdown started (or
// why none did) next to the jobs it names.
func auditPower(ctx context.Context, st *store.Store, limit int, format string, w io.Writer) error {
	evs, err := st.PowerEvents(ctx, store.PowerEventFilter{Limit: limit})
	if err != nil {
		return err
	}
	t := &table{title: "power", header: []string{"id", "at", "source", "kind", "level", "status", "charge",
		"runtime_seconds", "job", "detail"}}
	for _, e := range evs {
		charge, runtime, job := "", "", ""
		if e.Charge != nil {
			charge = strconv.FormatFloat(*e.Charge, 'f', -1, 64)
		}
		if e.Runtime != nil {
			runtime = strconv.FormatFloat(e.Runtime.Seconds(), 'f', -1, 64)
		}
		if e.JobID != nil {
			job = strconv.FormatInt(*e.JobID, 10)
		}
		t.add(strconv.FormatInt(e.ID, 10), at(&e.At), e.Source, string(e.Kind), e.Level, e.Status, charge, runtime, job, e.Detail)
	}
	return writeTables(w, format, t)
}
