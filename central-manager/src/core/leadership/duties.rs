//! What this replica runs while it leads, started the moment it does: the
//! core's duties (pod-host sessions, the supervisor with its restarts, run
//! timeouts and deadlines, the queue's dispatcher), the schedule loop, the
//! `--archive-after-days` archiver and the idempotency-key pruner. A
//! follower runs none of them; a deposed leader stops them all by exiting.
//! Anything added later that acts on its own (a timer, a loop) belongs
//! here, so that one replica at a time runs it.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::Leadership;
use crate::core::ports::TaskStore;
use crate::core::pruner::{IdempotencyPruner, PRUNE_INTERVAL};
use crate::core::retention::Retention;
use crate::core::scheduler::Scheduler;
use crate::core::schedules::ScheduleService;
use crate::core::wiring::Duties;
use crate::watch::EventHub;

/// The leader's duties, built and waiting.
pub struct LeaderDuties {
    pub core: Duties,
    pub schedules: Arc<ScheduleService>,
    pub retention: Arc<Retention>,
    /// `--archive-after-days` (0: off).
    pub archive_after_days: u32,
    pub hub: EventHub,
    pub tasks: Arc<dyn TaskStore>,
}

impl LeaderDuties {
    /// Starts everything once `leadership` says this replica leads (at
    /// once when it already does); nothing if it never does.
    pub fn start_when_leading(
        self,
        leadership: Leadership,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) {
        let t = tracker.clone();
        tracker.spawn(
            async move {
                let epoch = tokio::select! {
                    () = shutdown.cancelled() => return,
                    epoch = leadership.leading() => match epoch {
                        Some(e) => e,
                        None => return,
                    },
                };
                tracing::info!(epoch, "starting the supervision duties");
                self.start(&t, shutdown);
            }
            .instrument(tracing::info_span!("leader_duties")),
        );
    }

    /// Starts everything now.
    pub fn start(self, tracker: &TaskTracker, shutdown: CancellationToken) {
        self.core.start();
        IdempotencyPruner::new(self.tasks, PRUNE_INTERVAL).start(tracker, shutdown.clone());
        Scheduler::new(self.schedules, self.hub).start(tracker, shutdown.clone());
        if self.archive_after_days > 0 {
            self.retention
                .start_archiver(self.archive_after_days, tracker, shutdown);
        }
    }
}
