//! Self-fencing: a pod-host that has heard nothing from any central-manager
//! for `--fence-timeout-ms` kills its own pods, so central can safely declare
//! them lost and start replacements elsewhere (docs/architecture.md, failure model).
//!
//! "Contact" is any message received on a Connect stream and any command RPC.
//! The decision is pure ([`should_fence`], [`Contact::touch`]) on monotonic
//! time (`tokio::time::Instant`, which keeps advancing while the process is
//! SIGSTOPped), so both sides of the timeout are unit-tested with injected
//! instants. [`FenceTimer`] is the background loop that sleeps until the
//! deadline and asks the supervisor to fence.
//!
//! A frozen host (SIGSTOP, stalled VM) wakes with stale pings possibly
//! queued in its socket buffers. Reading one must not count as fresh contact
//! for the missed period, so [`Contact::touch`] reports whether the gap since
//! the previous contact already reached the timeout; the caller then fences
//! *before* refreshing.
//!
//! **The lease runs from what central knew, not from when a message
//! arrived.** Every heartbeat carries the host's clock (ms since its boot);
//! central echoes the newest one it has received in each ping and StartPod
//! ([`Proof::Echo`]). The host's lease then lasts a fence timeout from that
//! instant of its own clock. Central's fence deadline runs from when it
//! *received* that heartbeat (or a later message), plus the larger fence
//! timeout and a margin, so the host always stops its pods first — even
//! when a ping or a StartPod was held up in the network (TCP delivers bytes
//! late after a partition heals) and arrives long after it was sent: a
//! stale message carries a stale echo and cannot extend the lease. Once a
//! central echoes, messages without an echo prove nothing; before that (an
//! older central, a test client) a message's arrival counts, as it did
//! before echoes existed ([`Proof::Arrival`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::pods::Supervisor;

/// Whether the pods must be killed now: there are live pods and the last
/// contact is at least `timeout` ago. Before any contact at all there is no
/// central whose deadline could pass, so nothing is fenced.
pub fn should_fence(
    last_contact: Option<Instant>,
    now: Instant,
    timeout: Duration,
    live_pods: usize,
) -> bool {
    live_pods > 0 && last_contact.is_some_and(|t| now.saturating_duration_since(t) >= timeout)
}

/// What a message from central proves about how recently central heard
/// from this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// The message echoes a host clock reading central had received when
    /// it sent it: the lease runs from that instant.
    Echo(Instant),
    /// A message that echoes nothing: its arrival counts, unless a central
    /// has echoed before (then it proves nothing).
    Arrival,
}

/// The start of the current lease: the newest contact with central.
#[derive(Debug, Clone)]
pub struct Contact {
    last: Option<Instant>,
    timeout: Duration,
    /// A central has echoed the host clock: only echoes extend the lease.
    echoing: bool,
}

impl Contact {
    pub fn new(timeout: Duration) -> Self {
        Self {
            last: None,
            timeout,
            echoing: false,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn last(&self) -> Option<Instant> {
        self.last
    }

    /// Records a message received at `now` with `proof`. Returns true when
    /// the gap since the previous contact had already reached the timeout:
    /// the fence deadline passed unnoticed (the host was frozen), so the
    /// caller must fence before treating this message as fresh.
    pub fn touch(&mut self, proof: Proof, now: Instant) -> bool {
        let missed = self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) >= self.timeout);
        let from = match proof {
            // Never in the future, whatever a peer echoes.
            Proof::Echo(at) => {
                self.echoing = true;
                Some(at.min(now))
            }
            Proof::Arrival if !self.echoing => Some(now),
            Proof::Arrival => None,
        };
        if let Some(from) = from {
            self.last = Some(self.last.map_or(from, |l| l.max(from)));
        }
        missed
    }

    /// Whether a command issued under a lease starting at `echo` may still
    /// act: less than a fence timeout has passed since by this host's
    /// clock.
    pub fn lease_valid(&self, echo: Instant, now: Instant) -> bool {
        echo <= now && now.saturating_duration_since(echo) < self.timeout
    }

    /// When the pods must be fenced if no further contact arrives.
    pub fn deadline(&self) -> Option<Instant> {
        self.last.map(|t| t + self.timeout)
    }
}

/// The background loop that fences when the deadline passes.
pub struct FenceTimer {
    supervisor: Arc<Supervisor>,
}

impl FenceTimer {
    pub fn new(supervisor: Arc<Supervisor>) -> Self {
        Self { supervisor }
    }

    /// Runs until `cancel`. No periodic tick: it sleeps until the current
    /// deadline (or until the supervisor signals that the deadline may have
    /// appeared, e.g. the first contact or a pod start), then re-checks;
    /// a refreshed contact just moves the deadline and it sleeps again.
    pub async fn run(self, cancel: CancellationToken) {
        let sup = self.supervisor;
        loop {
            let deadline = sup.fence_deadline();
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = sup.fence_rearmed() => {}
                _ = sleep_until_opt(deadline) => {
                    sup.fence_if_due(Instant::now());
                }
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(1000);

    #[test]
    fn fences_at_the_timeout_and_not_before() {
        let t0 = Instant::now();
        let just_before = t0 + T - Duration::from_millis(1);
        assert!(!should_fence(Some(t0), just_before, T, 3));
        assert!(should_fence(Some(t0), t0 + T, T, 3));
        assert!(should_fence(Some(t0), t0 + 10 * T, T, 3));
    }

    #[test]
    fn nothing_to_fence_without_pods_or_before_any_contact() {
        let t0 = Instant::now();
        assert!(!should_fence(Some(t0), t0 + 10 * T, T, 0));
        assert!(!should_fence(None, t0 + 10 * T, T, 5));
    }

    #[test]
    fn regular_contact_keeps_moving_the_deadline() {
        let t0 = Instant::now();
        let mut c = Contact::new(T);
        assert_eq!(c.deadline(), None);
        assert!(!c.touch(Proof::Arrival, t0));
        for i in 1..=20 {
            let now = t0 + Duration::from_millis(400 * i);
            assert!(
                !c.touch(Proof::Arrival, now),
                "contact every 400 ms never misses"
            );
            assert_eq!(c.deadline(), Some(now + T));
            assert!(!should_fence(c.last(), now + T / 2, T, 1));
        }
    }

    #[test]
    fn a_stale_message_after_a_freeze_reports_the_missed_deadline() {
        let t0 = Instant::now();
        let mut c = Contact::new(T);
        c.touch(Proof::Arrival, t0);
        // Frozen for 3 s; the first message read after waking is old.
        let woke = t0 + 3 * T;
        assert!(
            c.touch(Proof::Arrival, woke),
            "the missed deadline must be reported"
        );
        // ...after which contact is fresh again.
        assert!(!c.touch(Proof::Arrival, woke + Duration::from_millis(10)));
        // Exactly at the timeout counts as missed too.
        let mut c = Contact::new(T);
        c.touch(Proof::Arrival, t0);
        assert!(c.touch(Proof::Arrival, t0 + T));
    }

    /// A ping held up in the network arrives late: its echo is old, so the
    /// lease still ends a fence timeout after what central knew, not after
    /// the ping's arrival.
    #[test]
    fn a_late_echo_does_not_extend_the_lease_past_what_central_knew() {
        let t0 = Instant::now();
        let mut c = Contact::new(T);
        assert!(!c.touch(Proof::Echo(t0), t0 + Duration::from_millis(50)));
        assert_eq!(c.deadline(), Some(t0 + T));
        // Delivered 800 ms late, echoing the same old heartbeat.
        let late = t0 + Duration::from_millis(800);
        assert!(!c.touch(Proof::Echo(t0), late));
        assert_eq!(c.deadline(), Some(t0 + T), "arrival does not count");
        // Once a central echoes, an echo-less message proves nothing.
        assert!(!c.touch(Proof::Arrival, late));
        assert_eq!(c.deadline(), Some(t0 + T));
        // A fresh echo moves it; an echo from the future is clamped to now.
        let fresh = t0 + Duration::from_millis(700);
        c.touch(Proof::Echo(fresh), late);
        assert_eq!(c.deadline(), Some(fresh + T));
        c.touch(Proof::Echo(late + 10 * T), late);
        assert_eq!(c.deadline(), Some(late + T));
    }

    #[test]
    fn a_lease_is_valid_for_less_than_a_fence_timeout() {
        let t0 = Instant::now();
        let c = Contact::new(T);
        assert!(c.lease_valid(t0, t0));
        assert!(c.lease_valid(t0, t0 + T - Duration::from_millis(1)));
        assert!(!c.lease_valid(t0, t0 + T));
        assert!(
            !c.lease_valid(t0 + Duration::from_millis(1), t0),
            "from the future"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_until_opt_waits_for_the_deadline() {
        let start = Instant::now();
        sleep_until_opt(Some(start + T)).await;
        assert!(Instant::now() >= start + T);
        let never = tokio::time::timeout(10 * T, sleep_until_opt(None)).await;
        assert!(never.is_err());
    }
}
