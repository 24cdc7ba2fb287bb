-- Task dependencies (issue 13, Scheduling: depends_on).
--
-- task_dependencies: one row per (dependent, dependency), written with the
-- dependent's CreateTask. Read both ways: a task's dependencies (primary
-- key) when it is started, a dependency's dependents (the second index)
-- when it ends. A dependency always exists before its dependent (CreateTask
-- checks it in the same transaction), so the graph cannot have a cycle.
CREATE TABLE task_dependencies (
    task_id TEXT NOT NULL,
    depends_on TEXT NOT NULL,
    PRIMARY KEY (task_id, depends_on)
) WITHOUT ROWID;
CREATE INDEX task_dependencies_by_dependency ON task_dependencies (depends_on, task_id);

-- depends_on_json: the ids as given (a JSON array), so a task row reads
-- back whole without a join.
-- waiting_dependencies: 1 while a start was asked for (StartPod with
-- queue, auto_start) and a dependency is not COMPLETED yet. Such a task is
-- ACTIVE with no pod and NOT in the capacity queue (queued_seq NULL): the
-- write that completes its last dependency moves it there in the same
-- transaction; the write that fails or cancels a dependency fails it.
ALTER TABLE tasks ADD COLUMN depends_on_json TEXT NOT NULL DEFAULT '[]';
ALTER TABLE tasks ADD COLUMN waiting_dependencies INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks_archive ADD COLUMN depends_on_json TEXT NOT NULL DEFAULT '[]';
ALTER TABLE tasks_archive ADD COLUMN waiting_dependencies INTEGER NOT NULL DEFAULT 0;
