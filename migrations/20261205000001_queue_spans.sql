-- Queue positions in fewer steps (issue 13). With 100,000 tasks queued a
-- position read about a hundred `queue_buckets` rows of 1,024 sequence
-- numbers plus up to a thousand index entries inside its own bucket (a
-- queued task's GetTask 26-31 us slower than in a shallow queue; the
-- goal is 10 %). Now two levels: spans of 8,192 sequence numbers
-- (`queue_spans`) and buckets of 256 inside them, so a position reads the
-- spans before its own, the buckets before its own inside its span (at
-- most 31) and the index entries before it inside its bucket (at most
-- 256 sequence numbers): about a quarter of the steps. Same figures
-- (store test `positions_from_the_bucket_counts_equal_a_plain_count`).

DROP TRIGGER queue_buckets_insert;
DROP TRIGGER queue_buckets_leave;
DROP TRIGGER queue_buckets_enter;
DROP TRIGGER queue_buckets_delete;

DELETE FROM queue_buckets;
INSERT INTO queue_buckets (template, priority, bucket, n)
    SELECT template, priority, queued_seq >> 8, COUNT(*) FROM tasks
    WHERE queued_seq IS NOT NULL GROUP BY template, priority, queued_seq >> 8;

CREATE TRIGGER queue_buckets_insert AFTER INSERT ON tasks
WHEN NEW.queued_seq IS NOT NULL BEGIN
    INSERT INTO queue_buckets (template, priority, bucket, n)
        VALUES (NEW.template, NEW.priority, NEW.queued_seq >> 8, 1)
        ON CONFLICT (template, priority, bucket) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER queue_buckets_leave AFTER UPDATE OF queued_seq, priority, template ON tasks
WHEN OLD.queued_seq IS NOT NULL BEGIN
    UPDATE queue_buckets SET n = n - 1
        WHERE template = OLD.template AND priority = OLD.priority
          AND bucket = OLD.queued_seq >> 8;
    DELETE FROM queue_buckets
        WHERE template = OLD.template AND priority = OLD.priority
          AND bucket = OLD.queued_seq >> 8 AND n <= 0;
END;

CREATE TRIGGER queue_buckets_enter AFTER UPDATE OF queued_seq, priority, template ON tasks
WHEN NEW.queued_seq IS NOT NULL BEGIN
    INSERT INTO queue_buckets (template, priority, bucket, n)
        VALUES (NEW.template, NEW.priority, NEW.queued_seq >> 8, 1)
        ON CONFLICT (template, priority, bucket) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER queue_buckets_delete AFTER DELETE ON tasks
WHEN OLD.queued_seq IS NOT NULL BEGIN
    UPDATE queue_buckets SET n = n - 1
        WHERE template = OLD.template AND priority = OLD.priority
          AND bucket = OLD.queued_seq >> 8;
    DELETE FROM queue_buckets
        WHERE template = OLD.template AND priority = OLD.priority
          AND bucket = OLD.queued_seq >> 8 AND n <= 0;
END;

CREATE TABLE queue_spans (
    template TEXT NOT NULL,
    priority INTEGER NOT NULL,
    span INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (template, priority, span)
) WITHOUT ROWID;

INSERT INTO queue_spans (template, priority, span, n)
    SELECT template, priority, queued_seq >> 13, COUNT(*) FROM tasks
    WHERE queued_seq IS NOT NULL GROUP BY template, priority, queued_seq >> 13;

CREATE TRIGGER queue_spans_insert AFTER INSERT ON tasks
WHEN NEW.queued_seq IS NOT NULL BEGIN
    INSERT INTO queue_spans (template, priority, span, n)
        VALUES (NEW.template, NEW.priority, NEW.queued_seq >> 13, 1)
        ON CONFLICT (template, priority, span) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER queue_spans_leave AFTER UPDATE OF queued_seq, priority, template ON tasks
WHEN OLD.queued_seq IS NOT NULL BEGIN
    UPDATE queue_spans SET n = n - 1
        WHERE template = OLD.template AND priority = OLD.priority
          AND span = OLD.queued_seq >> 13;
    DELETE FROM queue_spans
        WHERE template = OLD.template AND priority = OLD.priority
          AND span = OLD.queued_seq >> 13 AND n <= 0;
END;

CREATE TRIGGER queue_spans_enter AFTER UPDATE OF queued_seq, priority, template ON tasks
WHEN NEW.queued_seq IS NOT NULL BEGIN
    INSERT INTO queue_spans (template, priority, span, n)
        VALUES (NEW.template, NEW.priority, NEW.queued_seq >> 13, 1)
        ON CONFLICT (template, priority, span) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER queue_spans_delete AFTER DELETE ON tasks
WHEN OLD.queued_seq IS NOT NULL BEGIN
    UPDATE queue_spans SET n = n - 1
        WHERE template = OLD.template AND priority = OLD.priority
          AND span = OLD.queued_seq >> 13;
    DELETE FROM queue_spans
        WHERE template = OLD.template AND priority = OLD.priority
          AND span = OLD.queued_seq >> 13 AND n <= 0;
END;
