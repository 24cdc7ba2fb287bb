-- Per-priority queue totals (issue 13): a queued task's position adds up
-- the entries of every higher priority of its template. Summing their
-- `queue_buckets` rows read about a hundred rows per priority with
-- 100,000 queued (GetTask 13 % slower than with nothing queued); one row
-- per (template, priority), kept by the triggers below in the transaction
-- that changes the task, makes that part at most three rows.
CREATE TABLE queue_totals (
    template TEXT NOT NULL,
    priority INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (template, priority)
) WITHOUT ROWID;

INSERT INTO queue_totals (template, priority, n)
    SELECT template, priority, COUNT(*) FROM tasks
    WHERE queued_seq IS NOT NULL GROUP BY template, priority;

CREATE TRIGGER queue_totals_insert AFTER INSERT ON tasks
WHEN NEW.queued_seq IS NOT NULL BEGIN
    INSERT INTO queue_totals (template, priority, n)
        VALUES (NEW.template, NEW.priority, 1)
        ON CONFLICT (template, priority) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER queue_totals_leave AFTER UPDATE OF queued_seq, priority, template ON tasks
WHEN OLD.queued_seq IS NOT NULL BEGIN
    UPDATE queue_totals SET n = n - 1
        WHERE template = OLD.template AND priority = OLD.priority;
    DELETE FROM queue_totals
        WHERE template = OLD.template AND priority = OLD.priority AND n <= 0;
END;

CREATE TRIGGER queue_totals_enter AFTER UPDATE OF queued_seq, priority, template ON tasks
WHEN NEW.queued_seq IS NOT NULL BEGIN
    INSERT INTO queue_totals (template, priority, n)
        VALUES (NEW.template, NEW.priority, 1)
        ON CONFLICT (template, priority) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER queue_totals_delete AFTER DELETE ON tasks
WHEN OLD.queued_seq IS NOT NULL BEGIN
    UPDATE queue_totals SET n = n - 1
        WHERE template = OLD.template AND priority = OLD.priority;
    DELETE FROM queue_totals
        WHERE template = OLD.template AND priority = OLD.priority AND n <= 0;
END;
