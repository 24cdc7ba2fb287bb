//! Read queries on PostgreSQL: the SQLite store's `queries` (and the timer
//! reads of its `timeouts`) in PostgreSQL's SQL. They run on the read pool
//! for RPCs and, for the rows a command decides on, inside the writer's
//! transaction (`get_task`, `get_archived_task` take any executor).
//! sqlx prepares and caches each statement per connection.

use futures::{Stream, StreamExt, TryStreamExt};
use sqlx::postgres::PgRow;
use sqlx::{Executor, PgPool, Postgres, QueryBuilder};

use super::queue_reads::{queue_ahead, set_position};
use crate::domain::limits::{MAX_PAGE_BYTES, WireSize};
use crate::domain::timeout::Timer;
use crate::domain::{
    EventRecord, EventsQuery, ListQuery, Order, OrderBy, Page, PodInfo, PodRef, PodStatus,
    TaskFilter, TaskId, TaskRecord,
};
use crate::error::Result;
use crate::store::rows::{EventRow, TaskRow, event_columns, task_columns};

/// One task, or `None`.
pub async fn get_task<'c>(
    c: impl Executor<'c, Database = Postgres>,
    id: TaskId,
) -> Result<Option<TaskRecord>> {
    let row: Option<PgRow> = sqlx::query(concat!(
        "SELECT ",
        task_columns!(),
        ", ",
        queue_ahead!(),
        " AS queue_ahead FROM tasks WHERE task_id = $1"
    ))
    .bind(id.to_string())
    .fetch_optional(c)
    .await?;
    row.map(|r| live_record(&r)).transpose()
}

/// A live `tasks` row selected with its `queue_ahead` count.
fn live_record(r: &PgRow) -> Result<TaskRecord> {
    let row: TaskRow = sqlx::FromRow::from_row(r)?;
    let ahead: Option<i64> = sqlx::Row::try_get(r, "queue_ahead")?;
    let mut t = TaskRecord::try_from(row)?;
    set_position(&mut t, ahead);
    Ok(t)
}

/// One archived task, or `None`.
pub async fn get_archived_task<'c>(
    c: impl Executor<'c, Database = Postgres>,
    id: TaskId,
) -> Result<Option<TaskRecord>> {
    let row: Option<TaskRow> = sqlx::query_as(concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks_archive WHERE task_id = $1"
    ))
    .bind(id.to_string())
    .fetch_optional(c)
    .await?;
    row.map(|r| {
        TaskRecord::try_from(r).map(|mut t| {
            t.archived = true;
            t
        })
    })
    .transpose()
}

/// The FROM and WHERE of a filter over `table`, with bound values (the
/// SQLite store's `push_filter`; the statement's shape depends only on
/// which fields are set).
pub(super) fn push_filter(b: &mut QueryBuilder<'_, Postgres>, f: &TaskFilter, table: &str) {
    let mut entries = f.metadata_equals.iter();
    match entries.next() {
        None => {
            b.push(format!(" FROM {table} WHERE TRUE"));
        }
        Some((k, v)) => {
            b.push(format!(
                " FROM task_metadata m JOIN {table} USING (task_id) WHERE m.key = "
            ));
            b.push_bind(k.clone());
            b.push(" AND m.value = ");
            b.push_bind(v.clone());
        }
    }
    for (k, v) in entries {
        b.push(" AND task_id IN (SELECT task_id FROM task_metadata WHERE key = ");
        b.push_bind(k.clone());
        b.push(" AND value = ");
        b.push_bind(v.clone());
        b.push(")");
    }
    if let Some(s) = f.status {
        b.push(" AND status = ");
        b.push_bind(s.as_db());
    }
    if let Some(p) = f.phase {
        b.push(" AND phase = ");
        b.push_bind(p.as_db());
    }
    if let Some(t) = f.created_after {
        b.push(" AND created_at > ");
        b.push_bind(t);
    }
    if let Some(by) = &f.created_by {
        b.push(" AND created_by = ");
        b.push_bind(by.clone());
    }
    // A queued task is stored as 'stopped' with a queue entry, or waiting
    // for its dependencies (as in SQLite).
    match f.pod_status {
        None => {}
        Some(PodStatus::Queued) => {
            b.push(" AND (queued_seq IS NOT NULL OR waiting_dependencies)");
        }
        Some(PodStatus::Stopped) => {
            b.push(
                " AND pod_status = 'stopped' AND queued_seq IS NULL AND NOT waiting_dependencies",
            );
        }
        Some(p) => {
            b.push(" AND pod_status = ");
            b.push_bind(p.as_db());
        }
    }
    if let Some(p) = f.priority {
        b.push(" AND priority = ");
        b.push_bind(p.as_db());
    }
}

/// ListTasks: filtered, ordered by the chosen time then task id, limited
/// and offset, cut at [`MAX_PAGE_BYTES`]; archived tasks merged in under
/// the one ORDER BY with `include_archived`.
pub async fn list_tasks(c: &PgPool, q: &ListQuery) -> Result<Page<TaskRecord>> {
    let mut b = QueryBuilder::new(concat!(
        "SELECT ",
        task_columns!(),
        ", FALSE AS archived, ",
        queue_ahead!(),
        " AS queue_ahead"
    ));
    push_filter(&mut b, &q.filter, "tasks");
    if q.filter.include_archived {
        b.push(concat!(
            " UNION ALL SELECT ",
            task_columns!(),
            ", TRUE, NULL::BIGINT"
        ));
        push_filter(&mut b, &q.filter, "tasks_archive");
    }
    // Column and direction come from enums, never from the request text.
    let col = match q.order_by {
        OrderBy::UpdatedAt => "updated_at",
        OrderBy::CreatedAt => "created_at",
    };
    let dir = match q.order {
        Order::Desc => "DESC",
        Order::Asc => "ASC",
    };
    b.push(format!(" ORDER BY {col} {dir}, task_id {dir} LIMIT "));
    b.push_bind(i64::from(q.limit));
    b.push(" OFFSET ");
    b.push_bind(i64::from(q.offset));
    let rows = b.build().fetch(c).map(|r| {
        let r: PgRow = r?;
        let archived: bool = sqlx::Row::try_get(&r, "archived")?;
        let mut t = live_record(&r)?;
        t.archived = archived;
        Ok(t)
    });
    page(rows).await
}

/// Collects streamed rows into a page of at most [`MAX_PAGE_BYTES`], as
/// the SQLite store's `fill_page`: rows after the cut are never read (the
/// stream is dropped, which ends the query).
async fn page<T: WireSize>(rows: impl Stream<Item = Result<T>>) -> Result<Page<T>> {
    let mut rows = std::pin::pin!(rows);
    let mut items = Vec::new();
    let mut used = 0usize;
    while let Some(row) = rows.try_next().await? {
        let size = row.wire_size_hint();
        if !items.is_empty() && used.saturating_add(size) > MAX_PAGE_BYTES {
            return Ok(Page {
                items,
                truncated: true,
            });
        }
        used = used.saturating_add(size);
        items.push(row);
    }
    Ok(Page {
        items,
        truncated: false,
    })
}

/// CountTasks.
pub async fn count_tasks(c: &PgPool, f: &TaskFilter) -> Result<u64> {
    let mut n = count_in(c, f, "tasks").await?;
    if f.include_archived {
        n += count_in(c, f, "tasks_archive").await?;
    }
    Ok(n)
}

async fn count_in(c: &PgPool, f: &TaskFilter, table: &str) -> Result<u64> {
    let mut b = QueryBuilder::new("SELECT COUNT(*)");
    push_filter(&mut b, f, table);
    let n: i64 = b.build_query_scalar().fetch_one(c).await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Whether a task's stream exists.
pub async fn stream_exists(c: &PgPool, id: TaskId) -> Result<bool> {
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM streams WHERE stream_id = $1")
        .bind(id.to_string())
        .fetch_optional(c)
        .await?;
    Ok(found.is_some())
}

fn records(rows: Vec<EventRow>) -> Result<Vec<EventRecord>> {
    rows.into_iter().map(EventRecord::try_from).collect()
}

/// GetTaskEvents: one task's events after a version, oldest first, cut at
/// [`MAX_PAGE_BYTES`] (archived events too with `include_archived`).
pub async fn task_events(c: &PgPool, q: &EventsQuery) -> Result<Page<EventRecord>> {
    let sql = if q.include_archived {
        concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE stream_id = $1 AND version > $2 UNION ALL SELECT ",
            event_columns!(),
            " FROM events_archive WHERE stream_id = $1 AND version > $2 ORDER BY version LIMIT $3"
        )
    } else {
        concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE stream_id = $1 AND version > $2 ORDER BY version LIMIT $3"
        )
    };
    let rows = sqlx::query_as::<_, EventRow>(sql)
        .bind(q.task_id.to_string())
        .bind(i64::try_from(q.after_version).unwrap_or(i64::MAX))
        .bind(i64::from(q.limit))
        .fetch(c)
        .map(|r| EventRecord::try_from(r?));
    page(rows).await
}

/// Events after a global position, oldest first, optionally of one task,
/// archived ones merged in by position (WatchEvents replay and catch-up).
pub async fn events_after(
    c: &PgPool,
    after: u64,
    task: Option<TaskId>,
    limit: u32,
) -> Result<Vec<EventRecord>> {
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let limit = i64::from(limit);
    let rows: Vec<EventRow> = match task {
        Some(id) => {
            sqlx::query_as(concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE stream_id = $1 AND position > $2 UNION ALL SELECT ",
                event_columns!(),
                " FROM events_archive WHERE stream_id = $1 AND position > $2 \
                 ORDER BY position LIMIT $3"
            ))
            .bind(id.to_string())
            .bind(after)
            .bind(limit)
            .fetch_all(c)
            .await?
        }
        None => {
            sqlx::query_as(concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE position > $1 UNION ALL SELECT ",
                event_columns!(),
                " FROM events_archive WHERE position > $1 ORDER BY position LIMIT $2"
            ))
            .bind(after)
            .bind(limit)
            .fetch_all(c)
            .await?
        }
    };
    records(rows)
}

/// Tasks whose pod is starting, running or unknown, with that pod, by task
/// id after `after`, cut at [`MAX_PAGE_BYTES`].
pub async fn active_pods(c: &PgPool, after: Option<TaskId>) -> Result<Page<(TaskId, PodInfo)>> {
    let after = after.map(|t| t.to_string()).unwrap_or_default();
    // The literal matches the partial index `tasks_with_pod`.
    let rows = sqlx::query_as::<_, TaskRow>(concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks WHERE pod_status <> 'stopped' AND task_id > $1 ORDER BY task_id"
    ))
    .bind(after)
    .fetch(c)
    .filter_map(|r| async move {
        match r
            .map_err(crate::error::Error::from)
            .and_then(TaskRecord::try_from)
        {
            Ok(t) => t.pod.map(|pod| Ok((t.task_id, pod))),
            Err(e) => Some(Err(e)),
        }
    });
    page(rows).await
}

/// How many tasks have a pod starting, running or unknown.
pub async fn count_active_pods(c: &PgPool) -> Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE pod_status <> 'stopped'")
        .fetch_one(c)
        .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The current pods the database places on `host_id`.
pub async fn pods_on_host(c: &PgPool, host_id: &str) -> Result<Vec<(PodRef, PodStatus)>> {
    let rows: Vec<(String, Option<String>, i64, String)> = sqlx::query_as(
        "SELECT task_id, pod_id, pod_generation, pod_status FROM tasks \
         WHERE pod_host = $1 AND pod_status <> 'stopped'",
    )
    .bind(host_id)
    .fetch_all(c)
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
            PodStatus::from_db(&status)?,
        ));
    }
    Ok(out)
}

/// Hosts that the database says run pods.
pub async fn hosts_with_pods(c: &PgPool) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT pod_host FROM tasks WHERE pod_status <> 'stopped' \
         AND pod_host IS NOT NULL",
    )
    .fetch_all(c)
    .await?)
}

/// Scheduled automatic restarts: (task, due at unix µs).
pub async fn scheduled_restarts(c: &PgPool) -> Result<Vec<(TaskId, i64)>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT task_id, next_restart_at FROM tasks WHERE next_restart_at IS NOT NULL \
         AND status = 'inactive'",
    )
    .fetch_all(c)
    .await?;
    rows.into_iter()
        .map(|(t, at)| Ok((TaskId::from_db(&t)?, at)))
        .collect()
}

/// The earliest run timeout, deadline or queue timeout (unix µs), if any.
pub async fn earliest_timer(c: &PgPool) -> Result<Option<i64>> {
    let at: Option<i64> = sqlx::query_scalar(
        "SELECT LEAST(\
           (SELECT MIN(pod_running_since + timeout_seconds * 1000000) FROM tasks \
            WHERE timeout_seconds IS NOT NULL AND pod_status = 'running'), \
           (SELECT MIN(deadline) FROM tasks \
            WHERE deadline IS NOT NULL AND status IN ('inactive', 'active')), \
           (SELECT MIN(queued_at + queue_timeout_seconds * 1000000) FROM tasks \
            WHERE queued_seq IS NOT NULL AND queue_timeout_seconds IS NOT NULL))",
    )
    .fetch_one(c)
    .await?;
    Ok(at)
}

/// Timers due at `now`, earliest first, at most `limit` of each kind.
pub async fn due_timers(c: &PgPool, now: i64, limit: u32) -> Result<Vec<Timer>> {
    type Row = (String, Option<String>, Option<String>, i64, i64, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT task_id, pod_id, pod_host, pod_generation, timeout_seconds, \
         pod_running_since + timeout_seconds * 1000000 AS due FROM tasks \
         WHERE timeout_seconds IS NOT NULL AND pod_status = 'running' \
         AND pod_running_since + timeout_seconds * 1000000 <= $1 ORDER BY due LIMIT $2",
    )
    .bind(now)
    .bind(i64::from(limit))
    .fetch_all(c)
    .await?;
    let mut out = Vec::new();
    for (task, pod_id, host, generation, timeout, at) in rows {
        // A running row always names its pod and host; one that does not
        // has nothing to stop.
        let (Some(pod_id), Some(host_id)) = (pod_id, host) else {
            continue;
        };
        out.push(Timer::PodTimeout {
            pod: PodRef {
                task_id: TaskId::from_db(&task)?,
                pod_id,
                generation: u64::try_from(generation).unwrap_or(0),
            },
            host_id,
            timeout_seconds: u32::try_from(timeout).unwrap_or(u32::MAX),
            at,
        });
    }
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT task_id, deadline FROM tasks WHERE deadline IS NOT NULL \
         AND status IN ('inactive', 'active') AND deadline <= $1 ORDER BY deadline LIMIT $2",
    )
    .bind(now)
    .bind(i64::from(limit))
    .fetch_all(c)
    .await?;
    for (task, at) in rows {
        out.push(Timer::Deadline {
            task_id: TaskId::from_db(&task)?,
            at,
        });
    }
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT task_id, queued_seq, queued_at + queue_timeout_seconds * 1000000 AS due \
         FROM tasks WHERE queued_seq IS NOT NULL AND queue_timeout_seconds IS NOT NULL \
         AND queued_at + queue_timeout_seconds * 1000000 <= $1 ORDER BY due LIMIT $2",
    )
    .bind(now)
    .bind(i64::from(limit))
    .fetch_all(c)
    .await?;
    for (task, seq, at) in rows {
        out.push(Timer::QueueExpiry {
            task_id: TaskId::from_db(&task)?,
            seq,
            at,
        });
    }
    Ok(out)
}
