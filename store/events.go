package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Event is one entry of a job's append-only log: every decision, with its
// time and detail, for the live view and the post-incident audit.
//
// Events are hash-chained per job: PrevHash is the Hash of the job's previous
// event (empty for the first) and Hash is EventHash over the stored fields,
// so that changing, inserting or removing a record after the fact is
// detectable (VerifyChain). Events written before migration 2 have neither.
type Event struct {
	ID       int64
	JobID    int64
	At       time.Time
	Level    Level
	Message  string
	Detail   string
	PrevHash []byte
	Hash     []byte
}

// EventHash is the SHA-256 of an event's stored fields and the previous
// hash. Every field is written as its length (8 bytes, big endian) then its
// bytes, so that no two different events encode alike (moving text from
// message to detail changes the hash). Numbers are decimal text and at is the
// database text, byte for byte, so the hash can be recomputed from a plain
// SQL dump (docs/audit.md).
func EventHash(jobID, id int64, at, level, message, detail string, prevHash []byte) []byte {
	h := sha256.New()
	var n [8]byte
	for _, f := range [][]byte{
		[]byte(strconv.FormatInt(jobID, 10)), []byte(strconv.FormatInt(id, 10)),
		[]byte(at), []byte(level), []byte(message), []byte(detail), prevHash,
	} {
		binary.BigEndian.PutUint64(n[:], uint64(len(f)))
		h.Write(n[:])
		h.Write(f)
	}
	return h.Sum(nil)
}

// AddEvent appends an event to a job's log.
func (s *Store) AddEvent(ctx context.Context, jobID int64, level Level, message, detail string) error {
	err := s.update(ctx, true, func(tx *sql.Tx, now time.Time) error {
		return addEvent(ctx, tx, jobID, now, level, message, detail)
	})
	if err != nil {
		return fmt.Errorf("add event to job %d: %w", jobID, err)
	}
	return nil
}

// addEvent inserts an event at the end of its job's chain. The id is chosen
// here, not by SQLite, because the hash covers it and events are never
// updated; the transaction holds the write lock (BEGIN IMMEDIATE), so the id
// and the previous hash cannot change before the INSERT. The id follows
// AUTOINCREMENT's rule (greater than any id ever used), so ids stay unique
// forever and SSE clients can resume after one.
func addEvent(ctx context.Context, tx *sql.Tx, jobID int64, now time.Time, level Level, message, detail string) error {
	var id int64
	err := tx.QueryRowContext(ctx, `SELECT max(
		coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),
		coalesce((SELECT max(id) FROM events), 0)) + 1`).Scan(&id)
	if err != nil {
		return fmt.Errorf("next event id: %w", err)
	}
	var prev []byte
	err = tx.QueryRowContext(ctx, `SELECT coalesce(hash, X'') FROM events WHERE job_id = ? ORDER BY id DESC LIMIT 1`,
		jobID).Scan(&prev)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		prev = []byte{}
	case err != nil:
		return fmt.Errorf("previous event hash: %w", err)
	}
	if prev == nil {
		prev = []byte{} // X'' scans as nil; the chain's start is an empty blob, not NULL
	}
	at := formatTime(now)
	hash := EventHash(jobID, id, at, string(level), message, detail, prev)
	_, err = tx.ExecContext(ctx, `INSERT INTO events (id, job_id, at, level, message, detail, prev_hash, hash)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		id, jobID, at, level, message, detail, prev, hash)
	if err != nil {
		return fmt.Errorf("insert event: %w", notFoundIfFK(err))
	}
	return nil
}

const eventColumns = `id, job_id, at, level, message, detail, prev_hash, hash`

// Events returns a job's events with id > afterID, oldest first, so that an
// SSE stream can resume from the last id it sent.
func (s *Store) Events(ctx context.Context, jobID, afterID int64) ([]Event, error) {
	evs, _, err := s.events(ctx, jobID, afterID)
	return evs, err
}

// events returns the events and, for VerifyChain, their at column exactly as
// stored.
func (s *Store) events(ctx context.Context, jobID, afterID int64) ([]Event, []string, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+eventColumns+` FROM events
		WHERE job_id = ? AND id > ? ORDER BY id`, jobID, afterID)
	if err != nil {
		return nil, nil, fmt.Errorf("list events of job %d: %w", jobID, err)
	}
	defer rows.Close()
	evs := []Event{}
	var ats []string
	for rows.Next() {
		var (
			e  Event
			at string
		)
		if err := rows.Scan(&e.ID, &e.JobID, &at, &e.Level, &e.Message, &e.Detail, &e.PrevHash, &e.Hash); err != nil {
			return nil, nil, fmt.Errorf("list events of job %d: %w", jobID, err)
		}
		if e.At, err = parseTime(at); err != nil {
			return nil, nil, fmt.Errorf("list events of job %d: %w", jobID, err)
		}
		evs = append(evs, e)
		ats = append(ats, at)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("list events of job %d: %w", jobID, err)
	}
	return evs, ats, nil
}

// ChainReport is the result of VerifyChain for one job.
type ChainReport struct {
	JobID    int64
	Events   int    // events checked
	Legacy   int    // leading events written before the chain existed (no hash)
	Head     []byte // hash of the last event: note it elsewhere to detect a rewrite of the whole chain
	OK       bool
	BrokenAt int64  // id of the first event that does not verify (0 when OK)
	Problem  string // why, when not OK
}

// VerifyChain recomputes the hash chain of a job's events. It detects an
// event changed, inserted or removed after the fact (except at the very end
// of the log, and except a rewrite of the whole chain by someone who knows
// the scheme: compare Head with a copy taken at the time, see docs/audit.md).
// A job without events verifies (OK, Events 0).
func (s *Store) VerifyChain(ctx context.Context, jobID int64) (ChainReport, error) {
	evs, ats, err := s.events(ctx, jobID, 0)
	if err != nil {
		return ChainReport{}, fmt.Errorf("verify chain of job %d: %w", jobID, err)
	}
	rep := ChainReport{JobID: jobID, Events: len(evs), OK: true}
	prev := []byte{}
	chained := false
	for i, e := range evs {
		if e.Hash == nil && e.PrevHash == nil && !chained {
			rep.Legacy++ // before migration 2: nothing to check
			continue
		}
		chained = true
		fail := func(p string) {
			rep.OK, rep.BrokenAt, rep.Problem = false, e.ID, p
		}
		if !bytes.Equal(e.PrevHash, prev) {
			fail(fmt.Sprintf("event %d: prev_hash does not match the previous event's hash (an event was removed, inserted or changed before it)", e.ID))
			break
		}
		want := EventHash(e.JobID, e.ID, ats[i], string(e.Level), e.Message, e.Detail, e.PrevHash)
		if !bytes.Equal(e.Hash, want) {
			fail(fmt.Sprintf("event %d: hash does not match its content (the record was changed)", e.ID))
			break
		}
		prev = e.Hash
	}
	if rep.OK && len(evs) > 0 {
		rep.Head = evs[len(evs)-1].Hash
	}
	return rep, nil
}
