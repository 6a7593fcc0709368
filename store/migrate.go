package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"time"

	"github.com/pressly/goose/v3"

	"github.com/edgeops/shutdownd/migrations"
)

// MigrationStatus is one schema migration as `shutdownd migrate status`
// shows it.
type MigrationStatus struct {
	Version   int64
	Name      string
	Applied   bool
	AppliedAt time.Time // zero when not applied
}

// provider returns a goose provider on the writer; it is not closed, since
// closing it would close the writer.
func (s *Store) provider() (*goose.Provider, error) {
	p, err := goose.NewProvider(goose.DialectSQLite3, s.w, migrations.FS)
	if err != nil {
		return nil, fmt.Errorf("load migrations: %w", err)
	}
	return p, nil
}

// migrateUp applies every pending migration.
func (s *Store) migrateUp(ctx context.Context) error {
	p, err := s.provider()
	if err != nil {
		return err
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate database %s: %w", s.path, err)
	}
	return nil
}

// MigrationStatus lists every known migration and whether it is applied.
func (s *Store) MigrationStatus(ctx context.Context) ([]MigrationStatus, error) {
	p, err := s.provider()
	if err != nil {
		return nil, err
	}
	st, err := p.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("migration status: %w", err)
	}
	out := make([]MigrationStatus, 0, len(st))
	for _, m := range st {
		out = append(out, MigrationStatus{
			Version:   m.Source.Version,
			Name:      path.Base(m.Source.Path),
			Applied:   m.State == goose.StateApplied,
			AppliedAt: m.AppliedAt,
		})
	}
	return out, nil
}

// ReadMigrationStatus reports the migration status of an existing database
// file without migrating it (Open always migrates up), so an operator can see
// what a new binary would apply.
func ReadMigrationStatus(ctx context.Context, path string) ([]MigrationStatus, error) {
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("read migration status: database %s does not exist", path)
		}
		return nil, fmt.Errorf("read migration status: %w", err)
	}
	s, err := open(path)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return s.MigrationStatus(ctx)
}
