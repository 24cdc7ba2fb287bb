//! A run of consecutive CreateTasks in one batch, written with a few
//! multi-row statements instead of ~4 statements per task: the writer's
//! throughput on PostgreSQL is round trips on its one connection, and 64
//! clients creating tasks put dozens of CreateTasks in each batch.
//!
//! The run does what [`commands::create_task`] does for each of its tasks,
//! in the same order, with the same rows and events:
//! - one `SELECT` of the run's idempotency keys (only when some task has a
//!   `request_id`); when any key is already known the run falls back to
//!   [`commands::create_task`] one task at a time, which returns the first
//!   task or replaces an expired key exactly as it always did;
//! - one statement for everything else: the head moves by the run's length
//!   once and the positions are handed out in the run's order, then the
//!   `streams`, `events`, `tasks`, `task_metadata` and `idempotency_keys`
//!   rows, each from `UNNEST` of arrays.
//!
//! A run never holds two tasks with one actor and `request_id`
//! ([`run_len`] ends it before the second, which then finds the first's
//! key as it would have), nor a task with dependencies (those check and
//! lock other tasks: one at a time). If a statement fails, the writer
//! runs the batch again with a savepoint per command and no runs, so only
//! the failing command is undone.

use std::collections::HashSet;

use sqlx::PgConnection;

use super::commands::{self, created_data, new_record};
use crate::core::ports::store::{Command, Outcome};
use crate::domain::{EventRecord, EventType, NewTask, PodStatus, TaskId};
use crate::error::{Error, Result};

/// One command's answer and the events it committed.
pub type RunResult = (Result<Outcome>, Vec<EventRecord>);

/// A CreateTask a run can take.
fn runnable(c: &Command) -> Option<(TaskId, &NewTask, &str)> {
    match c {
        Command::CreateTask {
            task_id,
            task,
            pod_message,
        } if task.depends_on.is_empty() => Some((*task_id, task, pod_message)),
        _ => None,
    }
}

/// How many commands from the start of `commands` form a run (0 or 1:
/// none worth batching).
pub fn run_len<'a>(commands: impl Iterator<Item = &'a Command>) -> usize {
    let mut keys = HashSet::new();
    let mut n = 0;
    for c in commands {
        let Some((_, t, _)) = runnable(c) else {
            break;
        };
        if let Some(rid) = &t.request_id
            && !keys.insert((t.actor.as_str(), rid.as_str()))
        {
            break;
        }
        n += 1;
    }
    n
}

/// Creates the run's tasks (commands [`run_len`] accepted): the answers in
/// order, and how many were written by the multi-row statement (all, or
/// none when a key was known).
pub async fn apply(
    conn: &mut PgConnection,
    run: &[&Command],
    now: i64,
) -> Result<(Vec<RunResult>, u64)> {
    let tasks: Vec<(TaskId, &NewTask, &str)> = run
        .iter()
        .map(|c| runnable(c).ok_or_else(|| Error::Internal("not a runnable CreateTask".into())))
        .collect::<Result<_>>()?;
    if any_key_known(conn, &tasks).await? {
        let mut out = Vec::with_capacity(tasks.len());
        for (task_id, t, pod_message) in tasks {
            let mut events = Vec::new();
            let outcome =
                commands::create_task(conn, task_id, t, pod_message, now, &mut events).await?;
            out.push((Ok(outcome), events));
        }
        return Ok((out, 0));
    }
    let rows = Rows::of(&tasks)?;
    let n = i64::try_from(tasks.len()).map_err(|_| Error::Internal("run too long".into()))?;
    let head: i64 = sqlx::query_scalar(INSERT_RUN)
        .bind(n)
        .bind(now)
        .bind(&rows.ids)
        .bind(&rows.data)
        .bind(&rows.actors)
        .bind(&rows.correlations)
        .bind(&rows.titles)
        .bind(&rows.descriptions)
        .bind(&rows.metadata_json)
        .bind(&rows.templates)
        .bind(&rows.auto_restart)
        .bind(&rows.max_restarts)
        .bind(&rows.window_seconds)
        .bind(&rows.initial_backoff_ms)
        .bind(&rows.max_backoff_ms)
        .bind(&rows.pod_messages)
        .bind(&rows.timeout_seconds)
        .bind(&rows.deadlines)
        .bind(&rows.priorities)
        .bind(&rows.queue_timeout_seconds)
        .bind(&rows.meta_ids)
        .bind(&rows.meta_keys)
        .bind(&rows.meta_values)
        .bind(&rows.key_actors)
        .bind(&rows.key_requests)
        .bind(&rows.key_ids)
        .bind(PodStatus::Stopped.as_db())
        .fetch_one(&mut *conn)
        .await?;
    let first = head - n + 1;
    let mut out = Vec::with_capacity(tasks.len());
    for (i, ((task_id, t, pod_message), data_json)) in tasks.into_iter().zip(rows.data).enumerate()
    {
        let position = u64::try_from(first + i as i64)
            .map_err(|_| Error::Internal("negative position".into()))?;
        let event = EventRecord {
            position,
            task_id,
            version: 1,
            event_type: EventType::TaskCreated.as_str().to_owned(),
            data_json,
            actor_id: t.actor.as_str().to_owned(),
            correlation_id: t.correlation.as_str().to_owned(),
            occurred_at: now,
        };
        let task = new_record(task_id, t, pod_message, now);
        let outcome = Outcome::Task {
            task: Box::new(task),
            created: true,
        };
        out.push((Ok(outcome), vec![event]));
    }
    Ok((out, n as u64))
}

/// Whether any of the run's (actor, request_id) keys is in the table
/// (live or expired: either way [`commands::create_task`] decides).
async fn any_key_known(
    conn: &mut PgConnection,
    tasks: &[(TaskId, &NewTask, &str)],
) -> Result<bool> {
    let (actors, requests): (Vec<&str>, Vec<&str>) = tasks
        .iter()
        .filter_map(|(_, t, _)| {
            t.request_id
                .as_ref()
                .map(|r| (t.actor.as_str(), r.as_str()))
        })
        .unzip();
    if actors.is_empty() {
        return Ok(false);
    }
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM idempotency_keys k \
         JOIN UNNEST($1::text[], $2::text[]) AS q (a, r) \
         ON k.actor_id = q.a AND k.request_id = q.r)",
    )
    .bind(actors)
    .bind(requests)
    .fetch_one(&mut *conn)
    .await?)
}

/// The run's columns, one array per column ($n in [`INSERT_RUN`]).
#[derive(Default)]
struct Rows<'a> {
    ids: Vec<String>,
    data: Vec<String>,
    actors: Vec<&'a str>,
    correlations: Vec<&'a str>,
    titles: Vec<&'a str>,
    descriptions: Vec<&'a str>,
    metadata_json: Vec<String>,
    templates: Vec<&'a str>,
    auto_restart: Vec<Option<bool>>,
    max_restarts: Vec<Option<i64>>,
    window_seconds: Vec<Option<i64>>,
    initial_backoff_ms: Vec<Option<i64>>,
    max_backoff_ms: Vec<Option<i64>>,
    pod_messages: Vec<&'a str>,
    timeout_seconds: Vec<Option<i64>>,
    deadlines: Vec<Option<i64>>,
    priorities: Vec<i64>,
    queue_timeout_seconds: Vec<Option<i64>>,
    meta_ids: Vec<String>,
    meta_keys: Vec<&'a str>,
    meta_values: Vec<&'a str>,
    key_actors: Vec<&'a str>,
    key_requests: Vec<&'a str>,
    key_ids: Vec<String>,
}

impl<'a> Rows<'a> {
    fn of(tasks: &[(TaskId, &'a NewTask, &'a str)]) -> Result<Self> {
        let mut r = Self::default();
        for &(task_id, t, pod_message) in tasks {
            let id = task_id.to_string();
            r.data.push(created_data(t).to_string());
            r.actors.push(t.actor.as_str());
            r.correlations.push(t.correlation.as_str());
            r.titles.push(t.title.as_str());
            r.descriptions.push(t.description.as_str());
            r.metadata_json.push(
                serde_json::to_string(t.metadata.entries())
                    .map_err(|e| Error::Internal(format!("metadata to JSON: {e}")))?,
            );
            r.templates.push(t.template.as_str());
            let rp = &t.restart_policy;
            r.auto_restart.push(rp.auto_restart);
            r.max_restarts.push(rp.max_restarts.map(i64::from));
            r.window_seconds.push(rp.window_seconds.map(i64::from));
            r.initial_backoff_ms
                .push(rp.initial_backoff_ms.map(i64::from));
            r.max_backoff_ms.push(rp.max_backoff_ms.map(i64::from));
            r.pod_messages.push(pod_message);
            r.timeout_seconds.push(t.timeout_seconds.map(i64::from));
            r.deadlines.push(t.deadline);
            r.priorities.push(t.priority.as_db());
            r.queue_timeout_seconds
                .push(t.queue_timeout_seconds.map(i64::from));
            for (k, v) in t.metadata.entries() {
                r.meta_ids.push(id.clone());
                r.meta_keys.push(k.as_str());
                r.meta_values.push(v.as_str());
            }
            if let Some(rid) = &t.request_id {
                r.key_actors.push(t.actor.as_str());
                r.key_requests.push(rid.as_str());
                r.key_ids.push(id.clone());
            }
            r.ids.push(id);
        }
        Ok(r)
    }
}

/// The whole run in one statement; returns the head after it. The head's
/// row is locked by the writer's transaction already (`writer::attempt`).
/// Foreign keys to `streams` are checked at the end of the statement,
/// after every part of it ran.
const INSERT_RUN: &str = "\
WITH head AS (
    UPDATE event_log_head SET position = position + $1 WHERE id = 1 RETURNING position
), s AS (
    INSERT INTO streams (stream_id, version, created_at)
    SELECT id, 1, $2 FROM UNNEST($3::text[]) AS u (id)
), e AS (
    INSERT INTO events (position, stream_id, version, type, data_json, actor_id,
        correlation_id, occurred_at)
    SELECT head.position - $1 + u.n, u.id, 1, 'task_created', u.data, u.actor, u.corr, $2
    FROM head, UNNEST($3::text[], $4::text[], $5::text[], $6::text[])
        WITH ORDINALITY AS u (id, data, actor, corr, n)
), t AS (
    INSERT INTO tasks (task_id, title, description, status, phase, created_at, updated_at,
        created_by, metadata_json, template, auto_restart, max_restarts,
        restart_window_seconds, initial_backoff_ms, max_backoff_ms, pod_status, pod_message,
        timeout_seconds, deadline, priority, queue_timeout_seconds)
    SELECT u.id, u.title, u.description, 'inactive', 'spec_clarification', $2, $2, u.actor,
        u.metadata_json, u.template, u.auto_restart, u.max_restarts, u.window_seconds,
        u.initial_backoff_ms, u.max_backoff_ms, $27, u.pod_message, u.timeout_seconds,
        u.deadline, u.priority, u.queue_timeout_seconds
    FROM UNNEST($3::text[], $7::text[], $8::text[], $5::text[], $9::text[], $10::text[],
        $11::boolean[], $12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[],
        $16::text[], $17::bigint[], $18::bigint[], $19::bigint[], $20::bigint[])
        AS u (id, title, description, actor, metadata_json, template, auto_restart,
            max_restarts, window_seconds, initial_backoff_ms, max_backoff_ms, pod_message,
            timeout_seconds, deadline, priority, queue_timeout_seconds)
), m AS (
    INSERT INTO task_metadata (task_id, key, value, task_created_at)
    SELECT id, k, v, $2 FROM UNNEST($21::text[], $22::text[], $23::text[]) AS u (id, k, v)
), k AS (
    INSERT INTO idempotency_keys (actor_id, request_id, task_id, created_at)
    SELECT a, r, id, $2 FROM UNNEST($24::text[], $25::text[], $26::text[]) AS u (a, r, id)
)
SELECT position FROM head";
