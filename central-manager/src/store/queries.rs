//! Read queries. They run on a read connection for RPCs and, for the rows a
//! command decides on, inside the writer's transaction; both are a
//! `rusqlite::Connection` (a transaction derefs to one).
//!
//! Statements are prepared once per connection and cached
//! (`prepare_cached`), so a call is bind + step + decode.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::pods::PodRef;
use super::rows::{EventRow, TaskRow, event_columns, task_columns};
use crate::domain::limits::{MAX_PAGE_BYTES, fill_page};
use crate::domain::{
    EventRecord, EventsQuery, ListQuery, Order, OrderBy, Page, PodInfo, PodStatus, TaskFilter,
    TaskId, TaskRecord,
};
use crate::error::Result;

/// One task, or `None`.
pub fn get_task(c: &Connection, id: TaskId) -> Result<Option<TaskRecord>> {
    let row = c
        .prepare_cached(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE task_id = ?"
        ))?
        .query_row([id.to_string()], TaskRow::from_row)
        .optional()?;
    row.map(TaskRecord::try_from).transpose()
}

/// The WHERE clause of a filter and its parameters. Only the shape of the
/// SQL depends on the filter (which fields are set), never a value, so the
/// number of distinct statements is small and each is cached.
fn push_filter(sql: &mut String, args: &mut Vec<Value>, f: &TaskFilter) {
    sql.push_str(" WHERE 1 = 1");
    if let Some(s) = f.status {
        sql.push_str(" AND status = ?");
        args.push(Value::Text(s.as_db().to_owned()));
    }
    if let Some(p) = f.phase {
        sql.push_str(" AND phase = ?");
        args.push(Value::Text(p.as_db().to_owned()));
    }
    if let Some(t) = f.created_after {
        sql.push_str(" AND created_at > ?");
        args.push(Value::Integer(t));
    }
    if let Some(by) = &f.created_by {
        sql.push_str(" AND created_by = ?");
        args.push(Value::Text(by.clone()));
    }
}

/// ListTasks: filtered, ordered by the chosen time then task id (same
/// direction, so pages are stable), limited and offset, and cut (rows not
/// even read) once the page would pass [`MAX_PAGE_BYTES`].
pub fn list_tasks(c: &Connection, q: &ListQuery) -> Result<Page<TaskRecord>> {
    let mut sql = String::from(concat!("SELECT ", task_columns!(), " FROM tasks"));
    let mut args = Vec::with_capacity(6);
    push_filter(&mut sql, &mut args, &q.filter);
    // Column and direction come from enums, never from the request text.
    let col = match q.order_by {
        OrderBy::UpdatedAt => "updated_at",
        OrderBy::CreatedAt => "created_at",
    };
    let dir = match q.order {
        Order::Desc => "DESC",
        Order::Asc => "ASC",
    };
    sql.push_str(&format!(
        " ORDER BY {col} {dir}, task_id {dir} LIMIT ? OFFSET ?"
    ));
    args.push(Value::Integer(i64::from(q.limit)));
    args.push(Value::Integer(i64::from(q.offset)));
    let mut st = c.prepare_cached(&sql)?;
    let rows = st.query_map(params_from_iter(args), TaskRow::from_row)?;
    fill_page(rows.map(|r| TaskRecord::try_from(r?)), MAX_PAGE_BYTES)
}

/// CountTasks.
pub fn count_tasks(c: &Connection, f: &TaskFilter) -> Result<u64> {
    let mut sql = String::from("SELECT COUNT(*) FROM tasks");
    let mut args = Vec::with_capacity(4);
    push_filter(&mut sql, &mut args, f);
    let n: i64 = c
        .prepare_cached(&sql)?
        .query_row(params_from_iter(args), |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Whether a task's stream exists.
pub fn stream_exists(c: &Connection, id: TaskId) -> Result<bool> {
    Ok(
        c.prepare_cached("SELECT 1 FROM streams WHERE stream_id = ?")?
            .exists([id.to_string()])?,
    )
}

fn collect_events(
    rows: impl Iterator<Item = rusqlite::Result<EventRow>>,
) -> Result<Vec<EventRecord>> {
    let mut out = Vec::new();
    for r in rows {
        out.push(EventRecord::try_from(r?)?);
    }
    Ok(out)
}

/// GetTaskEvents: one task's events after a version, oldest first, cut at
/// [`MAX_PAGE_BYTES`].
pub fn task_events(c: &Connection, q: &EventsQuery) -> Result<Page<EventRecord>> {
    let mut st = c.prepare_cached(concat!(
        "SELECT ",
        event_columns!(),
        " FROM events WHERE stream_id = ? AND version > ? ORDER BY version LIMIT ?"
    ))?;
    let rows = st.query_map(
        params![
            q.task_id.to_string(),
            i64::try_from(q.after_version).unwrap_or(i64::MAX),
            i64::from(q.limit)
        ],
        EventRow::from_row,
    )?;
    fill_page(rows.map(|r| EventRecord::try_from(r?)), MAX_PAGE_BYTES)
}

/// Events after a global position, oldest first, optionally of one task
/// (WatchEvents replay and catch-up).
pub fn events_after(
    c: &Connection,
    after: u64,
    task: Option<TaskId>,
    limit: u32,
) -> Result<Vec<EventRecord>> {
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let limit = i64::from(limit);
    match task {
        // Within a stream, versions are assigned in position order (single
        // writer): ordering by version is position order, and the
        // (stream_id, version) index serves it without a sort.
        Some(id) => {
            let mut st = c.prepare_cached(concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE stream_id = ? AND position > ? ORDER BY version LIMIT ?"
            ))?;
            let rows = st.query_map(params![id.to_string(), after, limit], EventRow::from_row)?;
            collect_events(rows)
        }
        None => {
            let mut st = c.prepare_cached(concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE position > ? ORDER BY position LIMIT ?"
            ))?;
            let rows = st.query_map(params![after, limit], EventRow::from_row)?;
            collect_events(rows)
        }
    }
}

/// Tasks whose pod is starting, running or unknown, with that pod, by task
/// id after `after` (a truncated listing's last), cut at [`MAX_PAGE_BYTES`].
pub fn active_pods(c: &Connection, after: Option<TaskId>) -> Result<Page<(TaskId, PodInfo)>> {
    // The literal matches the partial index `tasks_with_pod`, which a bound
    // parameter would not.
    let mut st = c.prepare_cached(concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks WHERE pod_status != 'stopped' AND task_id > ? ORDER BY task_id"
    ))?;
    let after = after.map(|t| t.to_string()).unwrap_or_default();
    let rows = st
        .query_map([after], TaskRow::from_row)?
        .map(|r| TaskRecord::try_from(r?))
        .filter_map(|t| match t {
            Ok(t) => t.pod.map(|pod| Ok((t.task_id, pod))),
            Err(e) => Some(Err(e)),
        });
    fill_page(rows, MAX_PAGE_BYTES)
}

/// How many tasks have a pod starting, running or unknown.
pub fn count_active_pods(c: &Connection) -> Result<u64> {
    let n: i64 = c
        .prepare_cached("SELECT COUNT(*) FROM tasks WHERE pod_status != 'stopped'")?
        .query_row([], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The current pods the database places on `host_id` (pod status not
/// stopped): (pod, pod status).
pub fn pods_on_host(c: &Connection, host_id: &str) -> Result<Vec<(PodRef, PodStatus)>> {
    let mut st = c.prepare_cached(
        "SELECT task_id, pod_id, pod_generation, pod_status FROM tasks \
         WHERE pod_host = ? AND pod_status != 'stopped'",
    )?;
    let rows = st.query_map([host_id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for r in rows {
        let (task_id, pod_id, generation, status) = r?;
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

/// Hosts that the database says run pods (for start-up).
pub fn hosts_with_pods(c: &Connection) -> Result<Vec<String>> {
    let mut st = c.prepare_cached(
        "SELECT DISTINCT pod_host FROM tasks WHERE pod_status != 'stopped' AND pod_host IS NOT NULL",
    )?;
    let rows = st.query_map([], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Scheduled automatic restarts: (task, due at unix µs).
pub fn scheduled_restarts(c: &Connection) -> Result<Vec<(TaskId, i64)>> {
    let mut st = c.prepare_cached(
        "SELECT task_id, next_restart_at FROM tasks WHERE next_restart_at IS NOT NULL AND status = 'inactive'",
    )?;
    let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut out = Vec::new();
    for r in rows {
        let (t, at) = r?;
        out.push((TaskId::from_db(&t)?, at));
    }
    Ok(out)
}
