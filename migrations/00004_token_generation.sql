-- A generation counter of the tokens table, for the token cache of the API
-- (store/cache.go, docs/design.md "Hot read paths").

-- +goose Up

-- One row. gen grows by one with every commit that inserts, deletes or
-- changes a token (anything but last_used_at, which the service itself
-- touches), whoever writes: the service, `shutdownd token revoke` in
-- another process, or an operator's SQL. The service reads it only when
-- SQLite's data_version says another connection committed something, and
-- drops its cached tokens when it moved.
CREATE TABLE token_generation (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    gen INTEGER NOT NULL
);
INSERT INTO token_generation (id, gen) VALUES (1, 0);

-- +goose StatementBegin
CREATE TRIGGER tokens_generation_insert AFTER INSERT ON tokens
BEGIN
    UPDATE token_generation SET gen = gen + 1 WHERE id = 1;
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER tokens_generation_update
AFTER UPDATE OF id, name, hash, scopes, cidrs, created_at, expires_at, revoked_at ON tokens
BEGIN
    UPDATE token_generation SET gen = gen + 1 WHERE id = 1;
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER tokens_generation_delete AFTER DELETE ON tokens
BEGIN
    UPDATE token_generation SET gen = gen + 1 WHERE id = 1;
END;
-- +goose StatementEnd

-- +goose Down
DROP TRIGGER tokens_generation_delete;
DROP TRIGGER tokens_generation_update;
DROP TRIGGER tokens_generation_insert;
DROP TABLE token_generation;
