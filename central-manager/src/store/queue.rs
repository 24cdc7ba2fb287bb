//! The durable queue in the `tasks` table (migration
//! `20260501000001_queue`): a queued task is a live row with no pod and a
//! queue entry (`queued_seq`, the position of its `pod_queued` event, and
//! `queued_at`). The order is (priority DESC, queued_seq) per template,
//! read through the `tasks_queue` index, so it survives a restart.
//!
//! Writes (run in the writer's transaction, conditional on the row):
//! enqueue, unqueue (StopPod) and expiry. The start of a queued task is
//! the ordinary claim (`store::pods`), which clears the entry.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::json;

use super::commands::{append_event, note_principal};
use crate::core::ports::queue::{QueueOutcome, QueueWrite};
use crate::core::ports::store::QueueStats;
use crate::domain::dependencies::WAITING_FOR_DEPENDENCIES;
use crate::domain::queue::WAITING_FOR_CAPACITY;
use crate::domain::{
    Cause, EventRecord, EventType, PodStatus, Priority, QueueHead, SYSTEM_ACTOR, TaskId,
    TaskRecord, TaskStatus, decide_start, ensure_not_terminal,
};
use crate::error::{Error, Result};

/// Runs one queue write.
pub fn apply(
    conn: &Connection,
    w: &QueueWrite,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<QueueOutcome> {
    match w {
        QueueWrite::Enqueue {
            task_id,
            cause,
            message,
        } => enqueue(conn, *task_id, cause, message, None, now, events),
        QueueWrite::Unqueue {
            task_id,
            cause,
            reason,
        } => unqueue(conn, *task_id, cause, reason, now, events),
        QueueWrite::Expire { task_id, seq } => expire(conn, *task_id, *seq, now, events),
    }
}

/// The queue columns of a row.
struct QueueRow {
    status: String,
    pod_status: String,
    priority: i64,
    template: String,
    queue_timeout_seconds: Option<i64>,
    queued_seq: Option<i64>,
    queued_at: Option<i64>,
    waiting_dependencies: bool,
}

fn queue_row(conn: &Connection, task_id: TaskId) -> Result<Option<QueueRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT status, pod_status, priority, template, queue_timeout_seconds, queued_seq, \
             queued_at, waiting_dependencies FROM tasks WHERE task_id = ?",
        )?
        .query_row([task_id.to_string()], |r| {
            Ok(QueueRow {
                status: r.get(0)?,
                pod_status: r.get(1)?,
                priority: r.get(2)?,
                template: r.get(3)?,
                queue_timeout_seconds: r.get(4)?,
                queued_seq: r.get(5)?,
                queued_at: r.get(6)?,
                waiting_dependencies: r.get(7)?,
            })
        })
        .optional()?)
}

/// Queues a live task with no pod: ACTIVE, `pod_queued`, its entry at the
/// event's position. The refusals are StartPod's (ALREADY_*,
/// ALREADY_STARTED, POD_STATE_UNKNOWN). A pending automatic restart is
/// replaced by the queue entry (the caller asked for a start now).
pub(super) fn enqueue(
    conn: &Connection,
    task_id: TaskId,
    cause: &Cause,
    message: &str,
    released_by: Option<TaskId>,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<QueueOutcome> {
    let row = queue_row(conn, task_id)?.ok_or(Error::TaskNotFound(task_id))?;
    let status = TaskStatus::from_db(&row.status)?;
    ensure_not_terminal(task_id, status)?;
    if row.queued_seq.is_some() || row.waiting_dependencies {
        return Ok(QueueOutcome::Queued { already: true });
    }
    decide_start(task_id, status, PodStatus::from_db(&row.pod_status)?)?;
    // A dependency not COMPLETED yet: the task waits for it outside the
    // capacity queue (`store::dependencies` moves it in).
    let unmet = super::dependencies::unmet(conn, task_id)?;
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
        data[crate::domain::dependencies::RELEASED_BY] = json!(dep.to_string());
    }
    if let Some(s) = row.queue_timeout_seconds {
        data["queue_timeout_seconds"] = json!(s);
    }
    note_principal(&mut data, cause.authenticated_as.as_deref());
    let corr = cause.correlation.clone();
    append_event(
        conn,
        task_id,
        EventType::PodQueued,
        data,
        &cause.actor,
        &corr,
        now,
        events,
    )?;
    if unmet.is_some() {
        conn.prepare_cached(
            "UPDATE tasks SET status = 'active', waiting_dependencies = 1, next_restart_at = NULL, \
             pod_message = ?, pod_correlation_id = ?, updated_at = ? WHERE task_id = ?",
        )?
        .execute(params![message, corr, now, task_id.to_string()])?;
        return Ok(QueueOutcome::Queued { already: false });
    }
    let seq = events
        .last()
        .and_then(|e| i64::try_from(e.position).ok())
        .ok_or_else(|| Error::Internal("pod_queued has no position".into()))?;
    // The pod's correlation becomes the queueing request's: the automatic
    // pod_started of the dispatcher carries it.
    conn.prepare_cached(
        "UPDATE tasks SET status = 'active', queued_seq = ?, queued_at = ?, next_restart_at = NULL, \
         pod_message = ?, pod_correlation_id = ?, updated_at = ? WHERE task_id = ?",
    )?
    .execute(params![
        seq,
        now,
        message,
        corr,
        now,
        task_id.to_string()
    ])?;
    Ok(QueueOutcome::Queued { already: false })
}

/// StopPod on a queued task: INACTIVE, out of the queue, `pod_stopped`
/// with `{"queued": true}`.
fn unqueue(
    conn: &Connection,
    task_id: TaskId,
    cause: &Cause,
    reason: &str,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<QueueOutcome> {
    let row = queue_row(conn, task_id)?.ok_or(Error::TaskNotFound(task_id))?;
    ensure_not_terminal(task_id, TaskStatus::from_db(&row.status)?)?;
    if row.queued_seq.is_none() && !row.waiting_dependencies {
        return Ok(QueueOutcome::NotQueued);
    }
    leave_queue(conn, task_id, "", now)?;
    let mut data = json!({"queued": true, "reason": reason});
    note_principal(&mut data, cause.authenticated_as.as_deref());
    append_event(
        conn,
        task_id,
        EventType::PodStopped,
        data,
        &cause.actor,
        &cause.correlation,
        now,
        events,
    )?;
    Ok(QueueOutcome::Removed)
}

/// The queue timeout of entry `seq` passed: INACTIVE, `queue_expired`.
fn expire(
    conn: &Connection,
    task_id: TaskId,
    seq: i64,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<QueueOutcome> {
    let Some(row) = queue_row(conn, task_id)? else {
        return Ok(QueueOutcome::NotQueued);
    };
    let (Some(queued_at), Some(timeout)) = (row.queued_at, row.queue_timeout_seconds) else {
        return Ok(QueueOutcome::NotQueued);
    };
    let timeout = u32::try_from(timeout).unwrap_or(u32::MAX);
    let due = crate::domain::queue::expires_at(queued_at, timeout);
    if row.queued_seq != Some(seq) || due > now {
        return Ok(QueueOutcome::NotQueued);
    }
    let message = format!("waited in the queue longer than {timeout} s");
    leave_queue(conn, task_id, &message, now)?;
    let corr: String = conn
        .prepare_cached("SELECT pod_correlation_id FROM tasks WHERE task_id = ?")?
        .query_row([task_id.to_string()], |r| r.get(0))?;
    append_event(
        conn,
        task_id,
        EventType::QueueExpired,
        json!({"queued_at": queued_at, "queue_timeout_seconds": timeout}),
        SYSTEM_ACTOR,
        &corr,
        now,
        events,
    )?;
    Ok(QueueOutcome::Removed)
}

fn leave_queue(conn: &Connection, task_id: TaskId, message: &str, now: i64) -> Result<()> {
    conn.prepare_cached(
        "UPDATE tasks SET status = 'inactive', queued_seq = NULL, queued_at = NULL, \
         waiting_dependencies = 0, pod_message = ?, updated_at = ? WHERE task_id = ?",
    )?
    .execute(params![message, now, task_id.to_string()])?;
    Ok(())
}

fn head_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, i64, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
}

fn to_head((task, priority, seq): (String, i64, i64)) -> Result<QueueHead> {
    Ok(QueueHead {
        task_id: TaskId::from_db(&task)?,
        priority: Priority::from_db(priority)?,
        seq,
    })
}

/// The head of `template`'s queue: the first `tasks_queue` entry.
pub fn queue_head(c: &Connection, template: &str) -> Result<Option<QueueHead>> {
    Ok(queue_front(c, template, 1)?.into_iter().next())
}

/// The first `limit` entries of `template`'s queue, in dispatch order.
pub fn queue_front(c: &Connection, template: &str, limit: u32) -> Result<Vec<QueueHead>> {
    let mut st = c.prepare_cached(
        "SELECT task_id, priority, queued_seq FROM tasks \
         WHERE template = ? AND queued_seq IS NOT NULL \
         ORDER BY priority DESC, queued_seq LIMIT ?",
    )?;
    let rows = st.query_map(params![template, i64::from(limit)], head_row)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(to_head(r?)?);
    }
    Ok(out)
}

/// The head of every template's queue: one index seek per template (a
/// skip over `tasks_queue`'s leading column).
pub fn queue_heads(c: &Connection) -> Result<Vec<(String, QueueHead)>> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let next: Option<String> = c
            .prepare_cached(
                "SELECT MIN(template) FROM tasks \
                 WHERE queued_seq IS NOT NULL AND template > COALESCE(?, '')",
            )?
            .query_row([&after], |r| r.get(0))?;
        let Some(template) = next else {
            return Ok(out);
        };
        if let Some(head) = queue_head(c, &template)? {
            out.push((template.clone(), head));
        }
        after = Some(template);
    }
}

/// Queued tasks per priority and the oldest enqueue time.
pub fn queue_stats(c: &Connection) -> Result<QueueStats> {
    let mut depth = Vec::with_capacity(Priority::ALL.len());
    // Counts from the buckets; the oldest from `tasks_queued_by_priority`.
    let mut st = c.prepare_cached(
        "SELECT (SELECT COALESCE(SUM(n), 0) FROM queue_totals WHERE priority = ?1), \
         (SELECT MIN(queued_at) FROM tasks WHERE queued_seq IS NOT NULL AND priority = ?1)",
    )?;
    let mut oldest: Option<i64> = None;
    for p in Priority::ALL {
        let (n, min): (i64, Option<i64>) =
            st.query_row([p.as_db()], |r| Ok((r.get(0)?, r.get(1)?)))?;
        depth.push((p, u64::try_from(n).unwrap_or(0)));
        oldest = match (oldest, min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(QueueStats {
        depth,
        oldest_queued_at: oldest,
    })
}

/// Fills a queued task's 1-based place in its template's queue: how many
/// entries sort before it there (higher priority, or the same priority
/// queued earlier), plus one. Read from counts triggers keep (per
/// priority `queue_totals`, per span of 8,192 sequence numbers
/// `queue_spans`, per bucket of 256 `queue_buckets`: migrations
/// `20260601000002`, `20261205000001`) plus a range count inside its own
/// bucket: the spans before its own, the buckets before its own inside its
/// span, and the entries before it inside its bucket, so the cost barely
/// grows with the queue. (Tried: the same expression in GetTask's row
/// statement, as on PostgreSQL; measured slower, 1.15-1.20x against
/// 1.09-1.11x, in `bench --only queue`.)
pub fn fill_position(c: &Connection, t: &mut TaskRecord) -> Result<()> {
    let Some(entry) = t.queue.as_mut() else {
        return Ok(());
    };
    let ahead: i64 = c
        .prepare_cached(
            "SELECT \
               (SELECT COALESCE(SUM(n), 0) FROM queue_totals \
                 WHERE template = ?1 AND priority > ?2) \
             + (SELECT COALESCE(SUM(n), 0) FROM queue_spans \
                 WHERE template = ?1 AND priority = ?2 AND span < ?3 >> 13) \
             + (SELECT COALESCE(SUM(n), 0) FROM queue_buckets \
                 WHERE template = ?1 AND priority = ?2 \
                   AND bucket >= (?3 >> 13) << 5 AND bucket < ?3 >> 8) \
             + (SELECT COUNT(*) FROM tasks \
                 WHERE template = ?1 AND queued_seq IS NOT NULL AND priority = ?2 \
                   AND queued_seq >= (?3 >> 8) << 8 AND queued_seq < ?3)",
        )?
        .query_row(
            params![t.template.as_str(), t.priority.as_db(), entry.seq],
            |r| r.get(0),
        )?;
    entry.position = u32::try_from(ahead.saturating_add(1)).unwrap_or(u32::MAX);
    Ok(())
}

/// `Task.waiting_for` of a record.
pub fn waiting_for(t: &TaskRecord) -> &'static str {
    if t.queue.is_some() {
        WAITING_FOR_CAPACITY
    } else if t.waiting_dependencies && t.pod_status == PodStatus::Queued {
        crate::domain::dependencies::WAITING_FOR_DEPENDENCIES
    } else {
        ""
    }
}
