//! The queue's invariants (issue 13), checked against the ledger of pod
//! processes, the store's rows and the final trails:
//!
//! - a queued task never has a pod running, and no host ever runs more
//!   pods than its capacity ([`exclusive`], periodically and at the end);
//! - the dispatcher's order ([`order`], at the end), in the exact form the
//!   trail can judge: a start from the queue (`pod_started` by `system`
//!   ending the task's stay in the queue) of task B never happens while a
//!   task A of the same template that was queued before B, with the same
//!   or a higher priority, is still waiting;
//! - progress ([`progress`], at the end): once faults stop, a task still
//!   queued waits only while no READY host has room.

use std::collections::BTreeMap;

use central_manager::hosts::directory::HostState;
use central_manager::store::memory::MemoryStore;
use serde_json::Value;

use super::World;
use super::checks::{Ev, push};
use crate::ledger::Ledger;

/// Events that end a task's stay in the queue.
const LEAVES: [&str; 10] = [
    "pod_started",
    "pod_crashed",
    "pod_exited",
    "pod_stopped",
    "pod_lost",
    "pod_timed_out",
    "queue_expired",
    "task_completed",
    "task_cancelled",
    "task_failed",
];

/// The tasks queued now (`queued_seq` set).
fn queued(store: &MemoryStore) -> Vec<String> {
    store
        .read(|c| {
            let mut st = c.prepare("SELECT task_id FROM tasks WHERE queued_seq IS NOT NULL")?;
            let r = st
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(r)
        })
        .unwrap_or_default()
}

/// No queued task has a live pod; no host runs more pods than its
/// capacity (a frozen machine's pods past its fence are exempt from
/// both, as from the overlap check).
pub(super) fn exclusive(
    store: &MemoryStore,
    ledger: &Ledger,
    capacities: &[u32],
    found: &mut Vec<String>,
) {
    let now = tokio::time::Instant::now();
    for t in queued(store) {
        let live = ledger
            .procs
            .iter()
            .find(|(_, p)| p.alive && p.task_id == t && !ledger.exempt_host(p.host, now));
        if let Some((pod, p)) = live {
            push(
                found,
                format!(
                    "queue: task {t} is queued while its pod {pod} runs on host-{}",
                    p.host
                ),
            );
        }
    }
    for (i, cap) in capacities.iter().enumerate() {
        let live = ledger
            .procs
            .values()
            .filter(|p| p.alive && p.host == i)
            .count();
        if live > *cap as usize && !ledger.exempt_host(i, now) {
            push(
                found,
                format!("queue: host-{i} runs {live} pods, over its capacity {cap}"),
            );
        }
    }
}

fn rank(e: &Ev) -> i32 {
    match e.data.get("priority").and_then(Value::as_str) {
        Some("low") => 1,
        Some("high") => 3,
        Some("critical") => 4,
        _ => 2,
    }
}

/// One stay in the queue: from its `pod_queued` (index in commit order)
/// to the event that ended it (or the end of the run).
struct Stay {
    task: String,
    template: String,
    priority: i32,
    from: usize,
    until: usize,
    /// The stay ended with a start from the queue.
    dispatched: bool,
}

fn stays(events: &[Ev]) -> Vec<Stay> {
    let mut open: BTreeMap<&str, Stay> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        // Waiting for dependencies is not a place in the capacity queue:
        // its stay starts with the `pod_queued` that enters it.
        let for_dependencies = e.data.get("waiting_for").and_then(Value::as_str)
            == Some(central_manager::domain::dependencies::WAITING_FOR_DEPENDENCIES);
        if e.kind == "pod_queued" && for_dependencies {
            continue;
        }
        if e.kind == "pod_queued" {
            let template = e
                .data
                .get("template")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            open.insert(
                e.task_id.as_str(),
                Stay {
                    task: e.task_id.clone(),
                    template,
                    priority: rank(e),
                    from: i,
                    until: usize::MAX,
                    dispatched: false,
                },
            );
        } else if LEAVES.contains(&e.kind.as_str())
            && let Some(mut s) = open.remove(e.task_id.as_str())
        {
            s.until = i;
            s.dispatched = e.kind == "pod_started" && e.actor == "system";
            out.push(s);
        }
    }
    out.extend(open.into_values());
    out
}

/// Strict priority, first queued first, per template.
pub(super) fn order(events: &[Ev], found: &mut Vec<String>) {
    let stays = stays(events);
    for b in stays.iter().filter(|s| s.dispatched) {
        let p = b.until;
        let ahead = stays.iter().find(|a| {
            a.task != b.task
                && a.template == b.template
                && a.from < b.from
                && a.until > p
                && a.priority >= b.priority
        });
        if let Some(a) = ahead {
            push(
                found,
                format!(
                    "queue: task {} (priority {}) started from the queue while {} (priority {}, queued earlier) still waited",
                    b.task, b.priority, a.task, a.priority
                ),
            );
        }
    }
}

/// Once faults stop, nothing waits in the queue while a READY host has a
/// free slot.
pub(super) fn progress(w: &World, found: &mut Vec<String>) {
    let waiting = queued(&w.store);
    if waiting.is_empty() {
        return;
    }
    let room = w.service.pods().hosts().with_registry(|r| {
        r.hosts()
            .filter(|h| h.state == HostState::Ready && h.load() < h.capacity)
            .map(|h| h.host_id.clone())
            .collect::<Vec<_>>()
    });
    if !room.is_empty() {
        push(
            found,
            format!(
                "queue: {} task(s) still queued after the faults stopped while {room:?} had room (e.g. {})",
                waiting.len(),
                waiting[0]
            ),
        );
    }
}
