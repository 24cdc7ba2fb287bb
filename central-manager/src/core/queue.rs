//! The queue's decisions: StartPod with `queue` (start now, or wait), and
//! the dispatcher that starts queued tasks as room appears.
//!
//! Where things live (docs/architecture.md "The queue"): the queue itself
//! is rows of the `tasks` table (`store::queue`), ordered by (priority
//! DESC, enqueue sequence) per template, so it is durable and a restart
//! keeps its order. Capacity is the host directory's (the same slot
//! reservation StartPod makes). A start from the queue is the ordinary
//! claim (`Pods::start_queued`): a conditional update in the database
//! that succeeds for exactly one of StartPod and the dispatcher on one
//! task.
//!
//! The dispatcher is one background loop, woken (never polling) when room
//! may have appeared (the directory's room signal: a pod ended, a start
//! finished, a host joined, came back or reported a new count) or when
//! the queue changed (a task was queued or left it). Each pass walks the
//! templates with queued tasks and starts each one's head until that
//! template has no room (NO_POD_HOST), then moves to the next template, so
//! a full template never holds back another one's queue. Strict priority
//! (`domain::queue`): the head is always the highest priority, first
//! queued.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::pods::{Pods, Turn};
use super::ports::queue::{QueueOutcome, QueueWrite};
use crate::domain::queue::must_wait_behind;
use crate::domain::{Cause, PodInfo, PodStatus, TaskId, decide_start, ensure_not_terminal};
use crate::error::{Error, Result};
use crate::store::{Command, Outcome};

/// Delay before a pass that failed (the store unreadable or unwritable)
/// is tried again; the room and queue signals wake it sooner.
const RETRY: Duration = Duration::from_secs(1);

/// What a StartPod with `queue` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartOrQueue {
    /// A pod was started.
    Started(PodInfo),
    /// The task waits in the queue (now or already).
    Queued,
}

/// Wakes the dispatcher when the queue changed. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct QueueSignal(Arc<Notify>);

impl QueueSignal {
    /// The queue changed: the dispatcher looks again (a wake while it is
    /// busy is kept for after its pass).
    pub fn changed(&self) {
        self.0.notify_one();
    }

    async fn wait(&self) {
        self.0.notified().await;
    }
}

impl Pods {
    /// StartPod with `queue` (and CreateTask's auto_start with `queue`, a
    /// schedule's fire): starts the pod when a host has room and no task
    /// of the same or a higher priority waits for the template; queues it
    /// otherwise. A task already queued stays where it is.
    pub async fn start_or_queue(&self, task_id: TaskId, cause: Cause) -> Result<StartOrQueue> {
        let task = self.writable_task(task_id).await?;
        ensure_not_terminal(task_id, task.status)?;
        if task.pod_status == PodStatus::Queued {
            return Ok(StartOrQueue::Queued);
        }
        decide_start(task_id, task.status, task.pod_status)?;
        let store = self.ports().store.clone();
        let head = store.queue_head(task.template.as_str()).await?;
        if must_wait_behind(task.priority, head.as_ref()) {
            let message = "waiting behind queued tasks of the same or a higher priority";
            return self.enqueue(task_id, cause, message.to_owned()).await;
        }
        match self.start(task_id, cause.clone(), false).await {
            Ok(Some(pod)) => Ok(StartOrQueue::Started(pod)),
            Ok(None) => Err(Error::AlreadyStarted(task_id)),
            Err(Error::NoPodHost(message)) => {
                self.enqueue(task_id, cause, format!("NO_POD_HOST: {message}"))
                    .await
            }
            Err(Error::DependenciesNotMet(_, dep)) => {
                let message = format!("waiting for dependency {dep} to complete");
                self.enqueue(task_id, cause, message).await
            }
            Err(e) => Err(e),
        }
    }

    async fn enqueue(
        &self,
        task_id: TaskId,
        cause: Cause,
        message: String,
    ) -> Result<StartOrQueue> {
        let w = QueueWrite::Enqueue {
            task_id,
            cause,
            message,
        };
        match self.ports().store.write(Command::Queue(w)).await? {
            Outcome::Queue(QueueOutcome::Queued { .. }) => {
                // Room may have appeared between the placement that failed
                // and this commit: the dispatcher looks again.
                self.queue_signal().changed();
                Ok(StartOrQueue::Queued)
            }
            other => Err(Error::Internal(format!("unexpected outcome {other:?}"))),
        }
    }

    /// StopPod on a queued task: out of the queue. `false` when it was no
    /// longer queued at commit (the dispatcher started it meanwhile).
    pub(super) async fn unqueue(
        &self,
        task_id: TaskId,
        cause: Cause,
        reason: &str,
    ) -> Result<bool> {
        let w = QueueWrite::Unqueue {
            task_id,
            cause,
            reason: reason.to_owned(),
        };
        match self.ports().store.write(Command::Queue(w)).await? {
            Outcome::Queue(QueueOutcome::Removed) => {
                self.queue_signal().changed();
                Ok(true)
            }
            Outcome::Queue(QueueOutcome::NotQueued) => Ok(false),
            other => Err(Error::Internal(format!("unexpected outcome {other:?}"))),
        }
    }
}

/// Returns when a committed event puts a task in the queue because its
/// last dependency completed (or events were missed, which may have
/// included one); never without a follower.
async fn entered_queue(events: &mut Option<crate::watch::Follower>) {
    use tokio::sync::broadcast::error::RecvError;
    let Some(f) = events.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        match f.recv().await {
            Ok(e) if released(&e) => return,
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => return,
            Err(RecvError::Closed) => {
                *events = None;
                return std::future::pending().await;
            }
        }
    }
}

/// A `pod_queued` written because the task's last dependency completed.
fn released(e: &crate::domain::EventRecord) -> bool {
    e.event_type == crate::domain::EventType::PodQueued.as_str()
        && e.actor_id == crate::domain::SYSTEM_ACTOR
        && serde_json::from_str::<serde_json::Value>(&e.data_json)
            .is_ok_and(|d| d.get(crate::domain::dependencies::RELEASED_BY).is_some())
}

/// The dispatcher loop.
pub struct Dispatcher {
    pods: Pods,
    /// Committed events: a `pod_queued` with `dependency_completed` is a
    /// task entering the queue inside some other write (its last dependency completed, in
    /// the transaction of that completion, whichever path wrote it: an RPC,
    /// a pod's exit, a host's report), which no caller signals.
    events: Option<crate::watch::Follower>,
}

/// At most this many starts of one template run at once: enough to keep
/// the pod-hosts busy, few enough that a pass stays short.
const IN_FLIGHT: usize = 64;

/// A start of a queued task the dispatcher launched.
type StartFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = (TaskId, Result<Option<PodInfo>>)> + Send + 'a>,
>;

/// What one launch round did.
enum Launch<'a> {
    /// Room reserved for these heads; their starts are to be polled.
    Started(Vec<(TaskId, StartFuture<'a>)>),
    /// No head left to start (the queue is empty, or every head is busy).
    Nothing,
    /// The template has no room for its next head.
    Full,
}

/// How one template's pass ended.
#[derive(Debug, PartialEq, Eq)]
enum TemplatePass {
    /// Its queue is empty.
    Emptied,
    /// No room for its head.
    Full,
}

impl Dispatcher {
    /// A dispatcher over `pods`.
    pub fn new(pods: Pods) -> Self {
        Self { pods, events: None }
    }

    /// Also wakes on tasks that enter the queue as a consequence of
    /// another write (see [`Dispatcher::events`]).
    pub fn following(mut self, events: crate::watch::Follower) -> Self {
        self.events = Some(events);
        self
    }

    /// Runs the loop on `tracker` until `shutdown`.
    pub fn start(self, tracker: &TaskTracker, shutdown: CancellationToken) {
        tracker.spawn(
            self.run(shutdown)
                .instrument(tracing::info_span!("dispatcher")),
        );
    }

    async fn run(mut self, shutdown: CancellationToken) {
        let mut events = self.events.take();
        let signal = self.pods.queue_signal().clone();
        let hosts = self.pods.hosts().clone();
        let clock = self.pods.ports().clock.clone();
        let misses_room = self.pods.ports().bugs.dispatcher_misses_room;
        loop {
            // One pass; the signals that fire during it are kept (Notify
            // permits), so a change during the pass causes another one.
            let retry =
                match self.pass().await {
                    Ok(()) => None,
                    Err(e) => {
                        tracing::warn!(error = %e, "dispatch pass failed; retrying");
                        Some(clock.instant_of(
                            clock.wall_micros().saturating_add(
                                i64::try_from(RETRY.as_micros()).unwrap_or(i64::MAX),
                            ),
                        ))
                    }
                };
            let sleep = async {
                match retry {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let room = async {
                if misses_room {
                    std::future::pending::<()>().await;
                }
                hosts.room_changed().await;
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = signal.wait() => {}
                () = room => {}
                () = sleep => {}
                () = entered_queue(&mut events) => {}
            }
        }
    }

    /// One pass over every template with queued tasks.
    pub async fn pass(&self) -> Result<()> {
        let heads = self.pods.ports().store.queue_heads().await?;
        for (template, _) in heads {
            self.drain_template(&template).await?;
        }
        Ok(())
    }

    /// Starts `template`'s queued tasks, head first, until it is empty or
    /// full. Room is reserved one head at a time, in queue order, so the
    /// order of the starts is the queue's; the claims and the pod-hosts'
    /// spawns then run concurrently (at most [`IN_FLIGHT`] at once), so the
    /// rate of a drain is not one host round trip per task, and each
    /// outcome is written in dispatch order (a [`Turn`]), so the trail's
    /// `pod_started` events follow the queue's order. A head whose
    /// start failed for another reason (it crashed at spawn, its host's
    /// answer was lost) has left the queue or is handled by the pod rules;
    /// if it is still queued, the pass launches nothing more (the next
    /// room or queue signal retries), so it never spins or starts a task
    /// behind it.
    async fn drain_template(&self, template: &str) -> Result<TemplatePass> {
        let mut in_flight = FuturesUnordered::new();
        let mut busy: HashSet<TaskId> = HashSet::new();
        let mut last_turn = None;
        let mut outcome: Option<Result<TemplatePass>> = None;
        loop {
            if outcome.is_none() && in_flight.len() < IN_FLIGHT {
                match self
                    .launch(template, &busy, IN_FLIGHT - in_flight.len(), &mut last_turn)
                    .await
                {
                    Ok(Launch::Started(batch)) => {
                        for (task_id, fut) in batch {
                            busy.insert(task_id);
                            in_flight.push(fut);
                        }
                    }
                    Ok(Launch::Nothing) if in_flight.is_empty() => {
                        outcome = Some(Ok(TemplatePass::Emptied));
                    }
                    Ok(Launch::Nothing) => {}
                    Ok(Launch::Full) => outcome = Some(Ok(TemplatePass::Full)),
                    Err(e) => outcome = Some(Err(e)),
                }
            }
            // Every launched start runs to its end: a claim dropped half way
            // would leave a row STARTING with no start on its way.
            let Some((task_id, result)) = in_flight.next().await else {
                if let Some(o) = outcome {
                    return o;
                }
                continue;
            };
            busy.remove(&task_id);
            let still_queued = match result {
                Ok(Some(_)) => false,
                Err(Error::NoPodHost(_)) => {
                    outcome.get_or_insert(Ok(TemplatePass::Full));
                    false
                }
                Err(e @ Error::StoreUnavailable(_)) => {
                    outcome = Some(Err(e));
                    false
                }
                Ok(None) => true,
                Err(e) => {
                    tracing::info!(%task_id, error = %e, "queued task did not start");
                    true
                }
            };
            // Not started and still queued (nothing changed): launch
            // nothing more rather than start behind it or spin; the next
            // room or queue signal retries.
            if still_queued && matches!(self.pods.queued_task(task_id).await, Ok(Some(_))) {
                outcome.get_or_insert(Ok(TemplatePass::Full));
            }
        }
    }

    /// Reserves room for up to `n` heads of `template`'s queue not already
    /// starting (`busy`), in queue order, and returns their starts, not yet
    /// polled.
    async fn launch<'a>(
        &'a self,
        template: &str,
        busy: &HashSet<TaskId>,
        n: usize,
        last_turn: &mut Option<tokio::sync::oneshot::Receiver<()>>,
    ) -> Result<Launch<'a>> {
        let store = self.pods.ports().store.clone();
        let want = u32::try_from(n + busy.len()).unwrap_or(u32::MAX);
        let front = store.queue_front(template, want).await?;
        let mut batch: Vec<(TaskId, StartFuture<'a>)> = Vec::new();
        for head in front {
            if batch.len() >= n {
                break;
            }
            if busy.contains(&head.task_id) {
                continue;
            }
            let Some(task) = self.pods.queued_task(head.task_id).await? else {
                continue;
            };
            let placement = match self.pods.place(&task).await {
                Ok(p) => p,
                Err(Error::NoPodHost(_)) => {
                    return Ok(if batch.is_empty() {
                        Launch::Full
                    } else {
                        Launch::Started(batch)
                    });
                }
                Err(e) if batch.is_empty() => return Err(e),
                Err(_) => return Ok(Launch::Started(batch)),
            };
            let pods = &self.pods;
            let task_id = task.task_id;
            let turn = Turn::after(last_turn);
            batch.push((
                task_id,
                Box::pin(async move {
                    let r = pods
                        .start_placed(&task, placement, Cause::system(), false, Some(&turn))
                        .await;
                    (task_id, r)
                }),
            ));
        }
        Ok(if batch.is_empty() {
            Launch::Nothing
        } else {
            Launch::Started(batch)
        })
    }
}
