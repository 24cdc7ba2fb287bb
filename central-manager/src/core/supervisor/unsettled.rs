//! Which connected pod-hosts central must ask again about pods it holds as
//! STARTING (no start in flight) or UNKNOWN, and when.
//!
//! A hello settles such pods (reconciliation), but a host that never
//! disconnects sends none: a StartPod held up by a slow link whose call and
//! fencing StopPod both time out leaves the row UNKNOWN on a host that is
//! READY all along (found by the simulator, seeds 65 and 169). So every
//! path that leaves a row unsettled on a host marks the host here; the
//! supervisor then asks it (ListPods) on a timer with backoff, and the
//! answer is reconciled by the same rules as a hello's snapshot, until no
//! row on that host is unsettled.
//!
//! Not before the host's lease has run out: a StartPod central abandoned
//! may still be on the wire, and only once its lease is past can the host
//! no longer spawn it (it refuses it with LEASE_EXPIRED), so only then does
//! "not on the host" mean "will never run there".

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::hosts::directory::HostDirectory;
use crate::hosts::registry::HostTimeouts;

/// The first ask after a host was marked (at least; see the lease above).
pub const REQUERY_FIRST: Duration = Duration::from_secs(1);
/// The backoff between asks doubles up to this.
pub const REQUERY_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
struct Entry {
    due: Instant,
    backoff: Duration,
    /// No abandoned start to this host can still spawn after this.
    quiet_after: Instant,
    /// Bumped by every mark: a "settled" from an ask begun before a later
    /// mark does not clear it.
    epoch: u64,
    /// A write that ends a task failed ambiguously: the host may run a pod
    /// no row places there, so it is asked even with no row unsettled.
    orphans: bool,
}

#[derive(Default)]
struct Inner {
    hosts: Mutex<BTreeMap<String, Entry>>,
    moved: Notify,
}

/// The hosts to ask again, shared by the pod operations (which mark a host
/// when they leave a row unsettled) and the supervisor (which asks).
#[derive(Clone, Default)]
pub struct Unsettled(Arc<Inner>);

impl std::fmt::Debug for Unsettled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unsettled")
            .field("hosts", &self.lock().len())
            .finish()
    }
}

impl Unsettled {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.0.hosts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `host_id` may hold a row central cannot settle by itself; a start
    /// sent to it before `now` may still arrive within `lease`.
    pub fn mark(&self, host_id: &str, now: Instant, lease: Duration) {
        self.mark_for(host_id, now, lease, false);
    }

    /// [`Unsettled::mark`], and with `orphans` the host is asked even when
    /// no row on it is unsettled (see [`Unsettled::wants_orphans`]).
    fn mark_for(&self, host_id: &str, now: Instant, lease: Duration, orphans: bool) {
        let quiet_after = now + lease;
        let first = now + REQUERY_FIRST.max(lease);
        let mut g = self.lock();
        match g.get_mut(host_id) {
            Some(e) => {
                e.quiet_after = e.quiet_after.max(quiet_after);
                e.due = e.due.min(first).max(e.quiet_after);
                e.backoff = REQUERY_FIRST;
                e.epoch = e.epoch.wrapping_add(1);
                e.orphans |= orphans;
            }
            None => {
                g.insert(
                    host_id.to_owned(),
                    Entry {
                        due: first,
                        backoff: REQUERY_FIRST,
                        quiet_after,
                        epoch: 0,
                        orphans,
                    },
                );
            }
        }
        drop(g);
        self.0.moved.notify_one();
    }

    /// [`Unsettled::mark`] with the host's lease: its own fence timeout
    /// plus the margin central allows it.
    pub fn mark_host(&self, hosts: &HostDirectory, host_id: &str, now: Instant) {
        self.mark_for(host_id, now, Self::lease(hosts, host_id), false);
    }

    /// [`Unsettled::mark_host`] after a write that ends a task failed
    /// ambiguously: the host is asked even with no row unsettled, for pods
    /// no row places there.
    pub fn mark_host_for_orphans(&self, hosts: &HostDirectory, host_id: &str, now: Instant) {
        self.mark_for(host_id, now, Self::lease(hosts, host_id), true);
    }

    fn lease(hosts: &HostDirectory, host_id: &str) -> Duration {
        hosts.with_registry(|r| {
            r.get(host_id).map_or(Duration::ZERO, |h| {
                h.host_fence_timeout + HostTimeouts::default_margin(h.host_fence_timeout)
            })
        })
    }

    /// Whether `host_id` is to be asked for orphans too.
    pub fn wants_orphans(&self, host_id: &str) -> bool {
        self.lock().get(host_id).is_some_and(|e| e.orphans)
    }

    /// When the next ask is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.lock().values().map(|e| e.due).min()
    }

    /// Resolves when a mark may have moved the next ask earlier.
    pub async fn moved(&self) {
        self.0.moved.notified().await;
    }

    /// The hosts due at `now`, with their epochs; each is rescheduled at
    /// its backoff, which doubles (an ask that settles everything clears
    /// the host with [`Unsettled::settled`]).
    pub fn take_due(&self, now: Instant) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for (host, e) in self.lock().iter_mut() {
            if e.due <= now {
                out.push((host.clone(), e.epoch));
                e.due = now + e.backoff;
                e.backoff = (e.backoff * 2).min(REQUERY_MAX);
            }
        }
        out
    }

    /// Whether every start abandoned on `host_id` is past its lease at
    /// `now` (an ask whose rows were read before then must not act).
    pub fn quiet(&self, host_id: &str, now: Instant) -> bool {
        self.lock()
            .get(host_id)
            .is_none_or(|e| e.quiet_after <= now)
    }

    /// An ask begun at `epoch` found nothing unsettled on `host_id`.
    pub fn settled(&self, host_id: &str, epoch: u64) {
        let mut g = self.lock();
        if g.get(host_id).is_some_and(|e| e.epoch == epoch) {
            g.remove(host_id);
        }
    }

    /// Whether `host_id` is marked.
    pub fn is_marked(&self, host_id: &str) -> bool {
        self.lock().contains_key(host_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_marked_host_is_asked_after_its_lease_then_with_backoff() {
        let u = Unsettled::default();
        let t0 = Instant::now();
        u.mark("h", t0, 3 * S);
        assert_eq!(u.next_due(), Some(t0 + 3 * S));
        assert!(u.take_due(t0 + 2 * S).is_empty());
        assert!(!u.quiet("h", t0 + 2 * S));
        assert_eq!(u.take_due(t0 + 3 * S), vec![("h".into(), 0)]);
        assert!(u.quiet("h", t0 + 3 * S));
        // 1 s, then 2 s, then 4 s later.
        assert_eq!(u.next_due(), Some(t0 + 4 * S));
        assert_eq!(u.take_due(t0 + 4 * S).len(), 1);
        assert_eq!(u.next_due(), Some(t0 + 6 * S));
        assert_eq!(u.take_due(t0 + 6 * S).len(), 1);
        assert_eq!(u.next_due(), Some(t0 + 10 * S));
    }

    #[test]
    fn the_backoff_is_capped() {
        let u = Unsettled::default();
        let mut now = Instant::now();
        u.mark("h", now, Duration::ZERO);
        for _ in 0..20 {
            now = u.next_due().expect("still marked");
            assert_eq!(u.take_due(now).len(), 1);
        }
        assert_eq!(u.next_due(), Some(now + REQUERY_MAX));
    }

    #[test]
    fn settled_clears_only_the_epoch_it_saw() {
        let u = Unsettled::default();
        let t0 = Instant::now();
        u.mark("h", t0, Duration::ZERO);
        let asked = u.take_due(t0 + S);
        assert_eq!(asked, vec![("h".into(), 0)]);
        // A later mark (another abandoned start) while the ask ran.
        u.mark("h", t0 + S, 2 * S);
        u.settled("h", 0);
        assert!(u.is_marked("h"), "a newer mark survives an older ask");
        // ...and pushes the next ask past the new lease.
        assert!(!u.quiet("h", t0 + 2 * S));
        assert_eq!(u.next_due(), Some(t0 + 3 * S));
        let asked = u.take_due(t0 + 3 * S);
        assert_eq!(asked, vec![("h".into(), 1)]);
        u.settled("h", 1);
        assert!(!u.is_marked("h"));
        assert_eq!(u.next_due(), None);
    }
}
