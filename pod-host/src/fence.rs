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

/// The time of the last message from central.
#[derive(Debug, Clone)]
pub struct Contact {
    last: Option<Instant>,
    timeout: Duration,
}

impl Contact {
    pub fn new(timeout: Duration) -> Self {
        Self {
            last: None,
            timeout,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn last(&self) -> Option<Instant> {
        self.last
    }

    /// Records contact at `now`. Returns true when the gap since the
    /// previous contact had already reached the timeout: the fence deadline
    /// passed unnoticed (the host was frozen), so the caller must fence
    /// before treating this message as fresh.
    pub fn touch(&mut self, now: Instant) -> bool {
        let missed = self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) >= self.timeout);
        self.last = Some(now.max(self.last.unwrap_or(now)));
        missed
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
        assert!(!c.touch(t0));
        for i in 1..=20 {
            let now = t0 + Duration::from_millis(400 * i);
            assert!(!c.touch(now), "contact every 400 ms never misses");
            assert_eq!(c.deadline(), Some(now + T));
            assert!(!should_fence(c.last(), now + T / 2, T, 1));
        }
    }

    #[test]
    fn a_stale_message_after_a_freeze_reports_the_missed_deadline() {
        let t0 = Instant::now();
        let mut c = Contact::new(T);
        c.touch(t0);
        // Frozen for 3 s; the first message read after waking is old.
        let woke = t0 + 3 * T;
        assert!(c.touch(woke), "the missed deadline must be reported");
        // ...after which contact is fresh again.
        assert!(!c.touch(woke + Duration::from_millis(10)));
        // Exactly at the timeout counts as missed too.
        let mut c = Contact::new(T);
        c.touch(t0);
        assert!(c.touch(t0 + T));
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
