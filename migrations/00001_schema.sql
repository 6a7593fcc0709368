-- shutdownd schema. Timestamps are TEXT, UTC, '2006-01-02T15:04:05.000000Z':
-- sortable as text and readable in audit SQL without conversion.

-- +goose Up

-- A job is one simulation or shutdown request. The state machine lives here:
-- pending -> running -> succeeded | failed | cancelled, and pending -> cancelled.
CREATE TABLE jobs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: ids appear in Location headers and audit notes
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
    -- finished_at is set exactly for the final states.
    CHECK ((state IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
    -- a running job has a start time.
    CHECK (state <> 'running' OR started_at IS NOT NULL)
);

-- One active job at a time, for the whole site: every active row indexes the
-- same constant, so a second pending/running row is a UNIQUE violation no
-- matter how two requests race.
CREATE UNIQUE INDEX jobs_one_active ON jobs ((1)) WHERE state IN ('pending', 'running');

-- Job lists filtered by kind, newest first, and "latest job of a kind".
CREATE INDEX jobs_kind_id ON jobs (kind, id DESC);

-- A step is one stage of a job (OpenStack VMs, storage, hosts, or a check).
CREATE TABLE steps (
    id          INTEGER PRIMARY KEY,
    job_id      INTEGER NOT NULL REFERENCES jobs (id),
    seq         INTEGER NOT NULL CHECK (seq >= 0),
    name        TEXT    NOT NULL CHECK (name <> ''),
    state       TEXT    NOT NULL DEFAULT 'pending'
                        CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'skipped', 'cancelled')),
    detail      TEXT    NOT NULL DEFAULT '',
    error       TEXT    NOT NULL DEFAULT '',
    started_at  TEXT,
    finished_at TEXT,
    CHECK ((state IN ('succeeded', 'failed', 'skipped', 'cancelled')) = (finished_at IS NOT NULL)),
    UNIQUE (job_id, seq),
    UNIQUE (id, job_id) -- parent key for actions (step_id, job_id)
);

-- A target action is one operation on one target (a VM, a storage command,
-- a host, a BMC), kept so that a resumed shutdown knows what is done.
CREATE TABLE actions (
    id          INTEGER PRIMARY KEY,
    job_id      INTEGER NOT NULL REFERENCES jobs (id),
    step_id     INTEGER NOT NULL,
    target_kind TEXT    NOT NULL CHECK (target_kind IN ('vm', 'storage', 'host', 'bmc', 'openstack')),
    target      TEXT    NOT NULL,
    target_id   TEXT    NOT NULL DEFAULT '',
    operation   TEXT    NOT NULL CHECK (operation <> ''),
    state       TEXT    NOT NULL DEFAULT 'pending'
                        CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'skipped')),
    attempts    INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    detail      TEXT    NOT NULL DEFAULT '',
    error       TEXT    NOT NULL DEFAULT '',
    started_at  TEXT,
    finished_at TEXT,
    updated_at  TEXT    NOT NULL,
    CHECK ((state IN ('succeeded', 'failed', 'skipped')) = (finished_at IS NOT NULL)),
    -- the step belongs to the same job as the action.
    FOREIGN KEY (step_id, job_id) REFERENCES steps (id, job_id)
);

-- Find-or-create of an action on resume.
CREATE UNIQUE INDEX actions_key ON actions (step_id, target_kind, target_id, target, operation);
CREATE INDEX actions_job ON actions (job_id, id);

-- The append-only log of every decision taken for a job.
CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: SSE clients resume after an id
    job_id  INTEGER NOT NULL REFERENCES jobs (id),
    at      TEXT    NOT NULL,
    level   TEXT    NOT NULL CHECK (level IN ('info', 'warn', 'error')),
    message TEXT    NOT NULL CHECK (message <> ''),
    detail  TEXT    NOT NULL DEFAULT ''
);

CREATE INDEX events_job_id ON events (job_id, id);

-- +goose StatementBegin
CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;
-- +goose StatementEnd

-- API tokens. Only the SHA-256 of a secret is stored; scopes and cidrs are
-- JSON arrays of strings.
CREATE TABLE tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT NOT NULL UNIQUE CHECK (name <> ''),
    hash         BLOB NOT NULL UNIQUE CHECK (length(hash) = 32),
    scopes       TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(scopes) AND json_type(scopes) = 'array'),
    cidrs        TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(cidrs) AND json_type(cidrs) = 'array'),
    created_at   TEXT NOT NULL,
    expires_at   TEXT,
    revoked_at   TEXT,
    last_used_at TEXT
);

-- +goose Down
DROP TABLE tokens;
DROP TRIGGER events_append_only_delete;
DROP TRIGGER events_append_only_update;
DROP TABLE events;
DROP TABLE actions;
DROP TABLE steps;
DROP TABLE jobs;
