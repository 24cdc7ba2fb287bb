-- Robustness (issue 12).
--
-- The store circuit breaker's probe: while writes fail, central-manager
-- rewrites this one row with backoff; the first commit that succeeds closes
-- the breaker. A real write (not a read or an empty transaction) is what
-- notices a full disk or a read-only file.
CREATE TABLE store_probe (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    probed_at   INTEGER NOT NULL -- unix micros
);

-- The restart policy reads only the crashes inside the task's window
-- (`WHERE task_id = ? AND crashed_at > ?`, at most max_restarts + 1 rows).
-- crash_history is a WITHOUT ROWID table whose primary key is
-- (task_id, crashed_at): that key is the index of this range scan, so no
-- second index is added (a store test checks the query plan uses it).
