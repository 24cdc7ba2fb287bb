//! The queue's writes on PostgreSQL (the SQLite store's `queue` writes,
//! same rules): enqueue, unqueue (StopPod) and expiry, each conditional on
//! the task's row, which it locks (`FOR UPDATE`) so that another replica's
//! command on the task decides after this one commits. The start of a
//! queued task is the pod claim, which clears the entry.

use serde_json::json;
use sqlx::PgConnection;

use super::commands::{NewEvent, append_event, note_principal};
use super::dependencies;
use crate::core::ports::queue::{QueueOutcome, QueueWrite};
use crate::domain::dependencies::{RELEASED_BY, WAITING_FOR_DEPENDENCIES};
use crate::domain::queue::{WAITING_FOR_CAPACITY, expires_at};
use crate::domain::{
    Cause, EventRecord, EventType, PodStatus, Priority, SYSTEM_ACTOR, TaskId, TaskStatus,
    decide_start, ensure_not_terminal,
};
use crate::error::{Error, Result};

/// Runs one queue write.
pub async fn apply(
    conn: &mut PgConnection,
    w: &QueueWrite,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<QueueOutcome> {
    match w {
        QueueWrite::Enqueue {
            task_id,
            cause,
            message,
        } => enqueue(conn, *task_id, cause, message, None, now, events).await,
        QueueWrite::Unqueue {
            task_id,
            cause,
            reason,
        } => unqueue(conn, *task_id, cause, reason, now, events).await,
        QueueWrite::Expire { task_id, seq } => expire(conn, *task_id, *seq, now, events).await,
    }
}

/// The queue columns of a row.
#[derive(sqlx::FromRow)]
struct QueueRow {
    status: String,
    pod_status: String,
    priority: i64,
    template: String,
    queue_timeout_seconds: Option<i64>,
    queued_seq: Option<i64>,
    queued_at: Option<i64>,
    waiting_dependencies: bool,
    pod_correlation_id: String,
}

async fn queue_row(conn: &mut PgConnection, task_id: TaskId) -> Result<Option<QueueRow>> {
    Ok(sqlx::query_as(
        "SELECT status, pod_status, priority, template, queue_timeout_seconds, queued_seq, \
         queued_at, waiting_dependencies, pod_correlation_id FROM tasks WHERE task_id = $1 \
         FOR UPDATE",
    )
    .bind(task_id.to_string())
    .fetch_optional(&mut *conn)
    .await?)
}

/// Queues a live task with no pod: ACTIVE, `pod_queued`, its entry at the
/// event's position (or waiting for its dependencies, outside the capacity
/// queue). The refusals are StartPod's. A task already queued stays where
/// it is. `released_by`: the dependency whose completion released it.
pub(super) async fn enqueue(
    conn: &mut PgConnection,
    task_id: TaskId,
    cause: &Cause,
    message: &str,
    released_by: Option<TaskId>,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<QueueOutcome> {
    let row = queue_row(conn, task_id)
        .await?
        .ok_or(Error::TaskNotFound(task_id))?;
    let status = TaskStatus::from_db(&row.status)?;
    ensure_not_terminal(task_id, status)?;
    if row.queued_seq.is_some() || row.waiting_dependencies {
        return Ok(QueueOutcome::Queued { already: true });
    }
    decide_start(task_id, status, PodStatus::from_db(&row.pod_status)?)?;
    let unmet = dependencies::unmet(conn, task_id).await?;
    let priority = Priority::from_db(row.priority)?;
    let mut data = json!({
        "priority": priority.name(),
        "template": row.template,
        "message": message,
        "waiting_for": if unmet.is_some() { WAITING_FOR_DEPENDENCIES } else { WAITING_FOR_CAPACITY },
    });
    if let Some(dep) = unmet {
        data["dependency"] = json!(dep.to_string());
    }
    if let Some(dep) = released_by {
        data[RELEASED_BY] = json!(dep.to_string());
    }
    if let Some(s) = row.queue_timeout_seconds {
        data["queue_timeout_seconds"] = json!(s);
    }
    note_principal(&mut data, cause.authenticated_as.as_deref());
    let e = NewEvent {
        event: EventType::PodQueued,
        data,
        actor: &cause.actor,
        correlation: &cause.correlation,
    };
    append_event(conn, task_id, e, now, events).await?;
    if unmet.is_some() {
        sqlx::query(
            "UPDATE tasks SET status = 'active', waiting_dependencies = TRUE, \
             next_restart_at = NULL, pod_message = $1, pod_correlation_id = $2, updated_at = $3 \
             WHERE task_id = $4",
        )
        .bind(message)
        .bind(&cause.correlation)
        .bind(now)
        .bind(task_id.to_string())
        .execute(&mut *conn)
        .await?;
        return Ok(QueueOutcome::Queued { already: false });
    }
    let seq = events
        .last()
        .and_then(|e| i64::try_from(e.position).ok())
        .ok_or_else(|| Error::Internal("pod_queued has no position".into()))?;
    // The pod's correlation becomes the queueing request's: the automatic
    // pod_started of the dispatcher carries it.
    sqlx::query(
        "UPDATE tasks SET status = 'active', queued_seq = $1, queued_at = $2, \
         next_restart_at = NULL, pod_message = $3, pod_correlation_id = $4, updated_at = $5 \
         WHERE task_id = $6",
    )
    .bind(seq)
    .bind(now)
    .bind(message)
    .bind(&cause.correlation)
    .bind(now)
    .bind(task_id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(QueueOutcome::Queued { already: false })
}

/// StopPod on a queued task: INACTIVE, out of the queue, `pod_stopped`
/// with `{"queued": true}`.
async fn unqueue(
    conn: &mut PgConnection,
    task_id: TaskId,
    cause: &Cause,
    reason: &str,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<QueueOutcome> {
    let row = queue_row(conn, task_id)
        .await?
        .ok_or(Error::TaskNotFound(task_id))?;
    ensure_not_terminal(task_id, TaskStatus::from_db(&row.status)?)?;
    if row.queued_seq.is_none() && !row.waiting_dependencies {
        return Ok(QueueOutcome::NotQueued);
    }
    leave_queue(conn, task_id, "", now).await?;
    let mut data = json!({"queued": true, "reason": reason});
    note_principal(&mut data, cause.authenticated_as.as_deref());
    let e = NewEvent {
        event: EventType::PodStopped,
        data,
        actor: &cause.actor,
        correlation: &cause.correlation,
    };
    append_event(conn, task_id, e, now, events).await?;
    Ok(QueueOutcome::Removed)
}

/// The queue timeout of entry `seq` passed: INACTIVE, `queue_expired`.
/// Nothing happens when the task is no longer in that entry (started,
/// stopped, queued again) or the timeout has not passed.
async fn expire(
    conn: &mut PgConnection,
    task_id: TaskId,
    seq: i64,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<QueueOutcome> {
    let Some(row) = queue_row(conn, task_id).await? else {
        return Ok(QueueOutcome::NotQueued);
    };
    let (Some(queued_at), Some(timeout)) = (row.queued_at, row.queue_timeout_seconds) else {
        return Ok(QueueOutcome::NotQueued);
    };
    let timeout = u32::try_from(timeout).unwrap_or(u32::MAX);
    if row.queued_seq != Some(seq) || expires_at(queued_at, timeout) > now {
        return Ok(QueueOutcome::NotQueued);
    }
    let message = format!("waited in the queue longer than {timeout} s");
    leave_queue(conn, task_id, &message, now).await?;
    let e = NewEvent {
        event: EventType::QueueExpired,
        data: json!({"queued_at": queued_at, "queue_timeout_seconds": timeout}),
        actor: SYSTEM_ACTOR,
        correlation: &row.pod_correlation_id,
    };
    append_event(conn, task_id, e, now, events).await?;
    Ok(QueueOutcome::Removed)
}

async fn leave_queue(
    conn: &mut PgConnection,
    task_id: TaskId,
    message: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE tasks SET status = 'inactive', queued_seq = NULL, queued_at = NULL, \
         waiting_dependencies = FALSE, pod_message = $1, updated_at = $2 WHERE task_id = $3",
    )
    .bind(message)
    .bind(now)
    .bind(task_id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}
