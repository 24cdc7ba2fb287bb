//! Task dependencies in the database (migration
//! `20260601000001_dependencies`): recording a new task's `depends_on`,
//! the check a start makes, and what a dependency's end does to its
//! dependents. All of it runs inside the writer's transaction of the
//! command that caused it, so a central-manager crash can never leave a
//! completed dependency's waiting dependent unreleased, or a failed one's
//! dependent alive: the cause and its consequences commit together or not
//! at all, and nothing is left for a restart to finish.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::json;

use super::commands::append_event;
use crate::domain::dependencies::{DEPENDENCY_FAILED, to_json};
use crate::domain::{EventRecord, EventType, SYSTEM_ACTOR, TaskId};
use crate::error::{Error, Result};

/// Records `deps` of the new task `task_id`. Each must exist (live or
/// archived), else TASK_NOT_FOUND naming it. Returns the first dependency
/// already CANCELLED or FAILED, if any: the caller fails the new task.
pub(super) fn record(
    conn: &Connection,
    task_id: TaskId,
    deps: &[TaskId],
) -> Result<Option<TaskId>> {
    if deps.is_empty() {
        return Ok(None);
    }
    let mut failed = None;
    for &dep in deps {
        let status = status_of(conn, dep)?.ok_or(Error::TaskNotFound(dep))?;
        if failed.is_none() && matches!(status.as_str(), "failed" | "cancelled") {
            failed = Some(dep);
        }
        conn.prepare_cached("INSERT INTO task_dependencies (task_id, depends_on) VALUES (?, ?)")?
            .execute(params![task_id.to_string(), dep.to_string()])?;
    }
    conn.prepare_cached("UPDATE tasks SET depends_on_json = ? WHERE task_id = ?")?
        .execute(params![to_json(deps), task_id.to_string()])?;
    Ok(failed)
}

fn status_of(conn: &Connection, id: TaskId) -> Result<Option<String>> {
    let live: Option<String> = conn
        .prepare_cached("SELECT status FROM tasks WHERE task_id = ?")?
        .query_row([id.to_string()], |r| r.get(0))
        .optional()?;
    if live.is_some() {
        return Ok(live);
    }
    Ok(conn
        .prepare_cached("SELECT status FROM tasks_archive WHERE task_id = ?")?
        .query_row([id.to_string()], |r| r.get(0))
        .optional()?)
}

/// The first dependency of `task_id` that is not COMPLETED, if any. An
/// archived dependency has ended; had it failed, its dependents would have
/// failed with it, so it counts as completed.
pub(super) fn unmet(conn: &Connection, task_id: TaskId) -> Result<Option<TaskId>> {
    let first: Option<String> = conn
        .prepare_cached(
            "SELECT d.depends_on FROM task_dependencies d JOIN tasks t ON t.task_id = d.depends_on \
             WHERE d.task_id = ? AND t.status != 'completed' LIMIT 1",
        )?
        .query_row([task_id.to_string()], |r| r.get(0))
        .optional()?;
    first.map(|s| TaskId::from_db(&s)).transpose()
}

/// Fails `task_id` because its dependency `dep` ended CANCELLED or FAILED:
/// `task_failed` with `{"reason":"dependency_failed","dependency":dep}`.
/// A no-op when it is terminal already.
pub(super) fn fail_dependent(
    conn: &Connection,
    task_id: TaskId,
    dep: TaskId,
    correlation: &str,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<()> {
    let status: Option<String> = conn
        .prepare_cached("SELECT status FROM tasks WHERE task_id = ?")?
        .query_row([task_id.to_string()], |r| r.get(0))
        .optional()?;
    if !matches!(status.as_deref(), Some("inactive" | "active")) {
        return Ok(());
    }
    // No pod can run: a task starts only once every dependency is
    // COMPLETED, and a COMPLETED task never fails afterwards.
    conn.prepare_cached(
        "UPDATE tasks SET status = 'failed', live_version = 0, next_restart_at = NULL, \
         queued_seq = NULL, queued_at = NULL, waiting_dependencies = 0, pod_message = ?, \
         updated_at = ? WHERE task_id = ?",
    )?
    .execute(params![
        format!("dependency {dep} did not complete"),
        now,
        task_id.to_string()
    ])?;
    let data = json!({"reason": DEPENDENCY_FAILED, "dependency": dep.to_string()});
    append_event(
        conn,
        task_id,
        EventType::TaskFailed,
        data,
        SYSTEM_ACTOR,
        correlation,
        now,
        events,
    )?;
    Ok(())
}

/// What the writes of one command did to dependents: called after every
/// command with the index of its first event. For each task that ended in
/// these events: when COMPLETED, each waiting dependent whose dependencies
/// are now all COMPLETED enters the capacity queue (`pod_queued` with
/// `waiting_for` "capacity"); when CANCELLED or FAILED, each live
/// dependent fails (`task_failed`), and so on down the chain, since those
/// failures are events of this command too. Returns whether a task
/// entered the queue (the caller wakes the dispatcher).
pub(super) fn settle(
    conn: &Connection,
    events: &mut Vec<EventRecord>,
    from: usize,
    now: i64,
) -> Result<bool> {
    let mut released = false;
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
        for dependent in dependents(conn, task_id)? {
            if failed {
                fail_dependent(conn, dependent, task_id, &corr, now, events)?;
            } else if release(conn, dependent, task_id, now, events)? {
                released = true;
            }
        }
    }
    Ok(released)
}

fn dependents(conn: &Connection, task_id: TaskId) -> Result<Vec<TaskId>> {
    let mut st = conn.prepare_cached(
        "SELECT task_id FROM task_dependencies WHERE depends_on = ? ORDER BY task_id",
    )?;
    let ids = st
        .query_map([task_id.to_string()], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    ids.iter().map(|s| TaskId::from_db(s)).collect()
}

/// A waiting dependent whose dependencies are all COMPLETED now: out of
/// the wait and into the capacity queue, as the system.
fn release(
    conn: &Connection,
    task_id: TaskId,
    completed: TaskId,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<bool> {
    let waiting: Option<(bool, String)> = conn
        .prepare_cached(
            "SELECT waiting_dependencies, pod_correlation_id FROM tasks WHERE task_id = ? \
             AND status IN ('inactive', 'active')",
        )?
        .query_row([task_id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((true, corr)) = waiting else {
        return Ok(false);
    };
    if unmet(conn, task_id)?.is_some() {
        return Ok(false);
    }
    conn.prepare_cached("UPDATE tasks SET waiting_dependencies = 0 WHERE task_id = ?")?
        .execute([task_id.to_string()])?;
    let cause = crate::domain::Cause {
        actor: SYSTEM_ACTOR.to_owned(),
        correlation: corr,
        authenticated_as: None,
    };
    super::queue::enqueue(
        conn,
        task_id,
        &cause,
        "its dependencies completed",
        Some(completed),
        now,
        events,
    )?;
    Ok(true)
}
