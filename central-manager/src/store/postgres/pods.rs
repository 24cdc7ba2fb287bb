//! Pod supervision's writes on PostgreSQL (the SQLite store's `pods`, same
//! rules): each is conditional on the pod it names (same pod id and
//! generation, the expected pod status, and for a host's report the host
//! the row places the pod on), and otherwise changes nothing. Each locks
//! the task's row (`FOR UPDATE`) before deciding, so another replica's
//! command on the task decides on the row as this one leaves it. The claim
//! is in [`super::claim`], the pod's end and the restart policy in
//! [`super::pod_end`].

use serde_json::json;
use sqlx::PgConnection;

use super::commands::{NewEvent, append_event, note_principal};
use crate::core::ports::store::{PodCommand, PodOutcome};
use crate::domain::queue::WAITING_FOR_CAPACITY;
use crate::domain::{
    Cause, EventRecord, EventType, Phase, PodRef, PodStatus, Priority, QueueEntry, SYSTEM_ACTOR,
    TaskId, TaskStatus,
};
use crate::error::Result;

pub(super) use crate::store::pod_row::PodRow;

/// The task's pod columns, its row locked until the commit.
pub(super) async fn pod_row(conn: &mut PgConnection, task_id: TaskId) -> Result<Option<PodRow>> {
    Ok(sqlx::query_as(
        "SELECT status, phase, pod_status, pod_id, pod_host, pod_generation, \
         pod_correlation_id, auto_restart, max_restarts, restart_window_seconds, \
         initial_backoff_ms, max_backoff_ms FROM tasks WHERE task_id = $1 FOR UPDATE",
    )
    .bind(task_id.to_string())
    .fetch_optional(&mut *conn)
    .await?)
}

/// Appends an automatic event (actor `system`) correlated with `corr`.
pub(super) async fn system_event(
    conn: &mut PgConnection,
    task_id: TaskId,
    event: EventType,
    data: serde_json::Value,
    corr: &str,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<()> {
    let e = NewEvent {
        event,
        data,
        actor: SYSTEM_ACTOR,
        correlation: corr,
    };
    append_event(conn, task_id, e, now, events).await
}

/// The fields every pod event carries.
pub(super) fn pod_data(pod: &PodRef, host: &str) -> serde_json::Value {
    json!({"pod_id": pod.pod_id, "pod_host": host, "generation": pod.generation})
}

/// Runs one pod command.
pub async fn apply(
    conn: &mut PgConnection,
    cmd: &PodCommand,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<PodOutcome> {
    match cmd {
        PodCommand::Claim {
            task_id,
            pod_id,
            host_id,
            cause,
            automatic,
        } => super::claim::claim(conn, *task_id, pod_id, host_id, cause, *automatic, now).await,
        PodCommand::Started {
            pod,
            pid,
            started_at,
            host_id,
            cause,
        } => {
            let start = Start {
                pod,
                pid: *pid,
                started_at: *started_at,
                host_id,
            };
            started(conn, &start, cause, now, events).await
        }
        PodCommand::AbortStart {
            pod,
            message,
            retry_at,
            requeue,
        } => abort_start(conn, pod, message, *retry_at, requeue.as_ref(), now, events).await,
        PodCommand::Ended {
            pod,
            host_id,
            report,
            cause,
            defaults,
            jitter,
        } => {
            let end = super::pod_end::End {
                pod,
                host_id,
                report,
                cause,
                defaults,
                jitter: *jitter,
            };
            super::pod_end::ended(conn, &end, now, events).await
        }
        PodCommand::PhaseChanged {
            pod,
            host_id,
            phase,
            version,
            message,
            coalesced,
        } => {
            let change = PhaseChange {
                pod,
                host_id,
                phase: *phase,
                version: *version,
                message,
                coalesced: *coalesced,
            };
            phase_changed(conn, &change, now, events).await
        }
        PodCommand::HostUnreachable { host_id } => {
            let done = sqlx::query(
                "UPDATE tasks SET pod_status = 'unknown', updated_at = $1 \
                 WHERE pod_host = $2 AND pod_status IN ('starting', 'running')",
            )
            .bind(now)
            .bind(host_id)
            .execute(&mut *conn)
            .await?;
            Ok(PodOutcome::Count(done.rows_affected()))
        }
        PodCommand::Recovered {
            pod,
            pid,
            started_at,
            host_id,
        } => {
            let start = Start {
                pod,
                pid: *pid,
                started_at: *started_at,
                host_id,
            };
            recovered(conn, &start, now, events).await
        }
        PodCommand::Fenced {
            pod,
            host_id,
            reason,
        } => fenced(conn, pod, host_id, reason, now, events).await,
        PodCommand::PruneCrashes { up_to } => {
            let done = sqlx::query("DELETE FROM crash_history WHERE crashed_at <= $1")
                .bind(up_to)
                .execute(&mut *conn)
                .await?;
            Ok(PodOutcome::Count(done.rows_affected()))
        }
    }
}

/// A pod confirmed running by its host.
struct Start<'a> {
    pod: &'a PodRef,
    pid: u32,
    started_at: i64,
    host_id: &'a str,
}

/// The pod-host confirmed the start: RUNNING and `pod_started`, if the row
/// still has this pod STARTING (or UNKNOWN with its start not recorded).
async fn started(
    conn: &mut PgConnection,
    s: &Start<'_>,
    cause: &Cause,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<PodOutcome> {
    let pod = s.pod;
    let Some(row) = pod_row(conn, pod.task_id).await? else {
        return Ok(PodOutcome::Ignored);
    };
    if !row.is(pod) {
        return Ok(PodOutcome::Ignored);
    }
    match row.pod_status()? {
        PodStatus::Starting => mark_running(conn, pod, s.pid, s.started_at, now).await?,
        // The host went silent while the start was in flight: the pod did
        // start, and the trail says so; it stays UNKNOWN until the host is
        // heard from again.
        PodStatus::Unknown if !ran_on(conn, pod, s.host_id).await? => {
            set_pid(conn, pod, s.pid, s.started_at, now).await?
        }
        _ => return Ok(PodOutcome::Ignored),
    }
    let mut data = pod_data(pod, s.host_id);
    data["pid"] = json!(s.pid);
    note_principal(&mut data, cause.authenticated_as.as_deref());
    let e = NewEvent {
        event: EventType::PodStarted,
        data,
        actor: &cause.actor,
        correlation: row.correlation(cause),
    };
    append_event(conn, pod.task_id, e, now, events).await?;
    Ok(PodOutcome::Applied { restart_at: None })
}

/// The start was refused or failed: back to inactive, no event; or, for
/// a start from the queue, back in the queue in its old place with a
/// `pod_queued` marked `requeued`.
async fn abort_start(
    conn: &mut PgConnection,
    pod: &PodRef,
    message: &str,
    retry_at: Option<i64>,
    requeue: Option<&QueueEntry>,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<PodOutcome> {
    let Some(row) = pod_row(conn, pod.task_id).await? else {
        return Ok(PodOutcome::Ignored);
    };
    // UNKNOWN too: the host went silent while the start was on its way,
    // and its answer (a refusal: nothing was spawned) came after.
    if !row.is(pod) || !matches!(row.pod_status()?, PodStatus::Starting | PodStatus::Unknown) {
        return Ok(PodOutcome::Ignored);
    }
    if let Some(q) = requeue {
        // Back in the queue in its old place: still ACTIVE, still waiting.
        let (priority, template, corr): (i64, String, String) = sqlx::query_as(
            "UPDATE tasks SET pod_status = 'stopped', pod_message = $1, live_version = 0, \
             queued_seq = $2, queued_at = $3, updated_at = $4 WHERE task_id = $5 \
             RETURNING priority, template, pod_correlation_id",
        )
        .bind(message)
        .bind(q.seq)
        .bind(q.queued_at)
        .bind(now)
        .bind(pod.task_id.to_string())
        .fetch_one(&mut *conn)
        .await?;
        let data = json!({
            "priority": Priority::from_db(priority)?.name(),
            "template": template,
            "message": message,
            "waiting_for": WAITING_FOR_CAPACITY,
            "requeued": true,
        });
        system_event(
            conn,
            pod.task_id,
            EventType::PodQueued,
            data,
            &corr,
            now,
            events,
        )
        .await?;
        return Ok(PodOutcome::Applied { restart_at: None });
    }
    sqlx::query(
        "UPDATE tasks SET status = 'inactive', pod_status = 'stopped', pod_message = $1, \
         live_version = 0, next_restart_at = $2, updated_at = $3 WHERE task_id = $4",
    )
    .bind(message)
    .bind(retry_at)
    .bind(now)
    .bind(pod.task_id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(PodOutcome::Applied {
        restart_at: retry_at,
    })
}

/// A recorded phase change.
struct PhaseChange<'a> {
    pod: &'a PodRef,
    host_id: &'a str,
    phase: Phase,
    version: u64,
    message: &'a str,
    coalesced: u32,
}

/// `phase_changed`, if the row still has this pod live on this host and
/// the phase differs.
async fn phase_changed(
    conn: &mut PgConnection,
    c: &PhaseChange<'_>,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<PodOutcome> {
    let pod = c.pod;
    let Some(row) = pod_row(conn, pod.task_id).await? else {
        return Ok(PodOutcome::NotOwner);
    };
    if row.is(pod) && !row.on_host(c.host_id) {
        return Ok(PodOutcome::NotOwner);
    }
    let live = matches!(
        row.pod_status()?,
        PodStatus::Starting | PodStatus::Running | PodStatus::Unknown
    );
    if !row.is(pod) || !live || row.phase == c.phase.as_db() {
        return Ok(PodOutcome::Ignored);
    }
    sqlx::query(
        "UPDATE tasks SET phase = $1, live_version = $2, updated_at = $3 WHERE task_id = $4",
    )
    .bind(c.phase.as_db())
    .bind(i64::try_from(c.version).unwrap_or(i64::MAX))
    .bind(now)
    .bind(pod.task_id.to_string())
    .execute(&mut *conn)
    .await?;
    let mut data = json!({"from": row.phase, "to": c.phase.as_db(), "message": c.message,
                      "version": c.version, "pod_id": pod.pod_id});
    if c.coalesced > 0 {
        // Rate-limited: this many phase changes since the previous
        // phase_changed were not recorded one by one.
        data["coalesced"] = json!(c.coalesced);
    }
    let corr = row.pod_correlation_id.as_str();
    system_event(
        conn,
        pod.task_id,
        EventType::PhaseChanged,
        data,
        corr,
        now,
        events,
    )
    .await?;
    Ok(PodOutcome::Applied { restart_at: None })
}

/// The current pod is confirmed alive by its host's hello: RUNNING again,
/// with `pod_recovered` (it was UNKNOWN) or `pod_started` (still STARTING).
async fn recovered(
    conn: &mut PgConnection,
    s: &Start<'_>,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<PodOutcome> {
    let pod = s.pod;
    let Some(row) = pod_row(conn, pod.task_id).await? else {
        return Ok(PodOutcome::NotOwner);
    };
    if row.is(pod) && !row.on_host(s.host_id) {
        return Ok(PodOutcome::NotOwner);
    }
    if !row.is(pod) || row.status != TaskStatus::Active.as_db() {
        return Ok(PodOutcome::Ignored);
    }
    let event = match row.pod_status()? {
        // Recovered, unless its start was never recorded.
        PodStatus::Unknown if ran_on(conn, pod, s.host_id).await? => EventType::PodRecovered,
        PodStatus::Unknown | PodStatus::Starting => EventType::PodStarted,
        PodStatus::Running | PodStatus::Stopped | PodStatus::Queued => {
            return Ok(PodOutcome::Ignored);
        }
    };
    mark_running(conn, pod, s.pid, s.started_at, now).await?;
    let mut data = pod_data(pod, s.host_id);
    data["pid"] = json!(s.pid);
    let corr = row.pod_correlation_id.as_str();
    system_event(conn, pod.task_id, event, data, corr, now, events).await?;
    Ok(PodOutcome::Applied { restart_at: None })
}

/// A stale pod was killed: `pod_fenced` on its task, recorded only if this
/// host ever had that pod (the row places the task there, or the trail
/// shows the pod started there).
async fn fenced(
    conn: &mut PgConnection,
    pod: &PodRef,
    host_id: &str,
    reason: &str,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<PodOutcome> {
    let Some(row) = pod_row(conn, pod.task_id).await? else {
        return Ok(PodOutcome::NotOwner);
    };
    if !row.on_host(host_id) && !ran_on(conn, pod, host_id).await? {
        return Ok(PodOutcome::NotOwner);
    }
    let mut data = pod_data(pod, host_id);
    data["reason"] = json!(reason);
    let corr = row.pod_correlation_id.as_str();
    system_event(
        conn,
        pod.task_id,
        EventType::PodFenced,
        data,
        corr,
        now,
        events,
    )
    .await?;
    Ok(PodOutcome::Applied { restart_at: None })
}

/// Whether the task's trail shows `pod` started (or recovered) on
/// `host_id`. Scans that task's events only (the (stream_id, version) key).
async fn ran_on(conn: &mut PgConnection, pod: &PodRef, host_id: &str) -> Result<bool> {
    let found: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM events WHERE stream_id = $1 AND type IN ('pod_started', 'pod_recovered') \
         AND data_json::jsonb ->> 'pod_id' = $2 AND data_json::jsonb ->> 'pod_host' = $3 LIMIT 1",
    )
    .bind(pod.task_id.to_string())
    .bind(&pod.pod_id)
    .bind(host_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(found.is_some())
}

/// The pid and start time of a pod whose status stays as it is (0 keeps
/// what the row has).
async fn set_pid(
    conn: &mut PgConnection,
    pod: &PodRef,
    pid: u32,
    started_at: i64,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE tasks SET pod_pid = COALESCE(NULLIF($1::BIGINT, 0), pod_pid), \
         pod_started_at = COALESCE(NULLIF($2::BIGINT, 0), pod_started_at), updated_at = $3 \
         WHERE task_id = $4",
    )
    .bind(i64::from(pid))
    .bind(started_at)
    .bind(now)
    .bind(pod.task_id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// RUNNING, with the pid and start time (0 keeps what the row has); the
/// first time a generation runs is kept on central's clock
/// (`pod_running_since`, what its run timeout counts from).
async fn mark_running(
    conn: &mut PgConnection,
    pod: &PodRef,
    pid: u32,
    started_at: i64,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE tasks SET pod_status = 'running', \
         pod_pid = COALESCE(NULLIF($1::BIGINT, 0), pod_pid), \
         pod_started_at = COALESCE(NULLIF($2::BIGINT, 0), pod_started_at), \
         pod_running_since = COALESCE(pod_running_since, $3), updated_at = $3 \
         WHERE task_id = $4",
    )
    .bind(i64::from(pid))
    .bind(started_at)
    .bind(now)
    .bind(pod.task_id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}
