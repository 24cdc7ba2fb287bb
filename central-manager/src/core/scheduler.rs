//! The firing loop: one background task that fires every due schedule.
//! It is driven by a timer computed from stored state: it reads the
//! earliest `next_fire_at` (an index lookup), sleeps on the [`Clock`] until
//! then, fires what is due, and computes the next wake-up. It also wakes
//! when a schedule is created, resumed or deleted, and when a task that a
//! BUFFER_ONE fire waits for ends (from the committed event feed), so
//! nothing is polled.
//!
//! One tick's work is [`Scheduler::tick`]; a failed tick is logged and
//! retried after [`RETRY`]. Sleeps are capped at [`MAX_SLEEP`], so a
//! wall-clock step is noticed within a minute.
//!
//! At start it also starts the pods of fired tasks that never got one
//! (central-manager stopped between a fire's commit and the start), and it
//! prunes the `schedule_fires` rows older than a day every hour.
//!
//! This is a leader duty (see `server::start_leader_duties`): with several
//! replicas, only the leader runs it. Two loops firing the same schedule
//! would still make one task per fire time (the fire is conditional on
//! `next_fire_at` and the fire time is a primary key), but the follow-up
//! pod starts belong to the leader.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::ports::schedules::{FireKind, FireOutcome, ScheduleWrite};
use super::schedules::ScheduleService;
use crate::domain::schedule::ScheduleId;
use crate::domain::{Cause, EventRecord, EventType, TaskId};
use crate::error::Result;
use crate::watch::EventHub;

/// Longest sleep between looks at the schedules: bounds how late a fire
/// can be after a wall-clock step, at the cost of one index lookup a
/// minute.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Delay before a failed tick is retried (the store was unavailable).
pub const RETRY: Duration = Duration::from_secs(1);
/// Due schedules read per query.
const DUE_PAGE: u32 = 256;
/// Fires in flight at once (each is one writer command; concurrent ones
/// share group commits).
const FIRES_IN_FLIGHT: usize = 64;
/// How often old `schedule_fires` rows are pruned, and how old they get.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const FIRES_KEPT: Duration = Duration::from_secs(24 * 3600);

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// When to wake next: at the earliest fire time, but no later than
/// [`MAX_SLEEP`] from `now`.
pub fn wake_at(now: i64, earliest: Option<i64>) -> i64 {
    let cap = now.saturating_add(micros(MAX_SLEEP));
    earliest.map_or(cap, |at| at.min(cap))
}

/// Whether `e` ends its task (what a buffered fire waits for).
fn ends_task(e: &EventRecord) -> bool {
    [
        EventType::TaskCompleted,
        EventType::TaskCancelled,
        EventType::TaskFailed,
    ]
    .iter()
    .any(|t| t.as_str() == e.event_type)
}

/// The firing loop.
pub struct Scheduler {
    schedules: Arc<ScheduleService>,
    hub: EventHub,
    /// Buffered fires by the task whose end starts them.
    waiting: HashMap<TaskId, ScheduleId>,
    last_prune: Option<i64>,
}

impl Scheduler {
    /// A loop over `schedules`, following committed events on `hub`.
    pub fn new(schedules: Arc<ScheduleService>, hub: EventHub) -> Self {
        Self {
            schedules,
            hub,
            waiting: HashMap::new(),
            last_prune: None,
        }
    }

    /// Runs the loop on `tracker` until `shutdown`.
    pub fn start(self, tracker: &TaskTracker, shutdown: CancellationToken) {
        tracker.spawn(
            self.run(shutdown)
                .instrument(tracing::info_span!("scheduler")),
        );
    }

    async fn run(mut self, shutdown: CancellationToken) {
        // Subscribed before anything is read, so no end of a waited-for
        // task falls between the read and the subscription.
        let mut ended = self.hub.follow();
        if let Err(e) = self.recover().await {
            tracing::warn!(error = %e, "restarting unstarted scheduled tasks failed");
        }
        let clock = self.schedules.clock().clone();
        let changed = self.schedules.changed().clone();
        loop {
            let wake = match self.tick().await {
                Ok(earliest) => wake_at(clock.wall_micros(), earliest),
                Err(e) => {
                    tracing::warn!(error = %e, "schedule tick failed; retrying");
                    clock.wall_micros().saturating_add(micros(RETRY))
                }
            };
            let mut sleep = std::pin::pin!(tokio::time::sleep_until(clock.instant_of(wake)));
            // Wait for the timer, a change, or the end of a task a
            // buffered fire waits for.
            loop {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return,
                    () = changed.notified() => break,
                    () = &mut sleep => break,
                    e = ended.recv() => match e {
                        Ok(e) => {
                            if ends_task(&e) && let Some(id) = self.waiting.remove(&e.task_id) {
                                self.fire_buffered(id).await;
                            }
                        }
                        // Missed events: the tick re-reads who waits.
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        }
    }

    /// One tick at the clock's now: fires every due schedule (again while
    /// some are due: a catch-up fires its missed times one after the
    /// other), starts buffered fires whose previous task has ended, prunes
    /// old fire rows hourly. Returns the earliest next fire time.
    pub async fn tick(&mut self) -> Result<Option<i64>> {
        let store = self.schedules.store().clone();
        loop {
            let now = self.schedules.clock().wall_micros();
            let due = store.due_schedules(now, DUE_PAGE).await?;
            if due.is_empty() {
                break;
            }
            let results: Vec<_> = futures::stream::iter(due)
                .map(|(id, at)| {
                    let s = self.schedules.clone();
                    async move { (id, s.fire(id, FireKind::Due { at }).await) }
                })
                .buffer_unordered(FIRES_IN_FLIGHT)
                .collect()
                .await;
            for (id, r) in results {
                if let FireOutcome::Buffered { previous } = r? {
                    self.waiting.insert(previous, id);
                }
            }
        }
        self.start_ready_buffers().await?;
        self.prune().await?;
        store.earliest_fire().await
    }

    /// Re-reads the buffered fires: starts those whose previous task has
    /// ended (or is gone) and waits for the others.
    async fn start_ready_buffers(&mut self) -> Result<()> {
        let store = self.schedules.store().clone();
        self.waiting.clear();
        for (id, previous) in store.buffered_schedules().await? {
            let running = match previous {
                Some(t) => store
                    .task(t)
                    .await?
                    .is_some_and(|task| !task.status.is_terminal()),
                None => false,
            };
            match (running, previous) {
                (true, Some(t)) => {
                    self.waiting.insert(t, id);
                }
                _ => self.fire_buffered(id).await,
            }
        }
        Ok(())
    }

    async fn fire_buffered(&mut self, id: ScheduleId) {
        match self.schedules.fire(id, FireKind::Buffered).await {
            Ok(FireOutcome::Buffered { previous }) => {
                self.waiting.insert(previous, id);
            }
            Ok(_) => {}
            // The next tick re-reads the buffered fires and tries again.
            Err(e) => tracing::warn!(schedule_id = %id, error = %e, "buffered fire failed"),
        }
    }

    /// Starts the pods of tasks fired in the last day that never got a start
    /// (central-manager stopped between the fire's commit and the start):
    /// "a fire's task is always started".
    async fn recover(&self) -> Result<()> {
        let since = self.schedules.clock().wall_micros() - micros(FIRES_KEPT);
        let store = self.schedules.store();
        for task_id in store.unstarted_fires(since).await? {
            tracing::info!(%task_id, "starting a scheduled task left unstarted");
            let s = self.schedules.clone();
            drop(self.schedules.tasks().spawn_operation(async move {
                s.start_fired(task_id, Cause::system()).await;
                Ok(())
            }));
        }
        Ok(())
    }

    async fn prune(&mut self) -> Result<()> {
        let now = self.schedules.clock().wall_micros();
        if self
            .last_prune
            .is_some_and(|at| now - at < micros(PRUNE_EVERY))
        {
            return Ok(());
        }
        self.schedules
            .store()
            .schedule(ScheduleWrite::PruneFires {
                up_to: now - micros(FIRES_KEPT),
            })
            .await?;
        self.last_prune = Some(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakes_at_the_earliest_fire_or_the_cap() {
        let now = 1_000_000_000;
        let cap = micros(MAX_SLEEP);
        assert_eq!(wake_at(now, None), now + cap);
        assert_eq!(wake_at(now, Some(now + 5)), now + 5);
        assert_eq!(wake_at(now, Some(now + cap)), now + cap);
        assert_eq!(wake_at(now, Some(now + cap + 1)), now + cap);
        // A fire time already past: wake at once.
        assert_eq!(wake_at(now, Some(now - 10)), now - 10);
    }

    #[test]
    fn only_terminal_events_end_a_task() {
        let e = |t: &str| EventRecord {
            position: 1,
            task_id: TaskId::new(),
            version: 1,
            event_type: t.into(),
            data_json: "{}".into(),
            actor_id: "a".into(),
            correlation_id: "c".into(),
            occurred_at: 0,
        };
        for t in ["task_completed", "task_cancelled", "task_failed"] {
            assert!(ends_task(&e(t)), "{t}");
        }
        for t in ["pod_exited", "pod_crashed", "task_created", "phase_changed"] {
            assert!(!ends_task(&e(t)), "{t}");
        }
    }
}
