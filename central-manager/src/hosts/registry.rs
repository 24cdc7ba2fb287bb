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

use std::collections::{BTreeMap, BTreeSet, HashSet};
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
        self.running_pods.saturating_add(self.reserved)
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

    /// Ends a reservation made by [`Registry::place`]; `started` counts the
    /// pod as running until the host's next heartbeat says otherwise.
    pub fn start_done(&mut self, host_id: &str, started: bool) {
        if let Some(h) = self.hosts.get_mut(host_id) {
            h.reserved = h.reserved.saturating_sub(1);
            if started {
                h.running_pods = h.running_pods.saturating_add(1);
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
        }
    }

    /// The exit event of `pod_id` arrived on the host's stream: heartbeats
    /// from now on no longer count it.
    pub fn exited_on_stream(&mut self, host_id: &str, pod_id: &str) {
        if let Some(h) = self.hosts.get_mut(host_id)
            && !h.early_exits.remove(pod_id)
        {
            h.running_pods = h.running_pods.saturating_sub(1);
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
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn timeouts() -> HostTimeouts {
        HostTimeouts {
            unreachable_after: 1500 * MS,
            fence_timeout: 5000 * MS,
            fence_margin: 500 * MS,
            lost_retention: 60_000 * MS,
        }
    }

    fn hello(id: &str, boot: &str, cap: u32, templates: &[&str]) -> HostHello {
        HostHello {
            host_id: id.into(),
            boot_id: boot.into(),
            address: format!("http://{id}:50052"),
            capacity: cap,
            templates: templates.iter().map(|s| s.to_string()).collect(),
            running_pods: 0,
            fence_timeout: 5000 * MS,
            draining: false,
        }
    }

    #[test]
    fn hello_outcomes() {
        let mut r = Registry::new(timeouts());
        let t0 = Instant::now();
        let w = SystemTime::now();
        assert_eq!(
            r.on_hello(hello("a", "b1", 4, &["default"]), t0, w),
            HelloOutcome::NewHost
        );
        assert_eq!(
            r.on_hello(hello("a", "b1", 4, &["default"]), t0, w),
            HelloOutcome::SameBoot
        );
        assert_eq!(
            r.on_hello(hello("a", "b2", 4, &["default"]), t0, w),
            HelloOutcome::NewBoot {
                previous_boot: "b1".into()
            }
        );
    }

    #[test]
    fn a_confirmed_stop_frees_its_slot_at_once_and_once() {
        let mut r = Registry::new(timeouts());
        r.on_hello(
            hello("a", "b1", 2, &["default"]),
            Instant::now(),
            SystemTime::now(),
        );
        r.set_running("a", 2);
        // StopPod answered: the slot is free before the exit event arrives.
        r.exited_early("a", "p1");
        assert_eq!(r.get("a").unwrap().running_pods, 1);
        // A heartbeat the host sent before the exit still counts the pod.
        r.set_running("a", 2);
        assert_eq!(r.get("a").unwrap().running_pods, 1);
        assert!(r.place("default", &[]).is_some(), "a free slot to place on");
        r.start_done("a", false);
        // The exit event arrives: not counted a second time...
        r.exited_on_stream("a", "p1");
        assert_eq!(r.get("a").unwrap().running_pods, 1);
        // ...and later heartbeats are taken as they are.
        r.set_running("a", 1);
        assert_eq!(r.get("a").unwrap().running_pods, 1);
        // An exit seen only on the stream frees one slot.
        r.exited_on_stream("a", "p2");
        assert_eq!(r.get("a").unwrap().running_pods, 0);
    }

    #[test]
    fn unreachable_exactly_at_the_timeout_and_not_before() {
        let mut r = Registry::new(timeouts());
        let t0 = Instant::now();
        r.on_hello(hello("a", "b1", 4, &["default"]), t0, SystemTime::now());
        assert!(r.tick(t0 + 1499 * MS).is_empty());
        let tr = r.tick(t0 + 1500 * MS);
        assert_eq!(
            tr,
            vec![Transition {
                host_id: "a".into(),
                from: HostState::Ready,
                to: HostState::Unreachable
            }]
        );
        // Not reported twice.
        assert!(r.tick(t0 + 1600 * MS).is_empty());
    }

    #[test]
    fn lost_at_the_larger_fence_timeout_plus_margin() {
        let mut r = Registry::new(timeouts());
        let t0 = Instant::now();
        let mut h = hello("a", "b1", 4, &["default"]);
        // The host's own fence timeout is longer than ours: it wins.
        h.fence_timeout = 8000 * MS;
        r.on_hello(h, t0, SystemTime::now());
        r.tick(t0 + 2000 * MS);
        assert!(r.tick(t0 + 8499 * MS).is_empty());
        let tr = r.tick(t0 + 8500 * MS);
        assert_eq!(tr[0].to, HostState::Lost);
        assert_eq!(r.get("a").unwrap().running_pods, 0);
    }

    #[test]
    fn contact_heals_unreachable_but_not_lost() {
        let mut r = Registry::new(timeouts());
        let t0 = Instant::now();
        let w = SystemTime::now();
        r.on_hello(hello("a", "b1", 4, &["default"]), t0, w);
        r.tick(t0 + 2000 * MS);
        let tr = r.on_contact("a", t0 + 2100 * MS, w, None).unwrap();
        assert_eq!((tr.from, tr.to), (HostState::Unreachable, HostState::Ready));
        // Silence again until lost.
        r.tick(t0 + 2100 * MS + 5500 * MS);
        assert_eq!(r.get("a").unwrap().state, HostState::Lost);
        assert!(r.on_contact("a", t0 + 9000 * MS, w, None).is_none());
        assert_eq!(r.get("a").unwrap().state, HostState::Lost);
        // A hello brings it back.
        r.on_hello(hello("a", "b1", 4, &["default"]), t0 + 9100 * MS, w);
        assert_eq!(r.get("a").unwrap().state, HostState::Ready);
    }

    #[test]
    fn next_deadline_tracks_the_earliest_rule() {
        let mut r = Registry::new(timeouts());
        let t0 = Instant::now();
        assert_eq!(r.next_deadline(), None);
        r.on_hello(hello("a", "b1", 4, &["default"]), t0, SystemTime::now());
        assert_eq!(r.next_deadline(), Some(t0 + 1500 * MS));
        r.tick(t0 + 1500 * MS);
        assert_eq!(r.next_deadline(), Some(t0 + 5500 * MS));
    }

    #[test]
    fn placement_is_least_loaded_ready_with_template_and_capacity() {
        let mut r = Registry::new(timeouts());
        let t0 = Instant::now();
        let w = SystemTime::now();
        r.on_hello(hello("a", "1", 2, &["default"]), t0, w);
        r.on_hello(hello("b", "1", 2, &["default", "gpu"]), t0, w);
        r.on_hello(hello("c", "1", 8, &["other"]), t0, w);
        assert_eq!(r.place("gpu", &[]).as_deref(), Some("b"));
        // b now has 1/2, a has 0/2: a is less loaded.
        assert_eq!(r.place("default", &[]).as_deref(), Some("a"));
        assert_eq!(r.place("default", &[]).as_deref(), Some("a"));
        // a full, b has one slot left.
        assert_eq!(r.place("default", &[]).as_deref(), Some("b"));
        assert_eq!(r.place("default", &[]), None);
        r.start_done("a", false);
        assert_eq!(r.place("default", &["a"]), None);
        assert_eq!(r.place("default", &[]).as_deref(), Some("a"));
        assert_eq!(r.place("missing", &[]), None);
    }

    #[test]
    fn no_placement_on_unreachable_or_draining_hosts() {
        let mut r = Registry::new(timeouts());
        let t0 = Instant::now();
        let w = SystemTime::now();
        r.on_hello(hello("a", "1", 2, &["default"]), t0, w);
        let mut d = hello("b", "1", 2, &["default"]);
        d.draining = true;
        r.on_hello(d, t0 + 1000 * MS, w);
        r.tick(t0 + 1500 * MS);
        assert_eq!(r.get("a").unwrap().state, HostState::Unreachable);
        assert_eq!(r.get("b").unwrap().state, HostState::Draining);
        assert_eq!(r.place("default", &[]), None);
    }

    #[test]
    fn a_host_id_belongs_to_its_endpoint_until_lost() {
        let mut r = Registry::new(timeouts());
        let t0 = Instant::now();
        let w = SystemTime::now();
        r.on_hello(hello("a", "b1", 4, &["default"]), t0, w);
        let held = "http://a:50052";
        // The same endpoint reconnecting is no conflict.
        assert_eq!(r.conflict("a", held, t0), None);
        // Another endpoint is refused and shown, for a while.
        assert_eq!(r.conflict("a", "http://other:1", t0).as_deref(), Some(held));
        assert_eq!(
            r.get("a").unwrap().conflict_endpoint(t0 + 1000 * MS),
            Some("http://other:1")
        );
        assert_eq!(
            r.get("a")
                .unwrap()
                .conflict_endpoint(t0 + CONFLICT_SHOWN_FOR),
            None
        );
        // A reconnect of the holder keeps what was shown.
        r.on_hello(hello("a", "b1", 4, &["default"]), t0 + 10 * MS, w);
        assert!(r.get("a").unwrap().conflict.is_some());
        // Once LOST, the id is free for another endpoint.
        r.tick(t0 + 10 * MS + 6000 * MS);
        assert_eq!(r.get("a").unwrap().state, HostState::Lost);
        assert_eq!(r.conflict("a", "http://other:1", t0 + 7000 * MS), None);
        // Unknown ids and placeholders (no endpoint yet) are free.
        assert_eq!(r.conflict("nobody", "x", t0), None);
        let mut placeholder = hello("p", "", 0, &[]);
        placeholder.address = String::new();
        r.on_hello(placeholder, t0, w);
        assert_eq!(r.conflict("p", "http://p:1", t0), None);
    }

    #[test]
    fn lost_hosts_are_forgotten_after_the_retention_unless_connected() {
        let mut r = Registry::new(timeouts());
        let t0 = Instant::now();
        let w = SystemTime::now();
        r.on_hello(hello("a", "1", 4, &["default"]), t0, w);
        r.on_hello(hello("b", "1", 4, &["default"]), t0, w);
        let lost_at = t0 + 5500 * MS;
        r.tick(lost_at);
        assert_eq!(r.get("a").unwrap().lost_since, Some(lost_at));
        assert_eq!(r.next_deadline(), Some(lost_at + 60_000 * MS));
        assert!(r.forget_lost(lost_at + 59_999 * MS, |_| false).is_empty());
        let gone = r.forget_lost(lost_at + 60_000 * MS, |id| id == "b");
        assert_eq!(gone, vec!["a".to_string()]);
        assert!(r.get("a").is_none());
        assert!(r.get("b").is_some(), "a connected host is kept");
    }

    #[test]
    fn load_and_counts_saturate() {
        let mut r = Registry::new(timeouts());
        let t0 = Instant::now();
        let cap = crate::hosts::hello::clamp_capacity(u32::MAX);
        let mut h = hello("a", "1", cap, &["default"]);
        h.running_pods = u32::MAX;
        r.on_hello(h, t0, SystemTime::now());
        r.set_running("a", u32::MAX);
        assert_eq!(
            r.get("a").unwrap().running_pods,
            crate::hosts::hello::MAX_CAPACITY
        );
        r.start_done("a", true);
        assert_eq!(r.place("default", &[]), None);
        assert!(r.get("a").unwrap().load() >= r.get("a").unwrap().running_pods);
    }
}
