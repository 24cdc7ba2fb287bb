-- "The tasks of schedule X", newest first (ListTasks with metadata_equals
-- ordered by created_at): the metadata rows carry their task's creation
-- time, so one index walk in (key, value, created_at, task_id) order reads
-- a page's rows and stops; before, every matching task was read by key
-- and sorted to keep a page (1,000 row reads for 100 rows). The creation
-- time never changes, so nothing keeps it up to date.
ALTER TABLE task_metadata ADD COLUMN task_created_at INTEGER NOT NULL DEFAULT 0;
UPDATE task_metadata SET task_created_at = COALESCE(
    (SELECT created_at FROM tasks WHERE tasks.task_id = task_metadata.task_id),
    (SELECT created_at FROM tasks_archive WHERE tasks_archive.task_id = task_metadata.task_id),
    0);
DROP INDEX task_metadata_by_value;
CREATE INDEX task_metadata_by_value ON task_metadata (key, value, task_created_at, task_id);
