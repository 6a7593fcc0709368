package migrations_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"slices"
	"testing"

	"github.com/pressly/goose/v3"
	_ "modernc.org/sqlite"

	"github.com/edgeops/shutdownd/migrations"
)

func tables(t *testing.T, db *sql.DB) []string {
	t.Helper()
	rows, err := db.Query(`SELECT name FROM sqlite_master WHERE type IN ('table', 'index', 'trigger')
		AND name NOT LIKE 'sqlite_%' AND name NOT LIKE 'goose_%' ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

// TestUpDownUp applies every migration, reverts all of them and applies them
// again, so that each Down really undoes its Up.
func TestUpDownUp(t *testing.T) {
	ctx := context.Background()
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "m.db")+"?_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectSQLite3, db, migrations.FS)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.ListSources()) == 0 {
		t.Fatal("no migrations embedded")
	}
	want := []string{"actions", "actions_job", "actions_key", "events", "events_append_only_delete",
		"events_append_only_update", "events_hash_chain", "events_job_id", "jobs", "jobs_kind_id", "jobs_one_active",
		"power_events", "power_events_append_only_delete", "power_events_append_only_update", "power_events_at",
		"sessions", "sessions_expires", "steps", "token_generation", "tokens", "tokens_generation_delete",
		"tokens_generation_insert", "tokens_generation_update"}

	for round := range 2 {
		if _, err := p.Up(ctx); err != nil {
			t.Fatalf("round %d: up: %v", round, err)
		}
		got := tables(t, db)
		for _, w := range want {
			if !slices.Contains(got, w) {
				t.Errorf("round %d: after up, %s missing (have %v)", round, w, got)
			}
		}
		if _, err := p.DownTo(ctx, 0); err != nil {
			t.Fatalf("round %d: down: %v", round, err)
		}
		if got := tables(t, db); len(got) != 0 {
			t.Errorf("round %d: after down, left over: %v", round, got)
		}
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("final up: %v", err)
	}
	v, err := p.GetDBVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if srcs := p.ListSources(); v != srcs[len(srcs)-1].Version {
		t.Errorf("db version %d, want %d", v, srcs[len(srcs)-1].Version)
	}
}
