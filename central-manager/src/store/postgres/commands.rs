//! What each write command does inside the PostgreSQL writer's
//! transaction: the SQLite store's `commands` (and the deadline of its
//! `timeouts`) in PostgreSQL's SQL, deciding on the same rows with the same
//! pure lifecycle rules.

use serde_json::json;
use sqlx::PgConnection;

use super::{dependencies, queries};
use crate::core::ports::store::{Command, Outcome};
use crate::domain::{
    ActorId, CorrelationId, EventRecord, EventType, Finish, NewTask, Phase, PodRef, PodStatus,
    SYSTEM_ACTOR, TaskId, TaskRecord, TaskStatus, finish,
};
use crate::error::{Error, Result};
use crate::store::IDEMPOTENCY_WINDOW_MICROS;

/// Runs one command. `now` is the batch's commit clock (unix micros);
/// appended events are pushed to `events` for publication after commit.
pub async fn apply(
    conn: &mut PgConnection,
    cmd: &Command,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<Outcome> {
    let from = events.len();
    let outcome = apply_one(conn, cmd, now, events).await?;
    // A task this command ended releases or fails its dependents in the
    // same transaction (see `dependencies`).
    dependencies::settle(conn, events, from, now).await?;
    Ok(outcome)
}

async fn apply_one(
    conn: &mut PgConnection,
    cmd: &Command,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<Outcome> {
    match cmd {
        Command::CreateTask {
            task_id,
            task,
            pod_message,
        } => create_task(conn, *task_id, task, pod_message, now, events).await,
        Command::Finish {
            task_id,
            finish,
            actor,
            correlation,
            reason,
        } => {
            let who = Who { actor, correlation };
            finish_task(conn, *task_id, *finish, who, reason.as_deref(), now, events).await
        }
        Command::PruneIdempotency { up_to } => {
            let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at <= $1")
                .bind(up_to)
                .execute(&mut *conn)
                .await?;
            Ok(Outcome::Pruned(done.rows_affected()))
        }
        Command::Deadline { task_id, at } => {
            deadline_exceeded(conn, *task_id, *at, now, events).await
        }
        Command::Probe => {
            sqlx::query(
                "INSERT INTO store_probe (id, probed_at) VALUES (1, $1) \
                 ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at",
            )
            .bind(now)
            .execute(&mut *conn)
            .await?;
            Ok(Outcome::Probed)
        }
        Command::Queue(w) => Ok(Outcome::Queue(
            super::queue::apply(conn, w, now, events).await?,
        )),
        Command::Pod(c) => Ok(Outcome::Pod(
            super::pods::apply(conn, c, now, events).await?,
        )),
        Command::Schedule(w) => Ok(Outcome::Schedule(
            super::schedules::apply(conn, w, now, events).await?,
        )),
        Command::Retention(w) => Ok(Outcome::Retention(
            super::retention::apply(conn, w, now, events).await?,
        )),
    }
}

/// Who asked for a command.
pub(super) struct Who<'a> {
    pub actor: &'a ActorId,
    pub correlation: &'a CorrelationId,
}

/// An event about to be written.
pub(super) struct NewEvent<'a> {
    pub event: EventType,
    pub data: serde_json::Value,
    pub actor: &'a str,
    pub correlation: &'a str,
}

/// Appends one event to a task's stream, bumping its version.
pub(super) async fn append_event(
    conn: &mut PgConnection,
    task_id: TaskId,
    e: NewEvent<'_>,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<()> {
    let version: i64 = sqlx::query_scalar(
        "UPDATE streams SET version = version + 1 WHERE stream_id = $1 RETURNING version",
    )
    .bind(task_id.to_string())
    .fetch_one(&mut *conn)
    .await?;
    insert_event(conn, task_id, version, e, now, events).await
}

/// Writes the event at `version` of the task's stream (the stream row
/// already says so), at the next position of the log.
///
/// The position comes from the `event_log_head` row, updated here: from
/// this statement to the commit, this transaction holds that row's lock, so
/// no other transaction (of this process or another replica) can take a
/// position until this one has committed or rolled back. Positions are
/// therefore committed in order and without gaps, and a reader that sees
/// position N+1 has every position up to N visible too.
async fn insert_event(
    conn: &mut PgConnection,
    task_id: TaskId,
    version: i64,
    e: NewEvent<'_>,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<()> {
    let data_json = e.data.to_string();
    let position: i64 = sqlx::query_scalar(
        "WITH next AS (UPDATE event_log_head SET position = position + 1 WHERE id = 1 \
         RETURNING position) \
         INSERT INTO events (position, stream_id, version, type, data_json, actor_id, \
         correlation_id, occurred_at) \
         SELECT next.position, $1, $2, $3, $4, $5, $6, $7 FROM next RETURNING position",
    )
    .bind(task_id.to_string())
    .bind(version)
    .bind(e.event.as_str())
    .bind(&data_json)
    .bind(e.actor)
    .bind(e.correlation)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
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

/// Records the authenticated caller in an event's data when it is not the
/// event's actor (as the SQLite store does).
pub(super) fn note_principal(data: &mut serde_json::Value, authenticated_as: Option<&str>) {
    if let (Some(p), Some(obj)) = (authenticated_as, data.as_object_mut()) {
        obj.insert("authenticated_as".to_owned(), json!(p));
    }
}

pub(super) async fn create_task(
    conn: &mut PgConnection,
    task_id: TaskId,
    t: &NewTask,
    pod_message: &str,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<Outcome> {
    if let Some(first) = idempotent_repeat(conn, t, now).await? {
        return Ok(Outcome::Task {
            task: Box::new(first),
            created: false,
        });
    }
    let id = task_id.to_string();
    let actor = t.actor.as_str();
    // The stream starts at version 1: its first event is written with it.
    sqlx::query("INSERT INTO streams (stream_id, version, created_at) VALUES ($1, 1, $2)")
        .bind(&id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    let data = created_data(t);
    let created = NewEvent {
        event: EventType::TaskCreated,
        data,
        actor,
        correlation: t.correlation.as_str(),
    };
    insert_event(conn, task_id, 1, created, now, events).await?;
    insert_task_row(conn, &id, t, pod_message, now).await?;
    let failed_dependency = dependencies::record(conn, task_id, &t.depends_on).await?;
    if let Some(rid) = &t.request_id {
        // A concurrent replica's CreateTask with the same key loses here on
        // the primary key (its whole command is undone): INTERNAL for that
        // rare race, never two tasks for one key.
        sqlx::query(
            "INSERT INTO idempotency_keys (actor_id, request_id, task_id, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(actor)
        .bind(rid.as_str())
        .bind(&id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    let task = new_record(task_id, t, pod_message, now);
    if let Some(dep) = failed_dependency {
        // Created after its dependency already failed: it fails at once,
        // as it would have had it existed then.
        let corr = t.correlation.as_str();
        dependencies::fail_dependent(conn, task_id, dep, corr, now, events).await?;
        let task = queries::get_task(&mut *conn, task_id)
            .await?
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

/// The data of a new task's `task_created` event.
pub(super) fn created_data(t: &NewTask) -> serde_json::Value {
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
    data
}

/// The record of a task just created from `t` (what its row says).
pub(super) fn new_record(task_id: TaskId, t: &NewTask, pod_message: &str, now: i64) -> TaskRecord {
    TaskRecord {
        task_id,
        title: t.title.clone(),
        description: t.description.clone(),
        phase: Phase::SpecClarification,
        status: TaskStatus::Inactive,
        created_at: now,
        updated_at: now,
        created_by: t.actor.as_str().to_owned(),
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
    }
}

/// The task a CreateTask with the same actor and `request_id` made within
/// the idempotency window, if any; an expired key is removed.
async fn idempotent_repeat(
    conn: &mut PgConnection,
    t: &NewTask,
    now: i64,
) -> Result<Option<TaskRecord>> {
    let Some(rid) = &t.request_id else {
        return Ok(None);
    };
    let actor = t.actor.as_str();
    let seen: Option<(String, i64)> = sqlx::query_as(
        "SELECT task_id, created_at FROM idempotency_keys \
         WHERE actor_id = $1 AND request_id = $2",
    )
    .bind(actor)
    .bind(rid.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    let Some((first, at)) = seen else {
        return Ok(None);
    };
    if at > now - IDEMPOTENCY_WINDOW_MICROS {
        let first = TaskId::from_db(&first)?;
        // The first task may have been archived since.
        let task = match queries::get_task(&mut *conn, first).await? {
            Some(t) => Some(t),
            None => queries::get_archived_task(&mut *conn, first).await?,
        }
        .ok_or_else(|| {
            Error::Internal(format!("idempotency key points to missing task {first}"))
        })?;
        return Ok(Some(task));
    }
    sqlx::query("DELETE FROM idempotency_keys WHERE actor_id = $1 AND request_id = $2")
        .bind(actor)
        .bind(rid.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(None)
}

/// The new task's `tasks` row and its metadata rows.
async fn insert_task_row(
    conn: &mut PgConnection,
    id: &str,
    t: &NewTask,
    pod_message: &str,
    now: i64,
) -> Result<()> {
    let metadata_json = serde_json::to_string(t.metadata.entries())
        .map_err(|e| Error::Internal(format!("metadata to JSON: {e}")))?;
    let rp = &t.restart_policy;
    sqlx::query(
        "INSERT INTO tasks (task_id, title, description, status, phase, created_at, updated_at, \
         created_by, metadata_json, template, auto_restart, max_restarts, restart_window_seconds, \
         initial_backoff_ms, max_backoff_ms, pod_status, pod_message, timeout_seconds, deadline, \
         priority, queue_timeout_seconds) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
         $18, $19, $20, $21)",
    )
    .bind(id)
    .bind(t.title.as_str())
    .bind(t.description.as_str())
    .bind(TaskStatus::Inactive.as_db())
    .bind(Phase::SpecClarification.as_db())
    .bind(now)
    .bind(now)
    .bind(t.actor.as_str())
    .bind(&metadata_json)
    .bind(t.template.as_str())
    .bind(rp.auto_restart)
    .bind(rp.max_restarts.map(i64::from))
    .bind(rp.window_seconds.map(i64::from))
    .bind(rp.initial_backoff_ms.map(i64::from))
    .bind(rp.max_backoff_ms.map(i64::from))
    .bind(PodStatus::Stopped.as_db())
    .bind(pod_message)
    .bind(t.timeout_seconds.map(i64::from))
    .bind(t.deadline)
    .bind(t.priority.as_db())
    .bind(t.queue_timeout_seconds.map(i64::from))
    .execute(&mut *conn)
    .await?;
    // One row per entry, for `metadata_equals`; one statement for all.
    let entries = t.metadata.entries();
    if !entries.is_empty() {
        let keys: Vec<&str> = entries.keys().map(String::as_str).collect();
        let values: Vec<&str> = entries.values().map(String::as_str).collect();
        sqlx::query(
            "INSERT INTO task_metadata (task_id, key, value, task_created_at) \
             SELECT $1, k, v, $4 FROM UNNEST($2::text[], $3::text[]) AS e (k, v)",
        )
        .bind(id)
        .bind(keys)
        .bind(values)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// CompleteTask / CancelTask.
pub(super) async fn finish_task(
    conn: &mut PgConnection,
    task_id: TaskId,
    cmd: Finish,
    who: Who<'_>,
    reason: Option<&str>,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<Outcome> {
    let id = task_id.to_string();
    type FinishRow = (String, String, Option<String>, Option<String>, i64);
    // FOR UPDATE: another replica's command on this task waits for this
    // transaction, so the rules decide on the row as it is written.
    let row: Option<FinishRow> = sqlx::query_as(
        "SELECT status, pod_status, pod_id, pod_host, pod_generation FROM tasks \
         WHERE task_id = $1 FOR UPDATE",
    )
    .bind(&id)
    .fetch_optional(&mut *conn)
    .await?;
    let (status, pod, pod_id, pod_host, generation) = row.ok_or(Error::TaskNotFound(task_id))?;
    let tr = finish(
        task_id,
        TaskStatus::from_db(&status)?,
        PodStatus::from_db(&pod)?,
        cmd,
    )?;
    sqlx::query(
        "UPDATE tasks SET status = $1, phase = $2, pod_status = $3, updated_at = $4, \
         next_restart_at = NULL, queued_seq = NULL, queued_at = NULL, \
         waiting_dependencies = FALSE WHERE task_id = $5",
    )
    .bind(tr.status.as_db())
    .bind(tr.phase.as_db())
    .bind(tr.pod_status.as_db())
    .bind(now)
    .bind(&id)
    .execute(&mut *conn)
    .await?;
    let mut data = match reason {
        Some(r) => json!({ "reason": r }),
        None => json!({}),
    };
    // The pod this ends, if one was starting or running (as SQLite).
    if tr.stop_pod
        && let (Some(pod_id), Some(host)) = (&pod_id, &pod_host)
    {
        data["pod_id"] = json!(pod_id);
        data["pod_host"] = json!(host);
        data["generation"] = json!(generation);
    }
    note_principal(&mut data, who.actor.authenticated_as_principal());
    let e = NewEvent {
        event: tr.event,
        data,
        actor: who.actor.as_str(),
        correlation: who.correlation.as_str(),
    };
    append_event(conn, task_id, e, now, events).await?;
    let stop_pod = match (tr.stop_pod, pod_id, pod_host) {
        (true, Some(pod_id), Some(host)) => Some((
            PodRef {
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

/// Fails `task_id` for its deadline `at`, if it is still live with that
/// deadline and `at` has passed (as the SQLite store's `timeouts`).
async fn deadline_exceeded(
    conn: &mut PgConnection,
    task_id: TaskId,
    at: i64,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<Outcome> {
    let id = task_id.to_string();
    type Row = (
        String,
        Option<i64>,
        String,
        Option<String>,
        Option<String>,
        i64,
        String,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT status, deadline, pod_status, pod_id, pod_host, pod_generation, \
         pod_correlation_id FROM tasks WHERE task_id = $1 FOR UPDATE",
    )
    .bind(&id)
    .fetch_optional(&mut *conn)
    .await?;
    let untouched = Outcome::DeadlineExceeded {
        failed: false,
        stop_pod: None,
    };
    let Some((status, deadline, pod_status, pod_id, pod_host, generation, corr)) = row else {
        return Ok(untouched);
    };
    let live = !TaskStatus::from_db(&status)?.is_terminal();
    if !live || deadline != Some(at) || at > now {
        return Ok(untouched);
    }
    sqlx::query(
        "UPDATE tasks SET status = 'failed', pod_status = 'stopped', live_version = 0, \
         next_restart_at = NULL, pod_message = 'deadline exceeded', updated_at = $1, \
         queued_seq = NULL, queued_at = NULL, waiting_dependencies = FALSE WHERE task_id = $2",
    )
    .bind(now)
    .bind(&id)
    .execute(&mut *conn)
    .await?;
    let mut data = json!({"reason": "deadline_exceeded", "deadline": at});
    let stop_pod = match (pod_status.as_str(), pod_id, pod_host) {
        ("stopped", _, _) | (_, None, _) | (_, _, None) => None,
        (_, Some(pod_id), Some(host)) => {
            data["pod_id"] = json!(pod_id);
            data["pod_host"] = json!(host);
            data["generation"] = json!(generation);
            Some((
                PodRef {
                    task_id,
                    pod_id,
                    generation: u64::try_from(generation).unwrap_or(0),
                },
                host,
            ))
        }
    };
    let e = NewEvent {
        event: EventType::TaskFailed,
        data,
        actor: SYSTEM_ACTOR,
        correlation: &corr,
    };
    append_event(conn, task_id, e, now, events).await?;
    Ok(Outcome::DeadlineExceeded {
        failed: true,
        stop_pod,
    })
}
