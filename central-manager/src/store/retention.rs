//! Retention writes, run inside the writer's transaction: moving terminal
//! tasks and their events to the archive tables in bounded batches,
//! deleting a terminal task (its row and events go, the deletion is
//! logged), and cancelling many tasks at once (each with its own
//! `task_cancelled` event).
//!
//! Batches name their tasks as a JSON array bound to one parameter
//! (`IN (SELECT value FROM json_each(?))`), so each statement is prepared
//! once and cached whatever the batch size (PostgreSQL: `= ANY($1)`).

use std::time::Instant;

use futures::future::BoxFuture;

use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::Store;
use super::commands::{Command, Outcome, finish_task};
use super::queries;
use crate::domain::limits::MAX_CANCEL_TASKS;
use crate::domain::stats::{StatsGroup, StatsQuery};
use crate::domain::{
    ActorId, CorrelationId, EventRecord, Finish, TaskFilter, TaskId, TaskRecord, TaskStatus,
};
use crate::error::{Error, Result};

pub use crate::core::ports::retention::{
    DeletionRecord, RetentionOutcome, RetentionStore, RetentionWrite,
};

/// The columns `tasks` and `tasks_archive` share, in one order (the archive
/// adds `archived_at`). A store test checks that every `tasks` column is
/// listed, so a column added later cannot be lost by archiving.
pub const ARCHIVED_TASK_COLUMNS: &str = "task_id, title, description, status, phase, created_at, \
     updated_at, created_by, metadata_json, template, auto_restart, max_restarts, \
     restart_window_seconds, initial_backoff_ms, max_backoff_ms, pod_status, pod_id, pod_host, \
     pod_pid, pod_generation, pod_started_at, live_version, restart_count, pod_message, \
     next_restart_at, pod_correlation_id, phase_since, finished_at, spec_clarification_us, \
     planning_us, development_us, review_us, timeout_seconds, deadline, pod_running_since, \
     priority, queue_timeout_seconds, queued_seq, queued_at, depends_on_json, \
     waiting_dependencies";

/// The columns of `events` and `events_archive`.
const EVENT_COLUMNS: &str =
    "position, stream_id, version, type, data_json, actor_id, correlation_id, occurred_at";

/// The next tasks to archive: the oldest finished first, read in
/// `tasks_finished` order so a batch costs its own size. Left to itself the
/// planner picks `tasks_by_status_created` for the `status IN` term and
/// sorts every terminal task for each batch (a profile over 100,000 tasks:
/// 158 ms a batch against 1 ms; it made ArchiveTasks move 12 tasks/s).
const ARCHIVABLE: &str = "SELECT task_id FROM tasks INDEXED BY tasks_finished \
     WHERE finished_at IS NOT NULL AND finished_at < ? \
     AND status IN ('completed', 'cancelled', 'failed') AND pod_status = 'stopped' \
     ORDER BY finished_at LIMIT ?";

/// The statements that move one batch (its ids as a JSON array; the first
/// also binds `archived_at` before it): each looks its rows up by key.
fn batch_statements() -> [String; 5] {
    const IDS: &str = "IN (SELECT value FROM json_each(?))";
    [
        format!(
            "INSERT INTO tasks_archive ({ARCHIVED_TASK_COLUMNS}, archived_at) \
             SELECT {ARCHIVED_TASK_COLUMNS}, ? FROM tasks WHERE task_id {IDS}"
        ),
        format!(
            "INSERT INTO events_archive ({EVENT_COLUMNS}) SELECT {EVENT_COLUMNS} FROM events \
             WHERE stream_id {IDS}"
        ),
        format!("DELETE FROM events WHERE stream_id {IDS}"),
        format!("DELETE FROM crash_history WHERE task_id {IDS}"),
        format!("DELETE FROM tasks WHERE task_id {IDS}"),
    ]
}

/// Runs one retention write.
pub fn apply(
    c: &Connection,
    w: &RetentionWrite,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<RetentionOutcome> {
    match w {
        RetentionWrite::StartArchiveRun {
            finished_before,
            actor,
            correlation,
        } => {
            let id: i64 = c
                .prepare_cached(
                    "INSERT INTO archive_runs (finished_before, actor_id, authenticated_as, \
                     correlation_id, started_at) VALUES (?, ?, ?, ?, ?) RETURNING id",
                )?
                .query_row(
                    params![
                        finished_before,
                        actor.as_str(),
                        actor.authenticated_as_principal(),
                        correlation.as_str(),
                        now
                    ],
                    |r| r.get(0),
                )?;
            Ok(RetentionOutcome::RunStarted(id))
        }
        RetentionWrite::ArchiveBatch {
            run_id,
            finished_before,
            limit,
        } => archive_batch(c, *run_id, *finished_before, *limit, now),
        RetentionWrite::DeleteTask {
            task_id,
            reason,
            actor,
            correlation,
        } => delete_task(c, *task_id, reason, actor, correlation, now),
        RetentionWrite::CancelMany {
            task_ids,
            reason,
            actor,
            correlation,
        } => {
            let mut done = Vec::with_capacity(task_ids.len());
            for id in task_ids {
                match finish_task(
                    c,
                    *id,
                    Finish::Cancel,
                    actor,
                    correlation,
                    Some(reason),
                    now,
                    events,
                ) {
                    Ok(Outcome::Finished { stop_pod }) => done.push((*id, stop_pod)),
                    Ok(other) => {
                        return Err(Error::Internal(format!("unexpected outcome {other:?}")));
                    }
                    // Finished, deleted or archived since it was selected:
                    // not ours to cancel any more.
                    Err(
                        Error::TaskNotFound(_)
                        | Error::AlreadyCompleted(_)
                        | Error::AlreadyCancelled(_)
                        | Error::AlreadyFailed(_),
                    ) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(RetentionOutcome::Cancelled(done))
        }
    }
}

fn archive_batch(
    c: &Connection,
    run_id: i64,
    finished_before: i64,
    limit: u32,
    now: i64,
) -> Result<RetentionOutcome> {
    let started = Instant::now();
    let ids: Vec<String> = c
        .prepare_cached(ARCHIVABLE)?
        .query_map(params![finished_before, limit], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if ids.is_empty() {
        return Ok(RetentionOutcome::Archived {
            moved: 0,
            took: started.elapsed(),
        });
    }
    let batch = serde_json::to_string(&ids)
        .map_err(|e| Error::Internal(format!("archive batch ids: {e}")))?;
    let [move_tasks, rest @ ..] = batch_statements();
    let moved = c
        .prepare_cached(&move_tasks)?
        .execute(params![now, &batch])?;
    for sql in rest {
        c.prepare_cached(&sql)?.execute([&batch])?;
    }
    c.prepare_cached("UPDATE archive_runs SET tasks = tasks + ? WHERE id = ?")?
        .execute(params![moved as i64, run_id])?;
    Ok(RetentionOutcome::Archived {
        moved: moved as u64,
        took: started.elapsed(),
    })
}

fn delete_task(
    c: &Connection,
    id: TaskId,
    reason: &str,
    actor: &ActorId,
    correlation: &CorrelationId,
    now: i64,
) -> Result<RetentionOutcome> {
    let (task, was_archived) = match queries::get_task(c, id)? {
        Some(t) => (t, false),
        None => match queries::get_archived_task(c, id)? {
            Some(t) => (t, true),
            None => return Err(Error::TaskNotFound(id)),
        },
    };
    if !task.status.is_terminal() {
        return Err(Error::TaskNotTerminal(id));
    }
    let sid = id.to_string();
    let count = |table: &str| -> Result<i64> {
        Ok(
            c.prepare_cached(&format!("SELECT COUNT(*) FROM {table} WHERE stream_id = ?"))?
                .query_row([&sid], |r| r.get(0))?,
        )
    };
    let events_deleted = count("events")? + count("events_archive")?;
    c.prepare_cached(
        "INSERT INTO task_deletions (task_id, title, status, created_by, created_at, \
         was_archived, events_deleted, reason, deleted_by, authenticated_as, correlation_id, \
         deleted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        &sid,
        task.title.as_str(),
        task.status.as_db(),
        task.created_by,
        task.created_at,
        was_archived,
        events_deleted,
        reason,
        actor.as_str(),
        actor.authenticated_as_principal(),
        correlation.as_str(),
        now
    ])?;
    c.prepare_cached("DELETE FROM events_archive WHERE stream_id = ?")?
        .execute([&sid])?;
    c.prepare_cached("DELETE FROM tasks_archive WHERE task_id = ?")?
        .execute([&sid])?;
    // The stream's row takes the task's row, live events, metadata rows,
    // crash history and idempotency key with it (ON DELETE CASCADE).
    c.prepare_cached("DELETE FROM streams WHERE stream_id = ?")?
        .execute([&sid])?;
    Ok(RetentionOutcome::Deleted)
}

/// The logged deletion of `id`, if any.
pub fn deletion(c: &Connection, id: TaskId) -> Result<Option<DeletionRecord>> {
    c.prepare_cached(
        "SELECT title, status, events_deleted, was_archived, reason, deleted_by, \
         correlation_id, deleted_at FROM task_deletions WHERE task_id = ?",
    )?
    .query_row([id.to_string()], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, bool>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, String>(6)?,
            r.get::<_, i64>(7)?,
        ))
    })
    .optional()?
    .map(|(title, status, n, was_archived, reason, by, corr, at)| {
        Ok(DeletionRecord {
            task_id: id,
            title,
            status: TaskStatus::from_db(&status)?,
            events_deleted: u64::try_from(n).unwrap_or(0),
            was_archived,
            reason,
            deleted_by: by,
            correlation_id: corr,
            deleted_at: at,
        })
    })
    .transpose()
}

/// The non-terminal tasks matching `f`, oldest first, at most
/// [`MAX_CANCEL_TASKS`] (CancelTasks' selection).
pub fn cancellable(c: &Connection, f: &TaskFilter) -> Result<Vec<TaskId>> {
    let mut f = f.clone();
    // Archived tasks are terminal: nothing to cancel there.
    f.include_archived = false;
    let (sql, args) = queries::filtered_ids(
        &f,
        "AND status IN ('inactive', 'active') ORDER BY created_at, task_id LIMIT ?",
        MAX_CANCEL_TASKS as i64,
    );
    let mut st = c.prepare_cached(&sql)?;
    let rows = st.query_map(params_from_iter(args), |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for r in rows {
        out.push(TaskId::from_db(&r?)?);
    }
    Ok(out)
}

impl Store {
    /// Runs a retention write.
    pub async fn retention(&self, w: RetentionWrite) -> Result<RetentionOutcome> {
        match self.write(Command::Retention(w)).await? {
            Outcome::Retention(o) => Ok(o),
            other => Err(Error::Internal(format!("unexpected outcome {other:?}"))),
        }
    }

    /// One task, live or archived.
    pub async fn task_or_archived(&self, id: TaskId) -> Result<Option<TaskRecord>> {
        self.readers
            .run_inline(|c| match queries::get_task(c, id)? {
                Some(t) => Ok(Some(t)),
                None => queries::get_archived_task(c, id),
            })
    }

    /// The logged deletion of a task.
    pub async fn deletion(&self, id: TaskId) -> Result<Option<DeletionRecord>> {
        self.readers.run_inline(|c| deletion(c, id))
    }

    /// The tasks CancelTasks would cancel.
    pub async fn cancellable(&self, f: &TaskFilter) -> Result<Vec<TaskId>> {
        let f = f.clone();
        self.readers.run(move |c| cancellable(c, &f)).await
    }
}

impl RetentionStore for Store {
    fn cancellable<'a>(&'a self, f: &'a TaskFilter) -> BoxFuture<'a, Result<Vec<TaskId>>> {
        Box::pin(Store::cancellable(self, f))
    }

    fn deletion(&self, id: TaskId) -> BoxFuture<'_, Result<Option<DeletionRecord>>> {
        Box::pin(Store::deletion(self, id))
    }

    fn stats(&self, q: StatsQuery) -> BoxFuture<'_, Result<Vec<StatsGroup>>> {
        Box::pin(Store::stats(self, q))
    }
}

#[cfg(test)]
mod tests;
