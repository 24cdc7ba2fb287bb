//! Storms: many pods crash at once, optionally with a crowd of watchers on
//! WatchEvents; and a rack of pod-hosts lost at once. Every time is taken
//! when the bench *receives* the event on WatchEvents (central publishes
//! only after the commit), in unix µs, so the stand-ins' clocks and the
//! bench's compare directly (one machine).

use std::collections::HashMap;
use std::time::Duration;

use ipa_tests::pb;

use super::Timings;
use super::feed::{Crowd, Feed, await_restarts, marker};
use super::fleet::Fleet;
use super::measure::active_pods;
use crate::proc::{self, CentralClient, Server};
use crate::stats::Samples;

/// How long a storm may take to settle before the missing ones are
/// counted as missing.
const STORM_LIMIT: Duration = Duration::from_secs(120);

/// A crash storm.
#[derive(Debug, Clone, Default)]
pub struct Storm {
    /// Pods that crashed.
    pub pods: usize,
    /// First to last crash.
    pub spread: Duration,
    /// Per pod: first crash → its `pod_crashed` received.
    pub committed: Samples,
    /// Per pod: first crash → its restart's `pod_started` received.
    pub restarted: Samples,
    /// Pods without both events within the limit.
    pub missing: usize,
    /// Central's CPU from the crash until the last restart.
    pub cpu: Duration,
}

/// What the crowd of watchers saw during a storm.
#[derive(Debug, Clone, Default)]
pub struct Watched {
    pub watchers: usize,
    /// Events each watcher received from its start to the end marker.
    pub events: usize,
    /// Watchers whose events differ from the first watcher's (a gap, a
    /// repeat, another order) or that did not reach the end marker.
    pub disagree: usize,
    /// occurred_at → received, every event of every watcher.
    pub lag: Samples,
}

fn us(d: i64) -> Duration {
    Duration::from_micros(u64::try_from(d).unwrap_or(0))
}

/// `per_host` pods of every host crash at once (with `watchers` more
/// WatchEvents streams open when > 0).
pub async fn crash(
    central: &Server,
    client: &mut CentralClient,
    fleet: &mut Fleet,
    per_host: usize,
    watchers: usize,
) -> (Storm, Option<Watched>) {
    let p0 = marker(client).await;
    let mut feed = Feed::start(central.channel().await, p0).await;
    let crowd = if watchers > 0 {
        let mut channels = Vec::new();
        for _ in 0..watchers {
            channels.push(central.channel().await);
        }
        let crowd = Crowd::start(channels, p0).await;
        // Every watcher is live once it has the next event.
        let p1 = marker(client).await;
        let live = crowd.wait_all_past(p1, STORM_LIMIT).await;
        assert_eq!(live, watchers, "watchers did not start");
        Some(crowd)
    } else {
        None
    };
    let active = active_pods(client).await;
    let cpu0 = proc::cpu_time(central.pid);
    let crashed = fleet.crash(per_host, &active).await;
    let got = await_restarts(&mut feed, &crashed.tasks, "pod_crashed", STORM_LIMIT).await;
    let mut s = Storm {
        pods: crashed.tasks.len(),
        spread: us(crashed.last_us - crashed.first_us),
        cpu: proc::cpu_time(central.pid).saturating_sub(cpu0),
        ..Default::default()
    };
    for e in got.values() {
        match (e.ended_us, e.restarted_us) {
            (Some(c), Some(r)) => {
                s.committed.push(us(c - crashed.first_us));
                s.restarted.push(us(r - crashed.first_us));
            }
            _ => s.missing += 1,
        }
    }
    let Some(crowd) = crowd else {
        return (s, None);
    };
    let end = marker(client).await;
    let reached = crowd.wait_all_past(end, STORM_LIMIT).await;
    let seen = crowd.finish().await;
    let mut w = Watched {
        watchers: seen.len(),
        disagree: seen.len() - reached,
        ..Default::default()
    };
    let reference: Vec<u64> = seen
        .first()
        .map(|s| s.positions.iter().copied().filter(|p| *p <= end).collect())
        .unwrap_or_default();
    w.events = reference.len();
    let ordered = reference.windows(2).all(|p| p[0] < p[1]);
    for (i, s) in seen.iter().enumerate() {
        let mine: Vec<u64> = s.positions.iter().copied().filter(|p| *p <= end).collect();
        if i > 0 && mine != reference || !ordered {
            w.disagree += 1;
        }
        for (pos, lag) in s.positions.iter().zip(&s.lags_us) {
            if *pos <= end {
                w.lag.push(us(*lag));
            }
        }
    }
    (s, Some(w))
}

/// A rack of hosts lost together.
#[derive(Debug, Clone, Default)]
pub struct HostStorm {
    pub hosts: usize,
    pub pods: usize,
    /// Per pod: its host's fence deadline → `pod_lost` received.
    pub lost: Samples,
    /// Per pod: the deadline → its restart's `pod_started` received.
    pub restarted: Samples,
    /// Pods lost or restarted *before* their deadline (must be 0).
    pub early: usize,
    pub missing: usize,
}

/// SIGKILL of rack 0. Each host's fence deadline is computed as central
/// does: its last contact, which ListPodHosts shows as
/// `last_heartbeat_at` once the host is silent, plus the fence timeout and
/// the margin ([`Timings::lost_after`]).
pub async fn host_storm(
    central: &Server,
    client: &mut CentralClient,
    fleet: &mut Fleet,
    t: Timings,
) -> HostStorm {
    let victims = fleet.rack(0);
    let p0 = marker(client).await;
    let mut feed = Feed::start(central.channel().await, p0).await;
    let tasks: HashMap<String, String> = active_pods(client)
        .await
        .into_iter()
        .filter_map(|p| {
            let host = p.pod?.pod_host;
            victims.contains(&host).then_some((p.task_id, host))
        })
        .collect();
    fleet.kill_rack(0).await;
    // The last contact is final once the host is no longer READY.
    let mut deadline_us: HashMap<String, i64> = HashMap::new();
    let t0 = tokio::time::Instant::now();
    while deadline_us.len() < victims.len() && t0.elapsed() < STORM_LIMIT {
        if let Ok(r) = client.list_pod_hosts(pb::ListPodHostsRequest {}).await {
            for h in r.into_inner().hosts {
                if victims.contains(&h.host_id) && h.state() != pb::PodHostState::Ready {
                    let last = h
                        .last_heartbeat_at
                        .as_ref()
                        .and_then(ipa_proto::time::micros_from_timestamp)
                        .unwrap_or(0);
                    let after = i64::try_from(t.lost_after().as_micros()).unwrap_or(i64::MAX);
                    deadline_us.insert(h.host_id, last + after);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ids: Vec<String> = tasks.keys().cloned().collect();
    let got = await_restarts(&mut feed, &ids, "pod_lost", STORM_LIMIT).await;
    let mut s = HostStorm {
        hosts: victims.len(),
        pods: ids.len(),
        ..Default::default()
    };
    for (task, e) in &got {
        let deadline = tasks.get(task).and_then(|h| deadline_us.get(h)).copied();
        match (deadline, e.ended_us, e.restarted_us) {
            (Some(d), Some(l), Some(r)) => {
                if l < d {
                    s.early += 1;
                }
                s.lost.push(us(l - d));
                s.restarted.push(us(r - d));
            }
            _ => s.missing += 1,
        }
    }
    s
}
