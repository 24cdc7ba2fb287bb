//! The writer's leadership fence (replicas, issue 15): while this replica
//! leads at epoch `e`, every transaction its writer commits first reads the
//! `leader_epoch` row (PostgreSQL: `FOR SHARE`, so a takeover waits for
//! it) and refuses to commit unless the row still says `e`. A deposed
//! leader — paused past its lease, cut off and back, or simply slow to
//! notice — can therefore never commit anything after a newer epoch
//! exists. A replica that does not lead (epoch 0 here) writes only what
//! any replica may (CreateTask and the other commands followers serve), so
//! its transactions skip the check.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// Shared by the writer, the elector and the pod-host client (which
/// stamps the epoch on its Connects and commands). Cheap to clone.
#[derive(Clone, Default)]
pub struct Fence {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fence")
            .field("epoch", &self.epoch())
            .finish()
    }
}

#[derive(Default)]
struct Inner {
    /// The epoch the writer checks (0: no check).
    epoch: AtomicU64,
    /// The epoch stamped on pod-host Connects and commands.
    stamp: AtomicU64,
    deposed: CancellationToken,
}

impl Fence {
    /// From now on, commit only while the lease row's epoch is `epoch`.
    pub fn lead(&self, epoch: u64) {
        self.inner.stamp.store(epoch, Ordering::SeqCst);
        self.inner.epoch.store(epoch, Ordering::SeqCst);
    }

    /// Leads at `epoch` without owning the lease row (a lone SQLite
    /// central-manager whose database cannot be written at start): its
    /// commands carry the epoch, its writer checks nothing.
    pub fn lead_unfenced(&self, epoch: u64) {
        self.inner.stamp.store(epoch, Ordering::SeqCst);
    }

    /// The epoch to stamp on pod-host Connects and commands (0: none).
    pub fn leader_epoch(&self) -> u64 {
        self.inner.stamp.load(Ordering::SeqCst)
    }

    /// The epoch this replica leads at; 0 when it does not lead.
    pub fn epoch(&self) -> u64 {
        self.inner.epoch.load(Ordering::SeqCst)
    }

    /// Checks the lease row's epoch, read inside the transaction about to
    /// commit. A mismatch deposes this replica for good; once deposed it
    /// never commits again, even if the row still names its epoch (it
    /// gave up the lease when it could not renew it in time).
    pub fn check(&self, row_epoch: u64) -> Result<()> {
        let mine = self.epoch();
        if mine == 0 || (row_epoch == mine && !self.inner.deposed.is_cancelled()) {
            return Ok(());
        }
        self.depose();
        Err(Error::Deposed {
            mine,
            current: row_epoch,
        })
    }

    /// Marks this replica deposed (the elector found it out, or a commit
    /// did): the process stops leading and exits.
    pub fn depose(&self) {
        self.inner.deposed.cancel();
    }

    /// Cancelled once this replica has been deposed.
    pub fn deposed(&self) -> CancellationToken {
        self.inner.deposed.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_never_checks_and_a_leader_is_deposed_by_another_epoch() {
        let f = Fence::default();
        assert!(f.check(7).is_ok(), "epoch 0: no check");
        f.lead(3);
        assert!(f.check(3).is_ok());
        assert!(!f.deposed().is_cancelled());
        let e = f.check(4).unwrap_err();
        assert!(matches!(
            e,
            Error::Deposed {
                mine: 3,
                current: 4
            }
        ));
        assert!(f.deposed().is_cancelled());
    }
}
