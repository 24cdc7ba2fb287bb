-- The tasks table: the queryable state of every task, updated in the same
-- transaction as the event(s) that change it. Reads never rebuild state
-- from raw events.
--
-- Statuses, phases and pod statuses are stored as lowercase words
-- ('inactive', 'spec_clarification', 'stopped', ...); times as unix micros.
-- The pod columns are filled by pod supervision (later issues); a task
-- without a pod has pod_status 'stopped' and NULL pod_* details.

CREATE TABLE tasks (
    task_id         TEXT    PRIMARY KEY NOT NULL REFERENCES streams (stream_id) ON DELETE CASCADE,
    title           TEXT    NOT NULL,
    description     TEXT    NOT NULL DEFAULT '',
    status          TEXT    NOT NULL CHECK (status IN ('inactive', 'active', 'completed', 'cancelled', 'failed')),
    phase           TEXT    NOT NULL CHECK (phase IN ('spec_clarification', 'planning', 'development', 'review', 'completed', 'cancelled')),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    created_by      TEXT    NOT NULL,
    metadata_json   TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(metadata_json)),
    template        TEXT    NOT NULL,

    -- Restart policy as the caller gave it: NULL = "use central-manager's
    -- configured default", which is resolved when the policy is used, so it
    -- differs from an explicit 0.
    auto_restart            INTEGER CHECK (auto_restart IN (0, 1)),
    max_restarts            INTEGER CHECK (max_restarts >= 0),
    restart_window_seconds  INTEGER CHECK (restart_window_seconds >= 0),
    initial_backoff_ms      INTEGER CHECK (initial_backoff_ms >= 0),
    max_backoff_ms          INTEGER CHECK (max_backoff_ms >= 0),

    -- Pod supervision state.
    pod_status      TEXT    NOT NULL DEFAULT 'stopped' CHECK (pod_status IN ('stopped', 'starting', 'running', 'unknown')),
    pod_id          TEXT,
    pod_host        TEXT,
    pod_pid         INTEGER,
    -- +1 on every start; fences stale pods.
    pod_generation  INTEGER NOT NULL DEFAULT 0 CHECK (pod_generation >= 0),
    pod_started_at  INTEGER,
    -- Live state version last reported by the running pod (0 when none).
    live_version    INTEGER NOT NULL DEFAULT 0 CHECK (live_version >= 0),
    restart_count   INTEGER NOT NULL DEFAULT 0 CHECK (restart_count >= 0),
    pod_message     TEXT    NOT NULL DEFAULT '',
    next_restart_at INTEGER
);

-- ListTasks filters on one column and orders by updated_at or created_at
-- with task_id as the tie-break; each index serves "filter + ORDER BY +
-- LIMIT" without a sort. The leading column alone serves CountTasks.
CREATE INDEX tasks_by_updated            ON tasks (updated_at, task_id);
CREATE INDEX tasks_by_created            ON tasks (created_at, task_id);
CREATE INDEX tasks_by_status_updated     ON tasks (status, updated_at, task_id);
CREATE INDEX tasks_by_status_created     ON tasks (status, created_at, task_id);
CREATE INDEX tasks_by_phase_updated      ON tasks (phase, updated_at, task_id);
CREATE INDEX tasks_by_phase_created      ON tasks (phase, created_at, task_id);
CREATE INDEX tasks_by_created_by_updated ON tasks (created_by, updated_at, task_id);
CREATE INDEX tasks_by_created_by_created ON tasks (created_by, created_at, task_id);

-- ListActivePods and start-up reconciliation: the few tasks with a pod.
CREATE INDEX tasks_with_pod ON tasks (task_id) WHERE pod_status != 'stopped';
