-- Queue positions without counting the queue (issue 13: GetTask and a
-- queued CreateTask must cost the same with 100,000 tasks queued as with
-- none).
--
-- A queued task's 1-based position is the number of entries of its
-- template's queue that sort before it (higher priority, or the same
-- priority with a smaller queued_seq), plus one. Counting them over the
-- `tasks_queue` index costs one step per entry ahead. Instead the entries
-- are counted per bucket of 1,024 consecutive queued_seq values, per
-- (template, priority), kept by the triggers below in the transaction that
-- changes the row. A position is then: the buckets of higher priorities,
-- plus the earlier buckets of its own priority, plus a range count inside
-- its own bucket (at most 1,024 index entries). The figures stay exact.
CREATE TABLE queue_buckets (
    template TEXT NOT NULL,
    priority INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (template, priority, bucket)
) WITHOUT ROWID;

INSERT INTO queue_buckets (template, priority, bucket, n)
    SELECT template, priority, queued_seq >> 10, COUNT(*) FROM tasks
    WHERE queued_seq IS NOT NULL GROUP BY template, priority, queued_seq >> 10;

CREATE TRIGGER queue_buckets_insert AFTER INSERT ON tasks
WHEN NEW.queued_seq IS NOT NULL BEGIN
    INSERT INTO queue_buckets (template, priority, bucket, n)
        VALUES (NEW.template, NEW.priority, NEW.queued_seq >> 10, 1)
        ON CONFLICT (template, priority, bucket) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER queue_buckets_leave AFTER UPDATE OF queued_seq, priority, template ON tasks
WHEN OLD.queued_seq IS NOT NULL BEGIN
    UPDATE queue_buckets SET n = n - 1
        WHERE template = OLD.template AND priority = OLD.priority
          AND bucket = OLD.queued_seq >> 10;
    DELETE FROM queue_buckets
        WHERE template = OLD.template AND priority = OLD.priority
          AND bucket = OLD.queued_seq >> 10 AND n <= 0;
END;

CREATE TRIGGER queue_buckets_enter AFTER UPDATE OF queued_seq, priority, template ON tasks
WHEN NEW.queued_seq IS NOT NULL BEGIN
    INSERT INTO queue_buckets (template, priority, bucket, n)
        VALUES (NEW.template, NEW.priority, NEW.queued_seq >> 10, 1)
        ON CONFLICT (template, priority, bucket) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER queue_buckets_delete AFTER DELETE ON tasks
WHEN OLD.queued_seq IS NOT NULL BEGIN
    UPDATE queue_buckets SET n = n - 1
        WHERE template = OLD.template AND priority = OLD.priority
          AND bucket = OLD.queued_seq >> 10;
    DELETE FROM queue_buckets
        WHERE template = OLD.template AND priority = OLD.priority
          AND bucket = OLD.queued_seq >> 10 AND n <= 0;
END;
