//! The elector: takes the lease when it is free, renews it while leading,
//! and steps down — for good — before the lease can run out under it.
//!
//! Timing (L = `--leader-lease-ms`):
//! - a follower tries to take the lease every L/6, so a dead leader is
//!   replaced about L + L/6 after its last renewal;
//! - the leader renews every L/3, each attempt bounded by L/3;
//! - the leader counts its lease from the instant it *sent* its last
//!   successful renewal (the database started the new term no earlier),
//!   and is deposed at L − L/6 after it without another success. The L/6
//!   left over covers clock-rate differences and scheduling delay; the
//!   writer's fence (`store::fence`) covers a leader that is frozen through
//!   all of it.
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
            renew_every: (lease / 3).max(Duration::from_millis(10)),
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
    tracker.spawn(elector.run(first, shutdown).instrument(span));
    let handle = ElectorHandle {
        lease: lease.clone(),
        config: config.clone(),
        role: rx.clone(),
    };
    (Leadership::new(rx, lease, config), handle)
}

struct Elector {
    lease: Arc<dyn LeaseStore>,
    config: Arc<ReplicaConfig>,
    timing: Timing,
    fence: Fence,
    role: watch::Sender<Role>,
}

impl Elector {
    /// One heartbeat and one try to take the lease.
    async fn first_try(&self) -> Option<(u64, Instant)> {
        self.heartbeat().await;
        self.try_acquire().await
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
            Ok(Ok(Some(epoch))) => {
                self.fence.lead(epoch);
                tracing::info!(epoch, "this replica leads");
                let _ = self.role.send(Role::Leader { epoch });
                Some((epoch, sent))
            }
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "taking the lease failed");
                None
            }
            Err(_) => None,
        }
    }

    async fn run(self, first: Option<(u64, Instant)>, shutdown: CancellationToken) {
        let me = self.config.replica_id.clone();
        let lease_ms = self.config.lease.as_millis() as u64;
        let mut next_heartbeat = Instant::now() + self.timing.renew_every;
        let mut leading = first;
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
            let now = Instant::now();
            if now >= next_heartbeat {
                next_heartbeat = now + self.timing.renew_every;
                self.heartbeat().await;
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
                    let budget = trust_until
                        .saturating_duration_since(sent)
                        .min(self.timing.renew_every);
                    let attempt = self.lease.renew(&me, epoch, lease_ms);
                    let last_ok = match tokio::time::timeout(budget, attempt).await {
                        Ok(Ok(true)) => sent,
                        Ok(Ok(false)) => {
                            self.depose(epoch, "the lease row names another holder or epoch");
                            return;
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(epoch, error = %e, "renewing the leader lease failed");
                            last_ok
                        }
                        Err(_) => {
                            tracing::warn!(epoch, "renewing the leader lease timed out");
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
