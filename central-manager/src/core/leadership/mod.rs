//! Replicas and their leader (issue 15): which replica runs the
//! supervision duties, and what the others know about it.
//!
//! Every replica serves every RPC. One of them, the leader, holds the
//! lease row (`leader_lease`, see [`crate::core::ports::lease`]) and runs
//! the duties that act on pods and timers: the pod-host sessions and the
//! supervisor, automatic restarts, run timeouts and deadlines, the queue's
//! dispatcher, schedules, retention. The [`elector`] takes and renews the
//! lease; `server.rs` starts the duties once this replica leads. A
//! follower serves reads and CreateTask itself and forwards the pod
//! operations to the leader (`api::forward`).
//!
//! A leader that cannot renew its lease in time, or finds the row taken,
//! is deposed for good: its writer refuses to commit
//! ([`crate::store::fence`]), and the process exits (status 3) so that
//! its supervisor restarts it as a follower with nothing left over from
//! its reign. Pod-hosts refuse its epoch once they have seen a newer one
//! (`STALE_EPOCH`).

pub mod duties;
pub mod elector;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::core::ports::LeaseStore;
use crate::core::ports::lease::ClusterRows;
use crate::error::Result;

/// The lease a lone SQLite central-manager takes (it never renews it).
pub const SINGLE_LEASE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What this replica is right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Serving; another replica leads, or nobody does yet.
    Follower,
    /// Leading at this epoch.
    Leader { epoch: u64 },
    /// Lost the lease: writes nothing more, exits.
    Deposed,
}

/// This replica's settings.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// `--replica-id`.
    pub replica_id: String,
    /// `--advertise-url`: where other replicas reach this one's API.
    pub address: String,
    /// `--leader-lease-ms`.
    pub lease: Duration,
    /// One central-manager per database (SQLite): it takes the lease at
    /// start whoever held it (the newest process wins; an older one still
    /// running is deposed by its writer's fence at its next commit), for
    /// good (no renewals, no periodic writes: a slow or full disk must not
    /// stop supervision); if the row cannot be written at start (a full
    /// disk, a read-only file) it leads at the row's epoch without owning
    /// it, so its pods stay supervised. False for replicas on PostgreSQL.
    pub single: bool,
}

impl ReplicaConfig {
    /// How long a replica row stays listed without a heartbeat.
    pub fn seen_within(&self) -> Duration {
        if self.single {
            return SINGLE_LEASE;
        }
        (self.lease * 10).max(Duration::from_secs(30))
    }
}

/// The view of the leadership the API and the server share. Cheap to
/// clone.
#[derive(Clone)]
pub struct Leadership {
    role: watch::Receiver<Role>,
    lease: Arc<dyn LeaseStore>,
    config: Arc<ReplicaConfig>,
}

impl Leadership {
    pub(crate) fn new(
        role: watch::Receiver<Role>,
        lease: Arc<dyn LeaseStore>,
        config: Arc<ReplicaConfig>,
    ) -> Self {
        Self {
            role,
            lease,
            config,
        }
    }

    /// This replica's role now.
    pub fn role(&self) -> Role {
        *self.role.borrow()
    }

    /// This replica leads.
    pub fn is_leader(&self) -> bool {
        matches!(self.role(), Role::Leader { .. })
    }

    /// This replica's id.
    pub fn replica_id(&self) -> &str {
        &self.config.replica_id
    }

    /// Waits until this replica leads; `None` if it never will (deposed,
    /// or the elector stopped).
    pub async fn leading(&self) -> Option<u64> {
        let mut rx = self.role.clone();
        loop {
            match *rx.borrow_and_update() {
                Role::Leader { epoch } => return Some(epoch),
                Role::Deposed => return None,
                Role::Follower => {}
            }
            rx.changed().await.ok()?;
        }
    }

    /// The lease row and the replicas seen lately (GetClusterInfo).
    pub async fn cluster(&self) -> Result<ClusterRows> {
        let ms = self.config.seen_within().as_millis() as u64;
        self.lease.cluster(ms).await
    }

    /// The API address of the replica holding a live lease, if another
    /// one does (a follower forwards pod operations there).
    pub async fn leader_address(&self) -> Result<Option<String>> {
        let rows = self.cluster().await?;
        if !rows.lease.held() || rows.lease.replica_id == self.config.replica_id {
            return Ok(None);
        }
        Ok(rows
            .replicas
            .into_iter()
            .find(|r| r.replica_id == rows.lease.replica_id)
            .map(|r| r.address))
    }
}
