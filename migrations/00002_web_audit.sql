-- Browser sessions of the history pages, and the per-job hash chain of the
-- event log (docs/audit.md).

-- +goose Up

-- A browser session, created by logging in with a token that has the read
-- scope. Only the SHA-256 of the session id is stored: the cookie value is
-- never on disk, so a copy of the database cannot be used to log in. A
-- session dies with its token (revoked, expired or deleted) and after
-- idle_expires_at / expires_at, whichever comes first.
CREATE TABLE sessions (
    id              INTEGER PRIMARY KEY,
    hash            BLOB    NOT NULL UNIQUE CHECK (length(hash) = 32),
    token_id        INTEGER NOT NULL REFERENCES tokens (id) ON DELETE CASCADE,
    remote_addr     TEXT    NOT NULL DEFAULT '',
    created_at      TEXT    NOT NULL,
    last_seen_at    TEXT    NOT NULL,
    expires_at      TEXT    NOT NULL, -- absolute limit, whatever the activity
    CHECK (expires_at > created_at)
);

CREATE INDEX sessions_expires ON sessions (expires_at);

-- The hash chain: every event carries the hash of the job's previous event
-- (X'' for the first one) and its own SHA-256 over (job_id, id, at, level,
-- message, detail, prev_hash), computed by the store. Changing any stored
-- field, inserting or removing an event in the middle of a job's log breaks
-- the chain, which `shutdownd audit verify` reports.
ALTER TABLE events ADD COLUMN prev_hash BLOB;
ALTER TABLE events ADD COLUMN hash BLOB;

-- New events must carry a well-formed hash, and prev_hash must be the hash of
-- the job's latest event: a raw INSERT cannot fork or skip the chain. (The
-- SHA-256 itself is checked by `audit verify`: SQLite has no SHA-256.)
-- +goose StatementBegin
CREATE TRIGGER events_hash_chain BEFORE INSERT ON events
BEGIN
    SELECT RAISE(ABORT, 'event hash missing or malformed')
    WHERE NEW.hash IS NULL OR typeof(NEW.hash) <> 'blob' OR length(NEW.hash) <> 32;
    SELECT RAISE(ABORT, 'event prev_hash does not continue the job''s chain')
    WHERE NEW.prev_hash IS NOT COALESCE(
        (SELECT hash FROM events WHERE job_id = NEW.job_id ORDER BY id DESC LIMIT 1), X'');
    SELECT RAISE(ABORT, 'event id must grow within a job')
    WHERE NEW.id <= (SELECT max(id) FROM events WHERE job_id = NEW.job_id);
END;
-- +goose StatementEnd

-- +goose Down
DROP TRIGGER events_hash_chain;
ALTER TABLE events DROP COLUMN hash;
ALTER TABLE events DROP COLUMN prev_hash;
DROP INDEX sessions_expires;
DROP TABLE sessions;
