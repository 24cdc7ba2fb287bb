//! The store port: everything the core asks of the database, and the
//! vocabulary of its writes.
//!
//! Writes are [`Command`]s (task commands) and [`PodCommand`]s (pod
//! supervision): each names the row it decides on, and an adapter runs it
//! atomically, deciding races by conditional updates (a claim applies only
//! to an inactive task; a pod command only while the row still has that
//! pod), appending its events and updating the `tasks` row in the same
//! transaction. Reads are the queries the core and the API need.
//!
//! Adapters: `store::Store` (SQLite, the single group-committing writer and
//! a read pool: production) and `store::memory::MemoryStore` (the same SQL
//! run inline on one connection, no threads: the simulator and unit
//! tests). `store::postgres::PgStore` implements it on PostgreSQL with its
//! own SQL for the same commands.
//!
//! Store health is part of the port: while the store cannot be written
//! (its circuit breaker is open), [`TaskStore::writable`] is false, writes
//! fail at once with EVENT_STORE_UNAVAILABLE, and
//! [`TaskStore::until_writable`] resolves when it takes writes again.

use futures::future::BoxFuture;

use crate::domain::timeout::Timer;
use crate::domain::{
    ActorId, Cause, CorrelationId, EndReport, EventRecord, EventsQuery, Finish, ListQuery, NewTask,
    Page, Phase, PodInfo, PodRef, PodStatus, QueueHead, RestartDefaults, TaskFilter, TaskId,
    TaskRecord,
};
use crate::error::{Error, Result};

/// The database, as the core uses it.
pub trait TaskStore: Send + Sync + 'static {
    /// Runs a write and returns its outcome once it is durable.
    fn write(&self, command: Command) -> BoxFuture<'_, Result<Outcome>>;

    /// [`Self::write`], calling `queued` once a write submitted after it
    /// is sure to commit after it (a store that commits in submission
    /// order calls it as soon as the write is queued; this default, only
    /// after the write is done).
    fn write_ordered<'a>(
        &'a self,
        command: Command,
        queued: Box<dyn FnOnce() + Send + 'a>,
    ) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(async move {
            let r = self.write(command).await;
            queued();
            r
        })
    }

    /// Whether writes are taken (false while the store is known to be
    /// unwritable: writes then fail at once).
    fn writable(&self) -> bool;

    /// Resolves once the store takes writes again (at once if it does).
    fn until_writable(&self) -> BoxFuture<'static, ()>;

    /// One task.
    fn task(&self, id: TaskId) -> BoxFuture<'_, Result<Option<TaskRecord>>>;

    /// One task, live or else archived (GetTask with `include_archived`).
    fn task_or_archived(&self, id: TaskId) -> BoxFuture<'_, Result<Option<TaskRecord>>>;

    /// ListTasks (one page, at most 4 MiB).
    fn list_tasks<'a>(&'a self, q: &'a ListQuery) -> BoxFuture<'a, Result<Page<TaskRecord>>>;

    /// CountTasks.
    fn count_tasks<'a>(&'a self, f: &'a TaskFilter) -> BoxFuture<'a, Result<u64>>;

    /// Whether the task exists.
    fn task_exists(&self, id: TaskId) -> BoxFuture<'_, Result<bool>>;

    /// GetTaskEvents (one page, at most 4 MiB).
    fn task_events<'a>(&'a self, q: &'a EventsQuery) -> BoxFuture<'a, Result<Page<EventRecord>>>;

    /// Events after position `after` (of one task, or all), oldest first,
    /// at most `limit`.
    fn events_after(
        &self,
        after: u64,
        task: Option<TaskId>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<EventRecord>>>;

    /// Tasks with a pod starting, running or unknown, after `after` by task
    /// id (one page, at most 4 MiB).
    fn active_pods(&self, after: Option<TaskId>) -> BoxFuture<'_, Result<Page<(TaskId, PodInfo)>>>;

    /// How many tasks have a pod starting, running or unknown.
    fn count_active_pods(&self) -> BoxFuture<'_, Result<u64>>;

    /// The current pods the rows place on `host_id`.
    fn pods_on_host<'a>(
        &'a self,
        host_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(PodRef, PodStatus)>>>;

    /// Hosts that run pods according to the database.
    fn hosts_with_pods(&self) -> BoxFuture<'_, Result<Vec<String>>>;

    /// Scheduled automatic restarts: (task, due at unix µs).
    fn scheduled_restarts(&self) -> BoxFuture<'_, Result<Vec<(TaskId, i64)>>>;

    /// The earliest run timeout or deadline (unix µs), if any.
    fn earliest_timer(&self) -> BoxFuture<'_, Result<Option<i64>>>;

    /// Run timeouts and deadlines due at `now`, earliest first, at most
    /// `limit` of each kind.
    fn due_timers(&self, now: i64, limit: u32) -> BoxFuture<'_, Result<Vec<Timer>>>;

    /// The head of every template's queue (the task the dispatcher starts
    /// next there), by template name.
    fn queue_heads(&self) -> BoxFuture<'_, Result<Vec<(String, QueueHead)>>>;

    /// The head of one template's queue.
    fn queue_head<'a>(&'a self, template: &'a str) -> BoxFuture<'a, Result<Option<QueueHead>>>;

    /// The first `limit` entries of one template's queue, in the order the
    /// dispatcher starts them.
    fn queue_front<'a>(
        &'a self,
        template: &'a str,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<QueueHead>>>;

    /// How many tasks wait, per priority, and when the oldest was queued.
    fn queue_stats(&self) -> BoxFuture<'_, Result<QueueStats>>;
}

/// The queue at a glance (metrics, GetStats).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Queued tasks per priority (every priority, lowest first).
    pub depth: Vec<(crate::domain::Priority, u64)>,
    /// When the longest-waiting task was queued, unix µs.
    pub oldest_queued_at: Option<i64>,
}

impl dyn TaskStore {
    /// EVENT_STORE_UNAVAILABLE at once while the store is known to be
    /// unwritable: for operations that act before they write.
    pub fn ensure_writable(&self) -> Result<()> {
        if self.writable() {
            Ok(())
        } else {
            Err(Error::StoreUnavailable(
                "circuit breaker open: the database could not be written".into(),
            ))
        }
    }

    /// Runs a pod supervision command.
    pub async fn pod(&self, command: PodCommand) -> Result<PodOutcome> {
        self.pod_ordered(command, Box::new(|| {})).await
    }

    /// [`Self::pod`] through [`TaskStore::write_ordered`].
    pub async fn pod_ordered(
        &self,
        command: PodCommand,
        queued: Box<dyn FnOnce() + Send + '_>,
    ) -> Result<PodOutcome> {
        match self.write_ordered(Command::Pod(command), queued).await? {
            Outcome::Pod(o) => Ok(o),
            other => Err(Error::Internal(format!("unexpected outcome {other:?}"))),
        }
    }
}

/// A write, as sent to the writer.
#[derive(Debug, Clone)]
pub enum Command {
    /// CreateTask with a pre-generated id.
    CreateTask {
        /// Id for the new task.
        task_id: TaskId,
        /// The validated request.
        task: Box<NewTask>,
        /// Initial `pod_message` (why an auto_start did not start a pod).
        pod_message: String,
    },
    /// CompleteTask / CancelTask.
    Finish {
        /// The task.
        task_id: TaskId,
        /// Which terminal command.
        finish: Finish,
        /// Caller.
        actor: ActorId,
        /// Correlation id.
        correlation: CorrelationId,
        /// CancelTask's reason.
        reason: Option<String>,
    },
    /// Pod supervision (see `store::pods`).
    Pod(PodCommand),
    /// The queue (see `store::queue`).
    Queue(super::queue::QueueWrite),
    /// Schedules (see [`super::schedules`]).
    Schedule(super::schedules::ScheduleWrite),
    /// Archive, delete, bulk cancel (see [`super::retention`]).
    Retention(super::retention::RetentionWrite),
    /// Forget idempotency keys created at or before this time.
    PruneIdempotency {
        /// Unix micros.
        up_to: i64,
    },
    /// A task's deadline passed: fails it if it is still live with that
    /// deadline (see `store::timeouts`).
    Deadline {
        /// The task.
        task_id: TaskId,
        /// The deadline the timer saw, unix µs.
        at: i64,
    },
    /// The circuit breaker's probe: rewrites one small row, so it fails
    /// exactly when real writes would (full disk, read-only file, lock).
    Probe,
}

impl Command {
    /// Whether this is the breaker's probe (the only write let through
    /// while the breaker is open).
    pub fn is_probe(&self) -> bool {
        matches!(self, Self::Probe)
    }

    /// Whether this is background bulk work (an archive batch) that runs
    /// in a transaction of its own, so the commands queued with it neither
    /// wait for its statements inside their transaction nor make it wait.
    pub fn is_bulk(&self) -> bool {
        matches!(
            self,
            Self::Retention(crate::core::ports::retention::RetentionWrite::ArchiveBatch { .. })
        )
    }
}

/// What a successful command returns to its caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// CreateTask: the task, and whether it was created by this call (false
    /// for an idempotent repeat).
    Task {
        /// The task.
        task: Box<TaskRecord>,
        /// Created now (false: the first call's task was returned).
        created: bool,
    },
    /// Finish: the pod that must be stopped, if one was starting, running
    /// or unknown.
    Finished {
        /// The pod to stop, with its host.
        stop_pod: Option<(PodRef, String)>,
    },
    /// A pod supervision command's result.
    Pod(PodOutcome),
    /// A queue write's result.
    Queue(super::queue::QueueOutcome),
    /// A schedule write's result.
    Schedule(super::schedules::ScheduleOutcome),
    /// A retention write's result.
    Retention(super::retention::RetentionOutcome),
    /// PruneIdempotency: rows removed.
    Pruned(u64),
    /// Probe: the database took a write.
    Probed,
    /// Deadline: whether it failed the task (false: terminal already, or
    /// the deadline changed), and the pod to stop with its host.
    DeadlineExceeded {
        /// The task was failed by this command.
        failed: bool,
        /// The pod to stop, with its host.
        stop_pod: Option<(PodRef, String)>,
    },
}

/// A pod supervision write.
#[derive(Debug, Clone)]
pub enum PodCommand {
    /// StartPod's claim: the conditional update that decides races. Bumps
    /// the generation and records the placement; no event yet.
    Claim {
        task_id: TaskId,
        pod_id: String,
        host_id: String,
        cause: Cause,
        /// An automatic restart: applies only while one is still scheduled,
        /// and counts in `restart_count`.
        automatic: bool,
    },
    /// The pod-host confirmed the start: `pod_started`.
    Started {
        pod: PodRef,
        pid: u32,
        started_at: i64,
        host_id: String,
        cause: Cause,
    },
    /// The pod-host refused or failed the start: back to inactive, no event
    /// (nothing ran). `retry_at` (an automatic restart's) keeps the restart
    /// scheduled for then, so a refused restart is tried again.
    AbortStart {
        pod: PodRef,
        message: String,
        retry_at: Option<i64>,
        /// The claim took the task out of the queue: back into it, in its
        /// old place (no event: nothing ran).
        requeue: Option<crate::domain::QueueEntry>,
    },
    /// The pod ended (exit, stop, loss): the ending's event, then the
    /// restart policy. `host_id` is the host that reported or stopped it.
    Ended {
        pod: PodRef,
        host_id: String,
        report: EndReport,
        cause: Cause,
        defaults: RestartDefaults,
        jitter: f64,
    },
    /// The pod reported a new phase: `phase_changed`. `coalesced` counts
    /// the phase changes folded into this one by the rate limit.
    PhaseChanged {
        pod: PodRef,
        host_id: String,
        phase: Phase,
        version: u64,
        message: String,
        coalesced: u32,
    },
    /// The host of these pods went silent: their status becomes UNKNOWN.
    HostUnreachable { host_id: String },
    /// The current pod is confirmed alive (host back): RUNNING again,
    /// `pod_recovered` if it was UNKNOWN, `pod_started` if still STARTING.
    Recovered {
        pod: PodRef,
        pid: u32,
        started_at: i64,
        host_id: String,
    },
    /// A stale pod was killed: `pod_fenced` on its task.
    Fenced {
        pod: PodRef,
        host_id: String,
        reason: String,
    },
    /// Forget crashes at or before this time (unix micros).
    PruneCrashes { up_to: i64 },
}

/// What the task needs to start a pod, returned by a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedPod {
    pub generation: u64,
    pub correlation: String,
    pub title: String,
    pub description: String,
    pub metadata_json: String,
    pub template: String,
    /// The queue entry the claim took the task out of (a start from the
    /// queue): a refused start puts it back in its old place.
    pub queued: Option<crate::domain::QueueEntry>,
}

/// Result of a [`PodCommand`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodOutcome {
    /// Claim succeeded.
    Claimed(ClaimedPod),
    /// Applied. `restart_at`: an automatic restart is due then (unix µs).
    Applied { restart_at: Option<i64> },
    /// The row no longer has that pod (or nothing to do): no change.
    Ignored,
    /// Rows changed (HostUnreachable, PruneCrashes).
    Count(u64),
    /// The reporting host does not own that pod: nothing changed.
    NotOwner,
}
