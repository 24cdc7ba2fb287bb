-- Pod supervision (issue 4).
--
-- pod_correlation_id: the correlation id of the request that started the
-- current pod, carried by the automatic events it causes (phase changes,
-- crashes, restarts, loss).
ALTER TABLE tasks ADD COLUMN pod_correlation_id TEXT NOT NULL DEFAULT '';

-- Pods of one host, for reconciliation and host loss.
CREATE INDEX tasks_by_pod_host ON tasks (pod_host) WHERE pod_status != 'stopped';
-- Scheduled automatic restarts, reloaded at start-up.
CREATE INDEX tasks_restart_due ON tasks (next_restart_at) WHERE next_restart_at IS NOT NULL;

-- Crash history per task: the restart policy counts crashes within its
-- window. Rows older than 24 h are pruned hourly.
CREATE TABLE crash_history (
    task_id     TEXT    NOT NULL REFERENCES streams (stream_id) ON DELETE CASCADE,
    crashed_at  INTEGER NOT NULL, -- unix micros
    PRIMARY KEY (task_id, crashed_at)
) WITHOUT ROWID;
CREATE INDEX crash_history_by_time ON crash_history (crashed_at);
