//! The invariants a chaos run must hold, checked once faults have stopped
//! and the system has had its chance to converge:
//!
//! - no task ever ran twice at once (the ledger of pod runs);
//! - every acknowledged write is present (creates, completes, cancels);
//! - every pod's end is recorded exactly once, and every pod that ran was
//!   recorded: as started, or (a start central never confirmed, killed by
//!   generation) by its `pod_fenced`, or (a start in flight when its host
//!   was lost) by its `pod_lost`, or (its start record could not be written
//!   before its task ended) by the event that ended it;
//! - every task converges: running with a live pod, or settled as its
//!   policy says, with central's view, the hosts' and the processes alike;
//! - every scheduled restart happened;
//! - a watcher saw every committed event exactly once, in order;
//! - no process or file descriptor leaked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use ipa_tests::ledger;
use ipa_tests::pb;

use crate::faults::is_ledger_pod;
use crate::system::{Client, System};
use crate::workload::Acks;

/// One invariant's verdict.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub name: &'static str,
    pub held: bool,
    /// What was checked (counts) or, when violated, the first few cases.
    pub detail: String,
}

fn verdict(name: &'static str, bad: &[String], checked: String) -> Verdict {
    Verdict {
        name,
        held: bad.is_empty(),
        detail: if bad.is_empty() {
            checked
        } else {
            format!(
                "{} violation(s): {}",
                bad.len(),
                bad.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
            )
        },
    }
}

/// Events that end a pod (they name it in their data).
const POD_ENDS: &[&str] = &[
    "pod_exited",
    "pod_crashed",
    "pod_stopped",
    "pod_lost",
    "pod_timed_out",
    "task_completed",
    "task_cancelled",
    "task_failed",
];

/// Every task, oldest first (paged).
pub async fn all_tasks(client: &mut Client) -> Result<Vec<pb::Task>, tonic::Status> {
    let mut out = Vec::new();
    loop {
        let page = client
            .list_tasks(pb::ListTasksRequest {
                limit: 500,
                offset: out.len() as u32,
                order_by: pb::OrderBy::CreatedAt as i32,
                order: pb::Order::Asc as i32,
                ..Default::default()
            })
            .await?
            .into_inner()
            .tasks;
        let n = page.len();
        out.extend(page);
        if n < 500 {
            return Ok(out);
        }
    }
}

/// Whether `pod` of `task` is, read now, its current pod or has a recorded
/// end (asked a few times, a second apart).
async fn ended_or_current_now(client: &mut Client, task: &str, pod: &str) -> bool {
    for _ in 0..3 {
        if let Ok(t) = client
            .get_task(pb::GetTaskRequest {
                task_id: task.to_owned(),
                include_archived: false,
            })
            .await
            .map(|r| r.into_inner())
            && t.pod.as_ref().is_some_and(|p| p.pod_id == pod)
            && t.pod_status != pb::PodStatus::Stopped as i32
        {
            return true;
        }
        if let Ok(events) = task_events(client, task).await
            && events.iter().any(|e| {
                POD_ENDS.contains(&e.r#type.as_str())
                    && serde_json::from_str::<serde_json::Value>(&e.data_json)
                        .ok()
                        .and_then(|d| d.get("pod_id").and_then(|v| v.as_str()).map(|v| v == pod))
                        .unwrap_or(false)
            })
        {
            return true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    false
}

/// Every event of `task_id`, oldest first (paged).
pub async fn task_events(
    client: &mut Client,
    task_id: &str,
) -> Result<Vec<pb::Event>, tonic::Status> {
    let mut out: Vec<pb::Event> = Vec::new();
    loop {
        let after = out.last().map_or(0, |e| e.version);
        let page = client
            .get_task_events(pb::GetTaskEventsRequest {
                task_id: task_id.to_owned(),
                after_version: after,
                limit: 1000,
                ..Default::default()
            })
            .await?
            .into_inner()
            .events;
        if page.is_empty() {
            return Ok(out);
        }
        out.extend(page);
    }
}

/// Live ledger-pod processes of this run: pid → pod id.
pub fn live_pods(ledger_path: &Path) -> BTreeMap<u32, String> {
    let mut out = BTreeMap::new();
    let want = format!("LEDGER={}", ledger_path.display());
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if !is_ledger_pod(pid) || is_zombie(pid) {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = env.split(|b| *b == 0).collect();
        if !vars.contains(&want.as_bytes()) {
            continue;
        }
        let pod = vars
            .iter()
            .find_map(|v| v.strip_prefix(b"IPA_POD_ID="))
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        out.insert(pid, pod);
    }
    out
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|st| st == "Z" || st == "X")
    })
}

/// Open file descriptors of `pid`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Why the system is not settled yet (empty when it is).
async fn unsettled(sys: &System, client: &mut Client) -> Vec<String> {
    let mut why = Vec::new();
    let tasks = match all_tasks(client).await {
        Ok(t) => t,
        Err(e) => return vec![format!("ListTasks failed: {}", e.message())],
    };
    let live = live_pods(&sys.ledger);
    let live_ids: BTreeSet<&str> = live.values().map(String::as_str).collect();
    let now = ipa_proto::time::now_micros();
    let mut running: BTreeSet<String> = BTreeSet::new();
    for t in &tasks {
        let status = pb::TaskStatus::try_from(t.status).unwrap_or_default();
        let pod_status = pb::PodStatus::try_from(t.pod_status).unwrap_or_default();
        let terminal = matches!(
            status,
            pb::TaskStatus::Completed | pb::TaskStatus::Cancelled | pb::TaskStatus::Failed
        );
        match pod_status {
            pb::PodStatus::Running if !terminal => {
                let pod_id = t.pod.as_ref().map(|p| p.pod_id.clone()).unwrap_or_default();
                if !live_ids.contains(pod_id.as_str()) {
                    why.push(format!(
                        "task {} RUNNING but pod {pod_id} has no process",
                        t.task_id
                    ));
                }
                running.insert(pod_id);
            }
            pb::PodStatus::Starting | pb::PodStatus::Unknown => {
                why.push(format!("task {} pod {:?}", t.task_id, pod_status));
            }
            _ => {}
        }
        let pending = t
            .next_restart_at
            .as_ref()
            .and_then(ipa_proto::time::micros_from_timestamp);
        if !terminal && pod_status == pb::PodStatus::Stopped && pending.is_some() {
            let late = pending.is_some_and(|at| now - at > 5_000_000);
            why.push(format!(
                "task {} has a restart pending{}",
                t.task_id,
                if late { " (over 5 s late)" } else { "" }
            ));
        }
    }
    for (pid, pod) in &live {
        if !running.contains(pod) {
            why.push(format!(
                "process {pid} runs pod {pod}, which central does not have running"
            ));
        }
    }
    for i in 0..sys.hosts.len() {
        let mut hc = sys.host_client(i);
        match hc.list_pods(pb::HostListPodsRequest::default()).await {
            Ok(r) => {
                for p in r.into_inner().pods {
                    let alive = p.state != pb::PodState::Exited as i32;
                    if alive && !running.contains(&p.pod_id) {
                        why.push(format!(
                            "host {} runs pod {} that central does not",
                            sys.hosts[i].id, p.pod_id
                        ));
                    }
                }
            }
            Err(e) => why.push(format!(
                "host {} ListPods: {}",
                sys.hosts[i].id,
                e.message()
            )),
        }
    }
    why
}

/// Waits until the system has settled (or `bound` passed). Returns the
/// verdict and how long it took.
pub async fn converge(sys: &System, client: &mut Client, bound: Duration) -> (Verdict, Duration) {
    let start = Instant::now();
    let mut last = Vec::new();
    // Settled twice in a row, 300 ms apart: not a lucky instant mid-change.
    let mut settled_once = false;
    while start.elapsed() < bound {
        last = unsettled(sys, client).await;
        if last.is_empty() {
            if settled_once {
                let took = start.elapsed();
                return (
                    verdict(
                        "every task converged after faults stopped",
                        &[],
                        format!("settled in {took:.1?}"),
                    ),
                    took,
                );
            }
            settled_once = true;
        } else {
            settled_once = false;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut bad = last;
    bad.insert(0, format!("not settled within {bound:?}"));
    (
        verdict(
            "every task converged after faults stopped",
            &bad,
            String::new(),
        ),
        start.elapsed(),
    )
}

/// The verdicts on the whole history, and the position of every committed
/// event (for the watcher's check).
pub struct History {
    pub verdicts: Vec<Verdict>,
    pub positions: BTreeSet<u64>,
}

/// The checks on the final state and the whole history.
pub async fn history(sys: &System, client: &mut Client, acks: &Acks) -> History {
    let mut out = Vec::new();
    let mut positions: BTreeSet<u64> = BTreeSet::new();

    // 1. The ledger.
    let runs = ledger::read(&sys.ledger);
    let overlaps = ledger::overlaps(&runs);
    let bad: Vec<String> = overlaps
        .iter()
        .map(|(a, b)| {
            format!(
                "task {} pods {} and {} overlapped",
                a.task_id, a.pod_id, b.pod_id
            )
        })
        .collect();
    out.push(verdict(
        "no task ever ran twice at once",
        &bad,
        format!(
            "{} pod runs of {} tasks",
            runs.len(),
            runs.iter()
                .map(|r| &r.task_id)
                .collect::<BTreeSet<_>>()
                .len()
        ),
    ));

    // 2. Acknowledged writes.
    let tasks = match all_tasks(client).await {
        Ok(t) => t,
        Err(e) => {
            out.push(verdict(
                "every acknowledged write is present",
                &[format!("ListTasks: {}", e.message())],
                String::new(),
            ));
            return History {
                verdicts: out,
                positions,
            };
        }
    };
    let by_id: BTreeMap<&str, &pb::Task> = tasks.iter().map(|t| (t.task_id.as_str(), t)).collect();
    let mut bad = Vec::new();
    for id in acks.created.keys() {
        if !by_id.contains_key(id.as_str()) {
            bad.push(format!("created task {id} is missing"));
        }
    }
    for (ids, want) in [
        (&acks.completed, pb::TaskStatus::Completed),
        (&acks.cancelled, pb::TaskStatus::Cancelled),
    ] {
        for id in ids {
            let got = by_id.get(id.as_str()).map(|t| t.status);
            if got != Some(want as i32) {
                bad.push(format!("task {id} acknowledged {want:?} but is {got:?}"));
            }
        }
    }
    out.push(verdict(
        "every acknowledged write is present",
        &bad,
        format!(
            "{} creates, {} completes, {} cancels acknowledged",
            acks.created.len(),
            acks.completed.len(),
            acks.cancelled.len()
        ),
    ));

    // 3. Pod ends, starts and owed restarts, from every task's trail.
    let mut started: BTreeSet<String> = BTreeSet::new();
    // Pods killed by generation; one whose start central never recorded
    // (it raced with a cancel, or its outcome was unknown) is recorded by
    // its pod_fenced alone, which says it ran.
    let mut fenced: BTreeSet<String> = BTreeSet::new();
    // Pods whose first record is pod_lost: the start was in flight when
    // their host was lost, so central never learnt they ran; the host
    // killed them at its own fence timeout (the overlap check holds that).
    let mut lost_starting: BTreeSet<String> = BTreeSet::new();
    let mut pod_task: BTreeMap<String, String> = BTreeMap::new();
    let mut ends: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut owed = Vec::new();
    let mut read_errors = Vec::new();
    // Each task's trail in short (type, pod), to explain a violation.
    let mut trails: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in &tasks {
        let events = match task_events(client, &t.task_id).await {
            Ok(e) => e,
            Err(e) => {
                read_errors.push(format!("GetTaskEvents {}: {}", t.task_id, e.message()));
                continue;
            }
        };
        for e in &events {
            positions.insert(e.position);
            let data: serde_json::Value = serde_json::from_str(&e.data_json).unwrap_or_default();
            let pod = data
                .get("pod_id")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned();
            trails.entry(t.task_id.clone()).or_default().push(format!(
                "{}({})",
                e.r#type,
                pod.get(pod.len().saturating_sub(6)..).unwrap_or(&pod)
            ));
            if !pod.is_empty() {
                pod_task.insert(pod.clone(), t.task_id.clone());
            }
            if e.r#type == "pod_lost" && !started.contains(&pod) {
                lost_starting.insert(pod.clone());
            }
            if e.r#type == "pod_started" {
                started.insert(pod);
            } else if e.r#type == "pod_fenced" {
                fenced.insert(pod);
            } else if POD_ENDS.contains(&e.r#type.as_str()) && !pod.is_empty() {
                ends.entry(pod)
                    .or_default()
                    .push(format!("{}@{}", e.r#type, e.position));
            }
        }
        if events
            .last()
            .is_some_and(|e| e.r#type == "restart_scheduled")
        {
            let status = pb::TaskStatus::try_from(t.status).unwrap_or_default();
            if status == pb::TaskStatus::Inactive && t.next_restart_at.is_none() {
                owed.push(format!(
                    "task {} was promised a restart that never came",
                    t.task_id
                ));
            }
        }
    }
    let current: BTreeSet<&str> = tasks
        .iter()
        .filter(|t| t.pod_status == pb::PodStatus::Running as i32)
        .filter_map(|t| t.pod.as_ref().map(|p| p.pod_id.as_str()))
        .collect();
    let mut bad = read_errors.clone();
    for (pod, e) in &ends {
        if e.len() > 1 {
            bad.push(format!(
                "pod {pod} ended {} times: {}",
                e.len(),
                e.join(", ")
            ));
        }
    }
    for pod in &started {
        if !ends.contains_key(pod) && !current.contains(pod.as_str()) {
            let task = pod_task.get(pod).cloned().unwrap_or_default();
            // Rows and trails were read at different moments while crash
            // loops may still restart pods: look again before calling it.
            if ended_or_current_now(client, &task, pod).await {
                continue;
            }
            let trail = trails.get(&task).map(|t| t.join(" ")).unwrap_or_default();
            let row = tasks
                .iter()
                .find(|t| t.task_id == task)
                .map(|t| {
                    format!(
                        "{:?}/{:?} pod {}",
                        pb::TaskStatus::try_from(t.status).unwrap_or_default(),
                        pb::PodStatus::try_from(t.pod_status).unwrap_or_default(),
                        t.pod.as_ref().map(|p| p.pod_id.as_str()).unwrap_or("-")
                    )
                })
                .unwrap_or_default();
            bad.push(format!(
                "pod {pod} of task {task} started but its end was never recorded (row: {row}; trail: {trail})"
            ));
        }
    }
    for r in &runs {
        // A start whose pod_started could not be written (the store was
        // down) and whose task ended before the store came back is named by
        // the event that ended it (task_completed/cancelled name their pod).
        let recorded = started.contains(&r.pod_id)
            || fenced.contains(&r.pod_id)
            || lost_starting.contains(&r.pod_id)
            || ends.contains_key(&r.pod_id);
        if !recorded {
            bad.push(format!(
                "pod {} of task {} ran but was never recorded as started (trail: {})",
                r.pod_id,
                r.task_id,
                trails
                    .get(&r.task_id)
                    .map(|t| t.join(" "))
                    .unwrap_or_default()
            ));
        }
    }
    out.push(verdict(
        "every pod's start and end recorded exactly once",
        &bad,
        format!("{} pods started, {} ended", started.len(), ends.len()),
    ));
    out.push(verdict(
        "every scheduled restart happened",
        &owed,
        format!("{} tasks", tasks.len()),
    ));
    History {
        verdicts: out,
        positions,
    }
}
