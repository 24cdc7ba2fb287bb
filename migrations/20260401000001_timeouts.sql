-- Run timeouts and task deadlines (issue 13, Scheduling).
--
-- timeout_seconds: a pod of the task running longer than this is stopped
-- (`pod_timed_out`, counted as a crash). Its due time is computed from the
-- stored start, pod_started_at + timeout_seconds, so it survives a
-- central-manager restart; the expression index below serves "the earliest
-- running pod's timeout" without a scan.
-- deadline: unix micros; a task not terminal by then is failed.
ALTER TABLE tasks ADD COLUMN timeout_seconds INTEGER CHECK (timeout_seconds > 0);
ALTER TABLE tasks ADD COLUMN deadline INTEGER;

ALTER TABLE tasks_archive ADD COLUMN timeout_seconds INTEGER;
ALTER TABLE tasks_archive ADD COLUMN deadline INTEGER;

CREATE INDEX tasks_timeout_due ON tasks (pod_started_at + timeout_seconds * 1000000)
    WHERE timeout_seconds IS NOT NULL AND pod_status = 'running';
CREATE INDEX tasks_deadline_due ON tasks (deadline)
    WHERE deadline IS NOT NULL AND status IN ('inactive', 'active');
