-- Schedules on PostgreSQL: the SQLite migration's schedule tables
-- (../20260301000001_schedules_retention_stats.sql) with PostgreSQL types.
-- Times are unix micros.

-- One row per schedule. task_json holds the CreateTask fields each fire
-- uses. next_fire_at is NULL while paused or when the timetable has no more
-- fire times; the firing loop sleeps until the smallest one.
CREATE TABLE schedules (
    schedule_id             TEXT    PRIMARY KEY NOT NULL,
    name                    TEXT    NOT NULL UNIQUE,
    cron                    TEXT    NOT NULL DEFAULT '',
    interval_seconds        BIGINT  NOT NULL DEFAULT 0 CHECK (interval_seconds >= 0),
    timezone                TEXT    NOT NULL DEFAULT 'UTC',
    task_json               TEXT    NOT NULL CHECK (jsonb_typeof(task_json::jsonb) = 'object'),
    overlap                 TEXT    NOT NULL CHECK (overlap IN ('skip', 'buffer_one', 'allow_all', 'cancel_previous')),
    catchup_window_seconds  BIGINT  NOT NULL CHECK (catchup_window_seconds >= 0),
    paused                  BOOLEAN NOT NULL,
    next_fire_at            BIGINT,
    last_fire_at            BIGINT,
    fired_count             BIGINT  NOT NULL DEFAULT 0 CHECK (fired_count >= 0),
    skipped_count           BIGINT  NOT NULL DEFAULT 0 CHECK (skipped_count >= 0),
    -- A BUFFER_ONE fire waiting for last_task_id to end.
    buffered_fire_at        BIGINT,
    -- The last task this schedule made ("previous" for the overlap policy).
    last_task_id            TEXT,
    created_by              TEXT    NOT NULL,
    created_at              BIGINT  NOT NULL,
    updated_at              BIGINT  NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE next_fire_at IS NOT NULL;
CREATE INDEX schedules_buffered ON schedules (last_task_id) WHERE buffered_fire_at IS NOT NULL;

-- Every fire that made a task. The primary key makes "at most one task per
-- fire time" a constraint of the database: the fire's bookkeeping, this row
-- and the task commit in one transaction, and a second insert for the same
-- time (of this replica or another) finds the row and makes nothing.
CREATE TABLE schedule_fires (
    schedule_id     TEXT    NOT NULL,
    scheduled_for   BIGINT  NOT NULL,
    task_id         TEXT    NOT NULL,
    fired_at        BIGINT  NOT NULL,
    PRIMARY KEY (schedule_id, scheduled_for)
);
CREATE INDEX schedule_fires_by_time ON schedule_fires (fired_at);

-- The audit trail of schedules, kept when the schedule is deleted. Ids
-- come from a sequence: written only by the writer, which holds the
-- event_log_head lock to its commit, so they also commit in order.
CREATE TABLE schedule_events (
    id              BIGSERIAL PRIMARY KEY,
    schedule_id     TEXT    NOT NULL,
    type            TEXT    NOT NULL,
    data_json       TEXT    NOT NULL CHECK (jsonb_typeof(data_json::jsonb) = 'object'),
    actor_id        TEXT    NOT NULL,
    correlation_id  TEXT    NOT NULL,
    occurred_at     BIGINT  NOT NULL
);
CREATE INDEX schedule_events_by_schedule ON schedule_events (schedule_id, id);
