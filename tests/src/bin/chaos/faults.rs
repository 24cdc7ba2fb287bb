//! The faults of a chaos run. The whole schedule (when, what, which target,
//! how long) is drawn from the seed before the run starts, so a failing seed
//! replays the same faults; only what a fault finds at its instant (which
//! pod runs where) depends on timing.
//!
//! Freezes of a pod-host are kept shorter than the fence timeout: a host
//! frozen past it cannot kill its pods on time, which is the one overlap no
//! lease can prevent (see the README, "The limit no lease can cover"), so a
//! chaos run does not count it against the system.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipa_tests::pb;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::system::System;

/// One fault and its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL one running pod.
    KillPod,
    /// SIGSTOP one running pod for a while.
    FreezePod { ms: u64 },
    /// SIGKILL a pod-host; start it again after `down_ms`.
    KillHost { host: usize, down_ms: u64 },
    /// SIGSTOP a pod-host for less than its fence timeout.
    FreezeHost { host: usize, ms: u64 },
    /// Black-hole the network between central and a pod-host.
    Partition { host: usize, ms: u64 },
    /// SIGKILL central; start it again after `down_ms`.
    KillCentral { down_ms: u64 },
    /// SIGSTOP central (past the fence timeout the hosts fence their pods).
    FreezeCentral { ms: u64 },
    /// Fill the database's filesystem for a while.
    DiskFull { ms: u64 },
    /// A WatchEvents client that stops reading for a while.
    SlowWatcher { ms: u64 },
}

impl Fault {
    /// The name in the report.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::KillPod => "SIGKILL pod",
            Fault::FreezePod { .. } => "SIGSTOP pod",
            Fault::KillHost { .. } => "SIGKILL pod-host (+restart)",
            Fault::FreezeHost { .. } => "SIGSTOP pod-host (< fence)",
            Fault::Partition { .. } => "partition central ↔ pod-host",
            Fault::KillCentral { .. } => "SIGKILL central (+restart)",
            Fault::FreezeCentral { .. } => "SIGSTOP central",
            Fault::DiskFull { .. } => "database filesystem full",
            Fault::SlowWatcher { .. } => "slow watcher",
        }
    }
}

/// Draws the schedule: `(offset from the start, fault)`, in time order.
/// Faults begin after a short warm-up and stop at `run`.
pub fn schedule(seed: u64, run: Duration, hosts: usize, fence_ms: u64) -> Vec<(Duration, Fault)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut t = Duration::from_millis(1500);
    while t < run {
        let host = rng.random_range(0..hosts);
        let fault = match rng.random_range(0..100) {
            0..22 => Fault::KillPod,
            22..30 => Fault::FreezePod {
                ms: rng.random_range(100..1500),
            },
            30..40 => Fault::KillHost {
                host,
                down_ms: rng.random_range(100..3000),
            },
            40..50 => Fault::FreezeHost {
                host,
                ms: rng.random_range(100..fence_ms * 6 / 10),
            },
            50..64 => Fault::Partition {
                host,
                ms: rng.random_range(100..fence_ms * 2),
            },
            64..72 => Fault::KillCentral {
                down_ms: rng.random_range(100..2500),
            },
            72..78 => Fault::FreezeCentral {
                ms: rng.random_range(100..fence_ms * 12 / 10),
            },
            78..90 => Fault::DiskFull {
                ms: rng.random_range(200..4000),
            },
            _ => Fault::SlowWatcher {
                ms: rng.random_range(500..5000),
            },
        };
        out.push((t, fault));
        t += Duration::from_millis(rng.random_range(300..2200));
    }
    out
}

/// What happened to each fault.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// By fault name: (injected, skipped because the target was busy or
    /// absent).
    pub by_kind: BTreeMap<&'static str, (u64, u64)>,
}

impl Tally {
    pub fn injected(&self) -> u64 {
        self.by_kind.values().map(|(i, _)| i).sum()
    }
}

/// Which targets a fault currently holds, so two faults never act on the
/// same process at once (a freeze of a killed host would be meaningless).
#[derive(Default)]
struct Busy {
    central: bool,
    hosts: Vec<bool>,
    disk: bool,
}

/// Injects the schedule against `sys`, then waits for every fault to be
/// reverted (processes continued or restarted, partitions healed, disk
/// drained). `seed` picks the pods hit by pod faults.
pub async fn inject(
    sys: Arc<Mutex<System>>,
    plan: Vec<(Duration, Fault)>,
    seed: u64,
    stop: CancellationToken,
) -> Tally {
    let hosts = sys.lock().await.hosts.len();
    let busy = Arc::new(std::sync::Mutex::new(Busy {
        hosts: vec![false; hosts],
        ..Default::default()
    }));
    let tally = Arc::new(std::sync::Mutex::new(Tally::default()));
    let mut rng = StdRng::seed_from_u64(seed.rotate_left(17));
    let start = Instant::now();
    let mut running = tokio::task::JoinSet::new();
    for (at, fault) in plan {
        let pick: u64 = rng.random();
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until((start + at).into()) => {}
        }
        let claimed = claim(&busy, fault);
        {
            let mut t = tally.lock().unwrap();
            let e = t.by_kind.entry(fault.name()).or_default();
            if claimed {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
        if !claimed {
            continue;
        }
        eprintln!("chaos: t={:>6.1}s {fault:?}", start.elapsed().as_secs_f64());
        let (sys, busy, tally) = (sys.clone(), busy.clone(), tally.clone());
        running.spawn(async move {
            let done = apply(&sys, fault, pick).await;
            release(&busy, fault);
            if !done {
                // Nothing to act on after all (e.g. no pod ran): not injected.
                let mut t = tally.lock().unwrap();
                let e = t.by_kind.entry(fault.name()).or_default();
                e.0 -= 1;
                e.1 += 1;
            }
        });
    }
    while running.join_next().await.is_some() {}
    tally.lock().unwrap().clone()
}

fn claim(busy: &std::sync::Mutex<Busy>, f: Fault) -> bool {
    let mut b = busy.lock().unwrap();
    let slot: &mut bool = match f {
        Fault::KillHost { host, .. }
        | Fault::FreezeHost { host, .. }
        | Fault::Partition { host, .. } => &mut b.hosts[host],
        Fault::KillCentral { .. } | Fault::FreezeCentral { .. } => &mut b.central,
        Fault::DiskFull { .. } => &mut b.disk,
        Fault::KillPod | Fault::FreezePod { .. } | Fault::SlowWatcher { .. } => return true,
    };
    if *slot {
        return false;
    }
    *slot = true;
    true
}

fn release(busy: &std::sync::Mutex<Busy>, f: Fault) {
    let mut b = busy.lock().unwrap();
    match f {
        Fault::KillHost { host, .. }
        | Fault::FreezeHost { host, .. }
        | Fault::Partition { host, .. } => b.hosts[host] = false,
        Fault::KillCentral { .. } | Fault::FreezeCentral { .. } => b.central = false,
        Fault::DiskFull { .. } => b.disk = false,
        _ => {}
    }
}

/// Applies one fault and reverts it after its duration. False when there
/// was nothing to act on.
async fn apply(sys: &Mutex<System>, fault: Fault, pick: u64) -> bool {
    let ms = Duration::from_millis;
    match fault {
        Fault::KillPod => match running_pod(sys, pick).await {
            Some(pid) => {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                true
            }
            None => false,
        },
        Fault::FreezePod { ms: d } => match running_pod(sys, pick).await {
            Some(pid) => {
                let p = Pid::from_raw(pid as i32);
                let _ = kill(p, Signal::SIGSTOP);
                tokio::time::sleep(ms(d)).await;
                let _ = kill(p, Signal::SIGCONT);
                true
            }
            None => false,
        },
        Fault::KillHost { host, down_ms } => {
            sys.lock().await.kill_host(host).await;
            tokio::time::sleep(ms(down_ms)).await;
            sys.lock().await.restart_host(host).await;
            true
        }
        Fault::FreezeHost { host, ms: d } => {
            sys.lock().await.signal_host(host, Signal::SIGSTOP);
            tokio::time::sleep(ms(d)).await;
            sys.lock().await.signal_host(host, Signal::SIGCONT);
            true
        }
        Fault::Partition { host, ms: d } => {
            sys.lock().await.hosts[host].proxy.partition();
            tokio::time::sleep(ms(d)).await;
            sys.lock().await.hosts[host].proxy.heal();
            true
        }
        Fault::KillCentral { down_ms } => {
            sys.lock().await.kill_central().await;
            tokio::time::sleep(ms(down_ms)).await;
            sys.lock().await.restart_central().await;
            true
        }
        Fault::FreezeCentral { ms: d } => {
            sys.lock().await.signal_central(Signal::SIGSTOP);
            tokio::time::sleep(ms(d)).await;
            sys.lock().await.signal_central(Signal::SIGCONT);
            true
        }
        Fault::DiskFull { ms: d } => {
            if !sys.lock().await.fill_disk() {
                return false;
            }
            tokio::time::sleep(ms(d)).await;
            sys.lock().await.drain_disk();
            true
        }
        Fault::SlowWatcher { ms: d } => {
            let mut client = sys.lock().await.client();
            let req = pb::WatchEventsRequest::default();
            let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(2), client.watch_events(req)).await
            else {
                return false;
            };
            // Hold the stream without reading: central must bound what it
            // buffers for it and must not slow anyone else down.
            tokio::time::sleep(ms(d)).await;
            drop(stream);
            true
        }
    }
}

/// The pid of a pod central says is running, picked by `pick`.
async fn running_pod(sys: &Mutex<System>, pick: u64) -> Option<u32> {
    let mut client = sys.lock().await.client();
    let pods = tokio::time::timeout(
        Duration::from_secs(2),
        client.list_active_pods(pb::ListActivePodsRequest::default()),
    )
    .await
    .ok()?
    .ok()?
    .into_inner()
    .pods;
    let pids: Vec<u32> = pods
        .iter()
        .filter_map(|p| p.pod.as_ref().map(|p| p.pid))
        .filter(|pid| *pid > 0)
        .collect();
    if pids.is_empty() {
        return None;
    }
    let pid = pids[(pick % pids.len() as u64) as usize];
    // Central's view may be a moment old and pids are reused: only ever
    // signal a process that is one of our ledger pods.
    is_ledger_pod(pid).then_some(pid)
}

/// Whether `pid` runs the `ledger-pod` test binary.
pub fn is_ledger_pod(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        c.split(|b| *b == 0)
            .next()
            .is_some_and(|a| a.ends_with(b"ledger-pod"))
    })
}
