-- Schedules, retention (archive and deletion), statistics and the metadata
-- filter (issue 14). Plain SQL that PostgreSQL also has (JSON aside, the
-- triggers become plpgsql functions with the same bodies).

-- ---------- schedules ----------

-- One row per schedule. Times are unix micros. task_json holds the
-- CreateTask fields each fire uses (title, description, metadata, template,
-- restart_policy). next_fire_at is NULL while paused or when the timetable
-- has no more fire times; the firing loop sleeps until the smallest one.
CREATE TABLE schedules (
    schedule_id             TEXT    PRIMARY KEY NOT NULL,
    name                    TEXT    NOT NULL UNIQUE,
    cron                    TEXT    NOT NULL DEFAULT '',
    interval_seconds        INTEGER NOT NULL DEFAULT 0 CHECK (interval_seconds >= 0),
    timezone                TEXT    NOT NULL DEFAULT 'UTC',
    task_json               TEXT    NOT NULL CHECK (json_valid(task_json)),
    overlap                 TEXT    NOT NULL CHECK (overlap IN ('skip', 'buffer_one', 'allow_all', 'cancel_previous')),
    catchup_window_seconds  INTEGER NOT NULL CHECK (catchup_window_seconds >= 0),
    paused                  INTEGER NOT NULL CHECK (paused IN (0, 1)),
    next_fire_at            INTEGER,
    last_fire_at            INTEGER,
    fired_count             INTEGER NOT NULL DEFAULT 0 CHECK (fired_count >= 0),
    skipped_count           INTEGER NOT NULL DEFAULT 0 CHECK (skipped_count >= 0),
    -- A BUFFER_ONE fire waiting for last_task_id to end.
    buffered_fire_at        INTEGER,
    -- The last task this schedule made ("previous" for the overlap policy).
    last_task_id            TEXT,
    created_by              TEXT    NOT NULL,
    created_at              INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL
);
-- The firing loop's timer: MIN(next_fire_at) and the due schedules.
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE next_fire_at IS NOT NULL;
-- Schedules with a buffered fire, by the task whose end starts it.
CREATE INDEX schedules_buffered ON schedules (last_task_id) WHERE buffered_fire_at IS NOT NULL;

-- Every fire that made a task. The primary key makes "at most one task per
-- fire time" a constraint of the database: the fire's bookkeeping, this row
-- and the task commit in one transaction, and a second insert for the same
-- time fails. Rows older than a day are pruned (next_fire_at only moves
-- forward, so an old fire time never comes round again).
CREATE TABLE schedule_fires (
    schedule_id     TEXT    NOT NULL,
    scheduled_for   INTEGER NOT NULL,
    task_id         TEXT    NOT NULL,
    fired_at        INTEGER NOT NULL,
    PRIMARY KEY (schedule_id, scheduled_for)
) WITHOUT ROWID;
CREATE INDEX schedule_fires_by_time ON schedule_fires (fired_at);

-- The audit trail of schedules: changes by callers and every fire decision,
-- with actor and correlation id (task events stay in `events`). Kept when
-- the schedule is deleted.
CREATE TABLE schedule_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    schedule_id     TEXT    NOT NULL,
    type            TEXT    NOT NULL,
    data_json       TEXT    NOT NULL CHECK (json_valid(data_json) AND json_type(data_json) = 'object'),
    actor_id        TEXT    NOT NULL,
    correlation_id  TEXT    NOT NULL,
    occurred_at     INTEGER NOT NULL
);
CREATE INDEX schedule_events_by_schedule ON schedule_events (schedule_id, id);

-- ---------- metadata filter ----------

-- Task metadata one entry per row, written with the task, so
-- `metadata_equals` ("the tasks of schedule X") is an index lookup instead
-- of a scan of every task's JSON. Kept for archived tasks (their stream
-- stays), removed with a deleted task's stream.
CREATE TABLE task_metadata (
    task_id TEXT NOT NULL REFERENCES streams (stream_id) ON DELETE CASCADE,
    key     TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (task_id, key)
);
CREATE INDEX task_metadata_by_value ON task_metadata (key, value, task_id);
INSERT INTO task_metadata (task_id, key, value)
    SELECT t.task_id, j.key, j.value FROM tasks t, json_each(t.metadata_json) j;

-- ---------- statistics ----------

-- Kept up to date by the triggers below in the transaction of every change,
-- so GetStats reads columns and never replays events:
-- phase_since: when the current phase began (NULL: at creation);
-- finished_at: when the task became completed, cancelled or failed;
-- *_us: time spent in each working phase so far (phases left), micros.
ALTER TABLE tasks ADD COLUMN phase_since INTEGER;
ALTER TABLE tasks ADD COLUMN finished_at INTEGER;
ALTER TABLE tasks ADD COLUMN spec_clarification_us INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN planning_us INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN development_us INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN review_us INTEGER NOT NULL DEFAULT 0;
UPDATE tasks SET finished_at = updated_at WHERE status IN ('completed', 'cancelled', 'failed');

-- Every command that changes the phase also sets updated_at to its commit
-- time, which is therefore when the phase changed.
CREATE TRIGGER tasks_phase_time AFTER UPDATE OF phase ON tasks
WHEN NEW.phase IS NOT OLD.phase
BEGIN
    UPDATE tasks SET
        spec_clarification_us = spec_clarification_us + (CASE WHEN OLD.phase = 'spec_clarification'
            THEN MAX(NEW.updated_at - COALESCE(OLD.phase_since, OLD.created_at), 0) ELSE 0 END),
        planning_us = planning_us + (CASE WHEN OLD.phase = 'planning'
            THEN MAX(NEW.updated_at - COALESCE(OLD.phase_since, OLD.created_at), 0) ELSE 0 END),
        development_us = development_us + (CASE WHEN OLD.phase = 'development'
            THEN MAX(NEW.updated_at - COALESCE(OLD.phase_since, OLD.created_at), 0) ELSE 0 END),
        review_us = review_us + (CASE WHEN OLD.phase = 'review'
            THEN MAX(NEW.updated_at - COALESCE(OLD.phase_since, OLD.created_at), 0) ELSE 0 END),
        phase_since = NEW.updated_at
    WHERE task_id = NEW.task_id;
END;

CREATE TRIGGER tasks_finished_at AFTER UPDATE OF status ON tasks
WHEN NEW.status IN ('completed', 'cancelled', 'failed')
 AND OLD.status NOT IN ('completed', 'cancelled', 'failed')
BEGIN
    UPDATE tasks SET finished_at = NEW.updated_at WHERE task_id = NEW.task_id;
END;

-- GetStats reads the tasks created in a time range; this index holds every
-- column it needs, so the range is read from the index alone.
CREATE INDEX tasks_stats ON tasks (
    created_at, template, created_by, status, phase, restart_count, finished_at,
    spec_clarification_us, planning_us, development_us, review_us
);

-- ---------- retention ----------

-- Terminal tasks by the time they finished: what ArchiveTasks and
-- --archive-after-days select.
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;

-- Archived tasks: the tasks columns plus archived_at. A column added to
-- `tasks` later must be added here too (a store test compares the two).
CREATE TABLE tasks_archive (
    task_id                 TEXT    PRIMARY KEY NOT NULL,
    title                   TEXT    NOT NULL,
    description             TEXT    NOT NULL,
    status                  TEXT    NOT NULL,
    phase                   TEXT    NOT NULL,
    created_at              INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL,
    created_by              TEXT    NOT NULL,
    metadata_json           TEXT    NOT NULL,
    template                TEXT    NOT NULL,
    auto_restart            INTEGER,
    max_restarts            INTEGER,
    restart_window_seconds  INTEGER,
    initial_backoff_ms      INTEGER,
    max_backoff_ms          INTEGER,
    pod_status              TEXT    NOT NULL,
    pod_id                  TEXT,
    pod_host                TEXT,
    pod_pid                 INTEGER,
    pod_generation          INTEGER NOT NULL,
    pod_started_at          INTEGER,
    live_version            INTEGER NOT NULL,
    restart_count           INTEGER NOT NULL,
    pod_message             TEXT    NOT NULL,
    next_restart_at         INTEGER,
    pod_correlation_id      TEXT    NOT NULL,
    phase_since             INTEGER,
    finished_at             INTEGER,
    spec_clarification_us   INTEGER NOT NULL,
    planning_us             INTEGER NOT NULL,
    development_us          INTEGER NOT NULL,
    review_us               INTEGER NOT NULL,
    archived_at             INTEGER NOT NULL
);
CREATE INDEX tasks_archive_by_updated ON tasks_archive (updated_at, task_id);
CREATE INDEX tasks_archive_by_created ON tasks_archive (created_at, task_id);

-- Archived events keep their positions (AUTOINCREMENT never hands a
-- position out again), so WatchEvents reads `events` and this table merged
-- by position and stays gap-free and resumable across an archive run.
CREATE TABLE events_archive (
    position        INTEGER PRIMARY KEY,
    stream_id       TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    type            TEXT    NOT NULL,
    data_json       TEXT    NOT NULL,
    actor_id        TEXT    NOT NULL,
    correlation_id  TEXT    NOT NULL,
    occurred_at     INTEGER NOT NULL,
    UNIQUE (stream_id, version)
);
CREATE TRIGGER events_archive_is_append_only
BEFORE UPDATE ON events_archive
BEGIN
    SELECT RAISE(ABORT, 'archived events are append-only');
END;

-- Every archive run: who asked (or `system` for --archive-after-days),
-- the cut-off, and how many tasks moved.
CREATE TABLE archive_runs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    finished_before INTEGER NOT NULL,
    actor_id        TEXT    NOT NULL,
    -- The authenticated caller when an admin acted for someone else.
    authenticated_as TEXT,
    correlation_id  TEXT    NOT NULL,
    started_at      INTEGER NOT NULL,
    tasks           INTEGER NOT NULL DEFAULT 0
);

-- The deletions log: what DeleteTask removed, who, why and when. The task's
-- row and events are gone; this row stays.
CREATE TABLE task_deletions (
    task_id         TEXT    PRIMARY KEY NOT NULL,
    title           TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    created_by      TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    was_archived    INTEGER NOT NULL CHECK (was_archived IN (0, 1)),
    events_deleted  INTEGER NOT NULL,
    reason          TEXT    NOT NULL,
    deleted_by      TEXT    NOT NULL,
    -- The authenticated caller when an admin acted for someone else.
    authenticated_as TEXT,
    correlation_id  TEXT    NOT NULL,
    deleted_at      INTEGER NOT NULL
);
CREATE INDEX task_deletions_by_time ON task_deletions (deleted_at);
