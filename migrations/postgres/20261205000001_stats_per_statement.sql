-- The GetStats summary rows (20261203000003_stats.sql) kept once per
-- statement instead of once per row when tasks are inserted or deleted.
--
-- The writer inserts a run of CreateTasks as one multi-row INSERT
-- (central-manager/src/store/postgres/create_run.rs) and archives tasks in
-- batches of one DELETE each: per row, the trigger ran four statements for
-- every task (stats_move), about a fifth of the writer's statement time at
-- 64 clients creating tasks. Per statement, two grouped upserts cover the
-- whole run, with the same counts: a group's rows are added (or taken
-- away) together instead of one by one, and rows that reach 0 go, as
-- before. Updates stay per row (stats_task_changed): they change one task
-- at a time and need their WHEN clause.

DROP TRIGGER stats_task_added ON tasks;
DROP FUNCTION stats_task_added();
DROP TRIGGER stats_task_removed ON tasks;
DROP FUNCTION stats_task_removed();

-- Adds (delta 1) or takes away (delta -1) the contribution of every task
-- in `changed` (the rows of a transition table).
CREATE FUNCTION stats_move_all(changed tasks[], delta BIGINT) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO stats_hours AS s (hour, template, created_by, status, phase, restart_count, tasks)
    SELECT stats_hour(t.created_at), t.template, t.created_by, t.status, t.phase, t.restart_count,
           delta * COUNT(*)
    FROM unnest(changed) AS t
    GROUP BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (hour, template, created_by, status, phase, restart_count)
    DO UPDATE SET tasks = s.tasks + excluded.tasks;
    INSERT INTO stats_durations AS s (hour, template, created_by, metric, value, tasks)
    SELECT stats_hour(t.created_at), t.template, t.created_by, d.m, stats_bucket(d.v), delta * COUNT(*)
    FROM unnest(changed) AS t
    CROSS JOIN LATERAL (VALUES
            (0, CASE WHEN t.status = 'completed' AND t.finished_at IS NOT NULL
                     THEN GREATEST(t.finished_at - t.created_at, 0) END),
            (1, NULLIF(GREATEST(t.spec_clarification_us, 0), 0)),
            (2, NULLIF(GREATEST(t.planning_us, 0), 0)),
            (3, NULLIF(GREATEST(t.development_us, 0), 0)),
            (4, NULLIF(GREATEST(t.review_us, 0), 0))) AS d (m, v)
    WHERE d.v IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5
    ON CONFLICT (hour, template, created_by, metric, value)
    DO UPDATE SET tasks = s.tasks + excluded.tasks;
    IF delta < 0 THEN
        -- Only a removal can take a row to 0 (counts are never negative).
        DELETE FROM stats_hours s
        USING (SELECT DISTINCT stats_hour(t.created_at) AS hour, t.template, t.created_by
               FROM unnest(changed) AS t) g
        WHERE s.hour = g.hour AND s.template = g.template AND s.created_by = g.created_by
          AND s.tasks = 0;
        DELETE FROM stats_durations s
        USING (SELECT DISTINCT stats_hour(t.created_at) AS hour, t.template, t.created_by
               FROM unnest(changed) AS t) g
        WHERE s.hour = g.hour AND s.template = g.template AND s.created_by = g.created_by
          AND s.tasks = 0;
    END IF;
END;
$$;

CREATE FUNCTION stats_tasks_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM stats_move_all(ARRAY(SELECT ROW(a.*)::tasks FROM added a), 1);
    RETURN NULL;
END;
$$;
CREATE TRIGGER stats_tasks_added AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION stats_tasks_added();

CREATE FUNCTION stats_tasks_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM stats_move_all(ARRAY(SELECT ROW(r.*)::tasks FROM removed r), -1);
    RETURN NULL;
END;
$$;
CREATE TRIGGER stats_tasks_removed AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION stats_tasks_removed();
