//! The core: every task operation as a method on [`TaskService`], in domain
//! types. Commands go to the store's single writer (which applies the
//! lifecycle rules inside its transaction); queries read the `tasks` table
//! and the event store. Pod placement and supervision will live here too
//! ([`hosts`]).

pub mod hosts;
pub mod pruner;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::{
    CancelTask, EventRecord, EventsQuery, Finish, ListQuery, NewTask, PodInfo, PodStatus,
    RestartDefaults, StopPod, TaskCommand, TaskFilter, TaskId, TaskRecord, WatchQuery,
    decide_start, decide_stop, ensure_not_terminal,
};
use crate::error::{Error, Result};
use crate::store::{Command, Outcome, Store};
use crate::watch::{EventHub, WatchStream, start_watch};
use hosts::{HostDirectory, HostView};

/// The task operations.
pub struct TaskService {
    store: Store,
    hub: EventHub,
    hosts: HostDirectory,
    defaults: RestartDefaults,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl TaskService {
    /// A service over `store`. Watchers are spawned on `tracker` and end on
    /// `shutdown`.
    pub fn new(
        store: Store,
        hub: EventHub,
        hosts: HostDirectory,
        defaults: RestartDefaults,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            store,
            hub,
            hosts,
            defaults,
            tracker,
            shutdown,
        }
    }

    /// The configured restart-policy defaults (to show effective policies).
    pub fn restart_defaults(&self) -> &RestartDefaults {
        &self.defaults
    }

    /// CreateTask. With `auto_start` the pod is started before replying; a
    /// start failure is reported in `pod_status`/`pod_message`, the task
    /// still exists. An idempotent repeat returns the first task as it is
    /// now and starts nothing.
    pub async fn create_task(&self, task: NewTask) -> Result<TaskRecord> {
        // Placement is decided before the write so its failure can be
        // recorded in the same transaction as the task.
        let pod_message = if task.auto_start {
            match self.hosts.place(&task.template) {
                Ok(_) => {
                    return Err(Error::Internal(
                        "placement succeeded but pod start is not implemented".into(),
                    ));
                }
                Err(e) => e.public_message(),
            }
        } else {
            String::new()
        };
        let task_id = TaskId::new();
        let outcome = self
            .store
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
                }
                Ok(*task)
            }
            other => Err(unexpected(&other)),
        }
    }

    /// GetTask.
    pub async fn get_task(&self, id: TaskId) -> Result<TaskRecord> {
        self.store.task(id).await?.ok_or(Error::TaskNotFound(id))
    }

    /// ListTasks.
    pub async fn list_tasks(&self, q: &ListQuery) -> Result<Vec<TaskRecord>> {
        self.store.list_tasks(q).await
    }

    /// CountTasks.
    pub async fn count_tasks(&self, f: &TaskFilter) -> Result<u64> {
        self.store.count_tasks(f).await
    }

    /// CompleteTask.
    pub async fn complete_task(&self, c: TaskCommand) -> Result<()> {
        self.finish(c.task_id, Finish::Complete, c, None).await
    }

    /// CancelTask.
    pub async fn cancel_task(&self, c: CancelTask) -> Result<()> {
        let cmd = TaskCommand {
            task_id: c.task_id,
            actor: c.actor,
            correlation: c.correlation,
        };
        self.finish(c.task_id, Finish::Cancel, cmd, Some(c.reason))
            .await
    }

    async fn finish(
        &self,
        task_id: TaskId,
        finish: Finish,
        c: TaskCommand,
        reason: Option<String>,
    ) -> Result<()> {
        let outcome = self
            .store
            .write(Command::Finish {
                task_id,
                finish,
                actor: c.actor,
                correlation: c.correlation,
                reason,
            })
            .await?;
        match outcome {
            // With no pod-host connected no pod can be running; stopping
            // one is pod supervision's job.
            Outcome::Finished { .. } => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// StartPod: TASK_NOT_FOUND / ALREADY_* / ALREADY_STARTED /
    /// POD_STATE_UNKNOWN from the task's state, then placement.
    pub async fn start_pod(&self, c: TaskCommand) -> Result<PodInfo> {
        let task = self.get_task(c.task_id).await?;
        decide_start(task.task_id, task.status, task.pod_status)?;
        let _placement = self.hosts.place(&task.template)?;
        Err(Error::Internal("pod start is not implemented".into()))
    }

    /// RestartPod: like StartPod, but a running pod is stopped first.
    pub async fn restart_pod(&self, c: TaskCommand) -> Result<PodInfo> {
        let task = self.get_task(c.task_id).await?;
        ensure_not_terminal(task.task_id, task.status)?;
        if task.pod_status == PodStatus::Unknown {
            return Err(Error::PodStateUnknown(task.task_id));
        }
        let _placement = self.hosts.place(&task.template)?;
        Err(Error::Internal("pod restart is not implemented".into()))
    }

    /// StopPod: TASK_NOT_FOUND / ALREADY_* / NOT_RUNNING.
    pub async fn stop_pod(&self, c: StopPod) -> Result<()> {
        let task = self.get_task(c.task_id).await?;
        decide_stop(task.task_id, task.status, task.pod_status)?;
        Err(Error::Internal("pod stop is not implemented".into()))
    }

    /// ListActivePods.
    pub async fn active_pods(&self) -> Result<Vec<(TaskId, PodInfo)>> {
        self.store.active_pods().await
    }

    /// ListPodHosts.
    pub fn pod_hosts(&self) -> Vec<HostView> {
        self.hosts.list()
    }

    /// GetTaskEvents.
    pub async fn task_events(&self, q: &EventsQuery) -> Result<Vec<EventRecord>> {
        let events = self.store.task_events(q).await?;
        // An empty page may just mean "nothing after that version"; only
        // then is the extra existence check needed.
        if events.is_empty() && !self.store.task_exists(q.task_id).await? {
            return Err(Error::TaskNotFound(q.task_id));
        }
        Ok(events)
    }

    /// WatchEvents.
    pub async fn watch_events(&self, q: WatchQuery) -> Result<WatchStream> {
        if let Some(id) = q.task_id
            && !self.store.task_exists(id).await?
        {
            return Err(Error::TaskNotFound(id));
        }
        if self.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        Ok(start_watch(
            self.store.clone(),
            &self.hub,
            q,
            &self.tracker,
            self.shutdown.clone(),
        ))
    }

    /// GetPodLogs: the task must exist; a task that never had a pod has no
    /// output; otherwise the logs live on a pod-host, none of which is
    /// connected.
    pub async fn pod_logs_source(&self, id: TaskId) -> Result<Option<String>> {
        let task = self.get_task(id).await?;
        match task.pod {
            None => Ok(None),
            Some(pod) => Err(Error::NoPodHost(format!(
                "pod-host {:?} of the task's last pod is not connected",
                pod.pod_host
            ))),
        }
    }
}

fn unexpected(o: &Outcome) -> Error {
    Error::Internal(format!("unexpected writer outcome {o:?}"))
}
