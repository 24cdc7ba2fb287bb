//! The steady-state figures of a scale configuration: central at rest
//! (CPU from `/proc/PID/stat` over a fixed window, memory from
//! `/proc/PID/status`), the two list RPCs, and a central restart until every
//! pod is re-adopted.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use ipa_tests::pb;

use super::fleet::{Fleet, Kind};
use crate::proc::{self, CentralClient, Server};
use crate::stats::Samples;

/// How long the pods may take to show up, and a restart to re-adopt them.
const SETTLE_LIMIT: Duration = Duration::from_secs(120);

/// Central at rest: nothing happens but heartbeats (and its pings).
#[derive(Debug, Clone, Default)]
pub struct Rest {
    pub window: Duration,
    /// Central's CPU time (user + system) over the window.
    pub cpu: Duration,
    /// The hosts' processes' CPU time over the same window.
    pub fleet_cpu: Duration,
    /// Central's RSS with every host connected and no task yet.
    pub rss_base_kib: u64,
    /// Central's RSS at the end of the window.
    pub rss_kib: u64,
    /// Pods central listed as active before the window.
    pub running: usize,
}

impl Rest {
    /// CPU as a share of one CPU.
    pub fn cpu_share(&self) -> f64 {
        self.cpu.as_secs_f64() / self.window.as_secs_f64().max(1e-9)
    }

    /// Central's memory growth per supervised pod, KiB.
    pub fn kib_per_pod(&self, pods: usize) -> f64 {
        self.rss_kib.saturating_sub(self.rss_base_kib) as f64 / pods.max(1) as f64
    }
}

/// Every active pod, following truncated pages.
pub async fn active_pods(client: &mut CentralClient) -> Vec<pb::ActivePod> {
    let mut all = Vec::new();
    loop {
        let after_task_id = all
            .last()
            .map(|p: &pb::ActivePod| p.task_id.clone())
            .unwrap_or_default();
        let Ok(r) = client
            .list_active_pods(pb::ListActivePodsRequest { after_task_id })
            .await
        else {
            return all;
        };
        let r = r.into_inner();
        let empty = r.pods.is_empty();
        all.extend(r.pods);
        if !r.truncated || empty {
            return all;
        }
    }
}

pub async fn rest(
    central: &Server,
    client: &mut CentralClient,
    fleet: &Fleet,
    pods: usize,
    rss_base_kib: u64,
    window: Duration,
) -> Rest {
    let t0 = Instant::now();
    let mut running = 0;
    while t0.elapsed() < SETTLE_LIMIT {
        running = active_pods(client).await.len();
        if running >= pods {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the start burst's last acks and phase records finish.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fleet_pids = fleet.pids();
    let (cpu0, fleet0) = (proc::cpu_time(central.pid), proc::cpu_of(&fleet_pids));
    let w0 = Instant::now();
    tokio::time::sleep(window).await;
    let window = w0.elapsed();
    Rest {
        window,
        cpu: proc::cpu_time(central.pid).saturating_sub(cpu0),
        fleet_cpu: proc::cpu_of(&fleet_pids).saturating_sub(fleet0),
        rss_base_kib,
        rss_kib: central.rss_kib().unwrap_or(0),
        running,
    }
}

/// ListActivePods `n` times in a row; also returns how many pods it listed.
pub async fn list_active(client: &mut CentralClient, n: usize) -> (Samples, usize) {
    let mut s = Samples::new();
    let mut listed = 0;
    for _ in 0..n {
        let t0 = Instant::now();
        listed = active_pods(client).await.len();
        s.push(t0.elapsed());
    }
    (s, listed)
}

/// ListPodHosts `n` times in a row.
pub async fn list_hosts(client: &mut CentralClient, n: usize) -> Samples {
    let mut s = Samples::new();
    for _ in 0..n {
        let t0 = Instant::now();
        if client
            .list_pod_hosts(pb::ListPodHostsRequest {})
            .await
            .is_ok()
        {
            s.push(t0.elapsed());
        }
    }
    s
}

/// A central restart with every pod running.
#[derive(Debug, Clone, Default)]
pub struct Restart {
    /// The new process: spawned → listening.
    pub boot: Duration,
    /// Per host: spawned → READY in ListPodHosts.
    pub hosts_ready: Samples,
    /// Per pod: spawned → its live state is back (re-adopted from its
    /// host's hello), as seen by a ListTasks poll.
    pub readopted: Samples,
    /// Pods not re-adopted within the limit.
    pub missing: usize,
    /// Tasks whose pod is not the one that ran before the restart.
    pub changed: usize,
    /// Pods killed meanwhile (by central's commands or self-fencing on
    /// simulated hosts; real pods that died).
    pub killed: u64,
    /// How many poll rounds it took, and their mean length (the resolution
    /// of `readopted`).
    pub polls: usize,
    pub poll_every: Duration,
}

/// SIGTERM to central, a new one on the same database, and polls until
/// every pod is re-adopted: every host READY in ListPodHosts, and every
/// active task's live version back (the simulated and the real pods
/// both reported one status line, so it is 1; it is 0 until central has
/// reconciled the host's hello).
pub async fn restart(
    dir: &Path,
    central: &mut Server,
    fleet: &mut Fleet,
    flags: &[&str],
    pods: usize,
) -> Restart {
    let mut client = CentralClient::new(central.channel().await);
    let before: HashMap<String, (String, u32)> = active_pods(&mut client)
        .await
        .into_iter()
        .filter_map(|p| {
            let pod = p.pod?;
            Some((p.task_id, (pod.pod_id, pod.pid)))
        })
        .collect();
    let stats_before = fleet.stats().await;
    drop(client);
    central.stop(Duration::from_secs(30)).await;

    let t0 = Instant::now();
    *central = proc::central_at(dir, &fleet.urls(), flags).await;
    let boot = t0.elapsed();
    let mut client = CentralClient::new(central.channel().await);
    let mut hosts_ready: HashMap<String, Duration> = HashMap::new();
    let mut adopted: HashMap<String, Duration> = HashMap::new();
    let mut changed = 0;
    let mut polls = 0;
    while (adopted.len() + changed < pods || hosts_ready.len() < fleet.len())
        && t0.elapsed() < SETTLE_LIMIT
    {
        polls += 1;
        if hosts_ready.len() < fleet.len()
            && let Ok(r) = client.list_pod_hosts(pb::ListPodHostsRequest {}).await
        {
            let at = t0.elapsed();
            for h in r.into_inner().hosts {
                // Until a host's hello arrives, central shows a placeholder
                // for it (no boot id) from what its database says runs.
                if h.state() == pb::PodHostState::Ready && !h.boot_id.is_empty() {
                    hosts_ready.entry(h.host_id).or_insert(at);
                }
            }
        }
        changed = 0;
        let mut offset = 0;
        while adopted.len() + changed < pods {
            let page = client
                .list_tasks(pb::ListTasksRequest {
                    status: pb::TaskStatus::Active as i32,
                    limit: 1000,
                    offset,
                    order_by: pb::OrderBy::CreatedAt as i32,
                    order: pb::Order::Asc as i32,
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().tasks)
                .unwrap_or_default();
            let at = t0.elapsed();
            for t in &page {
                let same =
                    t.pod.as_ref().map(|p| &p.pod_id) == before.get(&t.task_id).map(|(id, _)| id);
                if !same {
                    changed += 1;
                } else if t.version >= 1 {
                    adopted.entry(t.task_id.clone()).or_insert(at);
                }
            }
            if page.len() < 1000 {
                break;
            }
            offset += 1000;
        }
        // A sweep of 10,000 tasks costs central tens of milliseconds: poll
        // gently, or the measurement would slow what it measures.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let killed = match (fleet.kind, stats_before, fleet.stats().await) {
        (Kind::Simulated, Some(a), Some(b)) => {
            (b.killed_by_central + b.self_fenced) - (a.killed_by_central + a.self_fenced)
        }
        _ => before
            .values()
            .filter(|(_, pid)| {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), None).is_err()
            })
            .count() as u64,
    };
    let mut r = Restart {
        poll_every: t0.elapsed() / polls.max(1) as u32,
        boot,
        missing: pods.saturating_sub(adopted.len()),
        changed,
        killed,
        polls,
        ..Default::default()
    };
    hosts_ready
        .into_values()
        .for_each(|d| r.hosts_ready.push(d));
    adopted.into_values().for_each(|d| r.readopted.push(d));
    r
}
