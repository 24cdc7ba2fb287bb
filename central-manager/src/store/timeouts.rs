//! Run timeouts and deadlines in the database: the timers read from stored
//! times (a running pod's `pod_running_since + timeout_seconds`, a live
//! task's `deadline`), each served by a partial index of migration
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

/// The earliest timer due (unix µs), if any: three MIN lookups, each on
/// its partial index. `INDEXED BY` because without statistics the planner
/// took the status index for deadlines and read every live task: with
/// 10,000 queued, the timer loop was half of central-manager's time.
pub fn earliest_timer(c: &Connection) -> Result<Option<i64>> {
    let timeout: Option<i64> = c
        .prepare_cached(
            "SELECT MIN(pod_running_since + timeout_seconds * 1000000) \
             FROM tasks INDEXED BY tasks_timeout_due \
             WHERE timeout_seconds IS NOT NULL AND pod_status = 'running'",
        )?
        .query_row([], |r| r.get(0))?;
    let deadline: Option<i64> = c
        .prepare_cached(
            "SELECT MIN(deadline) FROM tasks INDEXED BY tasks_deadline_due \
             WHERE deadline IS NOT NULL AND status IN ('inactive', 'active')",
        )?
        .query_row([], |r| r.get(0))?;
    let expiry: Option<i64> = c
        .prepare_cached(
            "SELECT MIN(queued_at + queue_timeout_seconds * 1000000) \
             FROM tasks INDEXED BY tasks_queue_expiry \
             WHERE queued_seq IS NOT NULL AND queue_timeout_seconds IS NOT NULL",
        )?
        .query_row([], |r| r.get(0))?;
    Ok([timeout, deadline, expiry].into_iter().flatten().min())
}

/// Timers due at `now`, earliest first, at most `limit` of each kind.
pub fn due_timers(c: &Connection, now: i64, limit: u32) -> Result<Vec<Timer>> {
    let mut out = Vec::new();
    let mut st = c.prepare_cached(
        "SELECT task_id, pod_id, pod_host, pod_generation, timeout_seconds, \
         pod_running_since + timeout_seconds * 1000000 AS due \
         FROM tasks INDEXED BY tasks_timeout_due \
         WHERE timeout_seconds IS NOT NULL AND pod_status = 'running' \
         AND pod_running_since + timeout_seconds * 1000000 <= ? ORDER BY due LIMIT ?",
    )?;
    type Row = (String, Option<String>, Option<String>, i64, i64, i64);
    let rows = st.query_map(params![now, limit], |r| Row::try_from(r))?;
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
        "SELECT task_id, deadline FROM tasks INDEXED BY tasks_deadline_due \
         WHERE deadline IS NOT NULL \
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
    let mut st = c.prepare_cached(
        "SELECT task_id, queued_seq, queued_at + queue_timeout_seconds * 1000000 AS due \
         FROM tasks INDEXED BY tasks_queue_expiry \
         WHERE queued_seq IS NOT NULL AND queue_timeout_seconds IS NOT NULL \
         AND queued_at + queue_timeout_seconds * 1000000 <= ? ORDER BY due LIMIT ?",
    )?;
    let rows = st.query_map(params![now, limit], |r| <(String, i64, i64)>::try_from(r))?;
    for r in rows {
        let (task, seq, at) = r?;
        out.push(Timer::QueueExpiry {
            task_id: TaskId::from_db(&task)?,
            seq,
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
        .query_row([&id], |r| Row::try_from(r))
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
         next_restart_at = NULL, pod_message = 'deadline exceeded', updated_at = ?, \
         queued_seq = NULL, queued_at = NULL, waiting_dependencies = 0 WHERE task_id = ?",
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

#[cfg(test)]
mod tests {
    use super::super::pods::{Cause, EndReport, PodCommand, PodOutcome};
    use super::super::tests::{AnyDb, Backend, create, new_task, on_both_backends};
    use super::*;
    use crate::core::ports::TaskStore;
    use crate::core::ports::store::Command;
    use crate::domain::{Ending, NewTask, RestartDefaults};

    const S: i64 = 1_000_000;

    /// A task with a pod the host says started at `started_at`, on host `h`.
    async fn running(store: &dyn TaskStore, t: NewTask, started_at: i64) -> PodRef {
        let (t, _) = create(store, t).await.unwrap();
        let pod_id = format!("pod-{}", t.task_id);
        let claim = PodCommand::Claim {
            task_id: t.task_id,
            pod_id: pod_id.clone(),
            host_id: "h".into(),
            cause: Cause::system(),
            automatic: false,
        };
        let PodOutcome::Claimed(c) = store.pod(claim).await.unwrap() else {
            panic!("claim")
        };
        let pod = PodRef {
            task_id: t.task_id,
            pod_id,
            generation: c.generation,
        };
        let started = PodCommand::Started {
            pod: pod.clone(),
            pid: 42,
            started_at,
            host_id: "h".into(),
            cause: Cause::system(),
        };
        store.pod(started).await.unwrap();
        pod
    }

    fn with(timeout: Option<u32>, deadline: Option<i64>) -> NewTask {
        NewTask {
            timeout_seconds: timeout,
            deadline,
            ..new_task("t", "alice")
        }
    }

    fn wall_now() -> i64 {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        i64::try_from(d.as_micros()).unwrap()
    }

    async fn timers_come_from_stored_start_times_and_deadlines(backend: Backend) {
        let db = AnyDb::open(backend).await;
        let store = &*db.store;
        assert_eq!(store.earliest_timer().await.unwrap(), None);
        // No timer: never due.
        running(store, with(None, None), 1).await;
        let before = wall_now();
        // The host's start time (1 µs after the epoch here) is not what
        // counts: the timeout runs from when central saw the pod running.
        let a = running(store, with(Some(5), None), 1).await;
        let after = wall_now();
        let deadline = after + S;
        let (b, _) = create(store, with(None, Some(deadline))).await.unwrap();
        assert_eq!(store.earliest_timer().await.unwrap(), Some(deadline));
        assert!(store.due_timers(after, 10).await.unwrap().is_empty());
        let due = store.due_timers(after + 10 * S, 10).await.unwrap();
        assert_eq!(due.len(), 2, "{due:?}");
        let Timer::PodTimeout {
            pod,
            host_id,
            timeout_seconds,
            at,
        } = &due[0]
        else {
            panic!("{due:?}")
        };
        assert_eq!((pod, host_id.as_str(), *timeout_seconds), (&a, "h", 5));
        assert!((before + 5 * S..=after + 5 * S).contains(at), "{at}");
        assert_eq!(
            due[1],
            Timer::Deadline {
                task_id: b.task_id,
                at: deadline,
            }
        );
        // The pod's end disarms its timeout.
        let end = PodCommand::Ended {
            pod: a,
            host_id: "h".into(),
            report: EndReport {
                ending: Ending::TimedOut,
                detail: json!({}),
                message: "timed out after 5 s".into(),
                last_phase: None,
            },
            cause: Cause::system(),
            defaults: RestartDefaults {
                auto_restart: false,
                max_restarts: 3,
                window_seconds: 600,
                initial_backoff_ms: 100,
                max_backoff_ms: 1000,
            },
            jitter: 0.0,
        };
        store.pod(end).await.unwrap();
        let due = store.due_timers(after + 10 * S, 10).await.unwrap();
        assert_eq!(due.len(), 1, "{due:?}");
        assert_eq!(store.earliest_timer().await.unwrap(), Some(deadline));
        db.shutdown().await;
    }

    async fn a_deadline_fails_a_live_task_once_and_names_its_pod(backend: Backend) {
        let db = AnyDb::open(backend).await;
        let store = &*db.store;
        // The writer's clock is real time: a deadline already past.
        let at = 5 * S;
        let pod = running(store, with(None, Some(at)), 1).await;
        let task_id = pod.task_id;
        // A different deadline than the task's changes nothing.
        let o = store
            .write(Command::Deadline {
                task_id,
                at: at + 1,
            })
            .await
            .unwrap();
        assert!(
            matches!(o, Outcome::DeadlineExceeded { failed: false, .. }),
            "{o:?}"
        );
        let o = store
            .write(Command::Deadline { task_id, at })
            .await
            .unwrap();
        assert_eq!(
            o,
            Outcome::DeadlineExceeded {
                failed: true,
                stop_pod: Some((pod.clone(), "h".into())),
            }
        );
        let t = store.task(task_id).await.unwrap().unwrap();
        assert_eq!(t.status, TaskStatus::Failed);
        assert_eq!(t.deadline, Some(at));
        // Terminal now: not due any more, and a second fire does nothing.
        assert!(store.due_timers(i64::MAX / 2, 10).await.unwrap().is_empty());
        let o = store
            .write(Command::Deadline { task_id, at })
            .await
            .unwrap();
        assert!(
            matches!(
                o,
                Outcome::DeadlineExceeded {
                    failed: false,
                    stop_pod: None
                }
            ),
            "{o:?}"
        );
        let page = store
            .task_events(&crate::domain::EventsQuery {
                task_id,
                after_version: 0,
                limit: 100,
                include_archived: false,
            })
            .await
            .unwrap();
        let failed: Vec<_> = page
            .items
            .iter()
            .filter(|e| e.event_type == "task_failed")
            .collect();
        assert_eq!(failed.len(), 1);
        let data: serde_json::Value = serde_json::from_str(&failed[0].data_json).unwrap();
        assert_eq!(data["reason"], "deadline_exceeded");
        assert_eq!(data["pod_id"], pod.pod_id.as_str());
        db.shutdown().await;
    }

    on_both_backends!(
        timers_come_from_stored_start_times_and_deadlines,
        a_deadline_fails_a_live_task_once_and_names_its_pod,
    );
}
