//! StartPod's claim on PostgreSQL (the SQLite store's `pods::claim`, same
//! rules): the conditional update that decides races. The task's row is
//! locked (`FOR UPDATE`) and then decided on, so of two replicas claiming
//! one task the second finds it started. A claim of a queued task takes it
//! out of the queue and names the entry, so a refused start can put it
//! back in its old place.

use sqlx::PgConnection;

use super::dependencies;
use crate::core::ports::store::{ClaimedPod, PodOutcome};
use crate::domain::{Cause, PodStatus, QueueEntry, TaskId, TaskStatus, decide_start};
use crate::error::{Error, Result};

/// The columns a claim decides on and returns.
#[derive(sqlx::FromRow)]
struct ClaimRow {
    status: String,
    pod_status: String,
    next_restart_at: Option<i64>,
    pod_generation: i64,
    title: String,
    description: String,
    metadata_json: String,
    template: String,
    pod_correlation_id: String,
    queued_seq: Option<i64>,
    queued_at: Option<i64>,
}

/// StartPod's claim: the conditional update that decides races (the row
/// is locked, then decided on by the same rules as SQLite's).
pub(super) async fn claim(
    conn: &mut PgConnection,
    task_id: TaskId,
    pod_id: &str,
    host_id: &str,
    cause: &Cause,
    automatic: bool,
    now: i64,
) -> Result<PodOutcome> {
    let row: Option<ClaimRow> = sqlx::query_as(
        "SELECT status, pod_status, next_restart_at, pod_generation, title, description, \
         metadata_json, template, pod_correlation_id, queued_seq, queued_at \
         FROM tasks WHERE task_id = $1 FOR UPDATE",
    )
    .bind(task_id.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    let r = row.ok_or(Error::TaskNotFound(task_id))?;
    let queued = r.queued_seq.map(|seq| QueueEntry {
        seq,
        queued_at: r.queued_at.unwrap_or(0),
        position: 0,
    });
    // Automatic restarts carry the correlation of the request that started
    // the task's pods in the first place.
    let correlation = if cause.correlation.is_empty() {
        r.pod_correlation_id
    } else {
        cause.correlation.clone()
    };
    decide_start(
        task_id,
        TaskStatus::from_db(&r.status)?,
        PodStatus::from_db(&r.pod_status)?,
    )?;
    // Checked in the claim's transaction, so a dependency cannot end
    // differently between the check and the start.
    if let Some(dep) = dependencies::unmet(conn, task_id).await? {
        return Err(Error::DependenciesNotMet(task_id, dep));
    }
    if automatic && (queued.is_some() || r.next_restart_at.is_none_or(|at| at > now)) {
        // A user action overtook the restart, or a later failure scheduled
        // a later one: this restart is not due (as SQLite).
        return Ok(PodOutcome::Ignored);
    }
    let generation = u64::try_from(r.pod_generation)
        .map_err(|_| Error::Internal("negative generation".into()))?
        + 1;
    sqlx::query(
        "UPDATE tasks SET status = 'active', pod_status = 'starting', pod_generation = $1, \
         pod_id = $2, pod_host = $3, pod_pid = NULL, pod_started_at = NULL, \
         pod_running_since = NULL, live_version = 0, pod_message = '', next_restart_at = NULL, \
         pod_correlation_id = $4, restart_count = restart_count + $5, updated_at = $6, \
         queued_seq = NULL, queued_at = NULL WHERE task_id = $7",
    )
    .bind(i64::try_from(generation).unwrap_or(i64::MAX))
    .bind(pod_id)
    .bind(host_id)
    .bind(&correlation)
    .bind(i64::from(automatic))
    .bind(now)
    .bind(task_id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(PodOutcome::Claimed(ClaimedPod {
        generation,
        correlation,
        title: r.title,
        description: r.description,
        metadata_json: r.metadata_json,
        template: r.template,
        queued,
    }))
}
