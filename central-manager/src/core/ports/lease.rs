//! The leader-lease part of the store port (replicas, issue 15): the one
//! `leader_lease` row and the `replicas` table. Every operation is a single
//! conditional statement decided by the database on its own clock, so the
//! replicas' clocks never have to agree; the elector
//! (`core::leadership::elector`) decides when to call which.
//!
//! These run outside the group-committing writer, on a connection of
//! their own: a writer stuck behind a long batch must not cost the leader
//! its lease, and a lease renewal must not wait for task commands.

use futures::future::BoxFuture;

use crate::error::Result;

/// What the lease row says, as of one read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    /// The holder (empty before anyone held it).
    pub replica_id: String,
    pub epoch: u64,
    /// Unix micros (the database's clock) the lease runs to.
    pub expires_at: i64,
    /// The database's clock when read (unix micros).
    pub now: i64,
}

impl LeaseRow {
    /// The lease has a live holder.
    pub fn held(&self) -> bool {
        !self.replica_id.is_empty() && self.expires_at > self.now
    }
}

/// One replica as the `replicas` table knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRow {
    pub replica_id: String,
    /// The URL it serves its API on (`--advertise-url`).
    pub address: String,
    /// Unix micros (the database's clock).
    pub last_seen_at: i64,
}

/// The lease row and every replica seen since `seen_after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRows {
    pub lease: LeaseRow,
    pub replicas: Vec<ReplicaRow>,
}

/// The lease operations.
pub trait LeaseStore: Send + Sync {
    /// Takes the lease for `me` for `lease_ms` if it has expired, or if
    /// `me` already holds it (a replica restarted under the same id: its
    /// old process is gone, or it is the same process), with epoch + 1 in
    /// either case. Returns the new epoch, or `None` when another replica
    /// holds a live lease.
    fn acquire<'a>(&'a self, me: &'a str, lease_ms: u64) -> BoxFuture<'a, Result<Option<u64>>>;

    /// Takes the lease for `me` whoever holds it, with epoch + 1 (one
    /// central-manager per database, SQLite: the newest process wins; an
    /// older one still running is fenced at its next commit).
    fn take_over<'a>(&'a self, me: &'a str, lease_ms: u64) -> BoxFuture<'a, Result<u64>>;

    /// Extends `me`'s lease at `epoch` to `lease_ms` from now. False when
    /// the row is no longer `me`'s at that epoch (deposed).
    fn renew<'a>(&'a self, me: &'a str, epoch: u64, lease_ms: u64) -> BoxFuture<'a, Result<bool>>;

    /// Ends `me`'s lease at `epoch` now (a graceful stop: a follower takes
    /// over at its next try instead of after the lease).
    fn release<'a>(&'a self, me: &'a str, epoch: u64) -> BoxFuture<'a, Result<()>>;

    /// Records that `me` is alive and serves on `address`; forgets
    /// replicas not seen for `forget_after_ms`.
    fn heartbeat<'a>(
        &'a self,
        me: &'a str,
        address: &'a str,
        forget_after_ms: u64,
    ) -> BoxFuture<'a, Result<()>>;

    /// The lease row and the replicas seen within `seen_within_ms`.
    fn cluster(&self, seen_within_ms: u64) -> BoxFuture<'_, Result<ClusterRows>>;
}
