// Package store keeps every job, step, target action, event and API token of
// shutdownd in one SQLite file, so that the status API, the history page and
// post-incident audit SQL all read the same truth, and a restarted service
// knows exactly where an interrupted shutdown stopped.
//
// The schema (package migrations) enforces the job state machine; this
// package adds the transactions around it. All writes go through one
// connection (SQLite has one writer anyway; queueing in Go avoids
// SQLITE_BUSY), reads through a separate pool so that the status API stays
// fast while a shutdown writes.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// ErrJobRunning is returned when a job cannot be created because another job
// is pending or running; the handlers answer 409 job_running.
var ErrJobRunning = errors.New("another job is active")

// ErrNotFound is returned when a job, step, action or token does not exist,
// so that callers can answer 404 instead of 500.
var ErrNotFound = errors.New("not found")

// ErrNameTaken is returned by CreateToken when a token of that name exists;
// names identify tokens in audit records, so they must be unique.
var ErrNameTaken = errors.New("name already taken")

// ErrJobFinished is returned by StartJob when the job already reached a final
// state (for example cancelled while pending), so that the runner does not
// run it.
var ErrJobFinished = errors.New("job already finished")

// timeFormat is the one format of every timestamp in the database: UTC,
// microseconds, sortable as text.
const timeFormat = "2006-01-02T15:04:05.000000Z"

// dsnParams are the connection settings of every connection: wait for locks
// instead of failing, WAL so readers never block the writer, foreign keys on,
// fsync on every commit (a power loss must not lose a state change), and
// BEGIN IMMEDIATE so a transaction takes the write lock before it reads.
const dsnParams = "_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=synchronous(FULL)&_txlock=immediate"

// Store is the SQLite database of shutdownd. It is safe for concurrent use.
type Store struct {
	path string
	w    *sql.DB // the single writer connection
	r    *sql.DB // readers
	subs *broadcaster
	now  func() time.Time // tests may replace it
	// The API's hot reads (a token by hash on every request, the latest
	// job of a kind on every status request) run as statements prepared
	// once on the reader pool: a status poll during a shutdown then costs
	// two indexed lookups and no SQL parsing. They read the database itself,
	// so a token revoked by another process is refused from the next
	// request on.
	latestJob, tokenByHash *sql.Stmt
	// boot is this machine's boot id, recorded with every job created or
	// started (see SetBootID); nil or "" when not known.
	boot atomic.Pointer[string]
}

// Open creates the database file (mode 0600) if needed, opens it and applies
// all pending migrations, so that a fresh binary works against an old file.
func Open(ctx context.Context, path string) (*Store, error) {
	if err := createFile(path); err != nil {
		return nil, err
	}
	s, err := open(path)
	if err != nil {
		return nil, err
	}
	if err := s.migrateUp(ctx); err != nil {
		s.Close()
		return nil, err
	}
	if err := restrictFiles(path); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.prepareReads(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	return s, nil
}

// open opens the writer and reader pools without migrating.
func open(path string) (*Store, error) {
	dsn := path + "?" + dsnParams
	w, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	r, err := sql.Open("sqlite", dsn+"&_query_only=1")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	r.SetMaxOpenConns(8)
	s := &Store{path: path, w: w, r: r, subs: newBroadcaster(), now: time.Now}
	if err := s.w.Ping(); err != nil {
		s.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	return s, nil
}

// prepareReads prepares the hot read statements, once the schema exists.
func (s *Store) prepareReads(ctx context.Context) error {
	var err error
	if s.latestJob, err = s.r.PrepareContext(ctx, `SELECT `+jobColumns+` FROM jobs WHERE kind = ? ORDER BY id DESC LIMIT 1`); err != nil {
		return fmt.Errorf("prepare latest job read: %w", err)
	}
	if s.tokenByHash, err = s.r.PrepareContext(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE hash = ?`); err != nil {
		return fmt.Errorf("prepare token read: %w", err)
	}
	return nil
}

// createFile creates the database file with mode 0600 before SQLite does,
// because SQLite would create it world-readable under a usual umask, and the
// file holds token hashes and the site's audit trail.
func createFile(path string) error {
	if path == "" || path == ":memory:" {
		return errors.New("open database: a file path is required")
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("create database %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("create database %s: %w", path, err)
	}
	return restrictFiles(path)
}

// restrictFiles sets mode 0600 on the database and its -wal and -shm files,
// whatever the umask or an older file's mode. SQLite gives -wal and -shm the
// database file's mode; this makes sure of it.
func restrictFiles(path string) error {
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		err := os.Chmod(p, 0o600)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("restrict database file %s: %w", p, err)
		}
	}
	return nil
}

// Close closes the prepared statements and both pools.
func (s *Store) Close() error {
	var errs []error
	for _, st := range []*sql.Stmt{s.latestJob, s.tokenByHash} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(append(errs, s.r.Close(), s.w.Close())...)
}

// Ping checks that the database answers a query, for /healthz.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.r.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("ping database: %w", err)
	}
	return nil
}

// update runs fn in one IMMEDIATE transaction on the writer with a single
// timestamp, commits, and wakes subscribers when notify is set.
func (s *Store) update(ctx context.Context, notify bool, fn func(tx *sql.Tx, now time.Time) error) error {
	return s.updateAt(ctx, time.Time{}, notify, fn)
}

// updateAt is update with the transaction's timestamp given: at is when the
// records were made, for records written late (runner/internal/journal
// holds what a full disk refused); zero means now.
func (s *Store) updateAt(ctx context.Context, at time.Time, notify bool, fn func(tx *sql.Tx, now time.Time) error) error {
	if at.IsZero() {
		at = s.now()
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	defer tx.Rollback()
	if err := fn(tx, at.UTC().Truncate(time.Microsecond)); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit transaction: %w", err)
	}
	if notify {
		s.subs.notify()
	}
	return nil
}

// Subscribe returns a channel that receives after every committed write to
// jobs, steps, actions or events. Sends never block and are coalesced (buffer
// 1): a receiver re-reads the state it needs. cancel unsubscribes; the
// channel is not closed.
func (s *Store) Subscribe() (ch <-chan struct{}, cancel func()) {
	return s.subs.subscribe()
}

// isUnique reports whether err is a SQLite UNIQUE constraint violation.
func isUnique(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE
}

// formatTime formats t for the database.
func formatTime(t time.Time) string {
	return t.UTC().Format(timeFormat)
}

// FormatTime is the one text form of a timestamp everywhere shutdownd
// shows one (API JSON, webhooks, audit reports): the database's own, UTC
// with microseconds, so what a report prints can be pasted into SQL.
func FormatTime(t time.Time) string { return formatTime(t) }

// FormatTimePtr is FormatTime for an optional time: nil stays nil (JSON
// null).
func FormatTimePtr(t *time.Time) *string {
	if t == nil {
		return nil
	}
	s := formatTime(*t)
	return &s
}

// nullTime formats an optional time for the database.
func nullTime(t *time.Time) sql.NullString {
	if t == nil {
		return sql.NullString{}
	}
	return sql.NullString{String: formatTime(*t), Valid: true}
}

// parseTime parses a database timestamp.
func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(timeFormat, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("parse timestamp %q: %w", s, err)
	}
	return t, nil
}

// parseNullTime parses an optional database timestamp.
func parseNullTime(ns sql.NullString) (*time.Time, error) {
	if !ns.Valid {
		return nil, nil
	}
	t, err := parseTime(ns.String)
	if err != nil {
		return nil, err
	}
	return &t, nil
}

// affected returns ErrNotFound when res changed no row.
func affected(res sql.Result) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("rows affected: %w", err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// Unwritable reports whether err says that the database could not take a
// write at all (disk full, read-only file system, I/O error, locked,
// corrupt, out of memory), as opposed to a write that is wrong in itself (a
// missing row, a constraint): the same write may succeed later, unchanged.
// The runner holds such records in memory instead of giving up on them.
func Unwritable(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_PERM, sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_NOMEM,
		sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_FULL,
		sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PROTOCOL, sqlite3.SQLITE_NOTADB:
		return true
	}
	return false
}

// notFoundIfFK turns a foreign key violation (a job or step that does not
// exist, or a step of another job) into ErrNotFound.
func notFoundIfFK(err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY {
		return fmt.Errorf("%w: %v", ErrNotFound, err)
	}
	return err
}
