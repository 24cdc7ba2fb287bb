//! The dependencies' invariants (issue 13, `depends_on`), checked at the
//! end against the final trails and the stored graph:
//!
//! - no pod of a task starts before every one of its dependencies has
//!   COMPLETED (each `pod_started` of the task comes after each
//!   dependency's `task_completed`);
//! - a dependency that ends CANCELLED or FAILED leaves no live dependent:
//!   each dependent that was not terminal by then ends FAILED with
//!   `{"reason":"dependency_failed"}` naming one of its dependencies that
//!   had ended that way.

use std::collections::BTreeMap;

use central_manager::store::memory::MemoryStore;
use serde_json::Value;

use super::checks::{Ev, push};

const TERMINAL: [&str; 3] = ["task_completed", "task_cancelled", "task_failed"];

/// (dependent, dependency) pairs.
fn edges(store: &MemoryStore) -> Vec<(String, String)> {
    store
        .read(|c| {
            let mut st = c.prepare("SELECT task_id, depends_on FROM task_dependencies")?;
            let r = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(r)
        })
        .unwrap_or_default()
}

/// Each task's terminal event: its index in commit order and the event.
fn ends(events: &[Ev]) -> BTreeMap<&str, (usize, &Ev)> {
    let mut out = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        if TERMINAL.contains(&e.kind.as_str()) {
            out.entry(e.task_id.as_str()).or_insert((i, e));
        }
    }
    out
}

pub(super) fn at_end(store: &MemoryStore, events: &[Ev], found: &mut Vec<String>) {
    let edges = edges(store);
    if edges.is_empty() {
        return;
    }
    let ends = ends(events);
    let mut starts: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        if e.kind == "pod_started" {
            starts.entry(e.task_id.as_str()).or_default().push(i);
        }
    }
    let failed_at = |d: &str| {
        ends.get(d)
            .filter(|(_, e)| e.kind != "task_completed")
            .map(|(i, _)| *i)
    };
    for (t, d) in &edges {
        let completed = ends
            .get(d.as_str())
            .filter(|(_, e)| e.kind == "task_completed")
            .map(|(i, _)| *i);
        for &s in starts.get(t.as_str()).into_iter().flatten() {
            if completed.is_none_or(|c| c > s) {
                push(
                    found,
                    format!(
                        "dependencies: a pod of {t} started before its dependency {d} completed"
                    ),
                );
            }
        }
        let Some(j) = failed_at(d) else {
            continue;
        };
        match ends.get(t.as_str()) {
            None => push(
                found,
                format!(
                    "dependencies: {t} is still live although its dependency {d} did not complete"
                ),
            ),
            Some((k, e)) if *k > j => {
                let named = e
                    .data
                    .get("dependency")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let named_failed = edges.iter().any(|(t2, d2)| {
                    t2 == t && d2 == named && failed_at(d2).is_some_and(|f| f < *k)
                });
                let reason = e.data.get("reason").and_then(Value::as_str);
                if e.kind != "task_failed" || reason != Some("dependency_failed") || !named_failed {
                    push(
                        found,
                        format!(
                            "dependencies: {t} ended with {} {} after its dependency {d} did not complete",
                            e.kind, e.data
                        ),
                    );
                }
            }
            // Terminal before the dependency ended: nothing to do.
            Some(_) => {}
        }
    }
}
