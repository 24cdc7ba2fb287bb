//! Read queries. They run on the read pool for RPCs and, for the rows a
//! command decides on, on the writer's transaction; hence the generic
//! executor.

use sqlx::{Executor, QueryBuilder, Sqlite};

use super::pods::PodRef;
use super::rows::{EVENT_COLUMNS, EventRow, TASK_COLUMNS, TaskRow};
use crate::domain::{
    EventRecord, EventsQuery, ListQuery, Order, OrderBy, PodInfo, TaskFilter, TaskId, TaskRecord,
};
use crate::error::Result;

/// One task, or `None`.
pub async fn get_task<'e, E>(db: E, id: TaskId) -> Result<Option<TaskRecord>>
where
    E: Executor<'e, Database = Sqlite>,
{
    let row: Option<TaskRow> = sqlx::query_as(&format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = ?"
    ))
    .bind(id.to_string())
    .fetch_optional(db)
    .await?;
    row.map(TaskRecord::try_from).transpose()
}

fn push_filter(qb: &mut QueryBuilder<'_, Sqlite>, f: &TaskFilter) {
    qb.push(" WHERE 1 = 1");
    if let Some(s) = f.status {
        qb.push(" AND status = ").push_bind(s.as_db());
    }
    if let Some(p) = f.phase {
        qb.push(" AND phase = ").push_bind(p.as_db());
    }
    if let Some(t) = f.created_after {
        qb.push(" AND created_at > ").push_bind(t);
    }
    if let Some(by) = &f.created_by {
        qb.push(" AND created_by = ").push_bind(by.clone());
    }
}

/// ListTasks: filtered, ordered by the chosen time then task id (same
/// direction, so pages are stable), limited and offset.
pub async fn list_tasks<'e, E>(db: E, q: &ListQuery) -> Result<Vec<TaskRecord>>
where
    E: Executor<'e, Database = Sqlite>,
{
    let mut qb = QueryBuilder::new(format!("SELECT {TASK_COLUMNS} FROM tasks"));
    push_filter(&mut qb, &q.filter);
    // Column and direction come from enums, never from the request text.
    let col = match q.order_by {
        OrderBy::UpdatedAt => "updated_at",
        OrderBy::CreatedAt => "created_at",
    };
    let dir = match q.order {
        Order::Desc => "DESC",
        Order::Asc => "ASC",
    };
    qb.push(format!(" ORDER BY {col} {dir}, task_id {dir} LIMIT "))
        .push_bind(i64::from(q.limit))
        .push(" OFFSET ")
        .push_bind(i64::from(q.offset));
    let rows: Vec<TaskRow> = qb.build_query_as().fetch_all(db).await?;
    rows.into_iter().map(TaskRecord::try_from).collect()
}

/// CountTasks.
pub async fn count_tasks<'e, E>(db: E, f: &TaskFilter) -> Result<u64>
where
    E: Executor<'e, Database = Sqlite>,
{
    let mut qb = QueryBuilder::new("SELECT COUNT(*) FROM tasks");
    push_filter(&mut qb, f);
    let n: i64 = qb.build_query_scalar().fetch_one(db).await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Whether a task's stream exists.
pub async fn stream_exists<'e, E>(db: E, id: TaskId) -> Result<bool>
where
    E: Executor<'e, Database = Sqlite>,
{
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM streams WHERE stream_id = ?")
        .bind(id.to_string())
        .fetch_optional(db)
        .await?;
    Ok(found.is_some())
}

/// GetTaskEvents: one task's events after a version, oldest first.
pub async fn task_events<'e, E>(db: E, q: &EventsQuery) -> Result<Vec<EventRecord>>
where
    E: Executor<'e, Database = Sqlite>,
{
    let rows: Vec<EventRow> = sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ? AND version > ? \
         ORDER BY version LIMIT ?"
    ))
    .bind(q.task_id.to_string())
    .bind(i64::try_from(q.after_version).unwrap_or(i64::MAX))
    .bind(i64::from(q.limit))
    .fetch_all(db)
    .await?;
    rows.into_iter().map(EventRecord::try_from).collect()
}

/// Events after a global position, oldest first, optionally of one task
/// (WatchEvents replay and catch-up).
pub async fn events_after<'e, E>(
    db: E,
    after: u64,
    task: Option<TaskId>,
    limit: u32,
) -> Result<Vec<EventRecord>>
where
    E: Executor<'e, Database = Sqlite>,
{
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let rows: Vec<EventRow> =
        match task {
            // Within a stream, versions are assigned in position order (single
            // writer): ordering by version is position order, and the
            // (stream_id, version) index serves it without a sort.
            Some(id) => {
                sqlx::query_as(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ? AND position > ? \
                 ORDER BY version LIMIT ?"
                ))
                .bind(id.to_string())
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(db)
                .await?
            }
            None => sqlx::query_as(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"
            ))
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(db)
            .await?,
        };
    rows.into_iter().map(EventRecord::try_from).collect()
}

/// Tasks whose pod is starting, running or unknown, with that pod.
pub async fn active_pods<'e, E>(db: E) -> Result<Vec<(TaskId, PodInfo)>>
where
    E: Executor<'e, Database = Sqlite>,
{
    // The literal matches the partial index `tasks_with_pod`, which a bound
    // parameter would not.
    let rows: Vec<TaskRow> = sqlx::query_as(&format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE pod_status != 'stopped' ORDER BY task_id"
    ))
    .fetch_all(db)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let t = TaskRecord::try_from(r)?;
        if let Some(pod) = t.pod {
            out.push((t.task_id, pod));
        }
    }
    Ok(out)
}

/// The current pods the database places on `host_id` (pod status not
/// stopped): (pod, pod status).
pub async fn pods_on_host(
    conn: impl sqlx::Executor<'_, Database = sqlx::Sqlite>,
    host_id: &str,
) -> Result<Vec<(PodRef, crate::domain::PodStatus)>> {
    let rows: Vec<(String, Option<String>, i64, String)> = sqlx::query_as(
        "SELECT task_id, pod_id, pod_generation, pod_status FROM tasks \
         WHERE pod_host = ? AND pod_status != 'stopped'",
    )
    .bind(host_id)
    .fetch_all(conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (task_id, pod_id, generation, status) in rows {
        let Some(pod_id) = pod_id else { continue };
        out.push((
            PodRef {
                task_id: TaskId::from_db(&task_id)?,
                pod_id,
                generation: u64::try_from(generation).unwrap_or(0),
            },
            crate::domain::PodStatus::from_db(&status)?,
        ));
    }
    Ok(out)
}

/// Hosts that the database says run pods (for start-up).
pub async fn hosts_with_pods(
    conn: impl sqlx::Executor<'_, Database = sqlx::Sqlite>,
) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT pod_host FROM tasks WHERE pod_status != 'stopped' AND pod_host IS NOT NULL",
    )
    .fetch_all(conn)
    .await?)
}

/// Scheduled automatic restarts: (task, due at unix µs).
pub async fn scheduled_restarts(
    conn: impl sqlx::Executor<'_, Database = sqlx::Sqlite>,
) -> Result<Vec<(TaskId, i64)>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT task_id, next_restart_at FROM tasks WHERE next_restart_at IS NOT NULL AND status = 'inactive'",
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|(t, at)| Ok((TaskId::from_db(&t)?, at)))
        .collect()
}
