-- The append-only event store: one stream per task (stream_id = task_id),
-- events with a global position and a per-stream version 1, 2, 3, ...
-- Positions come from AUTOINCREMENT, so they are never reused even after a
-- rollback, and because central-manager has a single writer they are
-- committed in increasing order (what WatchEvents relies on).

CREATE TABLE streams (
    stream_id   TEXT    PRIMARY KEY NOT NULL,
    -- Version of the stream's newest event (0 before the first).
    version     INTEGER NOT NULL DEFAULT 0 CHECK (version >= 0),
    created_at  INTEGER NOT NULL -- unix micros
);

CREATE TABLE events (
    position        INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id       TEXT    NOT NULL REFERENCES streams (stream_id) ON DELETE CASCADE,
    version         INTEGER NOT NULL CHECK (version >= 1),
    type            TEXT    NOT NULL,
    data_json       TEXT    NOT NULL CHECK (json_valid(data_json) AND json_type(data_json) = 'object'),
    actor_id        TEXT    NOT NULL,
    correlation_id  TEXT    NOT NULL,
    occurred_at     INTEGER NOT NULL, -- unix micros
    UNIQUE (stream_id, version)
);

-- Events are an audit trail: never rewritten.
CREATE TRIGGER events_are_append_only
BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;
