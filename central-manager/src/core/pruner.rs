//! Background loop that forgets CreateTask idempotency keys older than the
//! 24 h window, so the table does not grow forever. Lookups already ignore
//! expired keys; this only reclaims space.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::core::ports::TaskStore;
use crate::error::Result;
use crate::store::{Command, IDEMPOTENCY_WINDOW_MICROS, Outcome};

/// How often expired keys are removed. Hourly is plenty: expiry is exact
/// at lookup, pruning only bounds the table.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// The idempotency-key pruner.
pub struct IdempotencyPruner {
    store: Arc<dyn TaskStore>,
    interval: Duration,
}

impl IdempotencyPruner {
    /// A pruner running every `interval`.
    pub fn new(store: Arc<dyn TaskStore>, interval: Duration) -> Self {
        Self { store, interval }
    }

    /// Runs the loop on `tracker` until `shutdown`. The first tick is
    /// immediate (a restart after a long stop prunes at once).
    pub fn start(self, tracker: &TaskTracker, shutdown: CancellationToken) {
        tracker.spawn(
            self.run(shutdown)
                .instrument(tracing::info_span!("idempotency_pruner")),
        );
    }

    async fn run(self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.interval);
        // After a stall one prune is enough, not a burst.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticker.tick() => {
                    // A failed tick is logged; the next one retries.
                    if let Err(e) = self.tick(ipa_proto::time::now_micros()).await {
                        tracing::warn!(error = %e, "pruning idempotency keys failed");
                    }
                }
            }
        }
    }

    /// One prune relative to `now` (unix micros); returns the rows removed.
    pub async fn tick(&self, now: i64) -> Result<u64> {
        let up_to = now - IDEMPOTENCY_WINDOW_MICROS;
        match self
            .store
            .write(Command::PruneIdempotency { up_to })
            .await?
        {
            Outcome::Pruned(n) => {
                if n > 0 {
                    tracing::info!(removed = n, "expired idempotency keys pruned");
                }
                Ok(n)
            }
            other => Err(crate::error::Error::Internal(format!(
                "unexpected outcome {other:?}"
            ))),
        }
    }
}
