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
use crate::domain::{
    EventRecord, EventType, Phase, PodStatus, RestartDefaults, RestartPolicySpec, TaskId,
    TaskStatus, decide_start,
};
use crate::error::{Error, Result};
use crate::supervisor::exit::Ending;

/// The actor of automatic events (docs/api.md).
pub const SYSTEM_ACTOR: &str = "system";

/// One pod of one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    /// The task.
    pub task_id: TaskId,
    /// The pod.
    pub pod_id: String,
    /// Its generation.
    pub generation: u64,
}

/// Who caused a change: the caller of an RPC, or `system`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `actor_id` on the event.
    pub actor: String,
    /// The authenticated caller when it is not `actor` (an admin acting
    /// for someone): recorded in the event data.
    pub authenticated_as: Option<String>,
    /// `correlation_id` on the event; empty = the pod's start correlation.
    pub correlation: String,
}

impl Cause {
    /// An automatic change, correlated with the request that started the
    /// pod.
    pub fn system() -> Self {
        Self {
            actor: SYSTEM_ACTOR.into(),
            authenticated_as: None,
            correlation: String::new(),
        }
    }

    /// A caller's command.
    pub fn by(actor: &crate::domain::ActorId, correlation: &crate::domain::CorrelationId) -> Self {
        Self {
            actor: actor.as_str().to_owned(),
            authenticated_as: actor.authenticated_as_principal().map(str::to_owned),
            correlation: correlation.as_str().to_owned(),
        }
    }
}

/// How a pod ended, as reported.
#[derive(Debug, Clone, PartialEq)]
pub struct EndReport {
    /// What it means for the task.
    pub ending: Ending,
    /// Event data: exit code, signal, cause, message…
    pub detail: serde_json::Value,
    /// Human summary for `pod_message` (empty for requested stops).
    pub message: String,
    /// The last phase the pod reported, if any.
    pub last_phase: Option<Phase>,
}

/// A pod supervision write.
#[derive(Debug, Clone)]
pub enum PodCommand {
    /// StartPod's claim: the conditional update that decides races. Bumps
    /// the generation and records the placement; no event yet.
    Claim {
        task_id: TaskId,
        pod_id: String,
        host_id: String,
        cause: Cause,
        /// An automatic restart: applies only while one is still scheduled,
        /// and counts in `restart_count`.
        automatic: bool,
    },
    /// The pod-host confirmed the start: `pod_started`.
    Started {
        pod: PodRef,
        pid: u32,
        started_at: i64,
        host_id: String,
        cause: Cause,
    },
    /// The pod-host refused or failed the start: back to inactive, no event
    /// (nothing ran). `retry_at` (an automatic restart's) keeps the restart
    /// scheduled for then, so a refused restart is tried again.
    AbortStart {
        pod: PodRef,
        message: String,
        retry_at: Option<i64>,
    },
    /// The pod ended (exit, stop, loss): the ending's event, then the
    /// restart policy. `host_id` is the host that reported or stopped it.
    Ended {
        pod: PodRef,
        host_id: String,
        report: EndReport,
        cause: Cause,
        defaults: RestartDefaults,
        jitter: f64,
    },
    /// The pod reported a new phase: `phase_changed`. `coalesced` counts
    /// the phase changes folded into this one by the rate limit.
    PhaseChanged {
        pod: PodRef,
        host_id: String,
        phase: Phase,
        version: u64,
        message: String,
        coalesced: u32,
    },
    /// The host of these pods went silent: their status becomes UNKNOWN.
    HostUnreachable { host_id: String },
    /// The current pod is confirmed alive (host back): RUNNING again,
    /// `pod_recovered` if it was UNKNOWN, `pod_started` if still STARTING.
    Recovered {
        pod: PodRef,
        pid: u32,
        started_at: i64,
        host_id: String,
    },
    /// A stale pod was killed: `pod_fenced` on its task.
    Fenced {
        pod: PodRef,
        host_id: String,
        reason: String,
    },
    /// Forget crashes at or before this time (unix micros).
    PruneCrashes { up_to: i64 },
}

/// What the task needs to start a pod, returned by a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedPod {
    pub generation: u64,
    pub correlation: String,
    pub title: String,
    pub description: String,
    pub metadata_json: String,
    pub template: String,
}

/// Result of a [`PodCommand`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodOutcome {
    /// Claim succeeded.
    Claimed(ClaimedPod),
    /// Applied. `restart_at`: an automatic restart is due then (unix µs).
    Applied { restart_at: Option<i64> },
    /// The row no longer has that pod (or nothing to do): no change.
    Ignored,
    /// Rows changed (HostUnreachable, PruneCrashes).
    Count(u64),
    /// The reporting host does not own that pod: nothing changed.
    NotOwner,
}

/// The current pod columns of a row.
#[derive(Debug)]
pub(super) struct PodRow {
    pub(super) status: String,
    pub(super) phase: String,
    pod_status: String,
    pod_id: Option<String>,
    pub(super) pod_host: Option<String>,
    pod_generation: i64,
    pod_correlation_id: String,
    auto_restart: Option<bool>,
    max_restarts: Option<i64>,
    restart_window_seconds: Option<i64>,
    initial_backoff_ms: Option<i64>,
    max_backoff_ms: Option<i64>,
}

impl PodRow {
    pub(super) fn is(&self, pod: &PodRef) -> bool {
        self.pod_id.as_deref() == Some(pod.pod_id.as_str())
            && u64::try_from(self.pod_generation).ok() == Some(pod.generation)
    }

    /// Whether `host_id` is the host the row places its pod on.
    pub(super) fn on_host(&self, host_id: &str) -> bool {
        self.pod_host.as_deref() == Some(host_id)
    }

    pub(super) fn pod_status(&self) -> Result<PodStatus> {
        PodStatus::from_db(&self.pod_status)
    }

    pub(super) fn spec(&self) -> RestartPolicySpec {
        let u = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
        RestartPolicySpec {
            auto_restart: self.auto_restart,
            max_restarts: u(self.max_restarts),
            window_seconds: u(self.restart_window_seconds),
            initial_backoff_ms: u(self.initial_backoff_ms),
            max_backoff_ms: u(self.max_backoff_ms),
        }
    }

    /// The cause's correlation, or the pod's start correlation.
    pub(super) fn correlation<'a>(&'a self, cause: &'a Cause) -> &'a str {
        if cause.correlation.is_empty() {
            &self.pod_correlation_id
        } else {
            &cause.correlation
        }
    }
}

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
            let Some(row) = pod_row(conn, pod.task_id)? else {
                return Ok(PodOutcome::Ignored);
            };
            if !row.is(pod) || row.pod_status()? != PodStatus::Starting {
                return Ok(PodOutcome::Ignored);
            }
            mark_running(conn, pod, *pid, *started_at, now)?;
            let mut data = pod_data(pod, host_id);
            data["pid"] = json!(pid);
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
        PodCommand::AbortStart {
            pod,
            message,
            retry_at,
        } => {
            let Some(row) = pod_row(conn, pod.task_id)? else {
                return Ok(PodOutcome::Ignored);
            };
            if !row.is(pod) || row.pod_status()? != PodStatus::Starting {
                return Ok(PodOutcome::Ignored);
            }
            conn.prepare_cached(
                "UPDATE tasks SET status = 'inactive', pod_status = 'stopped', pod_message = ?, \
                 live_version = 0, next_restart_at = ?, updated_at = ? WHERE task_id = ?",
            )?
            .execute(params![message, retry_at, now, pod.task_id.to_string()])?;
            Ok(PodOutcome::Applied {
                restart_at: *retry_at,
            })
        }
        PodCommand::Ended {
            pod,
            host_id,
            report,
            cause,
            defaults,
            jitter,
        } => super::pod_end::ended(
            conn, pod, host_id, report, cause, defaults, *jitter, now, events,
        ),
        PodCommand::PhaseChanged {
            pod,
            host_id,
            phase,
            version,
            message,
            coalesced,
        } => {
            let Some(row) = pod_row(conn, pod.task_id)? else {
                return Ok(PodOutcome::NotOwner);
            };
            if row.is(pod) && !row.on_host(host_id) {
                return Ok(PodOutcome::NotOwner);
            }
            let live = matches!(
                row.pod_status()?,
                PodStatus::Starting | PodStatus::Running | PodStatus::Unknown
            );
            if !row.is(pod) || !live || row.phase == phase.as_db() {
                return Ok(PodOutcome::Ignored);
            }
            conn.prepare_cached(
                "UPDATE tasks SET phase = ?, live_version = ?, updated_at = ? WHERE task_id = ?",
            )?
            .execute(params![
                phase.as_db(),
                i64::try_from(*version).unwrap_or(i64::MAX),
                now,
                pod.task_id.to_string()
            ])?;
            let mut data = json!({"from": row.phase, "to": phase.as_db(), "message": message,
                              "version": version, "pod_id": pod.pod_id});
            if *coalesced > 0 {
                // Rate-limited: this many phase changes since the previous
                // phase_changed were not recorded one by one.
                data["coalesced"] = json!(coalesced);
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
            let Some(row) = pod_row(conn, pod.task_id)? else {
                return Ok(PodOutcome::NotOwner);
            };
            if row.is(pod) && !row.on_host(host_id) {
                return Ok(PodOutcome::NotOwner);
            }
            let event = match row.pod_status()? {
                PodStatus::Unknown => EventType::PodRecovered,
                PodStatus::Starting => EventType::PodStarted,
                PodStatus::Running | PodStatus::Stopped => return Ok(PodOutcome::Ignored),
            };
            if !row.is(pod) || row.status != TaskStatus::Active.as_db() {
                return Ok(PodOutcome::Ignored);
            }
            mark_running(conn, pod, *pid, *started_at, now)?;
            let mut data = pod_data(pod, host_id);
            data["pid"] = json!(pid);
            let corr = row.pod_correlation_id.clone();
            system_event(conn, pod.task_id, event, data, &corr, now, events)?;
            Ok(PodOutcome::Applied { restart_at: None })
        }
        PodCommand::Fenced {
            pod,
            host_id,
            reason,
        } => {
            let Some(row) = pod_row(conn, pod.task_id)? else {
                return Ok(PodOutcome::NotOwner);
            };
            // Recorded on the task only if this host ever had that pod: the
            // row still places the task there, or the trail shows the pod
            // started there. A host cannot write into other tasks' trails
            // by reporting made-up pods (it may still kill its own
            // processes).
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
        PodCommand::PruneCrashes { up_to } => {
            let done = conn
                .prepare_cached("DELETE FROM crash_history WHERE crashed_at <= ?")?
                .execute([up_to])?;
            Ok(PodOutcome::Count(done as u64))
        }
    }
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

/// RUNNING, with the pid and start time (0 keeps what the row has).
fn mark_running(
    conn: &Connection,
    pod: &PodRef,
    pid: u32,
    started_at: i64,
    now: i64,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE tasks SET pod_status = 'running', pod_pid = COALESCE(NULLIF(?, 0), pod_pid), \
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

fn claim(
    conn: &Connection,
    task_id: TaskId,
    pod_id: &str,
    host_id: &str,
    cause: &Cause,
    automatic: bool,
    now: i64,
) -> Result<PodOutcome> {
    #[allow(clippy::type_complexity)]
    let row: Option<(
        String,
        String,
        Option<i64>,
        i64,
        String,
        String,
        String,
        String,
        String,
    )> = conn
        .prepare_cached(
            "SELECT status, pod_status, next_restart_at, pod_generation, title, description, \
             metadata_json, template, pod_correlation_id FROM tasks WHERE task_id = ?",
        )?
        .query_row([task_id.to_string()], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
            ))
        })
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
    ) = row.ok_or(Error::TaskNotFound(task_id))?;
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
    if automatic && next_restart_at.is_none() {
        // A user action (StartPod, Complete, Cancel) overtook the restart.
        return Ok(PodOutcome::Ignored);
    }
    let generation =
        u64::try_from(generation).map_err(|_| Error::Internal("negative generation".into()))? + 1;
    conn.prepare_cached(
        "UPDATE tasks SET status = 'active', pod_status = 'starting', pod_generation = ?, pod_id = ?, \
         pod_host = ?, pod_pid = NULL, pod_started_at = NULL, live_version = 0, pod_message = '', \
         next_restart_at = NULL, pod_correlation_id = ?, restart_count = restart_count + ?, updated_at = ? \
         WHERE task_id = ?",
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
    }))
}
