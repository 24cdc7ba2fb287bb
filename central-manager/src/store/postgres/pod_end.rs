//! How a pod's end is committed on PostgreSQL (the SQLite store's
//! `pod_end`, same rules): the ending's event, the task's new status and
//! phase, then the restart policy (crash history, and either
//! `restart_scheduled` or `task_failed`). Conditional on the pod, like
//! every command in [`super::pods`].

use std::time::Duration;

use serde_json::json;
use sqlx::PgConnection;

use super::commands::{NewEvent, append_event, note_principal};
use super::pods::{PodRow, pod_data, pod_row, system_event};
use crate::core::ports::store::PodOutcome;
use crate::domain::restart_decision::{self, Decision, Policy};
use crate::domain::{
    Cause, EndReport, Ending, EventRecord, EventType, Phase, PodRef, PodStatus, RestartDefaults,
    RestartPolicy, TaskStatus,
};
use crate::error::Result;

/// One pod end to commit.
pub(super) struct End<'a> {
    pub pod: &'a PodRef,
    pub host_id: &'a str,
    pub report: &'a EndReport,
    pub cause: &'a Cause,
    pub defaults: &'a RestartDefaults,
    pub jitter: f64,
}

/// Commits `end` if the row still has that pod live on that host, then
/// lets the restart policy decide.
pub(super) async fn ended(
    conn: &mut PgConnection,
    end: &End<'_>,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<PodOutcome> {
    let pod = end.pod;
    let Some(row) = pod_row(conn, pod.task_id).await? else {
        return Ok(PodOutcome::NotOwner);
    };
    if row.is(pod) && !row.on_host(end.host_id) {
        return Ok(PodOutcome::NotOwner);
    }
    let pod_status = row.pod_status()?;
    if !row.is(pod) || pod_status == PodStatus::Stopped || row.status != TaskStatus::Active.as_db()
    {
        return Ok(PodOutcome::Ignored);
    }
    let corr = row.correlation(end.cause).to_owned();
    record_end(conn, &row, end, pod_status, &corr, now, events).await?;
    let policy = row.spec().resolve(end.defaults);
    let decision = decide(conn, end, &policy, now).await?;
    apply_decision(conn, pod, &policy, decision, &corr, now, events).await
}

/// The ending's event (after a `pod_started` when the start had not been
/// confirmed yet) and the row's new status, phase and pod status.
async fn record_end(
    conn: &mut PgConnection,
    row: &PodRow,
    end: &End<'_>,
    pod_status: PodStatus,
    corr: &str,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<()> {
    let (pod, report) = (end.pod, end.report);
    let host = row.pod_host.clone().unwrap_or_default();
    if pod_status == PodStatus::Starting && report.ending != Ending::SpawnFailed {
        // It ended before its start was confirmed: the trail still shows
        // that it ran. (A pod that could not be spawned never ran.)
        let data = pod_data(pod, &host);
        system_event(
            conn,
            pod.task_id,
            EventType::PodStarted,
            data,
            corr,
            now,
            events,
        )
        .await?;
    }
    let mut data = report.detail.clone();
    if let (Some(obj), serde_json::Value::Object(ids)) =
        (data.as_object_mut(), pod_data(pod, &host))
    {
        obj.extend(ids);
    }
    let phase = match report.ending {
        Ending::Completed => Phase::Completed,
        _ => report
            .last_phase
            .map_or_else(|| Phase::from_db(&row.phase), Ok)?,
    };
    let status = if report.ending == Ending::Completed {
        TaskStatus::Completed
    } else {
        TaskStatus::Inactive
    };
    sqlx::query(
        "UPDATE tasks SET status = $1, phase = $2, pod_status = 'stopped', live_version = 0, \
         pod_message = $3, updated_at = $4 WHERE task_id = $5",
    )
    .bind(status.as_db())
    .bind(phase.as_db())
    .bind(&report.message)
    .bind(now)
    .bind(pod.task_id.to_string())
    .execute(&mut *conn)
    .await?;
    note_principal(&mut data, end.cause.authenticated_as.as_deref());
    let e = NewEvent {
        event: report.ending.event_type(),
        data,
        actor: &end.cause.actor,
        correlation: corr,
    };
    append_event(conn, pod.task_id, e, now, events).await
}

/// The restart policy's answer to this end (a failure is recorded in the
/// crash history first).
async fn decide(
    conn: &mut PgConnection,
    end: &End<'_>,
    policy: &RestartPolicy,
    now: i64,
) -> Result<Decision> {
    let id = end.pod.task_id.to_string();
    Ok(match end.report.ending {
        Ending::Crashed | Ending::SpawnFailed | Ending::Lost | Ending::TimedOut => {
            let history = crashes_in_window(conn, &id, policy, now).await?;
            sqlx::query(
                "INSERT INTO crash_history (task_id, crashed_at) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&id)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            let ms = |v: u32| Duration::from_millis(u64::from(v));
            let p = Policy {
                auto_restart: policy.auto_restart,
                max_restarts: policy.max_restarts,
                window: Duration::from_secs(u64::from(policy.window_seconds)),
                initial_backoff: ms(policy.initial_backoff_ms),
                max_backoff: ms(policy.max_backoff_ms),
            };
            restart_decision::decide(&p, &history, now, end.jitter)
        }
        // Drained hosts are not the pod's fault: move it at once.
        Ending::HostShutdown if policy.auto_restart => Decision::Restart {
            delay: Duration::ZERO,
            crashes_in_window: 0,
        },
        _ => Decision::Stay,
    })
}

/// Schedules the restart (`restart_scheduled`) or fails the task
/// (`task_failed`), as decided.
async fn apply_decision(
    conn: &mut PgConnection,
    pod: &PodRef,
    policy: &RestartPolicy,
    decision: Decision,
    corr: &str,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<PodOutcome> {
    let id = pod.task_id.to_string();
    match decision {
        Decision::Stay => Ok(PodOutcome::Applied { restart_at: None }),
        Decision::Restart {
            delay,
            crashes_in_window,
        } => {
            let at = now.saturating_add(i64::try_from(delay.as_micros()).unwrap_or(i64::MAX));
            sqlx::query("UPDATE tasks SET next_restart_at = $1 WHERE task_id = $2")
                .bind(at)
                .bind(&id)
                .execute(&mut *conn)
                .await?;
            let data = json!({"delay_ms": delay.as_millis() as u64, "crashes_in_window": crashes_in_window,
                              "max_restarts": policy.max_restarts, "window_seconds": policy.window_seconds});
            let kind = EventType::RestartScheduled;
            system_event(conn, pod.task_id, kind, data, corr, now, events).await?;
            Ok(PodOutcome::Applied {
                restart_at: Some(at),
            })
        }
        Decision::GiveUp { crashes_in_window } => {
            let why = format!(
                "{crashes_in_window} crashes within {} s exceed max_restarts {}",
                policy.window_seconds, policy.max_restarts
            );
            sqlx::query("UPDATE tasks SET status = 'failed', pod_message = $1, updated_at = $2 WHERE task_id = $3")
                .bind(&why)
                .bind(now)
                .bind(&id)
                .execute(&mut *conn)
                .await?;
            let data = json!({"reason": why, "crashes_in_window": crashes_in_window});
            let kind = EventType::TaskFailed;
            system_event(conn, pod.task_id, kind, data, corr, now, events).await?;
            Ok(PodOutcome::Applied { restart_at: None })
        }
    }
}

/// The task's crashes inside its policy window, newest first, at most
/// `max_restarts + 1` of them (all the decision needs), read by the
/// primary key's range (task_id, crashed_at).
async fn crashes_in_window(
    conn: &mut PgConnection,
    task_id: &str,
    policy: &RestartPolicy,
    now: i64,
) -> Result<Vec<i64>> {
    let window = i64::from(policy.window_seconds).saturating_mul(1_000_000);
    let since = now.saturating_sub(window);
    let limit = i64::from(policy.max_restarts).saturating_add(1);
    Ok(sqlx::query_scalar(
        "SELECT crashed_at FROM crash_history WHERE task_id = $1 AND crashed_at > $2 \
         AND crashed_at <= $3 ORDER BY crashed_at DESC LIMIT $4",
    )
    .bind(task_id)
    .bind(since)
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}
