// Package migrations holds the SQLite schema of shutdownd as goose SQL files,
// embedded so that the binary migrates its own database at start-up and an
// operator never has to ship or run SQL by hand.
//
// The schema carries the job state machine itself (CHECK constraints, the
// finished_at rule and the one-active-job unique index), so that no code path,
// and no operator running SQL during an incident, can store an impossible
// state.
package migrations

import "embed"

// FS holds the goose migrations at its root, ready for goose.NewProvider.
//
//go:embed *.sql
var FS embed.FS
