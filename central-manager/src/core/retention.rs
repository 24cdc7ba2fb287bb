//! Retention and bulk operations: DeleteTask, CancelTasks, ArchiveTasks,
//! GetStats, and the archiver loop behind `--archive-after-days`.
//!
//! Archiving moves tasks in bounded batches, one writer command each, so
//! the single writer interleaves them with everyone else's commands: a
//! batch is sized so its statements take about [`BATCH_TARGET`] inside
//! the writer's transaction (halved when one takes longer, doubled when
//! much shorter; the commit is not counted), and the writer runs each
//! batch in a transaction of its own, never grouped with other commands:
//! a CreateTask queued behind one waits for that one batch at most, which
//! keeps its latency during a large archive run close to its idle
//! latency. A batch's commit does not wait for the disk (`store::writer`,
//! `without_fsync`): the next durable commit carries it, and a power loss
//! can only undo whole batches, whose tasks the next run archives again.
//! After each batch the run pauses for as long as the batch took
//! from submit to answer (its wait, statements and commit; [`pause_after`]):
//! the writer is free at least half the time, so a command arriving
//! during a run finds it busy with a batch half as often, and the
//! checkpointer copies the WAL while it is not being appended to. One run
//! at a time (the RPC and the loop share a lock).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::TaskService;
use super::ports::Clock;
use crate::core::ports::retention::{RetentionOutcome, RetentionStore, RetentionWrite};
use crate::domain::stats::{StatsGroup, StatsQuery};
use crate::domain::{ActorId, CorrelationId, TaskFilter, TaskId};
use crate::error::{Error, Result};

/// The writer time one archive batch aims at (its statements; its commit
/// comes on top). A command queued behind a batch waits for it, so this
/// bounds what archiving adds to everyone's latency.
/// Measured (`bench --only retention`, 100,000 tasks): at 1 ms a
/// CreateTask's p99 during the run was 2.9× its idle p99, at 250 µs 1.7×;
/// the run then takes about three times as many batches.
pub const BATCH_TARGET: Duration = Duration::from_micros(250);
/// Batch size bounds (tasks per batch).
const MIN_BATCH: u32 = 1;
const MAX_BATCH: u32 = 512;
const FIRST_BATCH: u32 = 32;
/// Tasks cancelled per writer command by CancelTasks: bounds how long one
/// command holds the writer.
const CANCEL_CHUNK: usize = 100;
/// Longest pause between two archive batches (a stalled disk should not
/// stall the run for longer than it stalled the batch, nor for ever).
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// How often the archiver looks for tasks past `--archive-after-days`.
pub const ARCHIVE_EVERY: Duration = Duration::from_secs(3600);

/// The next batch size after one of `size` took `took`.
pub fn next_batch(size: u32, took: Duration) -> u32 {
    if took > BATCH_TARGET * 2 {
        (size / 2).max(MIN_BATCH)
    } else if took < BATCH_TARGET / 2 {
        size.saturating_mul(2).min(MAX_BATCH)
    } else {
        size
    }
}

/// The pause after an archive batch whose submit-to-answer time was
/// `round_trip`: as long again (a duty cycle of one half), at most
/// [`MAX_PAUSE`].
pub fn pause_after(round_trip: Duration) -> Duration {
    round_trip.min(MAX_PAUSE)
}

/// CancelTasks' request.
#[derive(Debug, Clone)]
pub struct CancelMany {
    /// Which tasks (the ListTasks filters).
    pub filter: TaskFilter,
    /// Recorded in each `task_cancelled` event.
    pub reason: String,
    /// Only report what would be cancelled.
    pub dry_run: bool,
    /// Caller.
    pub actor: ActorId,
    /// Correlation id.
    pub correlation: CorrelationId,
}

/// The retention operations. Cheap to share (`Arc`).
pub struct Retention {
    tasks: Arc<TaskService>,
    /// The store, through its retention port.
    store: Arc<dyn RetentionStore>,
    clock: Arc<dyn Clock>,
    /// One archive run at a time.
    archiving: Mutex<()>,
}

impl Retention {
    /// Retention over `tasks`' store, on `clock`.
    pub fn new(
        tasks: Arc<TaskService>,
        store: Arc<dyn RetentionStore>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            tasks,
            store,
            clock,
            archiving: Mutex::new(()),
        }
    }

    /// DeleteTask: TASK_NOT_FOUND, TASK_NOT_TERMINAL, or the row and events
    /// removed and the deletion logged.
    pub async fn delete_task(
        &self,
        task_id: TaskId,
        reason: String,
        actor: ActorId,
        correlation: CorrelationId,
    ) -> Result<()> {
        self.store
            .retention(RetentionWrite::DeleteTask {
                task_id,
                reason,
                actor,
                correlation,
            })
            .await?;
        Ok(())
    }

    /// CancelTasks: the non-terminal tasks matching the filter, oldest
    /// first, at most 10,000; each gets its own `task_cancelled` event by
    /// the caller, and its pod is stopped. Returns the tasks cancelled (or
    /// that would be, with `dry_run`).
    pub async fn cancel_tasks(self: &Arc<Self>, c: CancelMany) -> Result<Vec<TaskId>> {
        let ids = self.store.cancellable(&c.filter).await?;
        if c.dry_run || ids.is_empty() {
            return Ok(ids);
        }
        let this = self.clone();
        self.tasks
            .detached(async move {
                let mut done = Vec::with_capacity(ids.len());
                for chunk in ids.chunks(CANCEL_CHUNK) {
                    let out = this
                        .store
                        .retention(RetentionWrite::CancelMany {
                            task_ids: chunk.to_vec(),
                            reason: c.reason.clone(),
                            actor: c.actor.clone(),
                            correlation: c.correlation.clone(),
                        })
                        .await
                        .inspect_err(|e| this.tasks.pods().after_ambiguous_write(e))?;
                    let RetentionOutcome::Cancelled(cancelled) = out else {
                        return Err(Error::Internal(format!("unexpected outcome {out:?}")));
                    };
                    let stops = cancelled.iter().filter_map(|(id, stop)| {
                        done.push(*id);
                        stop.clone()
                    });
                    let pods = this.tasks.pods().clone();
                    futures::future::join_all(stops.map(|(pod, host)| {
                        let pods = pods.clone();
                        async move { pods.stop_after_finish(pod, host, "task cancelled").await }
                    }))
                    .await;
                }
                Ok(done)
            })
            .await
    }

    /// ArchiveTasks: moves every terminal task that finished before
    /// `finished_before` (unix micros), with its events, to the archive.
    /// Returns how many moved.
    pub async fn archive(
        &self,
        finished_before: i64,
        actor: ActorId,
        correlation: CorrelationId,
    ) -> Result<u64> {
        let _one_run = self.archiving.lock().await;
        let store = &self.store;
        let run_id = match store
            .retention(RetentionWrite::StartArchiveRun {
                finished_before,
                actor,
                correlation,
            })
            .await?
        {
            RetentionOutcome::RunStarted(id) => id,
            other => return Err(Error::Internal(format!("unexpected outcome {other:?}"))),
        };
        let mut size = FIRST_BATCH;
        let mut total = 0;
        loop {
            let sent = self.clock.now();
            let (moved, took) = match store
                .retention(RetentionWrite::ArchiveBatch {
                    run_id,
                    finished_before,
                    limit: size,
                })
                .await?
            {
                RetentionOutcome::Archived { moved, took } => (moved, took),
                other => return Err(Error::Internal(format!("unexpected outcome {other:?}"))),
            };
            total += moved;
            if moved < u64::from(size) {
                break;
            }
            size = next_batch(size, took);
            // Give the writer back: commands arriving now find it free.
            let round_trip = self.clock.now().saturating_duration_since(sent);
            tokio::time::sleep(pause_after(round_trip)).await;
        }
        if total > 0 {
            tracing::info!(run_id, tasks = total, "archive run done");
        }
        Ok(total)
    }

    /// GetStats' groups.
    pub async fn stats(&self, q: StatsQuery) -> Result<Vec<StatsGroup>> {
        self.store.stats(q).await
    }

    /// Queued tasks per priority (GetStats).
    pub async fn queue_stats(&self) -> Result<crate::core::ports::store::QueueStats> {
        self.tasks.queue_stats().await
    }

    /// Pods central considers running (GetStats).
    pub async fn running_pods(&self) -> Result<u64> {
        self.tasks.count_active_pods().await
    }

    /// Starts the `--archive-after-days` loop (`days` > 0): every
    /// [`ARCHIVE_EVERY`], starting now, archive what finished more than
    /// `days` ago, as `system`.
    pub fn start_archiver(
        self: &Arc<Self>,
        days: u32,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) {
        let this = self.clone();
        tracker.spawn(
            async move {
                let mut ticker = tokio::time::interval(ARCHIVE_EVERY);
                // After a stall one run catches up everything.
                ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => break,
                        _ = ticker.tick() => {
                            let before = archive_cutoff(this.clock.wall_micros(), days);
                            let corr = CorrelationId::parse_or_new("");
                            let run = match corr {
                                Ok(c) => this.archive(before, ActorId::system(), c).await,
                                Err(e) => Err(e),
                            };
                            // A failed run is logged; the next tick retries.
                            if let Err(e) = run {
                                tracing::warn!(error = %e, "archive run failed");
                            }
                        }
                    }
                }
            }
            .instrument(tracing::info_span!("archiver", days)),
        );
    }
}

/// `--archive-after-days`: tasks that finished before this instant (unix
/// micros) are archived at `now`.
fn archive_cutoff(now: i64, days: u32) -> i64 {
    now.saturating_sub(i64::from(days) * 24 * 3600 * 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutoff_is_exactly_days_before_now() {
        let day = 24 * 3600 * 1_000_000_i64;
        let now = 1_800_000_000_000_000;
        let cutoff = archive_cutoff(now, 30);
        assert_eq!(cutoff, now - 30 * day);
        // A task that finished a microsecond before the cutoff is archived
        // (finished_at < cutoff), one that finished at it is not yet.
        assert!(now - 30 * day - 1 < cutoff);
        assert!(now - 30 * day >= cutoff);
        assert_eq!(archive_cutoff(5, 36_500), 5 - 36_500 * day);
        assert_eq!(archive_cutoff(i64::MIN + 1, 1), i64::MIN);
    }

    #[test]
    fn a_batch_is_followed_by_a_pause_as_long_as_itself() {
        let ms = Duration::from_millis;
        assert_eq!(pause_after(Duration::ZERO), Duration::ZERO);
        assert_eq!(pause_after(ms(3)), ms(3));
        assert_eq!(pause_after(MAX_PAUSE), MAX_PAUSE);
        assert_eq!(pause_after(ms(60_000)), MAX_PAUSE);
    }

    #[test]
    fn batches_shrink_when_slow_and_grow_when_fast() {
        let ms = Duration::from_millis;
        assert_eq!(next_batch(32, ms(10)), 16);
        assert_eq!(next_batch(32, Duration::from_micros(100)), 64);
        assert_eq!(next_batch(32, BATCH_TARGET), 32);
        assert_eq!(next_batch(1, ms(100)), 1);
        assert_eq!(next_batch(MAX_BATCH, Duration::ZERO), MAX_BATCH);
        // Both sides of the band.
        assert_eq!(next_batch(32, BATCH_TARGET * 2), 32);
        assert_eq!(
            next_batch(32, BATCH_TARGET * 2 + Duration::from_nanos(1)),
            16
        );
        assert_eq!(next_batch(32, BATCH_TARGET / 2), 32);
        assert_eq!(
            next_batch(32, BATCH_TARGET / 2 - Duration::from_nanos(1)),
            64
        );
    }
}
