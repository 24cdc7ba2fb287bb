//! Many pods at once: N pods across 4 pod-hosts (started by 32 clients),
//! each host's memory per pod, and a graceful stop (SIGTERM) of one host
//! with its share of the pods. The pods ignore SIGTERM (template
//! `stubborn`), so the stop pays the full grace and then SIGKILLs them all:
//! the worst case the goal "≤ stop-grace + 1 s" speaks of.

use std::path::Path;
use std::time::Duration;

use ipa_tests::pb;

use crate::Scale;
use crate::pods::{create_tasks, start_all, write_config};
use crate::proc::{self, CentralClient};

/// `--stop-grace-ms` of the fleet's pod-hosts.
pub const STOP_GRACE: Duration = Duration::from_millis(1000);

pub struct FleetResults {
    pub wanted: usize,
    /// Pods central listed as running once every start returned.
    pub running: usize,
    pub start_rate: f64,
    pub start_errors: usize,
    /// Mean over the hosts of (RSS with pods − RSS before) / pods, KiB.
    pub kib_per_pod: f64,
    /// Pods on the host that was stopped.
    pub stopped_pods: usize,
    /// SIGTERM → exit of that host.
    pub stop_took: Duration,
    /// Pods of that host still alive after it exited (should be 0).
    pub leftovers: usize,
}

pub async fn run(dir: &Path, scale: &Scale) -> FleetResults {
    let config = write_config(dir, &dir.join("unused-ledger"));
    let per_host = scale.fleet.div_ceil(4);
    let capacity = (per_host + 50).to_string();
    let grace = STOP_GRACE.as_millis().to_string();
    let flags = [
        "--capacity",
        capacity.as_str(),
        "--stop-grace-ms",
        grace.as_str(),
    ];
    let mut hosts = Vec::new();
    for i in 0..4 {
        hosts.push(proc::pod_host(dir, &format!("fleet-{i}"), &config, &flags).await);
    }
    let refs: Vec<&proc::Server> = hosts.iter().collect();
    let mut central = proc::central(dir, &refs, &[]).await;
    let mut client = CentralClient::new(central.channel().await);
    proc::wait_hosts_ready(&mut client, 4).await;
    let rss_before: Vec<u64> = hosts.iter().map(|h| h.rss_kib().unwrap_or(0)).collect();

    let ids = create_tasks(&central, scale.fleet, "stubborn").await;
    eprintln!(
        "  starting {} pods over 4 pod-hosts (32 clients)",
        ids.len()
    );
    let load = start_all(&central, ids, 32).await;
    let running = client
        .list_active_pods(pb::ListActivePodsRequest::default())
        .await
        .map(|r| r.into_inner().pods.len())
        .unwrap_or(0);
    // Let the hosts finish any per-pod start-up work before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per_host_pods = host_pods(&mut client).await;
    let mut per_pod = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let pods = per_host_pods
            .iter()
            .find(|(id, _)| id == &format!("fleet-{i}"))
            .map(|(_, n)| *n)
            .unwrap_or(0);
        if let (Some(after), true) = (h.rss_kib(), pods > 0) {
            per_pod.push(after.saturating_sub(rss_before[i]) as f64 / pods as f64);
        }
    }
    let kib_per_pod = per_pod.iter().sum::<f64>() / per_pod.len().max(1) as f64;

    // Graceful stop of the host with the most pods (placement spreads them
    // evenly, so with 2,000 pods over 4 hosts that is at least 500).
    let (busiest, stopped_pods) = (0..hosts.len())
        .map(|i| {
            let n = per_host_pods
                .iter()
                .find(|(id, _)| id == &format!("fleet-{i}"))
                .map_or(0, |(_, n)| *n);
            (i, n)
        })
        .max_by_key(|&(_, n)| n)
        .unwrap_or((0, 0));
    let pids = pod_pids(&mut client, &format!("fleet-{busiest}")).await;
    eprintln!("  SIGTERM to a pod-host with {stopped_pods} pods (grace {STOP_GRACE:?})");
    let mut first = hosts.remove(busiest);
    let stop_took = first.stop(Duration::from_secs(60)).await;
    let leftovers = pids
        .iter()
        .filter(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(**p as i32), None).is_ok())
        .count();

    drop(client);
    let stops = hosts
        .iter_mut()
        .map(|h| h.stop(Duration::from_secs(60)))
        .collect::<Vec<_>>();
    futures::future::join_all(stops).await;
    central.stop(Duration::from_secs(10)).await;
    FleetResults {
        wanted: scale.fleet,
        running,
        start_rate: load.rate(),
        start_errors: load.errors,
        kib_per_pod,
        stopped_pods,
        stop_took,
        leftovers,
    }
}

async fn host_pods(client: &mut CentralClient) -> Vec<(String, usize)> {
    let pods = client
        .list_active_pods(pb::ListActivePodsRequest::default())
        .await
        .map(|r| r.into_inner().pods)
        .unwrap_or_default();
    let mut by: std::collections::BTreeMap<String, usize> = Default::default();
    for p in pods {
        if let Some(pod) = p.pod {
            *by.entry(pod.pod_host).or_default() += 1;
        }
    }
    by.into_iter().collect()
}

async fn pod_pids(client: &mut CentralClient, host: &str) -> Vec<u32> {
    client
        .list_active_pods(pb::ListActivePodsRequest::default())
        .await
        .map(|r| r.into_inner().pods)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| p.pod)
        .filter(|p| p.pod_host == host)
        .map(|p| p.pid)
        .collect()
}
