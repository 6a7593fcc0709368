package store

import (
	"context"
	"testing"
	"time"
)

// TestPowerEvents stores power events with and without readings and a job,
// reads them back newest first, and checks that the schema keeps them
// append-only and consistent (a started event names its job, others none).
func TestPowerEvents(t *testing.T) {
	ctx := context.Background()
	s, path := newStore(t)
	charge, runtime := 54.5, 240*time.Second
	first, err := s.AddPowerEvent(ctx, PowerEvent{Source: "nut/ups1", Kind: PowerOnBattery, Level: PowerWarn,
		Status: "OB DISCHRG", Charge: &charge, Runtime: &runtime, Detail: "mains lost"})
	if err != nil {
		t.Fatal(err)
	}
	job, _, err := s.CreateShutdown(ctx, NewJob{TokenName: "power-source:nut/ups1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddPowerEvent(ctx, PowerEvent{Source: "nut/ups1", Kind: PowerShutdown, Level: PowerCritical, JobID: &job.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddPowerEvent(ctx, PowerEvent{Source: "nut/ups1", Kind: PowerOnMains, Level: PowerInfo, JobID: &job.ID}); err == nil {
		t.Error("an on_mains event naming a job was stored")
	}
	if _, err := s.AddPowerEvent(ctx, PowerEvent{Source: "nut/ups1", Kind: "flood", Level: PowerInfo}); err == nil {
		t.Error("an unknown kind was stored")
	}
	evs, err := s.PowerEvents(ctx, PowerEventFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].Kind != PowerShutdown || *evs[0].JobID != job.ID || evs[1].ID != first.ID {
		t.Fatalf("events = %+v", evs)
	}
	if e := evs[1]; *e.Charge != 54.5 || *e.Runtime != 240*time.Second || e.Status != "OB DISCHRG" || e.JobID != nil {
		t.Errorf("first event read back as %+v", e)
	}
	if evs, _ := s.PowerEvents(ctx, PowerEventFilter{Since: evs[0].At.Add(time.Microsecond)}); len(evs) != 0 {
		t.Errorf("since after the last: %d events", len(evs))
	}
	db := rawDB(t, path)
	if _, err := db.Exec(`UPDATE power_events SET level = 'info'`); err == nil {
		t.Error("power events could be updated")
	}
	if _, err := db.Exec(`DELETE FROM power_events`); err == nil {
		t.Error("power events could be deleted")
	}
}
