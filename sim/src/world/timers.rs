//! Run timeouts and deadlines, checked at the end of a run against the
//! ledger of processes the simulated hosts ran (see [`timers`]).

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::World;
use super::checks::{Ev, Row, push};

/// How late a timer's effect may be beyond its time (and a timed-out
/// pod's stop grace): a StopPod to a host that central cannot reach is
/// retried every second, and the host fences its pods by itself once its
/// lease runs out (unreachable + fence after the last contact); a second
/// more for the hops in between.
fn timer_tolerance(w: &World) -> Duration {
    let t = &w.config.timing;
    t.unreachable + t.fence + central_manager::core::timeouts::RETRY + Duration::from_secs(1)
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Run timeouts and deadlines: each pod of a task with `timeout_seconds`
/// is gone by its `pod_started` (central's clock, what the timeout counts
/// from) + the timeout + the stop grace + [`timer_tolerance`]; a task
/// whose deadline passed more than the tolerance ago is terminal, and it
/// was never failed for its deadline before the deadline. Times are
/// compared on the virtual wall clock.
pub(super) fn timers(w: &World, rows: &[Row], events: &[Ev], found: &mut Vec<String>) {
    let now = Instant::now();
    let now_us = w.service.pods().ports().clock.wall_micros();
    let tolerance = micros(timer_tolerance(w));
    let grace = micros(w.config.timing.stop_grace);
    let l = w.ledger.lock().unwrap_or_else(|e| e.into_inner());
    for r in rows {
        let t = &r.task_id;
        if let Some(secs) = r.timeout_seconds {
            let started = events
                .iter()
                .filter(|e| e.task_id == *t && e.kind == "pod_started");
            for e in started {
                let Some(pod) = e.data.get("pod_id").and_then(Value::as_str) else {
                    continue;
                };
                let Some(p) = l.procs.get(pod) else { continue };
                // A frozen machine's pods were not running while it slept.
                if l.hosts.get(p.host).is_some_and(|h| h.machine_frozen_ever) {
                    continue;
                }
                let limit = e.at + secs * 1_000_000 + grace + tolerance;
                let end = now_us - micros(now - p.died_at.unwrap_or(now));
                if end > limit {
                    push(
                        found,
                        format!(
                            "timeout: task {t}'s pod {pod} ran {:.3}s past its {secs} s timeout (+ grace and tolerance)",
                            (end - limit) as f64 / 1e6
                        ),
                    );
                }
            }
        }
        if let Some(d) = r.deadline {
            if d.saturating_add(tolerance) < now_us
                && !["completed", "cancelled", "failed"].contains(&r.status.as_str())
            {
                push(
                    found,
                    format!("deadline: task {t} is {} past its deadline", r.status),
                );
            }
            let early = events.iter().any(|e| {
                e.task_id == *t
                    && e.kind == "task_failed"
                    && e.data.get("reason").and_then(Value::as_str) == Some("deadline_exceeded")
                    && e.at < d
            });
            if early {
                push(
                    found,
                    format!("deadline: task {t} was failed before its deadline"),
                );
            }
        }
    }
}
