-- GetStats from summary rows kept by triggers (issue 14's ≤ 50 ms goal over
-- 100,000 tasks): reading every task of the range cost 88 ms at 100,000
-- tasks and grew with the table. The rows below are per hour of creation
-- (unix micros / 3,600,000,000, floored) and per template and creator, so
-- GetStats reads a few rows per hour and group; only the tasks of an hour
-- the requested range cuts into are read from `tasks` (see store/stats.rs).
--
-- Archived and deleted tasks leave `tasks`, and so these rows, as they
-- always left GetStats.

-- Tasks per status, phase and restart count (exact counts, restart sums
-- and maxima).
CREATE TABLE stats_hours (
    hour            INTEGER NOT NULL,
    template        TEXT    NOT NULL,
    created_by      TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    phase           TEXT    NOT NULL,
    restart_count   INTEGER NOT NULL,
    tasks           INTEGER NOT NULL,
    PRIMARY KEY (hour, template, created_by, status, phase, restart_count)
) WITHOUT ROWID;

-- Durations for the percentiles: metric 0 is creation → completion
-- (completed tasks), 1–4 the time spent in spec_clarification, planning,
-- development and review (tasks that left the phase). `value` is the
-- duration (micros) cut to 3 significant digits: the lower end of a bucket
-- [value, value + 10^(digits - 3)), so tasks of similar durations share a
-- row and the rows per hour are bounded by the buckets, not by the tasks.
-- The counts find the bucket a percentile falls in and its rank there;
-- the exact value is then read from the indexes below (GetStats' figures
-- are exact).
CREATE TABLE stats_durations (
    hour            INTEGER NOT NULL,
    template        TEXT    NOT NULL,
    created_by      TEXT    NOT NULL,
    metric          INTEGER NOT NULL,
    value           INTEGER NOT NULL,
    tasks           INTEGER NOT NULL,
    PRIMARY KEY (hour, template, created_by, metric, value)
) WITHOUT ROWID;

-- The exact durations of one bucket, in order, per metric (only tasks that
-- have the duration): a percentile's value is the k-th entry of its
-- bucket among the tasks of the range and group.
CREATE INDEX stats_time_to_complete ON tasks (MAX(finished_at - created_at, 0), created_at, template, created_by)
    WHERE status = 'completed' AND finished_at IS NOT NULL;
CREATE INDEX stats_spec_clarification ON tasks (spec_clarification_us, created_at, template, created_by)
    WHERE spec_clarification_us > 0;
CREATE INDEX stats_planning ON tasks (planning_us, created_at, template, created_by)
    WHERE planning_us > 0;
CREATE INDEX stats_development ON tasks (development_us, created_at, template, created_by)
    WHERE development_us > 0;
CREATE INDEX stats_review ON tasks (review_us, created_at, template, created_by)
    WHERE review_us > 0;

-- One task's contribution, added (+1) or removed (-1). A trigger cannot
-- call a function of ours, so the hour and the bucket are spelled out:
-- hour = floor(created_at / 3600e6); a value of d digits is cut to a step
-- of 10^(d-3) (the digits of the step taken from a string of zeros).
-- Rust computes the same (store/stats.rs, tested against this SQL).

CREATE TRIGGER stats_task_added AFTER INSERT ON tasks
BEGIN
    INSERT INTO stats_hours (hour, template, created_by, status, phase, restart_count, tasks)
    VALUES ((NEW.created_at - ((NEW.created_at % 3600000000) + 3600000000) % 3600000000) / 3600000000,
            NEW.template, NEW.created_by, NEW.status, NEW.phase, NEW.restart_count, 1)
    ON CONFLICT DO UPDATE SET tasks = tasks + 1;
    INSERT INTO stats_durations (hour, template, created_by, metric, value, tasks)
    SELECT (NEW.created_at - ((NEW.created_at % 3600000000) + 3600000000) % 3600000000) / 3600000000,
           NEW.template, NEW.created_by, m,
           v / s * s, 1
    FROM (SELECT m, v, CAST(substr('100000000000000000000', 1, MAX(length(v) - 2, 1)) AS INTEGER) AS s
          FROM (SELECT 0 AS m, CASE WHEN NEW.status = 'completed' AND NEW.finished_at IS NOT NULL
                                    THEN MAX(NEW.finished_at - NEW.created_at, 0) END AS v
                UNION ALL SELECT 1, NULLIF(MAX(NEW.spec_clarification_us, 0), 0)
                UNION ALL SELECT 2, NULLIF(MAX(NEW.planning_us, 0), 0)
                UNION ALL SELECT 3, NULLIF(MAX(NEW.development_us, 0), 0)
                UNION ALL SELECT 4, NULLIF(MAX(NEW.review_us, 0), 0))
          WHERE v IS NOT NULL)
    WHERE true
    ON CONFLICT DO UPDATE SET tasks = tasks + 1;
END;

CREATE TRIGGER stats_task_removed AFTER DELETE ON tasks
BEGIN
    UPDATE stats_hours SET tasks = tasks - 1
    WHERE hour = (OLD.created_at - ((OLD.created_at % 3600000000) + 3600000000) % 3600000000) / 3600000000
      AND template = OLD.template AND created_by = OLD.created_by AND status = OLD.status
      AND phase = OLD.phase AND restart_count = OLD.restart_count;
    DELETE FROM stats_hours
    WHERE hour = (OLD.created_at - ((OLD.created_at % 3600000000) + 3600000000) % 3600000000) / 3600000000
      AND template = OLD.template AND created_by = OLD.created_by AND status = OLD.status
      AND phase = OLD.phase AND restart_count = OLD.restart_count AND tasks = 0;
    UPDATE stats_durations SET tasks = tasks - 1
    WHERE hour = (OLD.created_at - ((OLD.created_at % 3600000000) + 3600000000) % 3600000000) / 3600000000
      AND template = OLD.template AND created_by = OLD.created_by
      AND (metric, value) IN (
          SELECT m, v / s * s
          FROM (SELECT m, v, CAST(substr('100000000000000000000', 1, MAX(length(v) - 2, 1)) AS INTEGER) AS s
                FROM (SELECT 0 AS m, CASE WHEN OLD.status = 'completed' AND OLD.finished_at IS NOT NULL
                                          THEN MAX(OLD.finished_at - OLD.created_at, 0) END AS v
                      UNION ALL SELECT 1, NULLIF(MAX(OLD.spec_clarification_us, 0), 0)
                      UNION ALL SELECT 2, NULLIF(MAX(OLD.planning_us, 0), 0)
                      UNION ALL SELECT 3, NULLIF(MAX(OLD.development_us, 0), 0)
                      UNION ALL SELECT 4, NULLIF(MAX(OLD.review_us, 0), 0))
                WHERE v IS NOT NULL));
    DELETE FROM stats_durations
    WHERE hour = (OLD.created_at - ((OLD.created_at % 3600000000) + 3600000000) % 3600000000) / 3600000000
      AND template = OLD.template AND created_by = OLD.created_by AND tasks = 0;
END;

-- An update moves the task's contribution: the old row's out, the new
-- row's in. The triggers that keep finished_at and the phase times update
-- the row again; each of those updates fires this one with its own OLD and
-- NEW, so the moves add up to "old state out, final state in" in any
-- order (a count may be -1 for a moment inside the transaction).
CREATE TRIGGER stats_task_changed AFTER UPDATE OF
    status, phase, restart_count, finished_at, created_at, template, created_by,
    spec_clarification_us, planning_us, development_us, review_us ON tasks
WHEN NEW.status IS NOT OLD.status OR NEW.phase IS NOT OLD.phase
  OR NEW.restart_count IS NOT OLD.restart_count OR NEW.finished_at IS NOT OLD.finished_at
  OR NEW.created_at IS NOT OLD.created_at OR NEW.template IS NOT OLD.template
  OR NEW.created_by IS NOT OLD.created_by
  OR NEW.spec_clarification_us IS NOT OLD.spec_clarification_us
  OR NEW.planning_us IS NOT OLD.planning_us OR NEW.development_us IS NOT OLD.development_us
  OR NEW.review_us IS NOT OLD.review_us
BEGIN
    INSERT INTO stats_hours (hour, template, created_by, status, phase, restart_count, tasks)
    VALUES ((OLD.created_at - ((OLD.created_at % 3600000000) + 3600000000) % 3600000000) / 3600000000,
            OLD.template, OLD.created_by, OLD.status, OLD.phase, OLD.restart_count, -1)
    ON CONFLICT DO UPDATE SET tasks = tasks - 1;
    INSERT INTO stats_hours (hour, template, created_by, status, phase, restart_count, tasks)
    VALUES ((NEW.created_at - ((NEW.created_at % 3600000000) + 3600000000) % 3600000000) / 3600000000,
            NEW.template, NEW.created_by, NEW.status, NEW.phase, NEW.restart_count, 1)
    ON CONFLICT DO UPDATE SET tasks = tasks + 1;
    INSERT INTO stats_durations (hour, template, created_by, metric, value, tasks)
    SELECT (OLD.created_at - ((OLD.created_at % 3600000000) + 3600000000) % 3600000000) / 3600000000,
           OLD.template, OLD.created_by, m, v / s * s, -1
    FROM (SELECT m, v, CAST(substr('100000000000000000000', 1, MAX(length(v) - 2, 1)) AS INTEGER) AS s
          FROM (SELECT 0 AS m, CASE WHEN OLD.status = 'completed' AND OLD.finished_at IS NOT NULL
                                    THEN MAX(OLD.finished_at - OLD.created_at, 0) END AS v
                UNION ALL SELECT 1, NULLIF(MAX(OLD.spec_clarification_us, 0), 0)
                UNION ALL SELECT 2, NULLIF(MAX(OLD.planning_us, 0), 0)
                UNION ALL SELECT 3, NULLIF(MAX(OLD.development_us, 0), 0)
                UNION ALL SELECT 4, NULLIF(MAX(OLD.review_us, 0), 0))
          WHERE v IS NOT NULL)
    WHERE true
    ON CONFLICT DO UPDATE SET tasks = tasks - 1;
    INSERT INTO stats_durations (hour, template, created_by, metric, value, tasks)
    SELECT (NEW.created_at - ((NEW.created_at % 3600000000) + 3600000000) % 3600000000) / 3600000000,
           NEW.template, NEW.created_by, m, v / s * s, 1
    FROM (SELECT m, v, CAST(substr('100000000000000000000', 1, MAX(length(v) - 2, 1)) AS INTEGER) AS s
          FROM (SELECT 0 AS m, CASE WHEN NEW.status = 'completed' AND NEW.finished_at IS NOT NULL
                                    THEN MAX(NEW.finished_at - NEW.created_at, 0) END AS v
                UNION ALL SELECT 1, NULLIF(MAX(NEW.spec_clarification_us, 0), 0)
                UNION ALL SELECT 2, NULLIF(MAX(NEW.planning_us, 0), 0)
                UNION ALL SELECT 3, NULLIF(MAX(NEW.development_us, 0), 0)
                UNION ALL SELECT 4, NULLIF(MAX(NEW.review_us, 0), 0))
          WHERE v IS NOT NULL)
    WHERE true
    ON CONFLICT DO UPDATE SET tasks = tasks + 1;
    -- Rows that reached 0 (a transient -1 is brought back by a later move
    -- of the same transaction).
    DELETE FROM stats_hours
    WHERE hour = (OLD.created_at - ((OLD.created_at % 3600000000) + 3600000000) % 3600000000) / 3600000000
      AND template = OLD.template AND created_by = OLD.created_by AND tasks = 0;
    DELETE FROM stats_durations
    WHERE hour = (OLD.created_at - ((OLD.created_at % 3600000000) + 3600000000) % 3600000000) / 3600000000
      AND template = OLD.template AND created_by = OLD.created_by AND tasks = 0;
END;

-- The tasks already there.
INSERT INTO stats_hours (hour, template, created_by, status, phase, restart_count, tasks)
SELECT (created_at - ((created_at % 3600000000) + 3600000000) % 3600000000) / 3600000000 AS h,
       template, created_by, status, phase, restart_count, COUNT(*)
FROM tasks GROUP BY h, template, created_by, status, phase, restart_count;
INSERT INTO stats_durations (hour, template, created_by, metric, value, tasks)
SELECT h, template, created_by, m, v / s * s AS q, COUNT(*)
FROM (SELECT h, template, created_by, m, v,
             CAST(substr('100000000000000000000', 1, MAX(length(v) - 2, 1)) AS INTEGER) AS s
      FROM (SELECT (created_at - ((created_at % 3600000000) + 3600000000) % 3600000000) / 3600000000 AS h,
                   template, created_by, 0 AS m,
                   CASE WHEN status = 'completed' AND finished_at IS NOT NULL
                        THEN MAX(finished_at - created_at, 0) END AS v FROM tasks
            UNION ALL SELECT (created_at - ((created_at % 3600000000) + 3600000000) % 3600000000) / 3600000000,
                   template, created_by, 1, NULLIF(MAX(spec_clarification_us, 0), 0) FROM tasks
            UNION ALL SELECT (created_at - ((created_at % 3600000000) + 3600000000) % 3600000000) / 3600000000,
                   template, created_by, 2, NULLIF(MAX(planning_us, 0), 0) FROM tasks
            UNION ALL SELECT (created_at - ((created_at % 3600000000) + 3600000000) % 3600000000) / 3600000000,
                   template, created_by, 3, NULLIF(MAX(development_us, 0), 0) FROM tasks
            UNION ALL SELECT (created_at - ((created_at % 3600000000) + 3600000000) % 3600000000) / 3600000000,
                   template, created_by, 4, NULLIF(MAX(review_us, 0), 0) FROM tasks)
      WHERE v IS NOT NULL)
GROUP BY h, template, created_by, m, q;
