-- Idempotency keys of POST /simulate and POST /shutdown, and the deadline a
-- request may give a job.

-- +goose Up

-- One row per (token, key): a client retrying with the same Idempotency-Key
-- gets the job of its first request. Keys are scoped per token so that two
-- integrations cannot collide (or probe each other's keys). Rows older than
-- 24 h are deleted before a key is recorded, so a key is unique within 24 h.
CREATE TABLE idempotency_keys (
    token_name  TEXT    NOT NULL,
    key         TEXT    NOT NULL CHECK (key <> ''),
    fingerprint TEXT    NOT NULL, -- kind and SHA-256 of the body: a reused key must mean the same request
    job_id      INTEGER NOT NULL REFERENCES jobs (id),
    created_at  TEXT    NOT NULL,
    PRIMARY KEY (token_name, key)
);

CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- deadline: when the caller needs the job done (RFC 3339 in the request).
-- on_track: NULL while unknown or without a deadline; 1 when the elapsed
-- time plus the forecast of what remains ends before the deadline; at the
-- end of the job, whether it finished in time.
ALTER TABLE jobs ADD COLUMN deadline TEXT;
ALTER TABLE jobs ADD COLUMN on_track INTEGER CHECK (on_track IN (0, 1));

-- +goose Down
ALTER TABLE jobs DROP COLUMN on_track;
ALTER TABLE jobs DROP COLUMN deadline;
DROP TABLE idempotency_keys;
