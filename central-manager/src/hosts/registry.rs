//! The central's view of every pod-host: which boot it is on, whether it is
//! reachable, what it can run and how loaded it is. This is where the
//! failure model's timing rules live:
//!
//! - READY → UNREACHABLE when nothing was heard for `host_unreachable`;
//! - UNREACHABLE → LOST at the *fence deadline*: last contact + the larger
//!   of the central's and the host's own fence timeout + a margin. The host
//!   kills its own pods once it has heard nothing for its fence timeout, so
//!   by the deadline none of its pods can still run (frozen hosts excepted,
//!   see docs/architecture.md) and the tasks may be placed elsewhere.
//! - any message from the host makes it READY again (or DRAINING if it says
//!   so), unless it is LOST, which only a new hello undoes;
//! - a LOST host is forgotten (gone from ListPodHosts) once it has been
//!   LOST for `lost_retention` without saying hello again.
//!
//! Host identity: a host id belongs to the endpoint that said hello with it
//! until that host is LOST. A hello with the same host id from another
//! endpoint is refused ([`Registry::conflict`]) and shown on the host as
//! `conflict_endpoint`, so two pod-hosts started with one `--host-id` can
//! never run one task twice.
//!
//! Pure: every method takes `now`, so both sides of each timeout are unit
//! tested without sleeping.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// Connection state of a pod-host, as docs/api.md's `PodHostState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostState {
    Ready,
    Unreachable,
    Lost,
    Draining,
}

/// The timing rules, from central-manager's flags.
#[derive(Debug, Clone, Copy)]
pub struct HostTimeouts {
    /// `--host-unreachable-ms`: silence after which a host is UNREACHABLE.
    pub unreachable_after: Duration,
    /// `--fence-timeout-ms`: the central's own fence timeout.
    pub fence_timeout: Duration,
    /// Added to the larger fence timeout before pods are declared lost, to
    /// absorb clock-rate differences and the host's fence-check latency.
    pub fence_margin: Duration,
    /// `--lost-host-retention-ms`: how long a LOST host stays listed.
    pub lost_retention: Duration,
}

/// How long a refused conflicting hello stays shown on the host: longer
/// than the slowest reconnect of the refused session, so a conflict that
/// persists stays visible, and one that stopped clears by itself.
pub const CONFLICT_SHOWN_FOR: Duration = Duration::from_secs(30);

/// How many ended pods a host entry remembers (see `HostEntry::ended`).
const ENDED_REMEMBERED: usize = 1024;

impl HostTimeouts {
    /// The margin used when none is configured: a quarter of the fence
    /// timeout, at least 250 ms. Big enough to cover the host's check
    /// granularity and scheduling delays on a loaded machine, small enough
    /// not to delay recovery noticeably.
    pub fn default_margin(fence_timeout: Duration) -> Duration {
        (fence_timeout / 4).max(Duration::from_millis(250))
    }
}

/// What a host said in its hello.
#[derive(Debug, Clone)]
pub struct HostHello {
    pub host_id: String,
    pub boot_id: String,
    pub address: String,
    pub capacity: u32,
    pub templates: Vec<String>,
    pub running_pods: u32,
    pub fence_timeout: Duration,
    pub draining: bool,
}

/// One known pod-host.
#[derive(Debug, Clone)]
pub struct HostEntry {
    pub host_id: String,
    pub address: String,
    pub boot_id: String,
    pub state: HostState,
    pub capacity: u32,
    /// Pods running there, as the host last reported (plus starts confirmed
    /// since).
    pub running_pods: u32,
    /// Slots reserved by placements whose start is still in flight. Kept
    /// apart from `running_pods`, which every heartbeat overwrites, so
    /// concurrent placements see each other.
    pub reserved: u32,
    /// Pods whose stop the host confirmed in a StopPod reply but whose exit
    /// event has not arrived on its stream yet. Heartbeats sent before that
    /// event still count them, so they are discounted until it arrives
    /// (otherwise a stopped host looks full for up to a heartbeat).
    pub early_exits: HashSet<String>,
    /// Pods central confirmed started here (StartPod answered) and has not
    /// yet seen end. The host's own count may or may not include a pod
    /// whose start is in flight (it counts a pod from its reservation), so
    /// adding starts to a heartbeat's count would count some twice: the
    /// load is the larger of the two views instead (see [`HostEntry::load`]).
    pub known: HashSet<String>,
    /// Pods whose end was seen before their start was confirmed (a pod
    /// that died at once): a late confirmation must not count them. The
    /// most recent [`ENDED_REMEMBERED`] only.
    ended: VecDeque<String>,
    pub templates: BTreeSet<String>,
    /// Monotonic time of the last message from the host.
    pub last_contact: Instant,
    /// Wall-clock time of the last message, for ListPodHosts.
    pub last_heartbeat_at: SystemTime,
    /// The host's own fence timeout from its hello.
    pub host_fence_timeout: Duration,
    /// Since when the host is LOST.
    pub lost_since: Option<Instant>,
    /// The last endpoint refused for saying hello with this host id, and
    /// when.
    pub conflict: Option<(String, Instant)>,
}

impl HostEntry {
    /// Pods counted against capacity: running plus reserved.
    pub fn load(&self) -> u32 {
        let ours = u32::try_from(self.known.len())
            .unwrap_or(u32::MAX)
            .saturating_add(self.reserved);
        self.running_pods.max(ours)
    }

    /// Pods running there: the host's count or central's, whichever is
    /// larger (each can be ahead of the other for up to a heartbeat).
    pub fn running(&self) -> u32 {
        self.running_pods
            .max(u32::try_from(self.known.len()).unwrap_or(u32::MAX))
    }

    /// `pod_id` ended: neither view counts it any more.
    fn forget_pod(&mut self, pod_id: &str) {
        if !self.known.remove(pod_id) {
            self.ended.push_back(pod_id.to_owned());
            if self.ended.len() > ENDED_REMEMBERED {
                self.ended.pop_front();
            }
        }
    }

    /// The conflicting endpoint to show at `now`, if any.
    pub fn conflict_endpoint(&self, now: Instant) -> Option<&str> {
        self.conflict
            .as_ref()
            .filter(|(_, at)| now.saturating_duration_since(*at) < CONFLICT_SHOWN_FOR)
            .map(|(e, _)| e.as_str())
    }
}

/// Result of a hello, for the caller to reconcile pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloOutcome {
    /// First time this host id is seen.
    NewHost,
    /// Same boot as before: its pods may still run (recover or fence them).
    SameBoot,
    /// The host restarted: every pod of `previous_boot` died with it.
    NewBoot { previous_boot: String },
}

/// A state change produced by [`Registry::tick`] or a contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub host_id: String,
    pub from: HostState,
    pub to: HostState,
}

/// All known pod-hosts, keyed by host id.
#[derive(Debug)]
pub struct Registry {
    timeouts: HostTimeouts,
    hosts: BTreeMap<String, HostEntry>,
    /// `SimBugs::placement_ignores_starts_in_flight` (simulator only).
    ignore_reservations: bool,
}

impl Registry {
    pub fn new(timeouts: HostTimeouts) -> Self {
        Self {
            timeouts,
            hosts: BTreeMap::new(),
            ignore_reservations: false,
        }
    }

    /// Reintroduces the bug of placement ignoring starts in flight (only
    /// the simulator asks for it, see `core::bugs`).
    pub fn ignore_reservations(&mut self, on: bool) {
        self.ignore_reservations = on;
    }

    /// The timing rules.
    pub fn timeouts(&self) -> &HostTimeouts {
        &self.timeouts
    }

    pub fn get(&self, host_id: &str) -> Option<&HostEntry> {
        self.hosts.get(host_id)
    }

    pub fn hosts(&self) -> impl Iterator<Item = &HostEntry> {
        self.hosts.values()
    }

    /// If a hello with `host_id` from `endpoint` must be refused because
    /// another endpoint holds that id (it said hello with it and is not
    /// LOST), records the conflict on the host and returns the holder.
    pub fn conflict(&mut self, host_id: &str, endpoint: &str, now: Instant) -> Option<String> {
        let h = self.hosts.get_mut(host_id)?;
        // A placeholder (loaded at start-up) has no endpoint yet.
        if h.address.is_empty() || h.address == endpoint || h.state == HostState::Lost {
            return None;
        }
        h.conflict = Some((endpoint.to_owned(), now));
        Some(h.address.clone())
    }

    /// Records a hello and says how it relates to what was known.
    pub fn on_hello(&mut self, hello: HostHello, now: Instant, wall: SystemTime) -> HelloOutcome {
        let state = if hello.draining {
            HostState::Draining
        } else {
            HostState::Ready
        };
        let conflict = self
            .hosts
            .get(&hello.host_id)
            .and_then(|h| h.conflict.clone());
        let entry = HostEntry {
            host_id: hello.host_id.clone(),
            address: hello.address,
            boot_id: hello.boot_id.clone(),
            state,
            capacity: hello.capacity,
            running_pods: hello.running_pods,
            reserved: 0,
            early_exits: HashSet::new(),
            known: HashSet::new(),
            ended: VecDeque::new(),
            templates: hello.templates.into_iter().collect(),
            last_contact: now,
            last_heartbeat_at: wall,
            host_fence_timeout: hello.fence_timeout,
            lost_since: None,
            conflict,
        };
        match self.hosts.insert(hello.host_id, entry) {
            None => HelloOutcome::NewHost,
            Some(old) if old.boot_id == hello.boot_id => HelloOutcome::SameBoot,
            Some(old) => HelloOutcome::NewBoot {
                previous_boot: old.boot_id,
            },
        }
    }

    /// Records any message from the host. Returns the transition when an
    /// UNREACHABLE host became reachable again. A LOST host stays LOST: its
    /// pods were given up, and only a fresh hello reconciles it.
    pub fn on_contact(
        &mut self,
        host_id: &str,
        now: Instant,
        wall: SystemTime,
        draining: Option<bool>,
    ) -> Option<Transition> {
        let h = self.hosts.get_mut(host_id)?;
        h.last_contact = now;
        h.last_heartbeat_at = wall;
        let from = h.state;
        let to = match (from, draining) {
            (HostState::Lost, _) => HostState::Lost,
            (_, Some(true)) => HostState::Draining,
            (HostState::Draining, None) => HostState::Draining,
            _ => HostState::Ready,
        };
        h.state = to;
        (from != to).then(|| Transition {
            host_id: host_id.to_owned(),
            from,
            to,
        })
    }

    /// The instant at which the pods of `host` may be declared lost.
    pub fn fence_deadline(&self, host: &HostEntry) -> Instant {
        let fence = self.timeouts.fence_timeout.max(host.host_fence_timeout);
        host.last_contact + fence + self.timeouts.fence_margin
    }

    /// Applies the silence rules at `now`.
    pub fn tick(&mut self, now: Instant) -> Vec<Transition> {
        let mut out = Vec::new();
        let unreachable_after = self.timeouts.unreachable_after;
        let deadlines: Vec<(String, Instant)> = self
            .hosts
            .values()
            .map(|h| (h.host_id.clone(), self.fence_deadline(h)))
            .collect();
        for (id, deadline) in deadlines {
            let Some(h) = self.hosts.get_mut(&id) else {
                continue;
            };
            let silent_for = now.saturating_duration_since(h.last_contact);
            let to = match h.state {
                HostState::Lost => continue,
                _ if now >= deadline => HostState::Lost,
                HostState::Ready | HostState::Draining if silent_for >= unreachable_after => {
                    HostState::Unreachable
                }
                _ => continue,
            };
            let from = h.state;
            h.state = to;
            if to == HostState::Lost {
                h.running_pods = 0;
                h.early_exits.clear();
                h.known.clear();
                h.ended.clear();
                h.lost_since = Some(now);
            }
            out.push(Transition {
                host_id: id,
                from,
                to,
            });
        }
        out
    }

    /// The earliest instant at which [`Registry::tick`] or
    /// [`Registry::forget_lost`] could change something, so a timer can
    /// sleep exactly until then.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.hosts
            .values()
            .map(|h| match h.state {
                HostState::Lost => h
                    .lost_since
                    .unwrap_or(h.last_contact)
                    .checked_add(self.timeouts.lost_retention)
                    .unwrap_or(h.last_contact),
                HostState::Unreachable => self.fence_deadline(h),
                HostState::Ready | HostState::Draining => {
                    (h.last_contact + self.timeouts.unreachable_after).min(self.fence_deadline(h))
                }
            })
            .min()
    }

    /// Forgets hosts LOST for at least `lost_retention` at `now`, unless
    /// `connected` says they have a live session; returns their ids.
    pub fn forget_lost(&mut self, now: Instant, connected: impl Fn(&str) -> bool) -> Vec<String> {
        let retention = self.timeouts.lost_retention;
        let gone: Vec<String> = self
            .hosts
            .values()
            .filter(|h| h.state == HostState::Lost && !connected(&h.host_id))
            .filter(|h| {
                let since = h.lost_since.unwrap_or(h.last_contact);
                now.saturating_duration_since(since) >= retention
            })
            .map(|h| h.host_id.clone())
            .collect();
        for id in &gone {
            self.hosts.remove(id);
        }
        gone
    }

    /// Chooses a READY host that serves `template` and has a free slot,
    /// least loaded first (ties by host id, so placement is deterministic),
    /// and reserves the slot. `None` means NO_POD_HOST.
    pub fn place(&mut self, template: &str, exclude: &[&str]) -> Option<String> {
        let load = |h: &HostEntry| {
            if self.ignore_reservations {
                h.running_pods
            } else {
                h.load()
            }
        };
        let chosen = self
            .hosts
            .values()
            .filter(|h| h.state == HostState::Ready)
            .filter(|h| load(h) < h.capacity)
            .filter(|h| h.templates.contains(template))
            .filter(|h| !exclude.contains(&h.host_id.as_str()))
            .min_by(|a, b| {
                // Compare load as a fraction of capacity.
                let la = u64::from(load(a)) * u64::from(b.capacity);
                let lb = u64::from(load(b)) * u64::from(a.capacity);
                la.cmp(&lb).then_with(|| a.host_id.cmp(&b.host_id))
            })?
            .host_id
            .clone();
        if let Some(h) = self.hosts.get_mut(&chosen) {
            h.reserved = h.reserved.saturating_add(1);
        }
        Some(chosen)
    }

    /// Ends a reservation made by [`Registry::place`]; `started` names the
    /// pod when it started (then central counts it until it ends).
    pub fn start_done(&mut self, host_id: &str, started: Option<&str>) {
        if let Some(h) = self.hosts.get_mut(host_id) {
            h.reserved = h.reserved.saturating_sub(1);
            if let Some(pod_id) = started
                && !h.ended.iter().any(|p| p == pod_id)
            {
                h.known.insert(pod_id.to_owned());
            }
        }
    }

    /// The host confirmed in a StopPod reply that `pod_id` ended; its exit
    /// event is still to come on the stream.
    pub fn exited_early(&mut self, host_id: &str, pod_id: &str) {
        if let Some(h) = self.hosts.get_mut(host_id)
            && h.early_exits.insert(pod_id.to_owned())
        {
            h.running_pods = h.running_pods.saturating_sub(1);
            h.forget_pod(pod_id);
        }
    }

    /// The exit event of `pod_id` arrived on the host's stream: heartbeats
    /// from now on no longer count it.
    pub fn exited_on_stream(&mut self, host_id: &str, pod_id: &str) {
        if let Some(h) = self.hosts.get_mut(host_id)
            && !h.early_exits.remove(pod_id)
        {
            h.running_pods = h.running_pods.saturating_sub(1);
            h.forget_pod(pod_id);
        }
    }

    /// Sets the running count from a heartbeat: the host's own count wins
    /// over our bookkeeping, less the pods whose stop it already confirmed
    /// but whose exit it had not yet sent when it sent the heartbeat (starts
    /// still in flight are counted apart, in `reserved`).
    pub fn set_running(&mut self, host_id: &str, running: u32) {
        if let Some(h) = self.hosts.get_mut(host_id) {
            let early = u32::try_from(h.early_exits.len()).unwrap_or(u32::MAX);
            h.running_pods = super::hello::clamp_count(running).saturating_sub(early);
        }
    }
}

#[cfg(test)]
mod tests;
