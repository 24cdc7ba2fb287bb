-- Run timeouts and task deadlines (issue 13, Scheduling).
--
-- timeout_seconds: a pod of the task running longer than this is stopped
-- (`pod_timed_out`, counted as a crash). It counts from pod_running_since:
-- when central-manager first saw this generation running, on its own clock
-- (a pod-host's pod_started_at is on the host's clock, which may be
-- skewed). Both are stored, so the due time survives a central-manager
-- restart; the expression index below serves "the earliest running pod's
-- timeout" without a scan. Cleared with the pod's other columns when a new
-- generation is claimed.
-- deadline: unix micros; a task not terminal by then is failed.
ALTER TABLE tasks ADD COLUMN timeout_seconds INTEGER CHECK (timeout_seconds > 0);
ALTER TABLE tasks ADD COLUMN deadline INTEGER;
ALTER TABLE tasks ADD COLUMN pod_running_since INTEGER;

ALTER TABLE tasks_archive ADD COLUMN timeout_seconds INTEGER;
ALTER TABLE tasks_archive ADD COLUMN deadline INTEGER;
ALTER TABLE tasks_archive ADD COLUMN pod_running_since INTEGER;

CREATE INDEX tasks_timeout_due ON tasks (pod_running_since + timeout_seconds * 1000000)
    WHERE timeout_seconds IS NOT NULL AND pod_status = 'running';
CREATE INDEX tasks_deadline_due ON tasks (deadline)
    WHERE deadline IS NOT NULL AND status IN ('inactive', 'active');
