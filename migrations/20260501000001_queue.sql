-- Priorities and the durable queue (issue 13, Scheduling).
--
-- priority: 1 (low) .. 4 (critical); 2 (medium) for tasks created before.
-- queued_seq: set while the task waits in the queue: the position of its
-- `pod_queued` event, which is globally increasing, so (priority DESC,
-- queued_seq) is a total first-queued-first order within a priority that a
-- restart keeps. A queued task has no pod: pod_status stays 'stopped' (so
-- every pod query, host reconciliation and ListActivePods ignore it, and
-- the pod_status CHECK of the table needs no rebuild) and the API shows
-- POD_STATUS_QUEUED for a row with queued_seq set. Cleared by the claim
-- that starts the task, by StopPod, by queue expiry and by every terminal
-- transition.
-- queued_at: when it entered the queue (unix µs, central's clock): the
-- queue timeout counts from it, so it survives a restart.
ALTER TABLE tasks ADD COLUMN priority INTEGER NOT NULL DEFAULT 2 CHECK (priority BETWEEN 1 AND 4);
ALTER TABLE tasks ADD COLUMN queue_timeout_seconds INTEGER CHECK (queue_timeout_seconds > 0);
ALTER TABLE tasks ADD COLUMN queued_seq INTEGER;
ALTER TABLE tasks ADD COLUMN queued_at INTEGER;

ALTER TABLE tasks_archive ADD COLUMN priority INTEGER NOT NULL DEFAULT 2;
ALTER TABLE tasks_archive ADD COLUMN queue_timeout_seconds INTEGER;
ALTER TABLE tasks_archive ADD COLUMN queued_seq INTEGER;
ALTER TABLE tasks_archive ADD COLUMN queued_at INTEGER;

-- The dispatcher's order per template: its head is the first index entry.
CREATE INDEX tasks_queue ON tasks (template, priority DESC, queued_seq)
    WHERE queued_seq IS NOT NULL;
-- Queue depth per priority and the oldest queued task (metrics, GetStats).
CREATE INDEX tasks_queued_by_priority ON tasks (priority, queued_at)
    WHERE queued_seq IS NOT NULL;
-- The earliest queue timeout, like tasks_timeout_due.
CREATE INDEX tasks_queue_expiry ON tasks (queued_at + queue_timeout_seconds * 1000000)
    WHERE queued_seq IS NOT NULL AND queue_timeout_seconds IS NOT NULL;
-- ListTasks filtered by priority.
CREATE INDEX tasks_by_priority_updated ON tasks (priority, updated_at, task_id);
