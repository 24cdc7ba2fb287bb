//! The invariants (issue 17 item 3), checked against the ground truth (the
//! ledger of processes the simulated hosts run, the network's record of
//! what central heard) and the store:
//!
//! - never two live pods of one task (`Ledger::check_overlap`, after every
//!   step of every host; the one exemption is a pod on a whole machine
//!   frozen past its host's fence deadline — a frozen host process is no
//!   exemption, its reaper's backstop kills its pods);
//! - every acknowledged command durable ([`durability`], periodically and
//!   at the end);
//! - every pod's end recorded exactly once, and every recorded start ends
//!   ([`trails`], at the end);
//! - restarts as the policy says: each failure decided as the policy
//!   says, and each automatic restart within the budget and no earlier than
//!   its backoff allows (`restarts`, from [`trails`]);
//! - every task converges once faults stop ([`convergence`], at the end);
//! - no pod outlives its task's run timeout by more than the stop grace
//!   and the model's tolerance, and a task past its deadline ends FAILED
//!   unless it finished before (`timers`, at the end);
//! - the registry's view of a host matches the timeouts ([`registry`],
//!   periodically): READY only while silent for less than the unreachable
//!   timeout, UNREACHABLE only after it, never central's contact ahead of
//!   what the network delivered, and at the moment a host is first seen
//!   LOST none of its pods may still run (the same exemption):
//!   the host must always stop first.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use central_manager::hosts::directory::{HostDirectory, HostState};
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::clients::Acked;
use super::{CHECK_EVERY, World};
use crate::coverage::Coverage;
use crate::ledger::Ledger;
use crate::net::Net;
use central_manager::store::memory::MemoryStore;

/// A row of `tasks`, as the checks read it.
#[derive(Debug, Clone)]
pub(super) struct Row {
    pub(super) task_id: String,
    pub(super) status: String,
    pub(super) pod_status: String,
    pub(super) pod_id: Option<String>,
    pub(super) pod_host: Option<String>,
    pub(super) generation: i64,
    pub(super) next_restart_at: Option<i64>,
    pub(super) auto_restart: Option<bool>,
    pub(super) max_restarts: Option<i64>,
    pub(super) window_seconds: Option<i64>,
    pub(super) initial_backoff_ms: Option<i64>,
    pub(super) max_backoff_ms: Option<i64>,
    pub(super) timeout_seconds: Option<i64>,
    pub(super) deadline: Option<i64>,
}

/// An event, as the checks read it.
#[derive(Debug, Clone)]
pub(super) struct Ev {
    pub(super) task_id: String,
    pub(super) version: i64,
    pub(super) kind: String,
    pub(super) data: Value,
    pub(super) correlation: String,
    pub(super) actor: String,
    pub(super) at: i64,
}

fn rows(store: &MemoryStore) -> Vec<Row> {
    store
        .read(|c| {
            let mut st = c.prepare(
                "SELECT task_id, status, pod_status, pod_id, pod_host, pod_generation, \
                 next_restart_at, auto_restart, max_restarts, restart_window_seconds, \
                 initial_backoff_ms, max_backoff_ms, timeout_seconds, deadline \
                 FROM tasks ORDER BY task_id",
            )?;
            let r = st
                .query_map([], |r| {
                    Ok(Row {
                        task_id: r.get(0)?,
                        status: r.get(1)?,
                        pod_status: r.get(2)?,
                        pod_id: r.get(3)?,
                        pod_host: r.get(4)?,
                        generation: r.get(5)?,
                        next_restart_at: r.get(6)?,
                        auto_restart: r.get(7)?,
                        max_restarts: r.get(8)?,
                        window_seconds: r.get(9)?,
                        initial_backoff_ms: r.get(10)?,
                        max_backoff_ms: r.get(11)?,
                        timeout_seconds: r.get(12)?,
                        deadline: r.get(13)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(r)
        })
        .unwrap_or_default()
}

fn events(store: &MemoryStore) -> Vec<Ev> {
    store
        .read(|c| {
            let mut st = c.prepare(
                "SELECT stream_id, version, type, data_json, correlation_id, occurred_at, actor_id \
                 FROM events ORDER BY position",
            )?;
            let r = st
                .query_map([], |r| {
                    let data: String = r.get(3)?;
                    Ok(Ev {
                        task_id: r.get(0)?,
                        version: r.get(1)?,
                        kind: r.get(2)?,
                        data: serde_json::from_str(&data).unwrap_or(Value::Null),
                        correlation: r.get(4)?,
                        at: r.get(5)?,
                        actor: r.get(6)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(r)
        })
        .unwrap_or_default()
}

/// The periodic checker's state.
pub(super) struct Periodic {
    hosts: HostDirectory,
    net: Net,
    ledger: Arc<Mutex<Ledger>>,
    store: MemoryStore,
    acked: Arc<Mutex<BTreeMap<String, Acked>>>,
    coverage: Arc<Mutex<Coverage>>,
    n_hosts: usize,
    /// Each host's capacity (the queue's checks).
    pub(super) capacities: Vec<u32>,
    last_state: Vec<Option<HostState>>,
    schedules: Arc<super::schedules::Watch>,
}

impl Periodic {
    pub(super) fn new(w: &World, capacities: Vec<u32>) -> Self {
        let n_hosts = capacities.len();
        Self {
            hosts: w.service.pods().hosts().clone(),
            net: w.net.clone(),
            ledger: w.ledger.clone(),
            store: w.store.clone(),
            acked: w.clients.acked.clone(),
            coverage: w.coverage.clone(),
            n_hosts,
            capacities,
            last_state: vec![None; n_hosts],
            schedules: w.schedule_watch.clone(),
        }
    }
}

/// Runs the periodic checks until `cancel`; returns what they found.
pub(super) async fn periodic(mut p: Periodic, cancel: CancellationToken) -> Vec<String> {
    let mut found = Vec::new();
    let mut tick: u64 = 0;
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(CHECK_EVERY) => {}
        }
        tick += 1;
        registry(&mut p, &mut found);
        {
            let l = p.ledger.lock().unwrap_or_else(|e| e.into_inner());
            super::queue::exclusive(&p.store, &l, &p.capacities, &mut found);
        }
        if tick.is_multiple_of(5) {
            p.schedules.check(&mut found);
            let rows = rows(&p.store);
            let mut cov = p.coverage.lock().unwrap_or_else(|e| e.into_inner());
            for r in &rows {
                cov.states.insert(format!("{}/{}", r.status, r.pod_status));
            }
            drop(cov);
            if tick.is_multiple_of(20) {
                let acked = p.acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
                durability(&rows, &events(&p.store), &acked, &mut found);
            }
        }
    }
    found
}

pub(super) fn push(found: &mut Vec<String>, v: String) {
    if !found.contains(&v) {
        found.push(v);
    }
}

/// The registry's view of each host against the timeouts and the truth.
fn registry(p: &mut Periodic, found: &mut Vec<String>) {
    let now = Instant::now();
    let slack = Duration::from_millis(1);
    for i in 0..p.n_hosts {
        let id = format!("host-{i}");
        let view = p.hosts.with_registry(|r| {
            r.get(&id).map(|h| {
                (
                    h.state,
                    h.last_contact,
                    r.fence_deadline(h),
                    r.timeouts().unreachable_after,
                )
            })
        });
        let Some((state, last, deadline, unreachable)) = view else {
            continue;
        };
        p.coverage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .host_states
            .insert(format!("{state:?}"));
        if p.net.last_heard(i).is_none_or(|h| last > h)
            && !p.hosts.state(&id).is_some_and(|s| s == HostState::Lost)
        {
            // A placeholder (loaded at start-up) has no contact yet; this
            // run never restarts central, so every entry comes from a
            // hello that the network delivered.
            push(
                found,
                format!("registry: contact with {id} at {last:?} that the network never delivered"),
            );
        }
        match state {
            HostState::Ready | HostState::Draining if now >= last + unreachable + slack => push(
                found,
                format!(
                    "registry: {id} still {state:?} {:?} after its last contact (unreachable after {unreachable:?})",
                    now - last
                ),
            ),
            HostState::Unreachable if now < last + unreachable => push(
                found,
                format!(
                    "registry: {id} UNREACHABLE only {:?} after its last contact",
                    now - last
                ),
            ),
            HostState::Unreachable if now >= deadline + slack => push(
                found,
                format!(
                    "registry: {id} still UNREACHABLE {:?} past its fence deadline",
                    now - deadline
                ),
            ),
            _ => {}
        }
        let newly_lost = state == HostState::Lost && p.last_state[i] != Some(HostState::Lost);
        if newly_lost {
            let l = p.ledger.lock().unwrap_or_else(|e| e.into_inner());
            let frozen_past = l.exempt_host(i, now);
            let running: Vec<&String> = l
                .procs
                .iter()
                .filter(|(_, pr)| pr.alive && pr.host == i)
                .map(|(id, _)| id)
                .collect();
            if !running.is_empty() && !frozen_past {
                push(
                    found,
                    format!(
                        "registry: {id} declared LOST while its pods {running:?} still run (the host must fence first)"
                    ),
                );
            }
        }
        p.last_state[i] = Some(state);
    }
}

/// Every acknowledged operation left its mark in the store.
fn durability(
    rows: &[Row],
    events: &[Ev],
    acked: &BTreeMap<String, Acked>,
    found: &mut Vec<String>,
) {
    let row = |t: &str| rows.iter().find(|r| r.task_id == t);
    let has = |t: &str, kind: &str, corr: &str| {
        events
            .iter()
            .any(|e| e.task_id == t && e.kind == kind && e.correlation == corr)
    };
    for (corr, a) in acked {
        let problem = match a {
            Acked::Created(t) => {
                let t = t.to_string();
                (row(&t).is_none() || !has(&t, "task_created", corr))
                    .then(|| format!("created task {t} is missing"))
            }
            Acked::Completed(t) => {
                let t = t.to_string();
                (row(&t).is_none_or(|r| r.status != "completed")
                    || !has(&t, "task_completed", corr))
                .then(|| format!("completed task {t} is not completed"))
            }
            Acked::Cancelled(t) => {
                let t = t.to_string();
                (row(&t).is_none_or(|r| r.status != "cancelled")
                    || !has(&t, "task_cancelled", corr))
                .then(|| format!("cancelled task {t} is not cancelled"))
            }
            Acked::Stopped { task, from, to } => {
                // Its pod_stopped, or (the pod ended on its own just
                // before the stop reached it) the end of a pod it may
                // have been ordered against.
                let t = task.to_string();
                let ended = events.iter().any(|e| {
                    e.task_id == t
                        && [
                            "pod_stopped",
                            "pod_exited",
                            "pod_crashed",
                            "pod_lost",
                            "pod_timed_out",
                            "task_completed",
                        ]
                        .contains(&e.kind.as_str())
                        && e.data
                            .get("generation")
                            .and_then(Value::as_u64)
                            .is_some_and(|g| (*from..=*to).contains(&g))
                });
                // A task finished meanwhile ended its pod with it; and a
                // start the stop waited for may have been refused (the
                // claim undone, no event): either way the row no longer
                // has one of those pods live.
                let terminal = row(&t).is_some_and(|r| {
                    ["completed", "cancelled", "failed"].contains(&r.status.as_str())
                        || r.generation as u64 > *to
                        || r.pod_status == "stopped"
                });
                (!has(&t, "pod_stopped", corr) && !ended && !terminal)
                    .then(|| format!("stop of task {t} (generations {from}..={to}) not recorded"))
            }
            Acked::Queued(task) => {
                // Queued by this call (its pod_queued) or already before.
                let t = task.to_string();
                (row(&t).is_none()
                    || !events
                        .iter()
                        .any(|e| e.task_id == t && e.kind == "pod_queued"))
                .then(|| format!("queueing of task {t} is not recorded"))
            }
            Acked::Started { task, generation } => {
                let t = task.to_string();
                row(&t)
                    .is_none_or(|r| r.generation < *generation as i64)
                    .then(|| format!("start of task {t} (generation {generation}) lost"))
            }
        };
        if let Some(p) = problem {
            push(
                found,
                format!("durability: {corr} was acknowledged but {p}"),
            );
        }
    }
}

/// The final checks.
pub(super) async fn at_end(w: &World) -> Vec<String> {
    let mut found = Vec::new();
    let rows = rows(&w.store);
    let events = events(&w.store);
    let acked = w
        .clients
        .acked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    durability(&rows, &events, &acked, &mut found);
    convergence(w, &rows, &mut found);
    trails(w, &rows, &events, &mut found);
    super::timers::timers(w, &rows, &events, &mut found);
    super::queue::order(&events, &mut found);
    super::dependencies::at_end(&w.store, &events, &mut found);
    super::queue::progress(w, &mut found);
    super::schedules::at_end(&w.store, &mut found);
    found
}

/// Once faults stop, every task settles: nothing STARTING or UNKNOWN, a
/// RUNNING row's pod runs (exactly it, where the row says), no pod runs for
/// a task whose row says none does, and no restart is overdue while a host
/// has room.
fn convergence(w: &World, rows: &[Row], found: &mut Vec<String>) {
    let l = w.ledger.lock().unwrap_or_else(|e| e.into_inner());
    let now_us = w.service.pods().ports().clock.wall_micros();
    let overdue = Duration::from_secs(5).as_micros() as i64;
    let room = w.service.pods().hosts().with_registry(|r| {
        r.hosts()
            .any(|h| h.state == HostState::Ready && h.running_pods + h.reserved < h.capacity)
    });
    for r in rows {
        let live: Vec<(&String, &crate::ledger::Proc)> = l
            .procs
            .iter()
            .filter(|(_, p)| p.alive && p.task_id == r.task_id)
            .collect();
        let t = &r.task_id;
        match r.pod_status.as_str() {
            "starting" | "unknown" => push(
                found,
                format!(
                    "convergence: task {t} is still {} after the faults stopped",
                    r.pod_status
                ),
            ),
            "running" => {
                let ok = live.len() == 1
                    && Some(live[0].0) == r.pod_id.as_ref()
                    && r.pod_host.as_deref() == Some(&format!("host-{}", live[0].1.host))
                    && live[0].1.generation as i64 == r.generation;
                if !ok {
                    push(
                        found,
                        format!(
                            "convergence: task {t} RUNNING pod {:?} on {:?} gen {}, but the hosts run {:?}",
                            r.pod_id,
                            r.pod_host,
                            r.generation,
                            live.iter()
                                .map(|(id, p)| format!(
                                    "{id} gen {} on host-{}",
                                    p.generation, p.host
                                ))
                                .collect::<Vec<_>>()
                        ),
                    );
                }
            }
            _ => {
                if !live.is_empty() {
                    push(
                        found,
                        format!(
                            "convergence: task {t} ({}, pod {}) but its pod {} still runs",
                            r.status, r.pod_status, live[0].0
                        ),
                    );
                }
                if r.status == "inactive"
                    && room
                    && r.next_restart_at.is_some_and(|at| at + overdue < now_us)
                {
                    push(
                        found,
                        format!("convergence: task {t}'s automatic restart is overdue"),
                    );
                }
            }
        }
    }
}

/// Each task's trail: every pod's end recorded exactly once and every
/// recorded start ended (unless the pod still runs); restarts as the
/// policy says.
fn trails(w: &World, rows: &[Row], events: &[Ev], found: &mut Vec<String>) {
    let mut by_task: BTreeMap<&str, Vec<&Ev>> = BTreeMap::new();
    for e in events {
        by_task.entry(e.task_id.as_str()).or_default().push(e);
    }
    let ends = [
        "pod_stopped",
        "pod_exited",
        "pod_crashed",
        "pod_lost",
        "pod_timed_out",
    ];
    for r in rows {
        let trail = by_task.get(r.task_id.as_str()).cloned().unwrap_or_default();
        let t = &r.task_id;
        let mut started: BTreeSet<String> = BTreeSet::new();
        let mut ended: BTreeSet<String> = BTreeSet::new();
        let mut current: Option<String> = None;
        let pod_of = |e: &Ev| {
            e.data
                .get("pod_id")
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        for e in &trail {
            let kind = e.kind.as_str();
            if kind == "pod_started" || kind == "pod_recovered" {
                if let Some(p) = pod_of(e) {
                    if kind == "pod_started"
                        && let Some(c) =
                            current.as_ref().filter(|c| **c != p && !ended.contains(*c))
                    {
                        push(
                            found,
                            format!(
                                "trail: task {t} started pod {p} while pod {c} had no recorded end"
                            ),
                        );
                    }
                    started.insert(p.clone());
                    current = Some(p);
                }
            } else if ends.contains(&kind)
                || (matches!(kind, "task_completed" | "task_failed") && pod_of(e).is_some())
            {
                if let Some(p) = pod_of(e) {
                    if !ended.insert(p.clone()) {
                        push(
                            found,
                            format!("trail: task {t} recorded the end of pod {p} twice"),
                        );
                    }
                    if current.as_ref() == Some(&p) {
                        current = None;
                    }
                }
            } else if kind == "task_completed" || kind == "task_cancelled" {
                // Complete/Cancel end the current pod (it is stopped after).
                if let Some(c) = current.take() {
                    ended.insert(c);
                }
            }
        }
        let still_running = (r.pod_status == "running")
            .then_some(r.pod_id.clone())
            .flatten();
        for p in started.difference(&ended) {
            if Some(p) != still_running.as_ref() {
                push(
                    found,
                    format!("trail: task {t}'s pod {p} started but its end was never recorded"),
                );
            }
        }
        super::restarts::restart_policy(r, &trail, w.service.restart_defaults(), found);
    }
}

/// Coverage from the final trails: event types and exit causes reached.
pub(super) fn cover_trails(w: &World, cov: &mut Coverage) {
    super::schedules::cover(&w.store, cov);
    for e in events(&w.store) {
        cov.events.insert(e.kind.clone());
        if let Some(c) = e.data.get("cause").and_then(Value::as_str) {
            cov.exit_causes.insert(c.to_owned());
        }
    }
    for r in w
        .clients
        .errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        cov.errors.insert(r.clone());
    }
}
