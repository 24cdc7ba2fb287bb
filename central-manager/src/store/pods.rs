//! Pod supervision's writes, run inside the writer's transaction like every
//! other command. Each is *conditional on the pod it names*: it applies only
//! while the task's row still has that pod (same pod id and generation) in
//! the expected pod status, and is otherwise [`PodOutcome::Ignored`]. That
//! is what makes the two paths that learn about a pod (the RPC that acted
//! on it and the pod-host's event stream) safe to race: whichever commits
//! first wins, the other is a no-op, and a stale report about an old
//! generation can never touch the current pod.
//!
//! Ownership: what a pod-host reports (an end, a phase, a recovery, a
//! fenced pod) applies only to a pod that host owns: the row names that host
//! as well as that pod and generation. A report about another host's pod is
//! [`PodOutcome::NotOwner`], changes nothing, and is counted by the caller.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::json;

use super::commands::append_event;
pub use crate::core::ports::store::{ClaimedPod, PodCommand, PodOutcome};
pub use crate::domain::{Cause, EndReport, PodRef, SYSTEM_ACTOR};
use crate::domain::{EventRecord, EventType, Phase, PodStatus, TaskId, TaskStatus, decide_start};
use crate::error::{Error, Result};

pub(super) use super::pod_row::PodRow;

pub(super) fn pod_row(conn: &Connection, task_id: TaskId) -> Result<Option<PodRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT status, phase, pod_status, pod_id, pod_host, pod_generation, \
             pod_correlation_id, auto_restart, max_restarts, restart_window_seconds, \
             initial_backoff_ms, max_backoff_ms FROM tasks WHERE task_id = ?",
        )?
        .query_row([task_id.to_string()], |r| {
            Ok(PodRow {
                status: r.get(0)?,
                phase: r.get(1)?,
                pod_status: r.get(2)?,
                pod_id: r.get(3)?,
                pod_host: r.get(4)?,
                pod_generation: r.get(5)?,
                pod_correlation_id: r.get(6)?,
                auto_restart: r.get(7)?,
                max_restarts: r.get(8)?,
                restart_window_seconds: r.get(9)?,
                initial_backoff_ms: r.get(10)?,
                max_backoff_ms: r.get(11)?,
            })
        })
        .optional()?)
}

/// Appends an automatic event (actor `system`) correlated with `corr`.
pub(super) fn system_event(
    conn: &Connection,
    task_id: TaskId,
    event: EventType,
    data: serde_json::Value,
    corr: &str,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<()> {
    append_event(conn, task_id, event, data, SYSTEM_ACTOR, corr, now, events)
}

/// The fields every pod event carries.
pub(super) fn pod_data(pod: &PodRef, host: &str) -> serde_json::Value {
    json!({"pod_id": pod.pod_id, "pod_host": host, "generation": pod.generation})
}

/// Runs one pod command (see [`super::commands::apply`]).
pub fn apply(
    conn: &Connection,
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
        } => claim(conn, *task_id, pod_id, host_id, cause, *automatic, now),
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
            started(conn, &start, cause, now, events)
        }
        PodCommand::AbortStart {
            pod,
            message,
            retry_at,
            requeue,
        } => abort_start(conn, pod, message, *retry_at, requeue.as_ref(), now, events),
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
            super::pod_end::ended(conn, &end, now, events)
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
            phase_changed(conn, &change, now, events)
        }
        PodCommand::HostUnreachable { host_id } => {
            let done = conn
                .prepare_cached(
                    "UPDATE tasks SET pod_status = 'unknown', updated_at = ? \
                     WHERE pod_host = ? AND pod_status IN ('starting', 'running')",
                )?
                .execute(params![now, host_id])?;
            Ok(PodOutcome::Count(done as u64))
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
            recovered(conn, &start, now, events)
        }
        PodCommand::Fenced {
            pod,
            host_id,
            reason,
        } => fenced(conn, pod, host_id, reason, now, events),
        PodCommand::PruneCrashes { up_to } => {
            let done = conn
                .prepare_cached("DELETE FROM crash_history WHERE crashed_at <= ?")?
                .execute([up_to])?;
            Ok(PodOutcome::Count(done as u64))
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
/// still has this pod STARTING.
fn started(
    conn: &Connection,
    s: &Start<'_>,
    cause: &Cause,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<PodOutcome> {
    let pod = s.pod;
    let Some(row) = pod_row(conn, pod.task_id)? else {
        return Ok(PodOutcome::Ignored);
    };
    if !row.is(pod) {
        return Ok(PodOutcome::Ignored);
    }
    match row.pod_status()? {
        PodStatus::Starting => mark_running(conn, pod, s.pid, s.started_at, now)?,
        // The host went silent while the start was in flight: the pod did
        // start, and the trail must say so before any pod_recovered or
        // pod_lost; it stays UNKNOWN until the host is heard from again.
        PodStatus::Unknown if !ran_on(conn, pod, s.host_id)? => {
            set_pid(conn, pod, s.pid, s.started_at, now)?
        }
        _ => return Ok(PodOutcome::Ignored),
    }
    let mut data = pod_data(pod, s.host_id);
    data["pid"] = json!(s.pid);
    super::commands::note_principal(&mut data, cause.authenticated_as.as_deref());
    let corr = row.correlation(cause).to_owned();
    append_event(
        conn,
        pod.task_id,
        EventType::PodStarted,
        data,
        &cause.actor,
        &corr,
        now,
        events,
    )?;
    Ok(PodOutcome::Applied { restart_at: None })
}

/// The start was refused or failed: back to inactive, no event; or, for
/// a start from the queue, back in the queue in its old place with a
/// `pod_queued` marked `requeued` (the trail shows that it waits again:
/// while its start was on its way, the dispatcher may have started tasks
/// behind it).
fn abort_start(
    conn: &Connection,
    pod: &PodRef,
    message: &str,
    retry_at: Option<i64>,
    requeue: Option<&crate::domain::QueueEntry>,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<PodOutcome> {
    let Some(row) = pod_row(conn, pod.task_id)? else {
        return Ok(PodOutcome::Ignored);
    };
    // UNKNOWN too: the host went silent while the start was on its way,
    // and its answer (a refusal: nothing was spawned) came after. Left
    // UNKNOWN, the task would wait for a reconcile that already happened.
    if !row.is(pod) || !matches!(row.pod_status()?, PodStatus::Starting | PodStatus::Unknown) {
        return Ok(PodOutcome::Ignored);
    }
    if let Some(q) = requeue {
        // Back in the queue in its old place: still ACTIVE, still waiting.
        conn.prepare_cached(
            "UPDATE tasks SET pod_status = 'stopped', pod_message = ?, live_version = 0, \
             queued_seq = ?, queued_at = ?, updated_at = ? WHERE task_id = ?",
        )?
        .execute(params![
            message,
            q.seq,
            q.queued_at,
            now,
            pod.task_id.to_string()
        ])?;
        let (priority, template, corr): (i64, String, String) = conn
            .prepare_cached(
                "SELECT priority, template, pod_correlation_id FROM tasks WHERE task_id = ?",
            )?
            .query_row([pod.task_id.to_string()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        let priority = crate::domain::Priority::from_db(priority)?;
        super::commands::append_event(
            conn,
            pod.task_id,
            crate::domain::EventType::PodQueued,
            json!({
                "priority": priority.name(),
                "template": template,
                "message": message,
                "waiting_for": crate::domain::queue::WAITING_FOR_CAPACITY,
                "requeued": true,
            }),
            crate::domain::SYSTEM_ACTOR,
            &corr,
            now,
            events,
        )?;
        return Ok(PodOutcome::Applied { restart_at: None });
    }
    conn.prepare_cached(
        "UPDATE tasks SET status = 'inactive', pod_status = 'stopped', pod_message = ?, \
         live_version = 0, next_restart_at = ?, updated_at = ? WHERE task_id = ?",
    )?
    .execute(params![message, retry_at, now, pod.task_id.to_string()])?;
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
fn phase_changed(
    conn: &Connection,
    c: &PhaseChange<'_>,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<PodOutcome> {
    let pod = c.pod;
    let Some(row) = pod_row(conn, pod.task_id)? else {
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
    conn.prepare_cached(
        "UPDATE tasks SET phase = ?, live_version = ?, updated_at = ? WHERE task_id = ?",
    )?
    .execute(params![
        c.phase.as_db(),
        i64::try_from(c.version).unwrap_or(i64::MAX),
        now,
        pod.task_id.to_string()
    ])?;
    let mut data = json!({"from": row.phase, "to": c.phase.as_db(), "message": c.message,
                      "version": c.version, "pod_id": pod.pod_id});
    if c.coalesced > 0 {
        // Rate-limited: this many phase changes since the previous
        // phase_changed were not recorded one by one.
        data["coalesced"] = json!(c.coalesced);
    }
    let corr = row.pod_correlation_id.clone();
    system_event(
        conn,
        pod.task_id,
        EventType::PhaseChanged,
        data,
        &corr,
        now,
        events,
    )?;
    Ok(PodOutcome::Applied { restart_at: None })
}

/// The current pod is confirmed alive by its host's hello: RUNNING again,
/// with `pod_recovered` (it was UNKNOWN) or `pod_started` (still STARTING).
fn recovered(
    conn: &Connection,
    s: &Start<'_>,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<PodOutcome> {
    let pod = s.pod;
    let Some(row) = pod_row(conn, pod.task_id)? else {
        return Ok(PodOutcome::NotOwner);
    };
    if row.is(pod) && !row.on_host(s.host_id) {
        return Ok(PodOutcome::NotOwner);
    }
    if !row.is(pod) || row.status != TaskStatus::Active.as_db() {
        return Ok(PodOutcome::Ignored);
    }
    let event = match row.pod_status()? {
        // Recovered, unless its start was never recorded (the host went
        // silent while the start was in flight).
        PodStatus::Unknown if ran_on(conn, pod, s.host_id)? => EventType::PodRecovered,
        PodStatus::Unknown | PodStatus::Starting => EventType::PodStarted,
        PodStatus::Running | PodStatus::Stopped | PodStatus::Queued => {
            return Ok(PodOutcome::Ignored);
        }
    };
    mark_running(conn, pod, s.pid, s.started_at, now)?;
    let mut data = pod_data(pod, s.host_id);
    data["pid"] = json!(s.pid);
    let corr = row.pod_correlation_id.clone();
    system_event(conn, pod.task_id, event, data, &corr, now, events)?;
    Ok(PodOutcome::Applied { restart_at: None })
}

/// A stale pod was killed: `pod_fenced` on its task. Recorded only if this
/// host ever had that pod: the row still places the task there, or the
/// trail shows the pod started there. A host cannot write into other
/// tasks' trails by reporting made-up pods (it may still kill its own
/// processes).
fn fenced(
    conn: &Connection,
    pod: &PodRef,
    host_id: &str,
    reason: &str,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<PodOutcome> {
    let Some(row) = pod_row(conn, pod.task_id)? else {
        return Ok(PodOutcome::NotOwner);
    };
    if !row.on_host(host_id) && !ran_on(conn, pod, host_id)? {
        return Ok(PodOutcome::NotOwner);
    }
    let mut data = pod_data(pod, host_id);
    data["reason"] = json!(reason);
    let corr = row.pod_correlation_id.clone();
    system_event(
        conn,
        pod.task_id,
        EventType::PodFenced,
        data,
        &corr,
        now,
        events,
    )?;
    Ok(PodOutcome::Applied { restart_at: None })
}

/// Whether the task's trail shows `pod` started (or recovered) on
/// `host_id`. Scans that task's events only (the (stream_id, version) key).
fn ran_on(conn: &Connection, pod: &PodRef, host_id: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM events WHERE stream_id = ? AND type IN ('pod_started', 'pod_recovered') \
             AND json_extract(data_json, '$.pod_id') = ? \
             AND json_extract(data_json, '$.pod_host') = ?",
        )?
        .exists(params![pod.task_id.to_string(), pod.pod_id, host_id])?)
}

/// The pid and start time of a pod whose status stays as it is.
fn set_pid(conn: &Connection, pod: &PodRef, pid: u32, started_at: i64, now: i64) -> Result<()> {
    conn.prepare_cached(
        "UPDATE tasks SET pod_pid = COALESCE(NULLIF(?, 0), pod_pid), \
         pod_started_at = COALESCE(NULLIF(?, 0), pod_started_at), updated_at = ? WHERE task_id = ?",
    )?
    .execute(params![
        i64::from(pid),
        started_at,
        now,
        pod.task_id.to_string()
    ])?;
    Ok(())
}

/// RUNNING, with the pid and start time (0 keeps what the row has). The
/// first time a generation runs is also kept on central's clock
/// (`pod_running_since`, what its run timeout counts from): a recovered
/// pod keeps it.
fn mark_running(
    conn: &Connection,
    pod: &PodRef,
    pid: u32,
    started_at: i64,
    now: i64,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE tasks SET pod_status = 'running', pod_pid = COALESCE(NULLIF(?, 0), pod_pid), \
         pod_started_at = COALESCE(NULLIF(?, 0), pod_started_at), \
         pod_running_since = COALESCE(pod_running_since, ?), updated_at = ? WHERE task_id = ?",
    )?
    .execute(params![
        i64::from(pid),
        started_at,
        now,
        now,
        pod.task_id.to_string()
    ])?;
    Ok(())
}

fn claim(
    conn: &Connection,
    task_id: TaskId,
    pod_id: &str,
    host_id: &str,
    cause: &Cause,
    automatic: bool,
    now: i64,
) -> Result<PodOutcome> {
    type ClaimRow = (
        String,
        String,
        Option<i64>,
        i64,
        String,
        String,
        String,
        String,
        String,
        Option<i64>,
        Option<i64>,
    );
    let row: Option<ClaimRow> = conn
        .prepare_cached(
            "SELECT status, pod_status, next_restart_at, pod_generation, title, description, \
             metadata_json, template, pod_correlation_id, queued_seq, queued_at \
             FROM tasks WHERE task_id = ?",
        )?
        .query_row([task_id.to_string()], |r| ClaimRow::try_from(r))
        .optional()?;
    let (
        status,
        pod_status,
        next_restart_at,
        generation,
        title,
        description,
        metadata_json,
        template,
        previous,
        queued_seq,
        queued_at,
    ) = row.ok_or(Error::TaskNotFound(task_id))?;
    let queued = queued_seq.map(|seq| crate::domain::QueueEntry {
        seq,
        queued_at: queued_at.unwrap_or(0),
        position: 0,
    });
    // Automatic restarts carry the correlation of the request that started
    // the task's pods in the first place.
    let correlation = if cause.correlation.is_empty() {
        previous
    } else {
        cause.correlation.clone()
    };
    decide_start(
        task_id,
        TaskStatus::from_db(&status)?,
        PodStatus::from_db(&pod_status)?,
    )?;
    // Checked here, in the claim's transaction, so a dependency cannot
    // end differently between the check and the start.
    if let Some(dep) = super::dependencies::unmet(conn, task_id)? {
        return Err(Error::DependenciesNotMet(task_id, dep));
    }
    if automatic && (queued.is_some() || next_restart_at.is_none_or(|at| at > now)) {
        // A user action (StartPod, Complete, Cancel) overtook the restart;
        // or it did and then a new failure scheduled a later one: this
        // restart is not due yet (its own timer fires it), and starting
        // now would cut the new failure's backoff short (found by the
        // simulator's restart-policy check, seed 741).
        return Ok(PodOutcome::Ignored);
    }
    let generation =
        u64::try_from(generation).map_err(|_| Error::Internal("negative generation".into()))? + 1;
    conn.prepare_cached(
        "UPDATE tasks SET status = 'active', pod_status = 'starting', pod_generation = ?, pod_id = ?, \
         pod_host = ?, pod_pid = NULL, pod_started_at = NULL, pod_running_since = NULL, live_version = 0, pod_message = '', \
         next_restart_at = NULL, pod_correlation_id = ?, restart_count = restart_count + ?, updated_at = ?, \
         queued_seq = NULL, queued_at = NULL WHERE task_id = ?",
    )?
    .execute(params![
        i64::try_from(generation).unwrap_or(i64::MAX),
        pod_id,
        host_id,
        &correlation,
        i64::from(automatic),
        now,
        task_id.to_string()
    ])?;
    Ok(PodOutcome::Claimed(ClaimedPod {
        generation,
        correlation,
        title,
        description,
        metadata_json,
        template,
        queued,
    }))
}
