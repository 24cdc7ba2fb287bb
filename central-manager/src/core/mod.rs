//! The core: every task operation as a method on [`TaskService`], in domain
//! types. Commands go to the store's single writer (which applies the
//! lifecycle rules inside its transaction); queries read the `tasks` table
//! and the event store, with the live phase/version of running pods
//! overlaid from their hosts' streams. Pod operations are in [`pods`].
//!
//! Every operation that acts on a pod (StartPod, StopPod, RestartPod,
//! CreateTask with auto_start, the stop half of CompleteTask/CancelTask)
//! runs as a task of its own on [`TaskService`]'s operation tracker, and
//! the RPC only awaits it: a caller that gives up (a 2 ms deadline, a
//! dropped connection) cannot cut an operation between its claim and its
//! outcome, so nothing is left STARTING, reserved or unsupervised. Shutdown
//! waits for these operations before the writer stops.

pub mod bugs;
pub mod leadership;
pub mod logs;
pub mod pods;
pub mod ports;
pub mod pruner;
pub mod queue;
pub mod retention;
pub mod scheduler;
pub mod schedules;
pub mod supervisor;
pub mod timeouts;
pub mod wiring;

use std::future::Future;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::domain::Cause;
use crate::domain::{
    CancelTask, EventRecord, EventsQuery, Finish, ListQuery, NewTask, Page, PodInfo, PodStatus,
    RestartDefaults, StopPod, TaskCommand, TaskFilter, TaskId, TaskRecord, WatchQuery,
};
use crate::error::{Error, Result};
use crate::hosts::directory::{HostDirectory, HostView};
use crate::store::{Command, Outcome};
use crate::watch::{EventHub, WatchStream, start_watch};
use pods::Pods;
use ports::{Ports, TaskStore};

/// The task operations.
pub struct TaskService {
    ports: Ports,
    hub: EventHub,
    hosts: HostDirectory,
    pods: Pods,
    defaults: RestartDefaults,
    tracker: TaskTracker,
    /// Pod operations in flight, detached from their callers.
    ops: TaskTracker,
    /// `--watch-lag-limit-ms`.
    watch_lag_limit: std::time::Duration,
    shutdown: CancellationToken,
}

impl TaskService {
    /// A service over `ports`. Watchers are spawned on `tracker` and end on
    /// `shutdown`.
    pub fn new(
        ports: Ports,
        hub: EventHub,
        hosts: HostDirectory,
        defaults: RestartDefaults,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let pods = Pods::new(ports.clone(), hosts.clone(), defaults);
        Self {
            ports,
            hub,
            hosts,
            pods,
            defaults,
            tracker,
            ops: TaskTracker::new(),
            watch_lag_limit: std::time::Duration::from_secs(30),
            shutdown,
        }
    }

    /// Sets `--watch-lag-limit-ms` (default 30 s).
    pub fn with_watch_lag_limit(mut self, limit: std::time::Duration) -> Self {
        self.watch_lag_limit = limit;
        self
    }

    fn store(&self) -> &dyn TaskStore {
        self.ports.store.as_ref()
    }

    /// Runs `op` to completion on the operation tracker whatever happens to
    /// the caller, and returns its result to the caller if it is still
    /// there.
    pub(crate) async fn detached<T: Send + 'static>(
        &self,
        op: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        self.ops
            .spawn(op.instrument(tracing::Span::current()))
            .await
            .map_err(|e| Error::Internal(format!("pod operation task failed: {e}")))?
    }

    /// Starts `op` on the operation tracker without waiting for it (a
    /// scheduled task's pod start): shutdown still waits for it.
    pub(crate) fn spawn_operation(
        &self,
        op: impl Future<Output = Result<()>> + Send + 'static,
    ) -> tokio::task::JoinHandle<Result<()>> {
        self.ops.spawn(op.instrument(tracing::Span::current()))
    }

    /// Waits for every pod operation in flight (shutdown, before the writer
    /// stops).
    pub async fn drain_operations(&self) {
        self.ops.close();
        self.ops.wait().await;
    }

    /// The configured restart-policy defaults (to show effective policies).
    pub fn restart_defaults(&self) -> &RestartDefaults {
        &self.defaults
    }

    /// The pod operations (shared with the supervisor).
    pub fn pods(&self) -> &Pods {
        &self.pods
    }

    /// Overlays the live phase and version streamed by a running pod's host
    /// (GetTask/ListTasks never rebuild state from events).
    fn with_live(&self, mut t: TaskRecord) -> TaskRecord {
        let has_pod = matches!(
            t.pod_status,
            PodStatus::Running | PodStatus::Unknown | PodStatus::Starting
        );
        if has_pod
            && let (Some(pod), Some(live)) = (&t.pod, self.hosts.live(t.task_id))
            && live.pod_id == pod.pod_id
            && live.generation == pod.generation
            && live.host_id == pod.pod_host
        {
            if let Some(phase) = live.phase {
                t.phase = phase;
            }
            t.live_version = live.version;
        }
        t
    }

    /// CreateTask. With `auto_start` the pod is started before replying; a
    /// start failure is reported in `pod_status`/`pod_message`, the task
    /// still exists. An idempotent repeat returns the first task as it is
    /// now and starts nothing.
    pub async fn create_task(self: &Arc<Self>, task: NewTask) -> Result<TaskRecord> {
        let this = self.clone();
        self.detached(async move { this.create_task_now(task).await })
            .await
    }

    async fn create_task_now(&self, task: NewTask) -> Result<TaskRecord> {
        // A deadline is judged on the core's clock (time is an input).
        if let Some(d) = task.deadline {
            crate::domain::timeout::check_deadline("deadline", d, self.ports.clock.wall_micros())?;
        }
        // Fail fast, before a placement check that may wait for a host.
        self.store().ensure_writable()?;
        // A placement that fails already is recorded with the task, in the
        // same transaction, so GetTask shows why no pod runs. With `queue`
        // the start queues instead (after the create).
        // A task with dependencies always waits for them when auto-started
        // (docs/api.md: auto_start implies queue for it).
        let queue = task.auto_start && (task.queue || !task.depends_on.is_empty());
        let pod_message = if task.auto_start && !queue {
            match self.hosts.place(&task.template).await {
                Ok(p) => {
                    self.hosts.start_done(&p.host_id, None);
                    String::new()
                }
                Err(e) => e.public_message(),
            }
        } else {
            String::new()
        };
        let auto_start = task.auto_start && pod_message.is_empty();
        let cause = Cause::by(&task.actor, &task.correlation);
        let task_id = TaskId::from_uuid(self.ports.entropy.new_id());
        let outcome = self
            .store()
            .write(Command::CreateTask {
                task_id,
                task: Box::new(task),
                pod_message,
            })
            .await?;
        match outcome {
            Outcome::Task { task, created } => {
                if !created {
                    tracing::info!(task_id = %task.task_id, "idempotent repeat of CreateTask");
                    return Ok(self.with_live(*task));
                }
                if !auto_start {
                    return Ok(*task);
                }
                // The task exists whatever happens now; a failed start shows
                // in pod_status/pod_message.
                let started = if queue {
                    self.pods.start_or_queue(task_id, cause).await.map(|_| ())
                } else {
                    self.pods.start(task_id, cause, false).await.map(|_| ())
                };
                let message = match started {
                    Ok(()) => String::new(),
                    Err(e) => {
                        tracing::info!(%task_id, error = %e, "auto_start did not start a pod");
                        e.public_message()
                    }
                };
                let mut now = self.get_task(task_id).await?;
                if now.pod_message.is_empty() {
                    now.pod_message = message;
                }
                Ok(now)
            }
            other => Err(unexpected(&other)),
        }
    }

    /// GetTask.
    pub async fn get_task(&self, id: TaskId) -> Result<TaskRecord> {
        let t = self
            .store()
            .task(id)
            .await?
            .ok_or(Error::TaskNotFound(id))?;
        Ok(self.with_live(t))
    }

    /// GetTask with `include_archived`: the live task, or else the archived
    /// one.
    pub async fn get_task_or_archived(&self, id: TaskId) -> Result<TaskRecord> {
        let t = self
            .store()
            .task_or_archived(id)
            .await?
            .ok_or(Error::TaskNotFound(id))?;
        Ok(self.with_live(t))
    }

    /// ListTasks: one page of at most 4 MiB (`truncated` when it ended
    /// early).
    pub async fn list_tasks(&self, q: &ListQuery) -> Result<Page<TaskRecord>> {
        let page = self.store().list_tasks(q).await?;
        Ok(Page {
            items: page.items.into_iter().map(|t| self.with_live(t)).collect(),
            truncated: page.truncated,
        })
    }

    /// CountTasks.
    pub async fn count_tasks(&self, f: &TaskFilter) -> Result<u64> {
        self.store().count_tasks(f).await
    }

    /// CompleteTask.
    pub async fn complete_task(self: &Arc<Self>, c: TaskCommand) -> Result<()> {
        let this = self.clone();
        self.detached(async move { this.finish(c.task_id, Finish::Complete, c, None).await })
            .await
    }

    /// CancelTask.
    pub async fn cancel_task(self: &Arc<Self>, c: CancelTask) -> Result<()> {
        let cmd = TaskCommand {
            task_id: c.task_id,
            actor: c.actor,
            correlation: c.correlation,
        };
        let this = self.clone();
        self.detached(async move {
            this.finish(c.task_id, Finish::Cancel, cmd, Some(c.reason))
                .await
        })
        .await
    }

    async fn finish(
        &self,
        task_id: TaskId,
        finish: Finish,
        c: TaskCommand,
        reason: Option<String>,
    ) -> Result<()> {
        let why = match finish {
            Finish::Complete => "task completed",
            Finish::Cancel => "task cancelled",
        };
        let outcome = self
            .store()
            .write(Command::Finish {
                task_id,
                finish,
                actor: c.actor,
                correlation: c.correlation,
                reason,
            })
            .await
            .inspect_err(|e| self.pods.after_ambiguous_write(e))?;
        match outcome {
            // The task is terminal now; its pod is no longer current and is
            // stopped before replying. An unreachable host's pod is fenced
            // when the host returns (or by the host itself).
            Outcome::Finished { stop_pod } => {
                // A completed task may have moved dependents into the
                // queue (in the same transaction): the dispatcher looks.
                if finish == Finish::Complete {
                    self.pods.queue_signal().changed();
                }
                if let Some((pod, host)) = stop_pod {
                    self.pods.stop_after_finish(pod, host, why).await;
                }
                Ok(())
            }
            other => Err(unexpected(&other)),
        }
    }

    /// StartPod: TASK_NOT_FOUND / ALREADY_* / ALREADY_STARTED /
    /// POD_STATE_UNKNOWN from the task's state, NO_POD_HOST from placement
    /// (or, with `queue`, the task waits: [`queue::StartOrQueue::Queued`]);
    /// exactly one of concurrent calls wins the claim.
    pub async fn start_pod(&self, c: TaskCommand, queue: bool) -> Result<queue::StartOrQueue> {
        let cause = Cause::by(&c.actor, &c.correlation);
        let pods = self.pods.clone();
        self.detached(async move {
            if queue {
                return pods.start_or_queue(c.task_id, cause).await;
            }
            pods.start(c.task_id, cause, false)
                .await?
                .map(queue::StartOrQueue::Started)
                .ok_or(Error::AlreadyStarted(c.task_id))
        })
        .await
    }

    /// RestartPod: the running pod (if any) is stopped, then a new
    /// generation starts.
    pub async fn restart_pod(&self, c: TaskCommand) -> Result<PodInfo> {
        let pods = self.pods.clone();
        self.detached(async move { pods.restart(c.task_id, &c.actor, &c.correlation).await })
            .await
    }

    /// StopPod: TASK_NOT_FOUND / ALREADY_* / NOT_RUNNING /
    /// POD_STATE_UNKNOWN, else a graceful stop.
    pub async fn stop_pod(&self, c: StopPod) -> Result<()> {
        let pods = self.pods.clone();
        self.detached(async move {
            pods.stop(c.task_id, &c.actor, &c.correlation, &c.reason)
                .await
        })
        .await
    }

    /// ListActivePods: one page of at most 4 MiB, after `after`.
    pub async fn active_pods(&self, after: Option<TaskId>) -> Result<Page<(TaskId, PodInfo)>> {
        self.store().active_pods(after).await
    }

    /// Queued tasks per priority and the oldest one's enqueue time
    /// (metrics, GetStats).
    pub async fn queue_stats(&self) -> Result<ports::store::QueueStats> {
        self.store().queue_stats().await
    }

    /// How many pods central considers running (metrics).
    pub async fn count_active_pods(&self) -> Result<u64> {
        self.store().count_active_pods().await
    }

    /// Whether the event store takes writes (its breaker is closed).
    pub fn store_writable(&self) -> bool {
        self.store().writable()
    }

    /// ListPodHosts.
    pub fn pod_hosts(&self) -> Vec<HostView> {
        self.hosts.list()
    }

    /// GetTaskEvents: one page of at most 4 MiB.
    pub async fn task_events(&self, q: &EventsQuery) -> Result<Page<EventRecord>> {
        let events = self.store().task_events(q).await?;
        // An empty page may just mean "nothing after that version"; only
        // then is the extra existence check needed.
        if events.items.is_empty() && !self.store().task_exists(q.task_id).await? {
            return Err(Error::TaskNotFound(q.task_id));
        }
        Ok(events)
    }

    /// WatchEvents.
    pub async fn watch_events(&self, q: WatchQuery) -> Result<WatchStream> {
        if let Some(id) = q.task_id
            && !self.store().task_exists(id).await?
        {
            return Err(Error::TaskNotFound(id));
        }
        if self.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        Ok(start_watch(
            self.ports.store.clone(),
            &self.hub,
            q,
            self.watch_lag_limit,
            &self.tracker,
            self.shutdown.clone(),
        ))
    }
}

fn unexpected(o: &Outcome) -> Error {
    Error::Internal(format!("unexpected writer outcome {o:?}"))
}
