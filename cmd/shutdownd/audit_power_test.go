package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/store"
)

// TestAuditPower lists the power events a watcher stored, with their
// readings and the job one of them names.
func TestAuditPower(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "shutdownd.db")
	st, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	charge, runtime := 41.0, 150*time.Second
	if _, err := st.AddPowerEvent(ctx, store.PowerEvent{Source: "nut/ups1", Kind: store.PowerOnBattery, Level: store.PowerWarn,
		Status: "OB DISCHRG", Charge: &charge, Runtime: &runtime}); err != nil {
		t.Fatal(err)
	}
	job, _, err := st.CreateShutdown(ctx, store.NewJob{TokenName: "power-source:nut/ups1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddPowerEvent(ctx, store.PowerEvent{Source: "nut/ups1", Kind: store.PowerShutdown, Level: store.PowerCritical,
		JobID: &job.ID, Detail: "runtime below forecast"}); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if err := dispatch(ctx, []string{"audit", "power", "--format", "json", "--database", path}, &out, &errb); err != nil {
		t.Fatalf("audit power: %v\n%s", err, errb.String())
	}
	var rows []map[string]string
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(rows) != 2 || rows[0]["kind"] != "shutdown_started" || rows[0]["job"] != "1" ||
		rows[1]["status"] != "OB DISCHRG" || rows[1]["charge"] != "41" || rows[1]["runtime_seconds"] != "150" {
		t.Fatalf("audit power rows: %v", rows)
	}
}
