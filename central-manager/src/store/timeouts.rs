//! Run timeouts and deadlines in the database: the timers read from stored
//! times (a running pod's `pod_started_at + timeout_seconds`, a live task's
//! `deadline`), each served by a partial index of migration
//! `20260401000001_timeouts`, and the deadline's write (`task_failed` with
//! `{"reason":"deadline_exceeded"}`), conditional like every command: a
//! task that became terminal, or whose deadline is not the one the timer
//! saw, is left alone. A pod's timeout is written as the pod's end
//! (`PodCommand::Ended` with `Ending::TimedOut`, see `pod_end`).

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::json;

use super::commands::append_event;
use crate::core::ports::store::Outcome;
use crate::domain::timeout::Timer;
use crate::domain::{EventRecord, EventType, PodRef, SYSTEM_ACTOR, TaskId, TaskStatus};
use crate::error::Result;

/// The earliest timer due (unix µs), if any: two index-only MIN lookups.
pub fn earliest_timer(c: &Connection) -> Result<Option<i64>> {
    let timeout: Option<i64> = c
        .prepare_cached(
            "SELECT MIN(pod_started_at + timeout_seconds * 1000000) FROM tasks \
             WHERE timeout_seconds IS NOT NULL AND pod_status = 'running'",
        )?
        .query_row([], |r| r.get(0))?;
    let deadline: Option<i64> = c
        .prepare_cached(
            "SELECT MIN(deadline) FROM tasks \
             WHERE deadline IS NOT NULL AND status IN ('inactive', 'active')",
        )?
        .query_row([], |r| r.get(0))?;
    Ok(match (timeout, deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

/// Timers due at `now`, earliest first, at most `limit` of each kind.
pub fn due_timers(c: &Connection, now: i64, limit: u32) -> Result<Vec<Timer>> {
    let mut out = Vec::new();
    let mut st = c.prepare_cached(
        "SELECT task_id, pod_id, pod_host, pod_generation, timeout_seconds, \
         pod_started_at + timeout_seconds * 1000000 AS due FROM tasks \
         WHERE timeout_seconds IS NOT NULL AND pod_status = 'running' \
         AND pod_started_at + timeout_seconds * 1000000 <= ? ORDER BY due LIMIT ?",
    )?;
    type Row = (String, Option<String>, Option<String>, i64, i64, i64);
    let rows = st.query_map(params![now, limit], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
        ))
    })?;
    for r in rows {
        let (task, pod_id, host, generation, timeout, at): Row = r?;
        // A running row always names its pod and host; one that does not
        // has nothing to stop.
        let (Some(pod_id), Some(host_id)) = (pod_id, host) else {
            continue;
        };
        out.push(Timer::PodTimeout {
            pod: PodRef {
                task_id: TaskId::from_db(&task)?,
                pod_id,
                generation: u64::try_from(generation).unwrap_or(0),
            },
            host_id,
            timeout_seconds: u32::try_from(timeout).unwrap_or(u32::MAX),
            at,
        });
    }
    let mut st = c.prepare_cached(
        "SELECT task_id, deadline FROM tasks WHERE deadline IS NOT NULL \
         AND status IN ('inactive', 'active') AND deadline <= ? ORDER BY deadline LIMIT ?",
    )?;
    let rows = st.query_map(params![now, limit], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    for r in rows {
        let (task, at) = r?;
        out.push(Timer::Deadline {
            task_id: TaskId::from_db(&task)?,
            at,
        });
    }
    Ok(out)
}

/// Fails `task_id` for its deadline `at`, if it is still live with that
/// deadline and `at` has passed: status FAILED, any pod no longer current
/// (the caller stops it), `task_failed` by `system`.
pub(super) fn deadline_exceeded(
    conn: &Connection,
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
    let row: Option<Row> = conn
        .prepare_cached(
            "SELECT status, deadline, pod_status, pod_id, pod_host, pod_generation, \
             pod_correlation_id FROM tasks WHERE task_id = ?",
        )?
        .query_row([&id], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .optional()?;
    let Some((status, deadline, pod_status, pod_id, pod_host, generation, corr)) = row else {
        return Ok(Outcome::DeadlineExceeded {
            failed: false,
            stop_pod: None,
        });
    };
    let live = !TaskStatus::from_db(&status)?.is_terminal();
    if !live || deadline != Some(at) || at > now {
        return Ok(Outcome::DeadlineExceeded {
            failed: false,
            stop_pod: None,
        });
    }
    conn.prepare_cached(
        "UPDATE tasks SET status = 'failed', pod_status = 'stopped', live_version = 0, \
         next_restart_at = NULL, pod_message = 'deadline exceeded', updated_at = ? \
         WHERE task_id = ?",
    )?
    .execute(params![now, &id])?;
    let mut data = json!({"reason": "deadline_exceeded", "deadline": at});
    // As CompleteTask/CancelTask: the pod this ends is named, so the trail
    // records every pod's end once (its later exit finds the task terminal).
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
    append_event(
        conn,
        task_id,
        EventType::TaskFailed,
        data,
        SYSTEM_ACTOR,
        &corr,
        now,
        events,
    )?;
    Ok(Outcome::DeadlineExceeded {
        failed: true,
        stop_pod,
    })
}
