-- Priorities, the durable queue and task dependencies on PostgreSQL: the
-- SQLite migrations 20260501000001_queue, 20260501000002_queue_positions
-- and 20260601000001_dependencies with PostgreSQL types (their comments
-- say what each column means). Booleans are BOOLEAN here (SQLite's 0/1).

ALTER TABLE tasks ADD COLUMN priority BIGINT NOT NULL DEFAULT 2 CHECK (priority BETWEEN 1 AND 4);
ALTER TABLE tasks ADD COLUMN queue_timeout_seconds BIGINT CHECK (queue_timeout_seconds > 0);
ALTER TABLE tasks ADD COLUMN queued_seq BIGINT;
ALTER TABLE tasks ADD COLUMN queued_at BIGINT;
ALTER TABLE tasks ADD COLUMN depends_on_json TEXT NOT NULL DEFAULT '[]';
ALTER TABLE tasks ADD COLUMN waiting_dependencies BOOLEAN NOT NULL DEFAULT FALSE;

ALTER TABLE tasks_archive ADD COLUMN priority BIGINT NOT NULL DEFAULT 2;
ALTER TABLE tasks_archive ADD COLUMN queue_timeout_seconds BIGINT;
ALTER TABLE tasks_archive ADD COLUMN queued_seq BIGINT;
ALTER TABLE tasks_archive ADD COLUMN queued_at BIGINT;
ALTER TABLE tasks_archive ADD COLUMN depends_on_json TEXT NOT NULL DEFAULT '[]';
ALTER TABLE tasks_archive ADD COLUMN waiting_dependencies BOOLEAN NOT NULL DEFAULT FALSE;

-- The dispatcher's order per template: its head is the first index entry.
CREATE INDEX tasks_queue ON tasks (template, priority DESC, queued_seq)
    WHERE queued_seq IS NOT NULL;
-- Queue depth per priority and the oldest queued task (metrics, GetStats).
CREATE INDEX tasks_queued_by_priority ON tasks (priority, queued_at)
    WHERE queued_seq IS NOT NULL;
-- The earliest queue timeout, like tasks_timeout_due.
CREATE INDEX tasks_queue_expiry ON tasks ((queued_at + queue_timeout_seconds * 1000000))
    WHERE queued_seq IS NOT NULL AND queue_timeout_seconds IS NOT NULL;
-- ListTasks filtered by priority.
CREATE INDEX tasks_by_priority_updated ON tasks (priority, updated_at, task_id);

-- Queue positions without counting the queue: entries counted per bucket
-- of 1,024 consecutive queued_seq values per (template, priority), kept by
-- the trigger below in the transaction that changes the row (as SQLite's
-- four triggers). A position is the buckets of higher priorities, plus
-- the earlier buckets of its own priority, plus a range count inside its
-- own bucket. Concurrent writers of one bucket serialise on its row lock,
-- as they already do on event_log_head.
CREATE TABLE queue_buckets (
    template TEXT   NOT NULL,
    priority BIGINT NOT NULL,
    bucket   BIGINT NOT NULL,
    n        BIGINT NOT NULL,
    PRIMARY KEY (template, priority, bucket)
);

CREATE FUNCTION queue_buckets_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.queued_seq IS NOT NULL
       AND (TG_OP = 'DELETE'
            OR NEW.queued_seq IS DISTINCT FROM OLD.queued_seq
            OR NEW.priority IS DISTINCT FROM OLD.priority
            OR NEW.template IS DISTINCT FROM OLD.template) THEN
        UPDATE queue_buckets SET n = n - 1
            WHERE template = OLD.template AND priority = OLD.priority
              AND bucket = OLD.queued_seq >> 10;
        DELETE FROM queue_buckets
            WHERE template = OLD.template AND priority = OLD.priority
              AND bucket = OLD.queued_seq >> 10 AND n <= 0;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.queued_seq IS NOT NULL
       AND (TG_OP = 'INSERT'
            OR NEW.queued_seq IS DISTINCT FROM OLD.queued_seq
            OR NEW.priority IS DISTINCT FROM OLD.priority
            OR NEW.template IS DISTINCT FROM OLD.template) THEN
        INSERT INTO queue_buckets (template, priority, bucket, n)
            VALUES (NEW.template, NEW.priority, NEW.queued_seq >> 10, 1)
            ON CONFLICT (template, priority, bucket) DO UPDATE SET n = queue_buckets.n + 1;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER queue_buckets_keep
    AFTER INSERT OR UPDATE OF queued_seq, priority, template OR DELETE ON tasks
    FOR EACH ROW EXECUTE FUNCTION queue_buckets_keep();

-- Task dependencies: one row per (dependent, dependency), written with the
-- dependent's CreateTask; read both ways.
CREATE TABLE task_dependencies (
    task_id    TEXT NOT NULL,
    depends_on TEXT NOT NULL,
    PRIMARY KEY (task_id, depends_on)
);
CREATE INDEX task_dependencies_by_dependency ON task_dependencies (depends_on, task_id);
