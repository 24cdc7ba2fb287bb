//! What a simulation run looks like: the timing rules it runs the core
//! with, how much load and how many faults a generated plan has, and which
//! past bugs are switched back on.

use std::time::Duration;

use central_manager::core::bugs::SimBugs;

/// Bugs of the simulated pod-host (the real pod-host's past bugs and the
/// rules that fixed them), to prove the simulator finds them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostBugs {
    /// A stale message read after a freeze refreshes contact instead of
    /// fencing first (what `pod_host::fence::Contact::touch` reports is
    /// ignored, and the message counts as fresh): the host wakes past its
    /// fence deadline, reads a queued ping and keeps pods that central has
    /// already given up.
    pub stale_ping_cancels_fence: bool,
    /// The host before the lease (the bug scripts/chaos found): any
    /// message's arrival is fresh contact and StartPod ignores the lease it
    /// was issued under, so a ping or a start held up in the network past
    /// central's fence deadline keeps or starts a pod central has given up
    /// and placed elsewhere.
    pub host_ignores_lease: bool,
    /// The host before its reaper's fence backstop (the stall
    /// scripts/chaos found): a frozen or stalled host process cannot fence,
    /// so its pods run on after central gave them up and placed them
    /// elsewhere, until the host wakes.
    pub no_backstop: bool,
}

/// Every switch of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bugs {
    pub core: SimBugs,
    pub host: HostBugs,
}

impl Bugs {
    /// The named bug, for `scripts/simulate --bug NAME`.
    pub fn named(name: &str) -> Option<Self> {
        let mut b = Self::default();
        match name {
            "placement-ignores-starts-in-flight" => {
                b.core.placement_ignores_starts_in_flight = true
            }
            "dispatcher-misses-room" => b.core.dispatcher_misses_room = true,
            "stale-ping-cancels-fence" => b.host.stale_ping_cancels_fence = true,
            "host-ignores-lease" => b.host.host_ignores_lease = true,
            "host-without-backstop" => b.host.no_backstop = true,
            _ => return None,
        }
        Some(b)
    }

    /// The names [`Bugs::named`] knows.
    pub const NAMES: &[&str] = &[
        "placement-ignores-starts-in-flight",
        "dispatcher-misses-room",
        "stale-ping-cancels-fence",
        "host-ignores-lease",
        "host-without-backstop",
    ];
}

/// The core's timing rules in a run: the production defaults scaled down
/// (heartbeat : unreachable : fence as 1 : 3 : 8), so a run covers many
/// fence cycles in little virtual time.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub heartbeat: Duration,
    pub unreachable: Duration,
    /// Central's `--fence-timeout-ms`.
    pub fence: Duration,
    /// How long a LOST host stays listed.
    pub lost_retention: Duration,
    /// The simulated pod-hosts' `--stop-grace-ms`.
    pub stop_grace: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(250),
            unreachable: Duration::from_millis(750),
            fence: Duration::from_millis(2000),
            lost_retention: Duration::from_secs(30),
            stop_grace: Duration::from_millis(300),
        }
    }
}

/// Size and fault mix of generated plans.
#[derive(Debug, Clone)]
pub struct Knobs {
    /// Pod-hosts (at least 1).
    pub hosts: std::ops::RangeInclusive<usize>,
    /// Client operations in the fault phase.
    pub ops: std::ops::RangeInclusive<usize>,
    /// Faults in the fault phase.
    pub faults: std::ops::RangeInclusive<usize>,
    /// Length of the fault phase (operations and faults happen in it).
    pub active: Duration,
    /// Quiet time after every fault is healed, before convergence is
    /// checked: longer than a fence deadline, the longest restart backoff
    /// and the slowest reconnect together.
    pub settle: Duration,
    /// Whether a write may commit and still fail for its caller (a reply
    /// lost after the commit).
    pub lost_replies: bool,
    /// Whether plans may have schedule operations (and the firing loop
    /// runs); off only to compare costs (`scripts/simulate
    /// --no-schedules`).
    pub schedules: bool,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            hosts: 2..=3,
            ops: 8..=20,
            faults: 0..=4,
            active: Duration::from_secs(8),
            settle: Duration::from_secs(12),
            lost_replies: false,
            schedules: true,
        }
    }
}

impl Knobs {
    /// Longer, busier plans (12 s of 12-30 operations and 0-5 faults):
    /// more starts overlap with reconnects, at about twice the cost per
    /// seed (`scripts/simulate --busy`).
    pub fn busy() -> Self {
        Self {
            ops: 12..=30,
            faults: 0..=5,
            active: Duration::from_secs(12),
            settle: Duration::from_secs(15),
            ..Self::default()
        }
    }
}

/// One run's configuration (the seed is separate).
#[derive(Debug, Clone, Default)]
pub struct SimConfig {
    pub timing: Timing,
    pub knobs: Knobs,
    pub bugs: Bugs,
}
