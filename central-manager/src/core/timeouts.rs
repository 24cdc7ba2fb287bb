//! Run timeouts and task deadlines: one background loop that stops every
//! pod running longer than its task's `timeout_seconds` (recorded as
//! `pod_timed_out`, judged by the restart policy as a crash) and fails
//! every task not terminal at its `deadline` (`task_failed` with
//! `{"reason":"deadline_exceeded"}`, its pod stopped).
//!
//! Like the schedule firing loop, it is driven by timers computed from
//! stored times, never by polling the table: it reads the earliest timer
//! (two index lookups: `pod_running_since + timeout_seconds` of running pods,
//! `deadline` of live tasks), sleeps on the [`Clock`](super::ports::Clock)
//! until then, handles what is due, and computes the next wake-up. A
//! timer is armed when a pod starts or is recovered and when a task is
//! created (it wakes on those committed events and reads again), and all of
//! them are re-armed from the store when the loop starts (start-up,
//! leadership). So a central-manager restart loses nothing: the stored
//! start time and deadline still say when each is due.
//!
//! What is due is handled as detached operations (a stop waits for the
//! pod's grace), each at most once at a time; the writes are conditional
//! (the same pod generation still running, the same deadline on a live
//! task), so a timer seen twice, or racing the pod's own exit or a user's
//! StopPod, ends the pod once. A timer whose handling failed (its host
//! unreachable, the store down) is retried after [`RETRY`].
//!
//! It is started with the supervisor (`core::wiring::start`), so the
//! simulator runs it as production does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::TaskService;
use super::ports::Clock;
use crate::domain::timeout::{Timer, wake_at};
use crate::domain::{Cause, EventRecord, EventType, TaskId};
use crate::error::{Error, Result};
use crate::store::{Command, Outcome};
use crate::watch::EventHub;

/// Longest sleep between looks at the timers: bounds how late a timer can
/// be after a wall-clock step, at the cost of two index lookups a minute.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Delay before a timer whose handling failed is tried again.
pub const RETRY: Duration = Duration::from_secs(1);
/// Due timers read per query (of each kind).
const DUE_PAGE: u32 = 256;

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// One timer's identity: a pod's timeout is per generation (a restarted
/// pod has its own), a deadline per task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Pod(TaskId, u64),
    Deadline(TaskId),
    Queue(TaskId, i64),
}

fn key(t: &Timer) -> Key {
    match t {
        Timer::PodTimeout { pod, .. } => Key::Pod(pod.task_id, pod.generation),
        Timer::Deadline { task_id, .. } => Key::Deadline(*task_id),
        Timer::QueueExpiry { task_id, seq, .. } => Key::Queue(*task_id, *seq),
    }
}

/// Whether `e` may arm a timer earlier than the loop knows of: a pod
/// started or recovered (its timeout), a task created (its deadline).
fn arms(e: &EventRecord) -> bool {
    [
        EventType::PodStarted,
        EventType::PodRecovered,
        EventType::TaskCreated,
        EventType::PodQueued,
    ]
    .iter()
    .any(|t| t.as_str() == e.event_type)
}

/// Where the loop is with one due timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Being handled.
    InFlight,
    /// Handled, or its handling failed: not again before this time (unix µs).
    RetryAt(i64),
}

/// What the loop knows besides the store: timers being handled and
/// those to retry later. Pure bookkeeping, unit-tested.
#[derive(Debug, Default)]
struct Book {
    states: HashMap<Key, State>,
}

impl Book {
    /// The due timers to handle now, marked in flight. Keys no longer due
    /// (handled, or their task moved on) are forgotten.
    fn take(&mut self, due: Vec<Timer>, now: i64) -> Vec<Timer> {
        let due_keys: std::collections::HashSet<Key> = due.iter().map(key).collect();
        self.states
            .retain(|k, s| *s == State::InFlight || due_keys.contains(k));
        let mut out = Vec::new();
        for t in due {
            let k = key(&t);
            match self.states.get(&k) {
                Some(State::InFlight) => {}
                Some(State::RetryAt(at)) if *at > now => {}
                _ => {
                    self.states.insert(k, State::InFlight);
                    out.push(t);
                }
            }
        }
        out
    }

    /// A handling ended. If the timer is still due afterwards (it failed,
    /// or it was handled and the store still shows it, e.g. a stop the
    /// host answered but whose end a newer write overtook), it is handled
    /// again at `retry_at`, never at once: the loop cannot spin on it. A
    /// timer no longer due is forgotten at the next [`Book::take`].
    fn done(&mut self, k: Key, retry_at: i64) {
        self.states.insert(k, State::RetryAt(retry_at));
    }

    /// The earliest retry, if any.
    fn next_retry(&self) -> Option<i64> {
        self.states
            .values()
            .filter_map(|s| match s {
                State::RetryAt(at) => Some(*at),
                State::InFlight => None,
            })
            .min()
    }
}

/// When to wake after a tick at `now`: at the earliest timer in the store,
/// unless that one is already due (being handled or waiting for its
/// retry), then at the earliest retry, never later than [`MAX_SLEEP`].
fn next_wake(now: i64, earliest: Option<i64>, retry: Option<i64>) -> i64 {
    let pending = earliest.filter(|at| *at > now);
    let next = match (pending, retry) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    wake_at(now, next, micros(MAX_SLEEP))
}

/// The timeout loop.
pub struct Timeouts {
    tasks: Arc<TaskService>,
    hub: EventHub,
    book: Book,
    done_tx: mpsc::UnboundedSender<Key>,
    done_rx: mpsc::UnboundedReceiver<Key>,
}

impl Timeouts {
    /// A loop over `tasks`, woken by committed events on `hub`.
    pub fn new(tasks: Arc<TaskService>, hub: EventHub) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Self {
            tasks,
            hub,
            book: Book::default(),
            done_tx,
            done_rx,
        }
    }

    /// Runs the loop on `tracker` until `shutdown`.
    pub fn start(self, tracker: &TaskTracker, shutdown: CancellationToken) {
        tracker.spawn(
            self.run(shutdown)
                .instrument(tracing::info_span!("timeouts")),
        );
    }

    fn clock(&self) -> Arc<dyn Clock> {
        self.tasks.pods().ports().clock.clone()
    }

    async fn run(mut self, shutdown: CancellationToken) {
        // Subscribed before the first read, so no start falls between.
        let mut events = self.hub.follow();
        let clock = self.clock();
        loop {
            let wake = match self.tick().await {
                Ok(wake) => wake,
                Err(e) => {
                    tracing::warn!(error = %e, "timeout tick failed; retrying");
                    clock.wall_micros().saturating_add(micros(RETRY))
                }
            };
            let mut sleep = std::pin::pin!(tokio::time::sleep_until(clock.instant_of(wake)));
            loop {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return,
                    d = self.done_rx.recv() => {
                        if let Some(k) = d {
                            let retry_at = clock.wall_micros().saturating_add(micros(RETRY));
                            self.book.done(k, retry_at);
                        }
                        break;
                    }
                    () = &mut sleep => break,
                    e = events.recv_or_big() => match e {
                        Ok(Some(e)) if !arms(&e) => {}
                        // A timer may have been armed (or events were
                        // missed): read again, once for everything queued.
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                            if !events.drain() {
                                return;
                            }
                            break;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        }
    }

    /// One look at the timers at the clock's now: starts handling every
    /// due one not already handled, and returns when to look again.
    async fn tick(&mut self) -> Result<i64> {
        let store = self.tasks.pods().ports().store.clone();
        let now = self.clock().wall_micros();
        let due = store.due_timers(now, DUE_PAGE).await?;
        for t in self.book.take(due, now) {
            let k = key(&t);
            let tasks = self.tasks.clone();
            let done = self.done_tx.clone();
            drop(self.tasks.spawn_operation(async move {
                if let Err(e) = fire(&tasks, &t).await {
                    tracing::warn!(task_id = %t.task_id(), error = %e, "timer not handled yet; retrying");
                }
                let _ = done.send(k);
                Ok(())
            }));
        }
        let earliest = store.earliest_timer().await?;
        Ok(next_wake(now, earliest, self.book.next_retry()))
    }
}

/// Handles one due timer: stops a timed-out pod (its end recorded as
/// `pod_timed_out`), or fails a task past its deadline and stops its pod.
async fn fire(tasks: &TaskService, t: &Timer) -> Result<()> {
    match t {
        Timer::QueueExpiry { task_id, seq, .. } => {
            let store = tasks.pods().ports().store.clone();
            let cmd = Command::Queue(crate::core::ports::queue::QueueWrite::Expire {
                task_id: *task_id,
                seq: *seq,
            });
            if store.write(cmd).await?
                == Outcome::Queue(crate::core::ports::queue::QueueOutcome::Removed)
            {
                tracing::info!(%task_id, "queued task expired");
            }
            Ok(())
        }
        Timer::PodTimeout {
            pod,
            host_id,
            timeout_seconds,
            ..
        } => {
            tracing::info!(task_id = %pod.task_id, pod_id = %pod.pod_id, timeout_seconds, "pod timed out");
            let reason = format!("timed out after {timeout_seconds} s");
            match tasks
                .pods()
                .stop_as(
                    pod,
                    host_id,
                    Cause::system(),
                    &reason,
                    crate::domain::Ending::TimedOut,
                )
                .await
            {
                // The host cannot be asked now: try again (the row still
                // says it runs, so the timer stays due).
                Err(e @ (Error::PodStateUnknown(_) | Error::StoreUnavailable(_))) => Err(e),
                Err(e) => {
                    tracing::info!(task_id = %pod.task_id, error = %e, "timed-out pod not stopped");
                    Ok(())
                }
                Ok(()) => Ok(()),
            }
        }
        Timer::Deadline { task_id, at } => {
            let store = tasks.pods().ports().store.clone();
            let cmd = Command::Deadline {
                task_id: *task_id,
                at: *at,
            };
            let written = store.write(cmd).await;
            match written.inspect_err(|e| tasks.pods().after_ambiguous_write(e))? {
                Outcome::DeadlineExceeded { failed, stop_pod } => {
                    if failed {
                        tracing::info!(%task_id, "task failed: deadline exceeded");
                    }
                    if let Some((pod, host)) = stop_pod {
                        tasks
                            .pods()
                            .stop_after_finish(pod, host, "deadline exceeded")
                            .await;
                    }
                    Ok(())
                }
                other => Err(Error::Internal(format!("unexpected outcome {other:?}"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PodRef;

    fn pod_timer(task: TaskId, generation: u64, at: i64) -> Timer {
        Timer::PodTimeout {
            pod: PodRef {
                task_id: task,
                pod_id: format!("p{generation}"),
                generation,
            },
            host_id: "h".into(),
            timeout_seconds: 1,
            at,
        }
    }

    #[test]
    fn a_due_timer_is_handled_once_at_a_time() {
        let (a, b) = (TaskId::new(), TaskId::new());
        let mut book = Book::default();
        let due = vec![pod_timer(a, 1, 10), Timer::Deadline { task_id: b, at: 20 }];
        assert_eq!(book.take(due.clone(), 30).len(), 2);
        // Seen again while in flight: not handled twice.
        assert!(book.take(due.clone(), 31).is_empty());
        book.done(Key::Pod(a, 1), 1_032);
        // Done and still due (the store has not caught up, or the handling
        // could not settle it): handled again only at the retry, never in
        // a tight loop; the write is conditional.
        assert!(book.take(due.clone(), 32).is_empty());
        assert_eq!(book.take(due, 1_032).len(), 1);
    }

    #[test]
    fn a_failed_timer_waits_for_its_retry() {
        let a = TaskId::new();
        let mut book = Book::default();
        let due = vec![pod_timer(a, 1, 10)];
        assert_eq!(book.take(due.clone(), 10).len(), 1);
        book.done(Key::Pod(a, 1), 1_010);
        assert_eq!(book.next_retry(), Some(1_010));
        assert!(book.take(due.clone(), 500).is_empty());
        assert_eq!(book.take(due, 1_010).len(), 1);
        assert_eq!(book.next_retry(), None);
    }

    #[test]
    fn a_new_generation_is_a_new_timer_and_old_keys_are_forgotten() {
        let a = TaskId::new();
        let mut book = Book::default();
        assert_eq!(book.take(vec![pod_timer(a, 1, 10)], 10).len(), 1);
        book.done(Key::Pod(a, 1), 2_000);
        // The pod was restarted: generation 2 has its own timer, and the
        // retry of generation 1 (no longer due) is dropped.
        assert_eq!(book.take(vec![pod_timer(a, 2, 50)], 60).len(), 1);
        assert_eq!(book.next_retry(), None);
    }

    #[test]
    fn wakes_at_the_next_pending_timer_or_retry() {
        let now = 1_000_000;
        let cap = micros(MAX_SLEEP);
        assert_eq!(next_wake(now, None, None), now + cap);
        assert_eq!(next_wake(now, Some(now + 5), None), now + 5);
        // The earliest is due already (in flight): do not spin on it.
        assert_eq!(next_wake(now, Some(now - 1), None), now + cap);
        assert_eq!(next_wake(now, Some(now - 1), Some(now + 7)), now + 7);
        assert_eq!(next_wake(now, Some(now + 9), Some(now + 7)), now + 7);
    }

    #[test]
    fn starts_and_creations_arm_timers() {
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
        for t in ["pod_started", "pod_recovered", "task_created"] {
            assert!(arms(&e(t)), "{t}");
        }
        for t in ["pod_exited", "phase_changed", "task_failed"] {
            assert!(!arms(&e(t)), "{t}");
        }
    }
}
