//! What each write command does inside the writer's transaction: read the
//! row it decides on, ask the pure lifecycle rules, then append its
//! event(s) and update the `tasks` row. Runs inside the batch's
//! transaction; when a command fails, the writer undoes only that command
//! (see `writer::transact`).

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::json;

use super::queries;
pub use crate::core::ports::store::{Command, Outcome};
use crate::domain::{
    ActorId, CorrelationId, EventRecord, EventType, Finish, NewTask, Phase, PodStatus, TaskId,
    TaskRecord, TaskStatus, finish,
};
use crate::error::{Error, Result};

/// How long a CreateTask `request_id` is remembered (docs/api.md: 24 h).
pub const IDEMPOTENCY_WINDOW_MICROS: i64 = 24 * 60 * 60 * 1_000_000;

/// Runs one command. `now` is the batch's commit clock (unix micros);
/// appended events are pushed to `events` for publication after commit.
pub fn apply(
    conn: &Connection,
    cmd: &Command,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<Outcome> {
    let from = events.len();
    let outcome = apply_one(conn, cmd, now, events)?;
    // A task this command ended releases or fails its dependents in the
    // same transaction (see `store::dependencies`).
    super::dependencies::settle(conn, events, from, now)?;
    Ok(outcome)
}

fn apply_one(
    conn: &Connection,
    cmd: &Command,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<Outcome> {
    match cmd {
        Command::CreateTask {
            task_id,
            task,
            pod_message,
        } => create_task(conn, *task_id, task, pod_message, now, events),
        Command::Finish {
            task_id,
            finish,
            actor,
            correlation,
            reason,
        } => finish_task(
            conn,
            *task_id,
            *finish,
            actor,
            correlation,
            reason.as_deref(),
            now,
            events,
        ),
        Command::Pod(c) => Ok(Outcome::Pod(super::pods::apply(conn, c, now, events)?)),
        Command::Queue(w) => Ok(Outcome::Queue(super::queue::apply(conn, w, now, events)?)),
        Command::Schedule(w) => Ok(Outcome::Schedule(super::schedules::apply(
            conn, w, now, events,
        )?)),
        Command::Retention(w) => Ok(Outcome::Retention(super::retention::apply(
            conn, w, now, events,
        )?)),
        Command::PruneIdempotency { up_to } => {
            let done = conn
                .prepare_cached("DELETE FROM idempotency_keys WHERE created_at <= ?")?
                .execute([up_to])?;
            Ok(Outcome::Pruned(done as u64))
        }
        Command::Deadline { task_id, at } => {
            super::timeouts::deadline_exceeded(conn, *task_id, *at, now, events)
        }
        Command::Probe => {
            conn.prepare_cached(
                "INSERT INTO store_probe (id, probed_at) VALUES (1, ?) \
                 ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at",
            )?
            .execute([now])?;
            Ok(Outcome::Probed)
        }
    }
}

/// Appends one event to a stream, bumping its version.
#[allow(clippy::too_many_arguments)]
pub(super) fn append_event(
    conn: &Connection,
    task_id: TaskId,
    event: EventType,
    data: serde_json::Value,
    actor: &str,
    correlation: &str,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<()> {
    let version: i64 = conn
        .prepare_cached(
            "UPDATE streams SET version = version + 1 WHERE stream_id = ? RETURNING version",
        )?
        .query_row([task_id.to_string()], |r| r.get(0))?;
    let e = NewEvent {
        event,
        data,
        actor,
        correlation,
    };
    insert_event(conn, task_id, version, e, now, events)
}

/// Records the authenticated caller in an event's data when it is not the
/// event's actor (an admin acting for someone, API.md Security), so the
/// audit trail says who really did it.
pub(super) fn note_principal(data: &mut serde_json::Value, authenticated_as: Option<&str>) {
    if let (Some(p), Some(obj)) = (authenticated_as, data.as_object_mut()) {
        obj.insert("authenticated_as".to_owned(), json!(p));
    }
}

/// An event about to be written.
struct NewEvent<'a> {
    event: EventType,
    data: serde_json::Value,
    actor: &'a str,
    correlation: &'a str,
}

/// Writes the event at `version` of the task's stream (the stream row
/// already says so).
fn insert_event(
    conn: &Connection,
    task_id: TaskId,
    version: i64,
    e: NewEvent<'_>,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<()> {
    let data_json = e.data.to_string();
    let position: i64 = conn
        .prepare_cached(
            "INSERT INTO events (stream_id, version, type, data_json, actor_id, correlation_id, \
             occurred_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING position",
        )?
        .query_row(
            params![
                task_id.to_string(),
                version,
                e.event.as_str(),
                &data_json,
                e.actor,
                e.correlation,
                now
            ],
            |r| r.get(0),
        )?;
    events.push(EventRecord {
        position: u64::try_from(position)
            .map_err(|_| Error::Internal("negative position".into()))?,
        task_id,
        version: u64::try_from(version).map_err(|_| Error::Internal("negative version".into()))?,
        event_type: e.event.as_str().to_owned(),
        data_json,
        actor_id: e.actor.to_owned(),
        correlation_id: e.correlation.to_owned(),
        occurred_at: now,
    });
    Ok(())
}

pub(super) fn create_task(
    conn: &Connection,
    task_id: TaskId,
    t: &NewTask,
    pod_message: &str,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<Outcome> {
    if let Some(first) = idempotent_repeat(conn, t, now)? {
        return Ok(Outcome::Task {
            task: Box::new(first),
            created: false,
        });
    }
    let id = task_id.to_string();
    let actor = t.actor.as_str();
    // The stream starts at version 1: its first event is written with it.
    conn.prepare_cached("INSERT INTO streams (stream_id, version, created_at) VALUES (?, 1, ?)")?
        .execute(params![&id, now])?;
    let mut data = json!({
        "title": t.title.as_str(),
        "description": t.description.as_str(),
        "metadata": t.metadata.entries(),
        "template": t.template.as_str(),
        "restart_policy": t.restart_policy,
        "auto_start": t.auto_start,
    });
    if let Some(s) = t.timeout_seconds {
        data["timeout_seconds"] = json!(s);
    }
    if let Some(d) = t.deadline {
        data["deadline"] = json!(d);
    }
    data["priority"] = json!(t.priority.name());
    if let Some(s) = t.queue_timeout_seconds {
        data["queue_timeout_seconds"] = json!(s);
    }
    if t.queue {
        data["queue"] = json!(true);
    }
    if !t.depends_on.is_empty() {
        let ids: Vec<String> = t.depends_on.iter().map(ToString::to_string).collect();
        data["depends_on"] = json!(ids);
    }
    note_principal(&mut data, t.actor.authenticated_as_principal());
    let created = NewEvent {
        event: EventType::TaskCreated,
        data,
        actor,
        correlation: t.correlation.as_str(),
    };
    insert_event(conn, task_id, 1, created, now, events)?;
    insert_task_row(conn, &id, t, pod_message, now)?;
    let failed_dependency = super::dependencies::record(conn, task_id, &t.depends_on)?;
    if let Some(rid) = &t.request_id {
        conn.prepare_cached(
            "INSERT INTO idempotency_keys (actor_id, request_id, task_id, created_at) \
             VALUES (?, ?, ?, ?)",
        )?
        .execute(params![actor, rid.as_str(), &id, now])?;
    }
    let task = TaskRecord {
        task_id,
        title: t.title.clone(),
        description: t.description.clone(),
        phase: Phase::SpecClarification,
        status: TaskStatus::Inactive,
        created_at: now,
        updated_at: now,
        created_by: actor.to_owned(),
        metadata: t.metadata.clone(),
        template: t.template.clone(),
        restart_policy: t.restart_policy,
        pod_status: PodStatus::Stopped,
        pod: None,
        live_version: 0,
        restart_count: 0,
        pod_message: pod_message.to_owned(),
        next_restart_at: None,
        archived: false,
        timeout_seconds: t.timeout_seconds,
        deadline: t.deadline,
        priority: t.priority,
        queue_timeout_seconds: t.queue_timeout_seconds,
        queue: None,
        depends_on: t.depends_on.clone(),
        waiting_dependencies: false,
    };
    if let Some(dep) = failed_dependency {
        // Created after its dependency already failed: it fails at once,
        // as it would have had it existed then.
        super::dependencies::fail_dependent(
            conn,
            task_id,
            dep,
            t.correlation.as_str(),
            now,
            events,
        )?;
        let task = queries::get_task(conn, task_id)?
            .ok_or_else(|| Error::Internal(format!("task {task_id} vanished")))?;
        return Ok(Outcome::Task {
            task: Box::new(task),
            created: true,
        });
    }
    Ok(Outcome::Task {
        task: Box::new(task),
        created: true,
    })
}

/// The task a CreateTask with the same actor and `request_id` made within
/// the idempotency window, if any. An expired key not yet pruned is removed
/// (the key starts afresh).
fn idempotent_repeat(conn: &Connection, t: &NewTask, now: i64) -> Result<Option<TaskRecord>> {
    let Some(rid) = &t.request_id else {
        return Ok(None);
    };
    let actor = t.actor.as_str();
    let seen: Option<(String, i64)> = conn
        .prepare_cached(
            "SELECT task_id, created_at FROM idempotency_keys \
             WHERE actor_id = ? AND request_id = ?",
        )?
        .query_row([actor, rid.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((first, at)) = seen else {
        return Ok(None);
    };
    if at > now - IDEMPOTENCY_WINDOW_MICROS {
        let first = TaskId::from_db(&first)?;
        // The first task may have been archived since.
        let task = match queries::get_task(conn, first)? {
            Some(t) => Some(t),
            None => queries::get_archived_task(conn, first)?,
        }
        .ok_or_else(|| {
            Error::Internal(format!("idempotency key points to missing task {first}"))
        })?;
        return Ok(Some(task));
    }
    conn.prepare_cached("DELETE FROM idempotency_keys WHERE actor_id = ? AND request_id = ?")?
        .execute([actor, rid.as_str()])?;
    Ok(None)
}

/// The new task's `tasks` row.
fn insert_task_row(
    conn: &Connection,
    id: &str,
    t: &NewTask,
    pod_message: &str,
    now: i64,
) -> Result<()> {
    let metadata_json = serde_json::to_string(t.metadata.entries())
        .map_err(|e| Error::Internal(format!("metadata to JSON: {e}")))?;
    let rp = &t.restart_policy;
    conn.prepare_cached(
        "INSERT INTO tasks (task_id, title, description, status, phase, created_at, updated_at, \
         created_by, metadata_json, template, auto_restart, max_restarts, restart_window_seconds, \
         initial_backoff_ms, max_backoff_ms, pod_status, pod_message, timeout_seconds, deadline, \
         priority, queue_timeout_seconds) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        id,
        t.title.as_str(),
        t.description.as_str(),
        TaskStatus::Inactive.as_db(),
        Phase::SpecClarification.as_db(),
        now,
        now,
        t.actor.as_str(),
        &metadata_json,
        t.template.as_str(),
        rp.auto_restart,
        rp.max_restarts,
        rp.window_seconds,
        rp.initial_backoff_ms,
        rp.max_backoff_ms,
        PodStatus::Stopped.as_db(),
        pod_message,
        t.timeout_seconds,
        t.deadline,
        t.priority.as_db(),
        t.queue_timeout_seconds,
    ])?;
    // One row per entry, for `metadata_equals` (an index lookup, in
    // creation order).
    let mut meta = conn.prepare_cached(
        "INSERT INTO task_metadata (task_id, key, value, task_created_at) VALUES (?, ?, ?, ?)",
    )?;
    for (k, v) in t.metadata.entries() {
        meta.execute(params![id, k, v, now])?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(super) fn finish_task(
    conn: &Connection,
    task_id: TaskId,
    cmd: Finish,
    actor: &ActorId,
    correlation: &CorrelationId,
    reason: Option<&str>,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<Outcome> {
    let mut data = match reason {
        Some(r) => json!({ "reason": r }),
        None => json!({}),
    };
    note_principal(&mut data, actor.authenticated_as_principal());
    finish_task_with(
        conn,
        task_id,
        cmd,
        actor.as_str(),
        correlation.as_str(),
        data,
        now,
        events,
    )
}

/// [`finish_task`] with the event's data given (the pod fields are added).
#[allow(clippy::too_many_arguments)]
pub(super) fn finish_task_with(
    conn: &Connection,
    task_id: TaskId,
    cmd: Finish,
    actor: &str,
    correlation: &str,
    mut data: serde_json::Value,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<Outcome> {
    let id = task_id.to_string();
    type FinishRow = (String, String, Option<String>, Option<String>, i64);
    let row: Option<FinishRow> = conn
        .prepare_cached(
            "SELECT status, pod_status, pod_id, pod_host, pod_generation FROM tasks \
             WHERE task_id = ?",
        )?
        .query_row([&id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let (status, pod, pod_id, pod_host, generation) = row.ok_or(Error::TaskNotFound(task_id))?;
    let tr = finish(
        task_id,
        TaskStatus::from_db(&status)?,
        PodStatus::from_db(&pod)?,
        cmd,
    )?;
    conn.prepare_cached(
        "UPDATE tasks SET status = ?, phase = ?, pod_status = ?, updated_at = ?, \
         next_restart_at = NULL, queued_seq = NULL, queued_at = NULL, waiting_dependencies = 0 \
         WHERE task_id = ?",
    )?
    .execute(params![
        tr.status.as_db(),
        tr.phase.as_db(),
        tr.pod_status.as_db(),
        now,
        &id
    ])?;
    // The pod this ends, if one was starting or running: the trail then
    // records every pod's end exactly once (its later exit report finds the
    // task terminal and is ignored).
    if tr.stop_pod
        && let (Some(pod_id), Some(host)) = (&pod_id, &pod_host)
    {
        data["pod_id"] = json!(pod_id);
        data["pod_host"] = json!(host);
        data["generation"] = json!(generation);
    }
    append_event(
        conn,
        task_id,
        tr.event,
        data,
        actor,
        correlation,
        now,
        events,
    )?;
    let stop_pod = match (tr.stop_pod, pod_id, pod_host) {
        (true, Some(pod_id), Some(host)) => Some((
            super::pods::PodRef {
                task_id,
                pod_id,
                generation: u64::try_from(generation).unwrap_or(0),
            },
            host,
        )),
        _ => None,
    };
    Ok(Outcome::Finished { stop_pod })
}
