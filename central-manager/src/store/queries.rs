//! Read queries. They run on a read connection for RPCs and, for the rows a
//! command decides on, inside the writer's transaction; both are a
//! `rusqlite::Connection` (a transaction derefs to one).
//!
//! Statements are prepared once per connection and cached
//! (`prepare_cached`), so a call is bind + step + decode.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::pods::PodRef;
use super::rows::{EventRow, TASK_COLUMN_COUNT, TaskRow, event_columns, task_columns};
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
    let mut task = row.map(TaskRecord::try_from).transpose()?;
    if let Some(t) = task.as_mut() {
        super::queue::fill_position(c, t)?;
    }
    Ok(task)
}

/// One archived task, or `None`.
pub fn get_archived_task(c: &Connection, id: TaskId) -> Result<Option<TaskRecord>> {
    let row = c
        .prepare_cached(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks_archive WHERE task_id = ?"
        ))?
        .query_row([id.to_string()], TaskRow::from_row)
        .optional()?;
    row.map(|r| archived(TaskRecord::try_from(r))).transpose()
}

fn archived(t: Result<TaskRecord>) -> Result<TaskRecord> {
    t.map(|mut t| {
        t.archived = true;
        t
    })
}

/// A task row with the `archived` flag that the listing queries select
/// after the task columns.
fn flagged_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(TaskRow, bool)> {
    Ok((TaskRow::from_row(r)?, r.get::<_, bool>(TASK_COLUMN_COUNT)?))
}

/// The WHERE clause of a filter and its parameters. Only the shape of the
/// SQL depends on the filter (which fields are set), never a value, so the
/// number of distinct statements is small and each is cached.
///
/// `metadata_equals` makes the query start from the `task_metadata` index
/// (its first entry, with CROSS JOIN so SQLite keeps that loop outermost):
/// "the tasks of schedule X" reads X's tasks, not every task.
fn push_filter(sql: &mut String, args: &mut Vec<Value>, f: &TaskFilter, table: &str) {
    let mut entries = f.metadata_equals.iter();
    match entries.next() {
        None => sql.push_str(&format!(" FROM {table} WHERE 1 = 1")),
        Some((k, v)) => {
            sql.push_str(&format!(
                " FROM task_metadata m CROSS JOIN {table} USING (task_id) \
                 WHERE m.key = ? AND m.value = ?"
            ));
            args.push(Value::Text(k.clone()));
            args.push(Value::Text(v.clone()));
        }
    }
    for (k, v) in entries {
        sql.push_str(
            " AND task_id IN (SELECT task_id FROM task_metadata WHERE key = ? AND value = ?)",
        );
        args.push(Value::Text(k.clone()));
        args.push(Value::Text(v.clone()));
    }
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
    // A queued task is stored as 'stopped' with a queue entry (migration
    // 20260501000001_queue), or waiting for its dependencies (migration
    // 20260601000001_dependencies).
    match f.pod_status {
        None => {}
        Some(PodStatus::Queued) => {
            sql.push_str(" AND (queued_seq IS NOT NULL OR waiting_dependencies = 1)");
        }
        Some(PodStatus::Stopped) => {
            sql.push_str(
                " AND pod_status = 'stopped' AND queued_seq IS NULL AND waiting_dependencies = 0",
            );
        }
        Some(p) => {
            sql.push_str(" AND pod_status = ?");
            args.push(Value::Text(p.as_db().to_owned()));
        }
    }
    if let Some(p) = f.priority {
        sql.push_str(" AND priority = ?");
        args.push(Value::Integer(p.as_db()));
    }
}

/// ListTasks: filtered, ordered by the chosen time then task id (same
/// direction, so pages are stable), limited and offset, and cut (rows not
/// even read) once the page would pass [`MAX_PAGE_BYTES`].
///
/// With `include_archived`, the same query over `tasks_archive` is merged
/// in (UNION ALL under the one ORDER BY), so pages stay stable across both.
pub fn list_tasks(c: &Connection, q: &ListQuery) -> Result<Page<TaskRecord>> {
    let mut sql = String::from(concat!("SELECT ", task_columns!(), ", 0 AS archived"));
    let mut args = Vec::with_capacity(8);
    push_filter(&mut sql, &mut args, &q.filter, "tasks");
    if q.filter.include_archived {
        sql.push_str(concat!(" UNION ALL SELECT ", task_columns!(), ", 1"));
        push_filter(&mut sql, &mut args, &q.filter, "tasks_archive");
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
    // Newest (or oldest) first among one metadata entry's tasks: in the
    // order of `task_metadata_by_value`, which holds the creation time, so
    // a page reads its own rows and no sort of every match is needed.
    let by_entry = !q.filter.include_archived
        && !q.filter.metadata_equals.is_empty()
        && q.order_by == OrderBy::CreatedAt;
    let order = if by_entry {
        format!("m.task_created_at {dir}, m.task_id {dir}")
    } else {
        format!("{col} {dir}, task_id {dir}")
    };
    sql.push_str(&format!(" ORDER BY {order} LIMIT ? OFFSET ?"));
    args.push(Value::Integer(i64::from(q.limit)));
    args.push(Value::Integer(i64::from(q.offset)));
    let mut st = c.prepare_cached(&sql)?;
    let rows = st.query_map(params_from_iter(args), flagged_row)?;
    let mut page = fill_page(
        rows.map(|r| {
            let (row, is_archived) = r?;
            let t = TaskRecord::try_from(row);
            if is_archived { archived(t) } else { t }
        }),
        MAX_PAGE_BYTES,
    )?;
    for t in &mut page.items {
        super::queue::fill_position(c, t)?;
    }
    Ok(page)
}

/// `SELECT task_id` of the live tasks matching `f`, then `tail` (more
/// conditions, ORDER BY, `LIMIT ?`) bound to `limit`.
pub fn filtered_ids(f: &TaskFilter, tail: &str, limit: i64) -> (String, Vec<Value>) {
    let mut sql = String::from("SELECT task_id");
    let mut args = Vec::with_capacity(8);
    push_filter(&mut sql, &mut args, f, "tasks");
    sql.push(' ');
    sql.push_str(tail);
    args.push(Value::Integer(limit));
    (sql, args)
}

/// CountTasks.
pub fn count_tasks(c: &Connection, f: &TaskFilter) -> Result<u64> {
    let mut n = count_in(c, f, "tasks")?;
    if f.include_archived {
        n += count_in(c, f, "tasks_archive")?;
    }
    Ok(n)
}

fn count_in(c: &Connection, f: &TaskFilter, table: &str) -> Result<u64> {
    let mut sql = String::from("SELECT COUNT(*)");
    let mut args = Vec::with_capacity(4);
    push_filter(&mut sql, &mut args, f, table);
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
///
/// With `include_archived`, an archived task's events (in
/// `events_archive`) are read too; a task's events are all in one table or
/// all in the other, so the union costs one empty index probe.
pub fn task_events(c: &Connection, q: &EventsQuery) -> Result<Page<EventRecord>> {
    let mut st = if q.include_archived {
        c.prepare_cached(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE stream_id = ?1 AND version > ?2 UNION ALL SELECT ",
            event_columns!(),
            " FROM events_archive WHERE stream_id = ?1 AND version > ?2 ORDER BY version LIMIT ?3"
        ))?
    } else {
        c.prepare_cached(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE stream_id = ? AND version > ? ORDER BY version LIMIT ?"
        ))?
    };
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
///
/// Archived events keep their positions and are read from
/// `events_archive` merged by position (a compound SELECT under one ORDER
/// BY is a merge of two position-ordered scans in SQLite, stopped by the
/// LIMIT), so a watcher resuming inside an archived range still gets every
/// event after its position, in order, with no gap.
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
                " FROM events WHERE stream_id = ?1 AND position > ?2 UNION ALL SELECT ",
                event_columns!(),
                " FROM events_archive WHERE stream_id = ?1 AND position > ?2 \
                 ORDER BY position LIMIT ?3"
            ))?;
            let rows = st.query_map(params![id.to_string(), after, limit], EventRow::from_row)?;
            collect_events(rows)
        }
        None => {
            let mut st = c.prepare_cached(concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE position > ?1 UNION ALL SELECT ",
                event_columns!(),
                " FROM events_archive WHERE position > ?1 ORDER BY position LIMIT ?2"
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
