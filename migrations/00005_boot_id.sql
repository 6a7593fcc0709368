-- Which boot of the management machine a job belongs to, and when a running
-- service last touched it: after a restart, an interrupted shutdown resumes
-- only on the same boot and while its last record is younger than
-- resume_window (runner/resume.go), so a site restored by hand is never
-- powered off again by a job from the outage before.

-- +goose Up

-- boot_id: /proc/sys/kernel/random/boot_id when the job was created, started
-- or last resumed; NULL when it is not known (a job from before this
-- migration, or a machine whose boot id could not be read).
ALTER TABLE jobs ADD COLUMN boot_id TEXT CHECK (boot_id <> '');
-- touched_at: the last write to the job's row by the service working on it
-- (progress text, resume, and a heartbeat while it runs), so the job's last
-- record says when the service was last alive for it, even in a step that
-- waits minutes without a state change.
ALTER TABLE jobs ADD COLUMN touched_at TEXT;

-- +goose Down
ALTER TABLE jobs DROP COLUMN touched_at;
ALTER TABLE jobs DROP COLUMN boot_id;
