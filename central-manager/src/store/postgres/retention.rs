//! Retention on PostgreSQL, inside the writer's transaction: the SQLite
//! store's `retention` in PostgreSQL's SQL. Terminal tasks move with their
//! events to the archive tables in bounded batches (each batch one
//! command, so commands arriving meanwhile wait at most one batch);
//! DeleteTask removes a terminal task's row and events and logs the
//! deletion; CancelTasks cancels each still-open task with its own
//! `task_cancelled` event. Batches name their tasks as one array parameter
//! (`= ANY($1)`), so each statement has one text whatever the batch size.
//! Also the reads: CancelTasks' selection and the deletions log.

use std::time::Instant;

use sqlx::{PgConnection, PgPool, QueryBuilder};

use super::commands::{Who, finish_task};
use super::queries;
use crate::core::ports::retention::{DeletionRecord, RetentionOutcome, RetentionWrite};
use crate::core::ports::store::Outcome;
use crate::domain::limits::MAX_CANCEL_TASKS;
use crate::domain::{
    ActorId, CorrelationId, EventRecord, Finish, TaskFilter, TaskId, TaskRecord, TaskStatus,
};
use crate::error::{Error, Result};
use crate::store::retention::ARCHIVED_TASK_COLUMNS;

/// The columns of `events` and `events_archive`.
const EVENT_COLUMNS: &str =
    "position, stream_id, version, type, data_json, actor_id, correlation_id, occurred_at";

/// The next tasks to archive: the oldest finished first, through the
/// `tasks_finished` index; their rows locked, so a command of another
/// replica on one of them waits for the batch (and then finds it gone).
const ARCHIVABLE: &str = "SELECT task_id FROM tasks \
     WHERE finished_at IS NOT NULL AND finished_at < $1 \
     AND status IN ('completed', 'cancelled', 'failed') AND pod_status = 'stopped' \
     ORDER BY finished_at LIMIT $2 FOR UPDATE";

/// Runs one retention write.
pub async fn apply(
    c: &mut PgConnection,
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
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO archive_runs (finished_before, actor_id, authenticated_as, \
                 correlation_id, started_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
            )
            .bind(finished_before)
            .bind(actor.as_str())
            .bind(actor.authenticated_as_principal())
            .bind(correlation.as_str())
            .bind(now)
            .fetch_one(&mut *c)
            .await?;
            Ok(RetentionOutcome::RunStarted(id))
        }
        RetentionWrite::ArchiveBatch {
            run_id,
            finished_before,
            limit,
        } => archive_batch(c, *run_id, *finished_before, *limit, now).await,
        RetentionWrite::DeleteTask {
            task_id,
            reason,
            actor,
            correlation,
        } => delete_task(c, *task_id, reason, actor, correlation, now).await,
        RetentionWrite::CancelMany {
            task_ids,
            reason,
            actor,
            correlation,
        } => {
            let mut done = Vec::with_capacity(task_ids.len());
            for id in task_ids {
                let who = Who { actor, correlation };
                // The rules refuse before anything is written, so a refusal
                // leaves the transaction as it was.
                match finish_task(c, *id, Finish::Cancel, who, Some(reason), now, events).await {
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

async fn archive_batch(
    c: &mut PgConnection,
    run_id: i64,
    finished_before: i64,
    limit: u32,
    now: i64,
) -> Result<RetentionOutcome> {
    let started = Instant::now();
    let ids: Vec<String> = sqlx::query_scalar(ARCHIVABLE)
        .bind(finished_before)
        .bind(i64::from(limit))
        .fetch_all(&mut *c)
        .await?;
    if ids.is_empty() {
        return Ok(RetentionOutcome::Archived {
            moved: 0,
            took: started.elapsed(),
        });
    }
    let moved = sqlx::query(&format!(
        "INSERT INTO tasks_archive ({ARCHIVED_TASK_COLUMNS}, archived_at) \
         SELECT {ARCHIVED_TASK_COLUMNS}, $1 FROM tasks WHERE task_id = ANY($2)"
    ))
    .bind(now)
    .bind(&ids)
    .execute(&mut *c)
    .await?
    .rows_affected();
    let rest = [
        format!(
            "INSERT INTO events_archive ({EVENT_COLUMNS}) SELECT {EVENT_COLUMNS} FROM events \
             WHERE stream_id = ANY($1)"
        ),
        "DELETE FROM events WHERE stream_id = ANY($1)".to_owned(),
        "DELETE FROM crash_history WHERE task_id = ANY($1)".to_owned(),
        "DELETE FROM tasks WHERE task_id = ANY($1)".to_owned(),
    ];
    for sql in rest {
        sqlx::query(&sql).bind(&ids).execute(&mut *c).await?;
    }
    sqlx::query("UPDATE archive_runs SET tasks = tasks + $1 WHERE id = $2")
        .bind(i64::try_from(moved).unwrap_or(i64::MAX))
        .bind(run_id)
        .execute(&mut *c)
        .await?;
    Ok(RetentionOutcome::Archived {
        moved,
        took: started.elapsed(),
    })
}

async fn delete_task(
    c: &mut PgConnection,
    id: TaskId,
    reason: &str,
    actor: &ActorId,
    correlation: &CorrelationId,
    now: i64,
) -> Result<RetentionOutcome> {
    let sid = id.to_string();
    // The stream's row locked first: another replica's command on this
    // task (or its archiving) waits for the deletion.
    let stream: Option<String> =
        sqlx::query_scalar("SELECT stream_id FROM streams WHERE stream_id = $1 FOR UPDATE")
            .bind(&sid)
            .fetch_optional(&mut *c)
            .await?;
    if stream.is_none() {
        return Err(Error::TaskNotFound(id));
    }
    let (task, was_archived): (TaskRecord, bool) = match queries::get_task(&mut *c, id).await? {
        Some(t) => (t, false),
        None => match queries::get_archived_task(&mut *c, id).await? {
            Some(t) => (t, true),
            None => return Err(Error::TaskNotFound(id)),
        },
    };
    if !task.status.is_terminal() {
        return Err(Error::TaskNotTerminal(id));
    }
    let events_deleted: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM events WHERE stream_id = $1) \
              + (SELECT COUNT(*) FROM events_archive WHERE stream_id = $1)",
    )
    .bind(&sid)
    .fetch_one(&mut *c)
    .await?;
    sqlx::query(
        "INSERT INTO task_deletions (task_id, title, status, created_by, created_at, \
         was_archived, events_deleted, reason, deleted_by, authenticated_as, correlation_id, \
         deleted_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&sid)
    .bind(task.title.as_str())
    .bind(task.status.as_db())
    .bind(&task.created_by)
    .bind(task.created_at)
    .bind(was_archived)
    .bind(events_deleted)
    .bind(reason)
    .bind(actor.as_str())
    .bind(actor.authenticated_as_principal())
    .bind(correlation.as_str())
    .bind(now)
    .execute(&mut *c)
    .await?;
    for sql in [
        "DELETE FROM events_archive WHERE stream_id = $1",
        "DELETE FROM tasks_archive WHERE task_id = $1",
        // The stream's row takes the task's row, live events, metadata
        // rows, crash history and idempotency key with it (ON DELETE
        // CASCADE).
        "DELETE FROM streams WHERE stream_id = $1",
    ] {
        sqlx::query(sql).bind(&sid).execute(&mut *c).await?;
    }
    Ok(RetentionOutcome::Deleted)
}

/// The logged deletion of `id`, if any.
pub async fn deletion(c: &PgPool, id: TaskId) -> Result<Option<DeletionRecord>> {
    type Row = (String, String, i64, bool, String, String, String, i64);
    let row: Option<Row> = sqlx::query_as(
        "SELECT title, status, events_deleted, was_archived, reason, deleted_by, \
         correlation_id, deleted_at FROM task_deletions WHERE task_id = $1",
    )
    .bind(id.to_string())
    .fetch_optional(c)
    .await?;
    row.map(
        |(title, status, n, was_archived, reason, by, corr, at)| -> Result<DeletionRecord> {
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
        },
    )
    .transpose()
}

/// The non-terminal tasks matching `f`, oldest first, at most
/// [`MAX_CANCEL_TASKS`] (CancelTasks' selection; archived tasks are
/// terminal, so only `tasks` is read).
pub async fn cancellable(c: &PgPool, f: &TaskFilter) -> Result<Vec<TaskId>> {
    let mut b = QueryBuilder::new("SELECT task_id");
    queries::push_filter(&mut b, f, "tasks");
    b.push(" AND status IN ('inactive', 'active') ORDER BY created_at, task_id LIMIT ");
    b.push_bind(i64::try_from(MAX_CANCEL_TASKS).unwrap_or(i64::MAX));
    let ids: Vec<String> = b.build_query_scalar().fetch_all(c).await?;
    ids.iter().map(|t| TaskId::from_db(t)).collect()
}
