-- GetStats on PostgreSQL: the summary rows of the SQLite migration
-- (../20260310000001_stats_summary.sql), kept by triggers as the task rows
-- change in the writer's transactions, so GetStats reads a few rows per
-- hour of creation and group instead of every task (never replaying
-- events). Per hour (unix micros / 3,600,000,000, floored), template and
-- creator. Archived and deleted tasks leave `tasks`, and so these rows.

-- Tasks per status, phase and restart count.
CREATE TABLE stats_hours (
    hour            BIGINT  NOT NULL,
    template        TEXT    NOT NULL,
    created_by      TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    phase           TEXT    NOT NULL,
    restart_count   BIGINT  NOT NULL,
    tasks           BIGINT  NOT NULL,
    PRIMARY KEY (hour, template, created_by, status, phase, restart_count)
);

-- Durations for the percentiles: metric 0 is creation → completion
-- (completed tasks), 1–4 the time spent in spec_clarification, planning,
-- development and review (tasks that left the phase). `value` is the
-- duration (micros) cut to 3 significant digits, the lower end of its
-- bucket; the exact value of a rank is then read from the indexes below.
CREATE TABLE stats_durations (
    hour            BIGINT  NOT NULL,
    template        TEXT    NOT NULL,
    created_by      TEXT    NOT NULL,
    metric          BIGINT  NOT NULL,
    value           BIGINT  NOT NULL,
    tasks           BIGINT  NOT NULL,
    PRIMARY KEY (hour, template, created_by, metric, value)
);

-- The exact durations of one bucket, in order, per metric.
CREATE INDEX stats_time_to_complete ON tasks ((GREATEST(finished_at - created_at, 0)), created_at, template, created_by)
    WHERE status = 'completed' AND finished_at IS NOT NULL;
CREATE INDEX stats_spec_clarification ON tasks (spec_clarification_us, created_at, template, created_by)
    WHERE spec_clarification_us > 0;
CREATE INDEX stats_planning ON tasks (planning_us, created_at, template, created_by)
    WHERE planning_us > 0;
CREATE INDEX stats_development ON tasks (development_us, created_at, template, created_by)
    WHERE development_us > 0;
CREATE INDEX stats_review ON tasks (review_us, created_at, template, created_by)
    WHERE review_us > 0;

-- The tasks of a cut hour, read from the index alone.
CREATE INDEX tasks_stats ON tasks (created_at) INCLUDE (
    template, created_by, status, phase, restart_count, finished_at,
    spec_clarification_us, planning_us, development_us, review_us
);

-- The hour of a creation time (floored, also before 1970), as the Rust
-- `hour_of` (a store test compares them).
CREATE FUNCTION stats_hour(at BIGINT) RETURNS BIGINT LANGUAGE sql IMMUTABLE AS $$
    SELECT (at - ((at % 3600000000) + 3600000000) % 3600000000) / 3600000000
$$;

-- A duration cut to 3 significant digits, as the Rust `duration_bucket`
-- (a store test compares them).
CREATE FUNCTION stats_bucket(v BIGINT) RETURNS BIGINT LANGUAGE sql IMMUTABLE AS $$
    SELECT v / s * s FROM (SELECT (10::BIGINT ^ GREATEST(length(v::TEXT) - 3, 0))::BIGINT AS s) x
$$;

-- Adds (delta +1) or removes (-1) one task's contribution; rows of its
-- hour and group that reach 0 go.
CREATE FUNCTION stats_move(t tasks, delta BIGINT) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    h BIGINT := stats_hour(t.created_at);
BEGIN
    INSERT INTO stats_hours AS s (hour, template, created_by, status, phase, restart_count, tasks)
    VALUES (h, t.template, t.created_by, t.status, t.phase, t.restart_count, delta)
    ON CONFLICT (hour, template, created_by, status, phase, restart_count)
    DO UPDATE SET tasks = s.tasks + excluded.tasks;
    INSERT INTO stats_durations AS s (hour, template, created_by, metric, value, tasks)
    SELECT h, t.template, t.created_by, d.m, stats_bucket(d.v), delta
    FROM (VALUES
            (0, CASE WHEN t.status = 'completed' AND t.finished_at IS NOT NULL
                     THEN GREATEST(t.finished_at - t.created_at, 0) END),
            (1, NULLIF(GREATEST(t.spec_clarification_us, 0), 0)),
            (2, NULLIF(GREATEST(t.planning_us, 0), 0)),
            (3, NULLIF(GREATEST(t.development_us, 0), 0)),
            (4, NULLIF(GREATEST(t.review_us, 0), 0))) AS d (m, v)
    WHERE d.v IS NOT NULL
    ON CONFLICT (hour, template, created_by, metric, value)
    DO UPDATE SET tasks = s.tasks + excluded.tasks;
    DELETE FROM stats_hours
    WHERE hour = h AND template = t.template AND created_by = t.created_by AND tasks = 0;
    DELETE FROM stats_durations
    WHERE hour = h AND template = t.template AND created_by = t.created_by AND tasks = 0;
END;
$$;

CREATE FUNCTION stats_task_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM stats_move(NEW, 1);
    RETURN NULL;
END;
$$;
CREATE TRIGGER stats_task_added AFTER INSERT ON tasks
    FOR EACH ROW EXECUTE FUNCTION stats_task_added();

CREATE FUNCTION stats_task_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM stats_move(OLD, -1);
    RETURN NULL;
END;
$$;
CREATE TRIGGER stats_task_removed AFTER DELETE ON tasks
    FOR EACH ROW EXECUTE FUNCTION stats_task_removed();

-- An update moves the task's contribution: the old row's out, the new
-- row's in (the BEFORE trigger tasks_times has already set finished_at and
-- the phase times on the new row, so one move per update).
CREATE FUNCTION stats_task_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM stats_move(OLD, -1);
    PERFORM stats_move(NEW, 1);
    RETURN NULL;
END;
$$;
CREATE TRIGGER stats_task_changed AFTER UPDATE ON tasks
    FOR EACH ROW
    WHEN ((OLD.status, OLD.phase, OLD.restart_count, OLD.finished_at, OLD.created_at,
           OLD.template, OLD.created_by, OLD.spec_clarification_us, OLD.planning_us,
           OLD.development_us, OLD.review_us)
          IS DISTINCT FROM
          (NEW.status, NEW.phase, NEW.restart_count, NEW.finished_at, NEW.created_at,
           NEW.template, NEW.created_by, NEW.spec_clarification_us, NEW.planning_us,
           NEW.development_us, NEW.review_us))
    EXECUTE FUNCTION stats_task_changed();

-- The tasks already there.
SELECT stats_move(t, 1) FROM tasks t;
