-- The startup job (bringing the site back after an outage): a third job kind,
-- and the shutdown job that a startup restores, so that it starts exactly
-- the VMs that shutdown stopped (runner/startup_vms.go).

-- SQLite cannot change a CHECK constraint in place, so jobs is rebuilt: a
-- new table with the new constraints, the rows copied with their ids, the
-- old table dropped and the new one renamed, as SQLite's documentation
-- prescribes: foreign keys off around it (DROP TABLE jobs would otherwise
-- delete through the references of steps, actions, events and idempotency
-- keys; renaming the old table instead would rewrite those references),
-- which a transaction cannot do, hence NO TRANSACTION and an explicit one
-- inside. The ids are copied unchanged, so every reference holds after.

-- +goose NO TRANSACTION
-- +goose Up
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;

CREATE TABLE jobs_new (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    kind              TEXT    NOT NULL CHECK (kind IN ('simulation', 'shutdown', 'startup')),
    state             TEXT    NOT NULL DEFAULT 'pending'
                              CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    token_name        TEXT    NOT NULL DEFAULT '',
    remote_addr       TEXT    NOT NULL DEFAULT '',
    reason            TEXT    NOT NULL DEFAULT '',
    expected_recovery TEXT,
    current_step      TEXT    NOT NULL DEFAULT '',
    error             TEXT    NOT NULL DEFAULT '',
    cancel_requested  INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    created_at        TEXT    NOT NULL,
    started_at        TEXT,
    finished_at       TEXT,
    deadline          TEXT,
    on_track          INTEGER CHECK (on_track IN (0, 1)),
    boot_id           TEXT CHECK (boot_id <> ''),
    touched_at        TEXT,
    -- restores_job: the shutdown job a startup restores; set exactly for
    -- startups, so no startup can exist without knowing what to start.
    restores_job      INTEGER REFERENCES jobs (id),
    CHECK ((state IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
    CHECK (state <> 'running' OR started_at IS NOT NULL),
    CHECK ((kind = 'startup') = (restores_job IS NOT NULL))
);

INSERT INTO jobs_new (id, kind, state, token_name, remote_addr, reason, expected_recovery, current_step,
    error, cancel_requested, created_at, started_at, finished_at, deadline, on_track, boot_id, touched_at)
SELECT id, kind, state, token_name, remote_addr, reason, expected_recovery, current_step,
    error, cancel_requested, created_at, started_at, finished_at, deadline, on_track, boot_id, touched_at
FROM jobs;

DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
CREATE UNIQUE INDEX jobs_one_active ON jobs ((1)) WHERE state IN ('pending', 'running');
CREATE INDEX jobs_kind_id ON jobs (kind, id DESC);
COMMIT;
PRAGMA foreign_keys = ON;

-- +goose Down
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;

-- Startups cannot be kept under the old CHECK: their rows, and everything
-- that hangs off them, go with the downgrade.
DELETE FROM idempotency_keys WHERE job_id IN (SELECT id FROM jobs WHERE kind = 'startup');
DELETE FROM actions WHERE job_id IN (SELECT id FROM jobs WHERE kind = 'startup');
DELETE FROM steps WHERE job_id IN (SELECT id FROM jobs WHERE kind = 'startup');
DROP TRIGGER events_append_only_delete;
DELETE FROM events WHERE job_id IN (SELECT id FROM jobs WHERE kind = 'startup');
-- +goose StatementBegin
CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;
-- +goose StatementEnd

CREATE TABLE jobs_old (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    kind              TEXT    NOT NULL CHECK (kind IN ('simulation', 'shutdown')),
    state             TEXT    NOT NULL DEFAULT 'pending'
                              CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    token_name        TEXT    NOT NULL DEFAULT '',
    remote_addr       TEXT    NOT NULL DEFAULT '',
    reason            TEXT    NOT NULL DEFAULT '',
    expected_recovery TEXT,
    current_step      TEXT    NOT NULL DEFAULT '',
    error             TEXT    NOT NULL DEFAULT '',
    cancel_requested  INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    created_at        TEXT    NOT NULL,
    started_at        TEXT,
    finished_at       TEXT,
    deadline          TEXT,
    on_track          INTEGER CHECK (on_track IN (0, 1)),
    boot_id           TEXT CHECK (boot_id <> ''),
    touched_at        TEXT,
    CHECK ((state IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
    CHECK (state <> 'running' OR started_at IS NOT NULL)
);

INSERT INTO jobs_old (id, kind, state, token_name, remote_addr, reason, expected_recovery, current_step,
    error, cancel_requested, created_at, started_at, finished_at, deadline, on_track, boot_id, touched_at)
SELECT id, kind, state, token_name, remote_addr, reason, expected_recovery, current_step,
    error, cancel_requested, created_at, started_at, finished_at, deadline, on_track, boot_id, touched_at
FROM jobs WHERE kind <> 'startup';

DROP TABLE jobs;
ALTER TABLE jobs_old RENAME TO jobs;
CREATE UNIQUE INDEX jobs_one_active ON jobs ((1)) WHERE state IN ('pending', 'running');
CREATE INDEX jobs_kind_id ON jobs (kind, id DESC);
COMMIT;
PRAGMA foreign_keys = ON;
