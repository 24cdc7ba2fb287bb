//! Scale: one real central-manager supervising up to 100 pod-hosts and
//! 10,000 pods on this machine, and how its cost grows from 1,000 to 10,000
//! pods and from 10 to 100 hosts (issue 18).
//!
//! Real pod-hosts with real pods would need far more than 2 CPUs at that
//! size, so the hosts are simulated ([`ipa_tests::simhost`]): the real
//! protocol over real gRPC, ten stand-in processes of hosts, pods as table
//! entries. One configuration also runs with real pod-host processes and
//! real (cheap) pods, every figure measured the same way, to show that
//! central cannot tell the difference ([`fleet`]).
//!
//! Each configuration (hosts × pods) gets a fresh central-manager and
//! database, then, in order: create and start every pod; central at rest
//! (heartbeats only) over a fixed window; ListActivePods and ListPodHosts
//! latency; a central restart until every pod is re-adopted; a crash storm
//! (10 % of the pods exit at once) alone and again with 100 watchers on
//! WatchEvents; a host storm (one rack, 10 % of the hosts, SIGKILLed).

pub mod feed;
pub mod fleet;
mod measure;
pub mod report;
pub mod standin;
mod storms;

use std::path::Path;
use std::time::Duration;

use ipa_tests::pb;

pub use measure::{Rest, Restart};
pub use storms::{HostStorm, Storm, Watched};

use crate::proc::{self, CentralClient};
use fleet::{Fleet, Kind};

/// One configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub kind: Kind,
    pub hosts: usize,
    pub pods: usize,
}

/// The timings central and the hosts run with.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// Central's flags; `None` keeps the shipped defaults.
    pub flags: Option<(u64, u64, u64)>,
    /// Heartbeat, unreachable, fence (central's and the hosts').
    pub heartbeat: Duration,
    pub fence: Duration,
}

impl Timings {
    /// As shipped: heartbeat 500 ms, unreachable 1.5 s, fence 5 s.
    pub fn defaults() -> Self {
        Self {
            flags: None,
            heartbeat: Duration::from_millis(500),
            fence: Duration::from_millis(5000),
        }
    }

    /// Shorter, for quick runs: the host storm waits for the fence.
    pub fn short() -> Self {
        Self {
            flags: Some((200, 1000, 2000)),
            heartbeat: Duration::from_millis(200),
            fence: Duration::from_millis(2000),
        }
    }

    fn central_flags(&self) -> Vec<String> {
        match self.flags {
            None => vec![],
            Some((hb, unreachable, fence)) => vec![
                "--heartbeat-interval-ms".into(),
                hb.to_string(),
                "--host-unreachable-ms".into(),
                unreachable.to_string(),
                "--fence-timeout-ms".into(),
                fence.to_string(),
            ],
        }
    }

    /// Central declares a silent host's pods lost at its last contact plus
    /// this: the larger fence timeout (central's and the host's are equal
    /// here) plus central's margin, a quarter of it (at least 250 ms) plus
    /// one heartbeat interval (`Config::host_timeouts`).
    pub fn lost_after(&self) -> Duration {
        self.fence + (self.fence / 4).max(Duration::from_millis(250)) + self.heartbeat
    }
}

/// How a scale run is sized.
#[derive(Debug, Clone)]
pub struct ScaleSpec {
    pub configs: Vec<Config>,
    /// The at-rest window.
    pub rest: Duration,
    pub list_active: usize,
    pub list_hosts: usize,
    pub watchers: usize,
    pub timings: Timings,
}

/// Everything measured in one configuration.
#[derive(Debug)]
pub struct ConfigResult {
    pub config: Config,
    pub start_rate: f64,
    pub start_errors: usize,
    pub rest: Rest,
    pub list_active: crate::stats::Samples,
    pub listed: usize,
    pub list_hosts: crate::stats::Samples,
    pub restart: Restart,
    pub crash: Storm,
    pub watched: Option<(Storm, Watched)>,
    pub host_storm: HostStorm,
}

/// The automatic-restart policy of every task: restart at once, a budget
/// no storm here reaches.
pub fn policy() -> pb::RestartPolicy {
    pb::RestartPolicy {
        auto_restart: Some(true),
        max_restarts: Some(1000),
        window_seconds: Some(60),
        initial_backoff_ms: Some(0),
        max_backoff_ms: Some(0),
    }
}

/// Parses `sim:100x10000,real:10x1000`.
pub fn parse_configs(s: &str) -> Option<Vec<Config>> {
    s.split(',')
        .map(|c| {
            let (kind, size) = c.split_once(':')?;
            let (hosts, pods) = size.split_once('x')?;
            let kind = match kind {
                "sim" => Kind::Simulated,
                "real" => Kind::Real,
                _ => return None,
            };
            Some(Config {
                kind,
                hosts: hosts.parse().ok().filter(|h| *h > 0)?,
                pods: pods.parse().ok().filter(|p| *p > 0)?,
            })
        })
        .collect()
}

/// Slots per host: room for a lost rack's pods on the other racks, and a
/// little more.
fn capacity(c: &Config) -> u32 {
    let left = c.hosts - c.hosts / fleet::racks(c.hosts);
    let per = c.pods.div_ceil(left.max(1));
    (per + per / 5 + 2) as u32
}

pub async fn run(dir: &Path, spec: &ScaleSpec) -> Vec<ConfigResult> {
    let mut out = Vec::new();
    for (i, c) in spec.configs.iter().enumerate() {
        let sub = dir.join(format!("scale-{i}"));
        std::fs::create_dir_all(&sub).expect("scale dir");
        eprintln!(
            "  {:?} pod-hosts: {} hosts, {} pods",
            c.kind, c.hosts, c.pods
        );
        out.push(run_one(&sub, *c, spec).await);
    }
    out
}

async fn run_one(dir: &Path, c: Config, spec: &ScaleSpec) -> ConfigResult {
    let t = spec.timings;
    let mut fleet = Fleet::start(c.kind, dir, c.hosts, capacity(&c), t.fence).await;
    let flags = t.central_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut central = proc::central_at(dir, &fleet.urls(), &flags).await;
    let mut client = CentralClient::new(central.channel().await);
    proc::wait_hosts_ready(&mut client, c.hosts).await;
    crate::baseline::settle().await;
    let rss_base = central.rss_kib().unwrap_or(0);

    let ids = crate::pods::create_tasks_with(&central, c.pods, "sleeper", Some(policy())).await;
    let load = crate::pods::start_all(&central, ids, 32).await;
    eprintln!(
        "    {} pods started at {:.0}/s ({} errors)",
        load.ok,
        load.rate(),
        load.errors
    );
    if let Some(secs) = std::env::var("BENCH_SCALE_PAUSE")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        eprintln!(
            "    paused {secs} s at rest: central-manager pid {}",
            central.pid
        );
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
    let rest = measure::rest(&central, &mut client, &fleet, c.pods, rss_base, spec.rest).await;
    let (list_active, listed) = measure::list_active(&mut client, spec.list_active).await;
    let list_hosts = measure::list_hosts(&mut client, spec.list_hosts).await;

    let restart = measure::restart(dir, &mut central, &mut fleet, &flags, c.pods).await;
    client = CentralClient::new(central.channel().await);

    let per_host = (c.pods / 10 / c.hosts).max(1);
    let crash = storms::crash(&central, &mut client, &mut fleet, per_host, 0)
        .await
        .0;
    let watched = if spec.watchers > 0 {
        let (s, w) =
            storms::crash(&central, &mut client, &mut fleet, per_host, spec.watchers).await;
        w.map(|w| (s, w))
    } else {
        None
    };
    let host_storm = storms::host_storm(&central, &mut client, &mut fleet, t).await;

    drop(client);
    fleet.stop().await;
    central.stop(Duration::from_secs(10)).await;
    ConfigResult {
        config: c,
        start_rate: load.rate(),
        start_errors: load.errors,
        rest,
        list_active,
        listed,
        list_hosts,
        restart,
        crash,
        watched,
        host_storm,
    }
}
