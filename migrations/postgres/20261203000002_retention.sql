-- Retention on PostgreSQL: the archive runs and the deletions log of the
-- SQLite migration (../20260301000001_schedules_retention_stats.sql). The
-- archive tables and the tasks_finished index that serves the archiver's
-- oldest-first batches came with the event store (every `tasks` column has
-- its `tasks_archive` twin; a store test checks it). Times are unix micros.

-- Every archive run: who asked (or `system` for --archive-after-days),
-- the cut-off, and how many tasks moved.
CREATE TABLE archive_runs (
    id              BIGSERIAL PRIMARY KEY,
    finished_before BIGINT  NOT NULL,
    actor_id        TEXT    NOT NULL,
    -- The authenticated caller when an admin acted for someone else.
    authenticated_as TEXT,
    correlation_id  TEXT    NOT NULL,
    started_at      BIGINT  NOT NULL,
    tasks           BIGINT  NOT NULL DEFAULT 0
);

-- The deletions log: what DeleteTask removed, who, why and when. The task's
-- row and events are gone; this row stays.
CREATE TABLE task_deletions (
    task_id         TEXT    PRIMARY KEY NOT NULL,
    title           TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    created_by      TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    was_archived    BOOLEAN NOT NULL,
    events_deleted  BIGINT  NOT NULL,
    reason          TEXT    NOT NULL,
    deleted_by      TEXT    NOT NULL,
    authenticated_as TEXT,
    correlation_id  TEXT    NOT NULL,
    deleted_at      BIGINT  NOT NULL
);
CREATE INDEX task_deletions_by_time ON task_deletions (deleted_at);
