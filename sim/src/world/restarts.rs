//! The restart policy, checked on each task's trail with the core's own
//! definitions (`domain::restart_decision`, `domain::backoff`, docs/api.md
//! "restart policy"):
//!
//! - each failure (`pod_crashed`, `pod_lost`) is decided as the policy says:
//!   with auto-restart, the very next event is `restart_scheduled` while
//!   the failures in the window (those in `(at - window, at]`) are at most
//!   `max_restarts`, `task_failed` beyond; without, neither; and the count
//!   it states is the trail's;
//! - the scheduled delay is the policy's exponential backoff for that
//!   failure: `initial · 2^(n-1)` capped at `max_backoff`, times a jitter
//!   in [50 %, 100 %];
//! - each automatic restart happens no earlier than its scheduled time
//!   (the failure's time plus that delay);
//! - automatic restarts stay within the budget: for each, the automatic
//!   restarts triggered by failures in the window ending at its own
//!   triggering failure number at most `max_restarts`.
//!
//! Which start is automatic: an automatic restart's claim carries the
//! correlation of the pod that failed (the request that started the task's
//! pods in the first place), while every client operation carries its own
//! (`op-N`); so, after a `restart_scheduled`, the next start of a new pod
//! with that correlation and the system as actor is the restart, and one
//! with another correlation is a user action that overtook it (the claim
//! of an automatic restart is then refused). A restart whose pod never
//! started (its spawn failed, or it was lost before its start was
//! confirmed) shows as that pod's failure and counts the same way, at the
//! failure's time (later than its claim, so the "not early" check is
//! only weaker there).
//!
//! The one tolerance is the model's own: `delay_ms` is recorded in whole
//! milliseconds (truncated), so the scheduled time is taken as at least
//! `at + delay_ms`, and the bounds are compared in whole milliseconds too.

use std::collections::BTreeSet;
use std::time::Duration;

use central_manager::domain::backoff;
use central_manager::domain::{RestartDefaults, RestartPolicySpec};
use serde_json::Value;

use super::checks::{Ev, Row, push};

/// A restart scheduled and not yet carried out.
struct Pending {
    /// The failure that asked for it (unix µs).
    failure_at: i64,
    /// No earlier than this (unix µs).
    due: i64,
    correlation: String,
}

/// The policy checks of one task's trail.
pub(super) fn restart_policy(
    r: &Row,
    trail: &[&Ev],
    defaults: &RestartDefaults,
    found: &mut Vec<String>,
) {
    let t = &r.task_id;
    let spec = RestartPolicySpec {
        auto_restart: r.auto_restart,
        max_restarts: r.max_restarts.and_then(|v| u32::try_from(v).ok()),
        window_seconds: r.window_seconds.and_then(|v| u32::try_from(v).ok()),
        initial_backoff_ms: r.initial_backoff_ms.and_then(|v| u32::try_from(v).ok()),
        max_backoff_ms: r.max_backoff_ms.and_then(|v| u32::try_from(v).ok()),
    };
    let p = spec.resolve(defaults);
    let auto = p.auto_restart;
    let max = i64::from(p.max_restarts);
    let window_us = i64::from(p.window_seconds) * 1_000_000;
    let initial = Duration::from_millis(u64::from(p.initial_backoff_ms));
    let cap = Duration::from_millis(u64::from(p.max_backoff_ms));
    let pod_of = |e: &Ev| {
        e.data
            .get("pod_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let mut failures: Vec<i64> = Vec::new();
    let mut started: BTreeSet<String> = BTreeSet::new();
    let mut pending: Option<Pending> = None;
    // The triggering failure times of the automatic restarts so far.
    let mut restarts: Vec<i64> = Vec::new();
    let mut restarted = |s: &Pending, at: i64, what: &str, found: &mut Vec<String>| {
        if at < s.due {
            push(
                found,
                format!(
                    "restart policy: task {t} {what} {} ms after its failure, {} ms before its backoff allowed",
                    (at - s.failure_at) / 1000,
                    (s.due - at) / 1000
                ),
            );
        }
        restarts.push(s.failure_at);
        let in_window = restarts
            .iter()
            .filter(|&&f| f > s.failure_at - window_us && f <= s.failure_at)
            .count() as i64;
        if in_window > max {
            push(
                found,
                format!(
                    "restart policy: task {t} restarted automatically {in_window} times for failures within {} s (max_restarts {max})",
                    p.window_seconds
                ),
            );
        }
    };
    for (i, e) in trail.iter().enumerate() {
        match e.kind.as_str() {
            "pod_started" | "pod_recovered" => {
                let Some(pod) = pod_of(e) else { continue };
                if !started.insert(pod) || e.kind == "pod_recovered" {
                    continue;
                }
                // With the restart's correlation and by the system, this is
                // the restart; any other start is a user's that overtook it.
                if let Some(s) = pending.take()
                    && e.correlation == s.correlation
                    && e.actor == "system"
                {
                    restarted(&s, e.at, "restarted", found);
                }
            }
            "pod_crashed" | "pod_lost" => {
                // A restart whose pod never started.
                let never_started = pod_of(e).is_some_and(|p| !started.contains(&p));
                if never_started
                    && let Some(s) = pending.take()
                    && s.correlation == e.correlation
                {
                    restarted(&s, e.at, "attempted a restart", found);
                }
                failures.push(e.at);
                let in_window = failures.iter().filter(|&&f| f > e.at - window_us).count() as i64;
                let next = trail.get(i + 1);
                decided(r, e, next.copied(), auto, max, in_window, found);
                if let Some(n) = next.filter(|n| n.kind == "restart_scheduled") {
                    let delay_ms = n.data.get("delay_ms").and_then(Value::as_i64).unwrap_or(-1);
                    let nth = u32::try_from(in_window.max(1) - 1).unwrap_or(u32::MAX);
                    let lo = backoff::delay(initial, cap, nth, 0.0).as_millis() as i64;
                    let hi = backoff::delay(initial, cap, nth, 1.0).as_millis() as i64;
                    if !(lo..=hi).contains(&delay_ms) {
                        push(
                            found,
                            format!(
                                "restart policy: task {t} failure #{in_window} scheduled its restart in {delay_ms} ms, the backoff allows {lo}..={hi} ms"
                            ),
                        );
                    }
                    pending = Some(Pending {
                        failure_at: e.at,
                        due: n.at + delay_ms.max(0) * 1000,
                        correlation: n.correlation.clone(),
                    });
                }
            }
            "task_completed" | "task_cancelled" | "task_failed" => pending = None,
            _ => {}
        }
    }
}

/// The decision after one failure `e` (the `in_window`-th in the window):
/// the very next event.
fn decided(
    r: &Row,
    e: &Ev,
    next: Option<&Ev>,
    auto: bool,
    max: i64,
    in_window: i64,
    found: &mut Vec<String>,
) {
    let t = &r.task_id;
    let next_kind = next.map(|n| n.kind.as_str());
    let expected = if !auto {
        None
    } else if in_window > max {
        Some("task_failed")
    } else {
        Some("restart_scheduled")
    };
    let decision = next_kind.filter(|k| *k == "task_failed" || *k == "restart_scheduled");
    if decision != expected {
        push(
            found,
            format!(
                "restart policy: task {t} failure #{in_window} at version {} (auto_restart {auto}, max {max}) was followed by {next_kind:?}, expected {expected:?}",
                e.version
            ),
        );
    }
    if let (Some(_), Some(n)) = (decision, next) {
        let said = n.data.get("crashes_in_window").and_then(Value::as_i64);
        if said != Some(in_window) {
            push(
                found,
                format!(
                    "restart policy: task {t} counted {said:?} failures in the window, the trail shows {in_window}"
                ),
            );
        }
    }
}
