-- CreateTask idempotency: the first task created for an (actor_id,
-- request_id) pair. Entries older than 24 h are ignored and pruned.

CREATE TABLE idempotency_keys (
    actor_id    TEXT    NOT NULL,
    request_id  TEXT    NOT NULL,
    task_id     TEXT    NOT NULL REFERENCES streams (stream_id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL, -- unix micros
    PRIMARY KEY (actor_id, request_id)
) WITHOUT ROWID;

CREATE INDEX idempotency_keys_by_created ON idempotency_keys (created_at);
