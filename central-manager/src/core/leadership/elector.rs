//! The elector: takes the lease when it is free, renews it while leading,
//! and steps down — for good — before the lease can run out under it.
//!
//! Timing (L = `--leader-lease-ms`):
//! - a follower tries to take the lease every L/6, so a dead leader is
//!   replaced about L + L/6 after its last renewal;
//! - the leader renews every L/4, each attempt bounded by L/4 (three tries
//!   before it must step down: a renewal waits for the row lock behind
//!   the leader's own writer transaction, which reads the row FOR SHARE);
//! - the leader counts its lease from the instant it *sent* its last
//!   successful renewal (the database started the new term no earlier),
//!   and is deposed at L − L/6 after it when its tries since have failed
//!   (the database is unreachable). The L/6 left over covers clock-rate
//!   differences and scheduling delay. A leader that was frozen or starved
//!   past that point without having tried makes one more try: it succeeds
//!   only if the row still holds its epoch, i.e. no replica led meanwhile.
//!   The writer's fence (`store::fence`) and the pod-hosts' epoch check
//!   cover a leader frozen through a takeover.
//! - With SQLite (one central-manager per file) the process takes the row
//!   at start whoever held it and keeps it without renewing (see
//!   [`ReplicaConfig::single`]).
//!
//! The database decides every step on its own clock (`ports::lease`); this
//! loop only decides when to ask, and when its own answer is too old to
//! trust.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::{Leadership, ReplicaConfig, Role};
use crate::core::ports::LeaseStore;
use crate::store::fence::Fence;

/// The cadence of the elector for a lease of `lease`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How often the leader renews (and every replica heartbeats).
    pub renew_every: Duration,
    /// How often a follower tries to take the lease.
    pub poll_every: Duration,
    /// How long after a renewal was sent the leader still trusts it.
    pub trust_for: Duration,
}

impl Timing {
    pub fn for_lease(lease: Duration) -> Self {
        let sixth = (lease / 6).max(Duration::from_millis(10));
        Self {
            renew_every: (lease / 4).max(Duration::from_millis(10)),
            poll_every: sixth,
            trust_for: lease.saturating_sub(sixth),
        }
    }
}

/// Stops the elector and hands the lease back.
pub struct ElectorHandle {
    lease: Arc<dyn LeaseStore>,
    config: Arc<ReplicaConfig>,
    role: watch::Receiver<Role>,
}

impl ElectorHandle {
    /// Ends this replica's lease now if it leads (a graceful stop: a
    /// follower takes over at its next try instead of after the lease).
    /// Call after the writer has stopped.
    pub async fn release(&self) {
        let role = *self.role.borrow();
        if let Role::Leader { epoch } = role {
            let t = Timing::for_lease(self.config.lease).renew_every;
            match tokio::time::timeout(t, self.lease.release(&self.config.replica_id, epoch)).await
            {
                Ok(Ok(())) => tracing::info!(epoch, "leader lease released"),
                Ok(Err(e)) => tracing::warn!(error = %e, "could not release the leader lease"),
                Err(_) => tracing::warn!("releasing the leader lease timed out"),
            }
        }
    }
}

/// Starts the elector on `tracker` until `shutdown`. The fence learns the
/// epoch as soon as this replica leads and is deposed if it stops. The
/// first try to take the lease is made before this returns, so a replica
/// that can lead at once (the only one, or one restarted under its id)
/// leads before it serves its first call.
pub async fn start(
    lease: Arc<dyn LeaseStore>,
    config: ReplicaConfig,
    fence: Fence,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> (Leadership, ElectorHandle) {
    let config = Arc::new(config);
    let (tx, rx) = watch::channel(Role::Follower);
    let elector = Elector {
        lease: lease.clone(),
        config: config.clone(),
        timing: Timing::for_lease(config.lease),
        fence,
        role: tx,
    };
    let span = tracing::info_span!("elector", replica = %config.replica_id);
    let first = elector.first_try().instrument(span.clone()).await;
    // The replicas table's sign of life, on a loop of its own so that a
    // slow heartbeat never delays a renewal.
    let beat = Heartbeat {
        lease: lease.clone(),
        config: config.clone(),
        every: elector.timing.renew_every,
    };
    if !config.single {
        tracker.spawn(beat.run(shutdown.clone()).instrument(span.clone()));
    }
    tracker.spawn(elector.run(first, shutdown).instrument(span));
    let handle = ElectorHandle {
        lease: lease.clone(),
        config: config.clone(),
        role: rx.clone(),
    };
    (Leadership::new(rx, lease, config), handle)
}

/// Records this replica in the `replicas` table every `every`.
struct Heartbeat {
    lease: Arc<dyn LeaseStore>,
    config: Arc<ReplicaConfig>,
    every: Duration,
}

impl Heartbeat {
    async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.every) => {}
            }
            heartbeat(&*self.lease, &self.config, self.every).await;
        }
    }
}

/// One heartbeat, bounded by `within`; failures only logged.
async fn heartbeat(lease: &dyn LeaseStore, config: &ReplicaConfig, within: Duration) {
    let forget_ms = config.seen_within().as_millis() as u64 * 10;
    let beat = lease.heartbeat(&config.replica_id, &config.address, forget_ms);
    match tokio::time::timeout(within, beat).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "replica heartbeat failed"),
        Err(_) => tracing::debug!("replica heartbeat timed out"),
    }
}

/// How the first try went.
enum Start {
    Leading((u64, Instant)),
    Following,
    /// The lone central-manager of a SQLite file leads, for good (see
    /// [`ReplicaConfig::single`]).
    Single,
}

struct Elector {
    lease: Arc<dyn LeaseStore>,
    config: Arc<ReplicaConfig>,
    timing: Timing,
    fence: Fence,
    role: watch::Sender<Role>,
}

impl Elector {
    /// One heartbeat and one try to take the lease. A lone SQLite
    /// central-manager whose database cannot take the write leads anyway,
    /// at the row's epoch, without owning the row (`Start::Unowned`).
    async fn first_try(&self) -> Start {
        self.heartbeat().await;
        let sent = Instant::now();
        let failure = if self.config.single {
            let ms = super::SINGLE_LEASE.as_millis() as u64;
            let attempt = self.lease.take_over(&self.config.replica_id, ms);
            match tokio::time::timeout(self.timing.renew_every, attempt).await {
                Ok(Ok(epoch)) => {
                    self.lead(epoch, sent);
                    return Start::Single;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".to_owned(),
            }
        } else {
            match self.try_acquire().await {
                Some(l) => return Start::Leading(l),
                None => return Start::Following,
            }
        };
        let seen = self.config.seen_within().as_millis() as u64;
        let epoch =
            match tokio::time::timeout(self.timing.renew_every, self.lease.cluster(seen)).await {
                Ok(Ok(rows)) => rows.lease.epoch,
                _ => 0,
            };
        tracing::warn!(
            error = %failure,
            epoch,
            "the lease row cannot be written; leading without it at the row's epoch"
        );
        self.fence.lead_unfenced(epoch);
        let _ = self.role.send(Role::Leader { epoch });
        Start::Single
    }

    fn lead(&self, epoch: u64, sent: Instant) -> (u64, Instant) {
        self.fence.lead(epoch);
        tracing::info!(epoch, "this replica leads");
        let _ = self.role.send(Role::Leader { epoch });
        (epoch, sent)
    }

    async fn heartbeat(&self) {
        let forget_ms = self.config.seen_within().as_millis() as u64 * 10;
        let beat = self
            .lease
            .heartbeat(&self.config.replica_id, &self.config.address, forget_ms);
        match tokio::time::timeout(self.timing.renew_every, beat).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "replica heartbeat failed"),
            Err(_) => tracing::debug!("replica heartbeat timed out"),
        }
    }

    /// Takes the lease if it is free: the epoch and when the try was sent.
    async fn try_acquire(&self) -> Option<(u64, Instant)> {
        let sent = Instant::now();
        let lease_ms = self.config.lease.as_millis() as u64;
        let attempt = self.lease.acquire(&self.config.replica_id, lease_ms);
        match tokio::time::timeout(self.timing.renew_every, attempt).await {
            Ok(Ok(Some(epoch))) => Some(self.lead(epoch, sent)),
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "taking the lease failed");
                None
            }
            Err(_) => None,
        }
    }

    async fn run(self, first: Start, shutdown: CancellationToken) {
        let first = match first {
            Start::Leading(l) => Some(l),
            Start::Following => None,
            Start::Single => {
                // Leads until it stops (or its writer's fence finds a
                // newer process's epoch).
                shutdown.cancelled().await;
                return;
            }
        };
        let me = self.config.replica_id.clone();
        let lease_ms = self.config.lease.as_millis() as u64;
        let mut leading = first;
        let mut last_failed = false;
        let mut wake = Instant::now()
            + if leading.is_some() {
                self.timing.renew_every
            } else {
                self.timing.poll_every
            };
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(wake) => {}
            }
            wake = match leading {
                None => {
                    leading = self.try_acquire().await;
                    match leading {
                        Some((_, sent)) => sent + self.timing.renew_every,
                        None => Instant::now() + self.timing.poll_every,
                    }
                }
                Some((epoch, last_ok)) => {
                    let sent = Instant::now();
                    let trust_until = last_ok + self.timing.trust_for;
                    // Past its trust without a failed try (this process was
                    // frozen or starved): one more try decides. The epoch
                    // makes that safe: a renewal succeeds only if no other
                    // replica took the row meanwhile.
                    let budget = if sent < trust_until {
                        (trust_until - sent).min(self.timing.renew_every)
                    } else if !last_failed {
                        self.timing.renew_every
                    } else {
                        Duration::ZERO
                    };
                    let attempt = self.lease.renew(&me, epoch, lease_ms);
                    let last_ok = match tokio::time::timeout(budget, attempt).await {
                        Ok(Ok(true)) => {
                            last_failed = false;
                            sent
                        }
                        Ok(Ok(false)) => {
                            self.depose(epoch, "the lease row names another holder or epoch");
                            return;
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(epoch, error = %e, "renewing the leader lease failed");
                            last_failed = true;
                            last_ok
                        }
                        Err(_) => {
                            tracing::warn!(epoch, "renewing the leader lease timed out");
                            last_failed = true;
                            last_ok
                        }
                    };
                    let trust_until = last_ok + self.timing.trust_for;
                    if Instant::now() >= trust_until {
                        self.depose(epoch, "the lease could not be renewed in time");
                        return;
                    }
                    leading = Some((epoch, last_ok));
                    (sent + self.timing.renew_every).min(trust_until)
                }
            };
        }
    }

    fn depose(&self, epoch: u64, why: &str) {
        tracing::error!(
            epoch,
            why,
            "this replica lost the leadership; it stops leading and exits"
        );
        self.fence.depose();
        let _ = self.role.send(Role::Deposed);
    }
}

#[cfg(test)]
mod tests;
