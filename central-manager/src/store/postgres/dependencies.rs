//! Task dependencies on PostgreSQL (the SQLite store's `dependencies`,
//! same rules): recording a new task's `depends_on`, the check a start
//! makes, and what a dependency's end does to its dependents, all inside
//! the transaction of the command that caused it, so the cause and its
//! consequences commit together or not at all.

use serde_json::json;
use sqlx::PgConnection;

use super::commands::{NewEvent, append_event};
use crate::domain::dependencies::{DEPENDENCY_FAILED, to_json};
use crate::domain::{Cause, EventRecord, EventType, SYSTEM_ACTOR, TaskId};
use crate::error::{Error, Result};

/// Records `deps` of the new task `task_id`. Each must exist (live or
/// archived), else TASK_NOT_FOUND naming it. Returns the first dependency
/// already CANCELLED or FAILED, if any: the caller fails the new task.
pub(super) async fn record(
    conn: &mut PgConnection,
    task_id: TaskId,
    deps: &[TaskId],
) -> Result<Option<TaskId>> {
    if deps.is_empty() {
        return Ok(None);
    }
    let mut failed = None;
    for &dep in deps {
        let status = status_of(conn, dep)
            .await?
            .ok_or(Error::TaskNotFound(dep))?;
        if failed.is_none() && matches!(status.as_str(), "failed" | "cancelled") {
            failed = Some(dep);
        }
        sqlx::query("INSERT INTO task_dependencies (task_id, depends_on) VALUES ($1, $2)")
            .bind(task_id.to_string())
            .bind(dep.to_string())
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query("UPDATE tasks SET depends_on_json = $1 WHERE task_id = $2")
        .bind(to_json(deps))
        .bind(task_id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(failed)
}

async fn status_of(conn: &mut PgConnection, id: TaskId) -> Result<Option<String>> {
    // FOR SHARE: a dependency cannot end on another replica between this
    // read and the commit that records the dependent (its end would miss
    // the dependent it does not see yet).
    let live: Option<String> =
        sqlx::query_scalar("SELECT status FROM tasks WHERE task_id = $1 FOR SHARE")
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?;
    if live.is_some() {
        return Ok(live);
    }
    Ok(
        sqlx::query_scalar("SELECT status FROM tasks_archive WHERE task_id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?,
    )
}

/// The first dependency of `task_id` that is not COMPLETED, if any (an
/// archived one has ended: had it failed, its dependents would have
/// failed with it, so it counts as completed).
pub(super) async fn unmet(conn: &mut PgConnection, task_id: TaskId) -> Result<Option<TaskId>> {
    let first: Option<String> = sqlx::query_scalar(
        "SELECT d.depends_on FROM task_dependencies d JOIN tasks t ON t.task_id = d.depends_on \
         WHERE d.task_id = $1 AND t.status <> 'completed' ORDER BY d.depends_on LIMIT 1",
    )
    .bind(task_id.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    first.map(|s| TaskId::from_db(&s)).transpose()
}

/// Fails `task_id` because its dependency `dep` ended CANCELLED or FAILED
/// (`task_failed` with `{"reason":"dependency_failed","dependency":dep}`);
/// a no-op when it is terminal already.
pub(super) async fn fail_dependent(
    conn: &mut PgConnection,
    task_id: TaskId,
    dep: TaskId,
    correlation: &str,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<()> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM tasks WHERE task_id = $1 FOR UPDATE")
            .bind(task_id.to_string())
            .fetch_optional(&mut *conn)
            .await?;
    if !matches!(status.as_deref(), Some("inactive" | "active")) {
        return Ok(());
    }
    // No pod can run: a task starts only once every dependency is
    // COMPLETED, and a COMPLETED task never fails afterwards.
    sqlx::query(
        "UPDATE tasks SET status = 'failed', live_version = 0, next_restart_at = NULL, \
         queued_seq = NULL, queued_at = NULL, waiting_dependencies = FALSE, pod_message = $1, \
         updated_at = $2 WHERE task_id = $3",
    )
    .bind(format!("dependency {dep} did not complete"))
    .bind(now)
    .bind(task_id.to_string())
    .execute(&mut *conn)
    .await?;
    let e = NewEvent {
        event: EventType::TaskFailed,
        data: json!({"reason": DEPENDENCY_FAILED, "dependency": dep.to_string()}),
        actor: SYSTEM_ACTOR,
        correlation,
    };
    append_event(conn, task_id, e, now, events).await
}

/// What one command's events did to dependents (called after every
/// command with the index of its first event): a COMPLETED task releases
/// each waiting dependent whose dependencies are all COMPLETED into the
/// capacity queue; a CANCELLED or FAILED one fails each live dependent,
/// and so on down the chain (those failures are events of this command
/// too).
pub(super) async fn settle(
    conn: &mut PgConnection,
    events: &mut Vec<EventRecord>,
    from: usize,
    now: i64,
) -> Result<()> {
    let mut i = from;
    while i < events.len() {
        let (task_id, kind, corr) = {
            let e = &events[i];
            (e.task_id, e.event_type.clone(), e.correlation_id.clone())
        };
        i += 1;
        let completed = kind == EventType::TaskCompleted.as_str();
        let failed =
            kind == EventType::TaskFailed.as_str() || kind == EventType::TaskCancelled.as_str();
        if !completed && !failed {
            continue;
        }
        for dependent in dependents(conn, task_id).await? {
            if failed {
                fail_dependent(conn, dependent, task_id, &corr, now, events).await?;
            } else {
                release(conn, dependent, task_id, now, events).await?;
            }
        }
    }
    Ok(())
}

async fn dependents(conn: &mut PgConnection, task_id: TaskId) -> Result<Vec<TaskId>> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT task_id FROM task_dependencies WHERE depends_on = $1 ORDER BY task_id",
    )
    .bind(task_id.to_string())
    .fetch_all(&mut *conn)
    .await?;
    ids.iter().map(|s| TaskId::from_db(s)).collect()
}

/// A waiting dependent whose dependencies are all COMPLETED now: out of
/// the wait and into the capacity queue, as the system.
async fn release(
    conn: &mut PgConnection,
    task_id: TaskId,
    completed: TaskId,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<()> {
    let waiting: Option<(bool, String)> = sqlx::query_as(
        "SELECT waiting_dependencies, pod_correlation_id FROM tasks WHERE task_id = $1 \
         AND status IN ('inactive', 'active') FOR UPDATE",
    )
    .bind(task_id.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    let Some((true, corr)) = waiting else {
        return Ok(());
    };
    if unmet(conn, task_id).await?.is_some() {
        return Ok(());
    }
    sqlx::query("UPDATE tasks SET waiting_dependencies = FALSE WHERE task_id = $1")
        .bind(task_id.to_string())
        .execute(&mut *conn)
        .await?;
    let cause = Cause {
        actor: SYSTEM_ACTOR.to_owned(),
        correlation: corr,
        authenticated_as: None,
    };
    let message = "its dependencies completed";
    super::queue::enqueue(conn, task_id, &cause, message, Some(completed), now, events).await?;
    Ok(())
}
