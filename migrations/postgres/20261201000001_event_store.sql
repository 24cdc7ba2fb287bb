-- The PostgreSQL event store: the same tables as the SQLite migrations in
-- the directory above (one file here for their state as of 2026-04), with
-- PostgreSQL types. Times are unix micros (BIGINT). The schedule, retention
-- audit and stats tables come with the commands that use them.

CREATE TABLE streams (
    stream_id   TEXT    PRIMARY KEY NOT NULL,
    -- Version of the stream's newest event (0 before the first).
    version     BIGINT  NOT NULL DEFAULT 0 CHECK (version >= 0),
    created_at  BIGINT  NOT NULL
);

-- The last event position handed out. Appenders take the next positions
-- by updating this one row inside their transaction: its row lock
-- serialises appenders (of every replica) until commit, so positions are
-- committed in order and without gaps, and a rolled-back transaction gives
-- its numbers back. A sequence would not: two transactions can commit in
-- the other order than they drew, and a reader would see N+1 before N.
CREATE TABLE event_log_head (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    position    BIGINT  NOT NULL CHECK (position >= 0)
);
INSERT INTO event_log_head (id, position) VALUES (1, 0);

CREATE TABLE events (
    position        BIGINT  PRIMARY KEY,
    stream_id       TEXT    NOT NULL REFERENCES streams (stream_id) ON DELETE CASCADE,
    version         BIGINT  NOT NULL CHECK (version >= 1),
    type            TEXT    NOT NULL,
    data_json       TEXT    NOT NULL CHECK (jsonb_typeof(data_json::jsonb) = 'object'),
    actor_id        TEXT    NOT NULL,
    correlation_id  TEXT    NOT NULL,
    occurred_at     BIGINT  NOT NULL,
    UNIQUE (stream_id, version)
);

CREATE FUNCTION refuse_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER events_are_append_only BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION refuse_update();

CREATE TABLE tasks (
    task_id         TEXT    PRIMARY KEY NOT NULL REFERENCES streams (stream_id) ON DELETE CASCADE,
    title           TEXT    NOT NULL,
    description     TEXT    NOT NULL DEFAULT '',
    status          TEXT    NOT NULL CHECK (status IN ('inactive', 'active', 'completed', 'cancelled', 'failed')),
    phase           TEXT    NOT NULL CHECK (phase IN ('spec_clarification', 'planning', 'development', 'review', 'completed', 'cancelled')),
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    created_by      TEXT    NOT NULL,
    metadata_json   TEXT    NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata_json::jsonb) = 'object'),
    template        TEXT    NOT NULL,

    -- Restart policy as the caller gave it: NULL = "use central-manager's
    -- configured default" (resolved when used; differs from an explicit 0).
    auto_restart            BOOLEAN,
    max_restarts            BIGINT CHECK (max_restarts >= 0),
    restart_window_seconds  BIGINT CHECK (restart_window_seconds >= 0),
    initial_backoff_ms      BIGINT CHECK (initial_backoff_ms >= 0),
    max_backoff_ms          BIGINT CHECK (max_backoff_ms >= 0),

    -- Pod supervision state.
    pod_status      TEXT    NOT NULL DEFAULT 'stopped' CHECK (pod_status IN ('stopped', 'starting', 'running', 'unknown')),
    pod_id          TEXT,
    pod_host        TEXT,
    pod_pid         BIGINT,
    -- +1 on every start; fences stale pods.
    pod_generation  BIGINT  NOT NULL DEFAULT 0 CHECK (pod_generation >= 0),
    pod_started_at  BIGINT,
    live_version    BIGINT  NOT NULL DEFAULT 0 CHECK (live_version >= 0),
    restart_count   BIGINT  NOT NULL DEFAULT 0 CHECK (restart_count >= 0),
    pod_message     TEXT    NOT NULL DEFAULT '',
    next_restart_at BIGINT,
    pod_correlation_id TEXT NOT NULL DEFAULT '',

    -- Phase time accounting and the end time (kept by tasks_times below).
    phase_since             BIGINT,
    finished_at             BIGINT,
    spec_clarification_us   BIGINT NOT NULL DEFAULT 0,
    planning_us             BIGINT NOT NULL DEFAULT 0,
    development_us          BIGINT NOT NULL DEFAULT 0,
    review_us               BIGINT NOT NULL DEFAULT 0,

    -- Run timeout and deadline.
    timeout_seconds     BIGINT CHECK (timeout_seconds > 0),
    deadline            BIGINT,
    pod_running_since   BIGINT
);

CREATE INDEX tasks_by_updated            ON tasks (updated_at, task_id);
CREATE INDEX tasks_by_created            ON tasks (created_at, task_id);
CREATE INDEX tasks_by_status_updated     ON tasks (status, updated_at, task_id);
CREATE INDEX tasks_by_status_created     ON tasks (status, created_at, task_id);
CREATE INDEX tasks_by_phase_updated      ON tasks (phase, updated_at, task_id);
CREATE INDEX tasks_by_phase_created      ON tasks (phase, created_at, task_id);
CREATE INDEX tasks_by_created_by_updated ON tasks (created_by, updated_at, task_id);
CREATE INDEX tasks_by_created_by_created ON tasks (created_by, created_at, task_id);
CREATE INDEX tasks_with_pod ON tasks (task_id) WHERE pod_status <> 'stopped';
CREATE INDEX tasks_by_pod_host ON tasks (pod_host) WHERE pod_status <> 'stopped';
CREATE INDEX tasks_restart_due ON tasks (next_restart_at) WHERE next_restart_at IS NOT NULL;
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX tasks_timeout_due ON tasks ((pod_running_since + timeout_seconds * 1000000))
    WHERE timeout_seconds IS NOT NULL AND pod_status = 'running';
CREATE INDEX tasks_deadline_due ON tasks (deadline)
    WHERE deadline IS NOT NULL AND status IN ('inactive', 'active');

-- What the SQLite triggers tasks_phase_time and tasks_finished_at do, in
-- one BEFORE UPDATE trigger (it edits the new row instead of updating it
-- again): time spent in the phase being left, and when the task ended.
CREATE FUNCTION tasks_times() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    spent BIGINT;
BEGIN
    IF NEW.phase IS DISTINCT FROM OLD.phase THEN
        spent := GREATEST(NEW.updated_at - COALESCE(OLD.phase_since, OLD.created_at), 0);
        CASE OLD.phase
            WHEN 'spec_clarification' THEN NEW.spec_clarification_us := NEW.spec_clarification_us + spent;
            WHEN 'planning' THEN NEW.planning_us := NEW.planning_us + spent;
            WHEN 'development' THEN NEW.development_us := NEW.development_us + spent;
            WHEN 'review' THEN NEW.review_us := NEW.review_us + spent;
            ELSE NULL;
        END CASE;
        NEW.phase_since := NEW.updated_at;
    END IF;
    IF NEW.status IN ('completed', 'cancelled', 'failed')
       AND OLD.status NOT IN ('completed', 'cancelled', 'failed') THEN
        NEW.finished_at := NEW.updated_at;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER tasks_times BEFORE UPDATE ON tasks
    FOR EACH ROW EXECUTE FUNCTION tasks_times();

CREATE TABLE task_metadata (
    task_id         TEXT   NOT NULL REFERENCES streams (stream_id) ON DELETE CASCADE,
    key             TEXT   NOT NULL,
    value           TEXT   NOT NULL,
    task_created_at BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id, key)
);
CREATE INDEX task_metadata_by_value ON task_metadata (key, value, task_created_at, task_id);

CREATE TABLE idempotency_keys (
    actor_id    TEXT    NOT NULL,
    request_id  TEXT    NOT NULL,
    task_id     TEXT    NOT NULL REFERENCES streams (stream_id) ON DELETE CASCADE,
    created_at  BIGINT  NOT NULL,
    PRIMARY KEY (actor_id, request_id)
);
CREATE INDEX idempotency_keys_by_created ON idempotency_keys (created_at);

CREATE TABLE crash_history (
    task_id     TEXT    NOT NULL REFERENCES streams (stream_id) ON DELETE CASCADE,
    crashed_at  BIGINT  NOT NULL,
    PRIMARY KEY (task_id, crashed_at)
);
CREATE INDEX crash_history_by_time ON crash_history (crashed_at);

CREATE TABLE store_probe (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    probed_at   BIGINT  NOT NULL
);

-- Archived tasks and their events (positions kept), as in SQLite.
CREATE TABLE tasks_archive (
    task_id                 TEXT    PRIMARY KEY NOT NULL,
    title                   TEXT    NOT NULL,
    description             TEXT    NOT NULL,
    status                  TEXT    NOT NULL,
    phase                   TEXT    NOT NULL,
    created_at              BIGINT  NOT NULL,
    updated_at              BIGINT  NOT NULL,
    created_by              TEXT    NOT NULL,
    metadata_json           TEXT    NOT NULL,
    template                TEXT    NOT NULL,
    auto_restart            BOOLEAN,
    max_restarts            BIGINT,
    restart_window_seconds  BIGINT,
    initial_backoff_ms      BIGINT,
    max_backoff_ms          BIGINT,
    pod_status              TEXT    NOT NULL,
    pod_id                  TEXT,
    pod_host                TEXT,
    pod_pid                 BIGINT,
    pod_generation          BIGINT  NOT NULL,
    pod_started_at          BIGINT,
    live_version            BIGINT  NOT NULL,
    restart_count           BIGINT  NOT NULL,
    pod_message             TEXT    NOT NULL,
    next_restart_at         BIGINT,
    pod_correlation_id      TEXT    NOT NULL,
    phase_since             BIGINT,
    finished_at             BIGINT,
    spec_clarification_us   BIGINT  NOT NULL,
    planning_us             BIGINT  NOT NULL,
    development_us          BIGINT  NOT NULL,
    review_us               BIGINT  NOT NULL,
    timeout_seconds         BIGINT,
    deadline                BIGINT,
    pod_running_since       BIGINT,
    archived_at             BIGINT  NOT NULL
);
CREATE INDEX tasks_archive_by_updated ON tasks_archive (updated_at, task_id);
CREATE INDEX tasks_archive_by_created ON tasks_archive (created_at, task_id);

CREATE TABLE events_archive (
    position        BIGINT  PRIMARY KEY,
    stream_id       TEXT    NOT NULL,
    version         BIGINT  NOT NULL,
    type            TEXT    NOT NULL,
    data_json       TEXT    NOT NULL,
    actor_id        TEXT    NOT NULL,
    correlation_id  TEXT    NOT NULL,
    occurred_at     BIGINT  NOT NULL,
    UNIQUE (stream_id, version)
);
CREATE TRIGGER events_archive_is_append_only BEFORE UPDATE ON events_archive
    FOR EACH ROW EXECUTE FUNCTION refuse_update();
