-- Power events: what the power source watcher (SPEC section 7) saw and did,
-- kept apart from the jobs' event logs because most of them (a blip, a lost
-- NUT connection on mains) belong to no job. The audit and the history page
-- read them by time to explain why a shutdown started, or did not.

-- +goose Up

CREATE TABLE power_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    at              TEXT    NOT NULL,
    -- source names the UPS as jobs name it: nut/<ups>.
    source          TEXT    NOT NULL CHECK (source <> ''),
    -- on_battery, on_mains: the mains went away or came back;
    -- connection_lost, connection_back: the NUT server stopped or resumed
    -- answering; shutdown_started, startup_started: the watcher started
    -- (or found active) a job, named by job_id.
    kind            TEXT    NOT NULL CHECK (kind IN ('on_battery', 'on_mains', 'connection_lost',
                        'connection_back', 'shutdown_started', 'startup_started')),
    level           TEXT    NOT NULL CHECK (level IN ('info', 'warn', 'critical')),
    -- The reading that went with it: ups.status as read (empty when the
    -- server was not answering), battery.charge in percent and
    -- battery.runtime in seconds (NULL when not reported).
    status          TEXT    NOT NULL DEFAULT '',
    charge          REAL,
    runtime_seconds REAL,
    job_id          INTEGER REFERENCES jobs (id),
    detail          TEXT    NOT NULL DEFAULT '',
    CHECK ((kind IN ('shutdown_started', 'startup_started')) = (job_id IS NOT NULL))
);

CREATE INDEX power_events_at ON power_events (at);

-- Append-only, like the job events: an audit trail that can be edited is
-- none.
-- +goose StatementBegin
CREATE TRIGGER power_events_append_only_update BEFORE UPDATE ON power_events
BEGIN
    SELECT RAISE(ABORT, 'power events are append-only');
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER power_events_append_only_delete BEFORE DELETE ON power_events
BEGIN
    SELECT RAISE(ABORT, 'power events are append-only');
END;
-- +goose StatementEnd

-- +goose Down
DROP TRIGGER power_events_append_only_delete;
DROP TRIGGER power_events_append_only_update;
DROP INDEX power_events_at;
DROP TABLE power_events;
