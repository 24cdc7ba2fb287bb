//! Fencing the pods from the supervisor's side: contact with central and
//! the self-fencing deadline (the decision itself is pure, in `crate::fence`),
//! and what happens when the pods lose the orphan reaper's protection.

use tokio::time::Instant;

use super::{Supervisor, kill_groups};
use crate::fence::{Proof, should_fence};
use crate::reaper::ReaperEvents;

impl Supervisor {
    /// Milliseconds on this boot's monotonic clock (what heartbeats and
    /// the hello report, and central echoes back).
    pub fn host_clock_ms(&self) -> u64 {
        u64::try_from(self.clock0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The instant of a host clock reading central echoed; 0 means none.
    pub fn echo_instant(&self, echo_ms: u64) -> Option<Instant> {
        (echo_ms > 0).then(|| {
            self.clock0
                .checked_add(std::time::Duration::from_millis(echo_ms))
                .unwrap_or_else(Instant::now)
        })
    }

    /// The proof a message echoing `echo_ms` (0: none) carries.
    pub fn proof(&self, echo_ms: u64) -> Proof {
        self.echo_instant(echo_ms)
            .map_or(Proof::Arrival, Proof::Echo)
    }

    /// Whether a StartPod issued under the lease `echo_ms` of boot
    /// `boot_id` may start a pod: same boot, and less than a fence timeout
    /// old by this host's clock. No lease information (an older central or
    /// a test client) is accepted, as before leases were echoed.
    pub fn start_lease_valid(&self, echo_ms: u64, boot_id: &str) -> Result<(), String> {
        if !boot_id.is_empty() && boot_id != self.boot_id {
            return Err(format!(
                "the start was issued for boot {boot_id}; this host is on another boot"
            ));
        }
        let Some(at) = self.echo_instant(echo_ms) else {
            return Ok(());
        };
        let now = Instant::now();
        if self.lock().contact.lease_valid(at, now) {
            Ok(())
        } else {
            Err(format!(
                "the start was issued under a lease from {} ms ago by this host's clock (fence timeout {} ms): it may have been held up in the network after central gave the pod up",
                now.saturating_duration_since(at).as_millis(),
                self.cfg.fence_timeout.as_millis()
            ))
        }
    }

    /// A message or command from central arrived, proving `proof`. If the
    /// gap since the previous contact already reached the fence timeout
    /// (the host was frozen and this message may be stale), fence first,
    /// then refresh.
    pub fn contact(&self, proof: Proof) {
        let now = Instant::now();
        let (victims, first, lease) = {
            let mut t = self.lock();
            let first = t.contact.last().is_none();
            let gap = t.contact.last().map(|l| now.saturating_duration_since(l));
            let missed = t.contact.touch(proof, now);
            // The reaper mirrors the lease (crate::reaper: the backstop for
            // a host that cannot fence).
            let lease = t.contact.deadline();
            let victims = if missed && t.live_pods() > 0 {
                let why = format!(
                    "last contact with central-manager was {} ms ago (fence timeout {} ms), noticed late (host frozen?)",
                    gap.unwrap_or_default().as_millis(),
                    self.cfg.fence_timeout.as_millis()
                );
                t.begin_self_fence(&why)
            } else {
                Vec::new()
            };
            (victims, first && t.contact.last().is_some(), lease)
        };
        kill_groups(&victims, nix::sys::signal::Signal::SIGKILL);
        if let (Some(end), Some(r)) = (lease, self.reaper()) {
            r.lease(end + crate::reaper::backstop_delay(self.cfg.fence_timeout));
        }
        if first {
            self.fence_rearm.notify_one();
        }
    }

    /// When the fence timer must next look: the contact deadline while a
    /// live pod is not already being killed, else never.
    /// Whether this host's lease has run out (nothing heard from central
    /// for its fence timeout).
    pub fn lease_over(&self) -> bool {
        let now = Instant::now();
        self.lock().contact.deadline().is_some_and(|d| now >= d)
    }

    pub fn fence_deadline(&self) -> Option<Instant> {
        let t = self.lock();
        let any = t
            .pods
            .values()
            .any(|p| p.is_live() && p.kill_cause.is_none());
        if any { t.contact.deadline() } else { None }
    }

    /// Resolves when the fence deadline may have changed from "never".
    pub async fn fence_rearmed(&self) {
        self.fence_rearm.notified().await
    }

    /// The fence timer fired: fence if the deadline really passed.
    pub fn fence_if_due(&self, now: Instant) {
        let victims = {
            let mut t = self.lock();
            let unfenced = t
                .pods
                .values()
                .filter(|p| p.is_live() && p.kill_cause.is_none())
                .count();
            if !should_fence(t.contact.last(), now, t.contact.timeout(), unfenced) {
                return;
            }
            let why = format!(
                "nothing heard from a central-manager for {} ms",
                self.cfg.fence_timeout.as_millis()
            );
            t.begin_self_fence(&why)
        };
        kill_groups(&victims, nix::sys::signal::Signal::SIGKILL);
    }
}

/// Pods without the reaper's protection would outlive a crash of this
/// host: kill them (reported as self-fenced, so central may place them
/// elsewhere), refuse new ones and report the host draining (so central
/// places none here) until a reaper runs again.
impl ReaperEvents for Supervisor {
    fn lost(&self, why: &str) {
        let victims = {
            let mut t = self.lock();
            t.unprotected = true;
            if t.live_pods() > 0 {
                t.begin_self_fence(why)
            } else {
                Vec::new()
            }
        };
        tracing::error!("{why}; refusing new pods until a reaper runs");
        kill_groups(&victims, nix::sys::signal::Signal::SIGKILL);
    }

    fn restored(&self) {
        self.lock().unprotected = false;
        tracing::info!("orphan reaper running again; accepting pods");
    }
}
