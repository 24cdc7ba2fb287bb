//! The simulated clients: each operation of the plan runs as its own task
//! against the real `TaskService` (as the API's handlers call it), with a
//! correlation id naming the step, so the checks can find the events an
//! acknowledged operation must have left behind.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use central_manager::core::TaskService;
use central_manager::core::queue::StartOrQueue;
use central_manager::core::schedules::ScheduleService;
use central_manager::domain::{
    ActorId, CancelTask, CorrelationId, Description, Metadata, NewTask, Priority,
    RestartPolicySpec, StopPod, TaskCommand, TaskId, TemplateName, Title,
};
use central_manager::error::Error;
use tokio_util::task::TaskTracker;

use crate::plan::{Action, Behaviour, PodEnd};
use crate::trace::Trace;

/// An operation the core acknowledged (returned `Ok` for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acked {
    Created(TaskId),
    Started {
        task: TaskId,
        generation: u64,
    },
    /// The stop of the task's pod: one of the generations `from..=to`
    /// (the task's pod when the stop was issued, and when it replied; a
    /// concurrent start or restart may claim a newer one in between, and
    /// the stop may be ordered before it).
    Stopped {
        task: TaskId,
        from: u64,
        to: u64,
    },
    Completed(TaskId),
    Cancelled(TaskId),
    /// StartPod with `queue` answered `queued`.
    Queued(TaskId),
}

/// The clients' shared state.
#[derive(Clone)]
pub struct Clients {
    service: Arc<TaskService>,
    pub(super) trace: Trace,
    /// The schedule operations (when the plan has any).
    pub(super) schedules: Option<Arc<ScheduleService>>,
    /// Schedules created so far, in creation order.
    pub(super) schedule_ids: super::schedules::Created,
    /// Tasks created so far, in creation order.
    tasks: Arc<Mutex<Vec<TaskId>>>,
    /// Acknowledged operations by correlation id.
    pub acked: Arc<Mutex<BTreeMap<String, Acked>>>,
    /// Error reasons seen (coverage).
    pub errors: Arc<Mutex<std::collections::BTreeSet<String>>>,
    tracker: TaskTracker,
}

pub(super) fn actor() -> ActorId {
    ActorId::parse("client").unwrap_or_else(|_| ActorId::system())
}

pub(super) fn correlation(n: usize) -> Option<CorrelationId> {
    // "op-N" is always a valid correlation id.
    CorrelationId::parse_or_new(&format!("op-{n}")).ok()
}

/// The metadata carrying a task's pod behaviour to the simulated hosts.
pub(super) fn metadata(b: &Behaviour) -> Metadata {
    let mut m = BTreeMap::new();
    if let Some(life) = b.life_ms {
        m.insert("sim.life_ms".to_owned(), life.to_string());
    }
    let end = match b.end {
        PodEnd::Exit => "exit",
        PodEnd::Crash => "crash",
        PodEnd::Complete => "complete",
    };
    m.insert("sim.end".to_owned(), end.to_owned());
    if let Some(p) = b.phase_every_ms {
        m.insert("sim.phase_ms".to_owned(), p.to_string());
    }
    if b.spawn_fails {
        m.insert("sim.spawn".to_owned(), "fail".to_owned());
    }
    Metadata::from_map(m)
}

impl Clients {
    pub fn new(
        service: Arc<TaskService>,
        schedules: Option<Arc<ScheduleService>>,
        trace: Trace,
    ) -> Self {
        Self {
            service,
            trace,
            schedules,
            schedule_ids: Arc::default(),
            tasks: Arc::default(),
            acked: Arc::default(),
            errors: Arc::default(),
            tracker: TaskTracker::new(),
        }
    }

    fn pick(&self, i: usize) -> Option<TaskId> {
        let t = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        (!t.is_empty()).then(|| t[i % t.len()])
    }

    /// `depends_on` of the task step `n` creates: one create in four
    /// depends on one or two tasks created before (chosen from `n`, so a
    /// seed replays the same graph).
    fn dependencies(&self, n: usize) -> Vec<TaskId> {
        if !n.is_multiple_of(4) {
            return Vec::new();
        }
        let mut deps: Vec<TaskId> = [self.pick(n / 4), self.pick(n / 3 + 1)]
            .into_iter()
            .flatten()
            .collect();
        deps.dedup();
        deps
    }

    /// Waits (up to `limit`) for every operation in flight.
    pub async fn drain(&self, limit: Duration) {
        self.tracker.close();
        let _ = tokio::time::timeout(limit, self.tracker.wait()).await;
    }

    /// Runs step `n`'s operation in the background.
    pub fn spawn(&self, n: usize, action: Action) {
        let this = self.clone();
        self.tracker.spawn(async move { this.run(n, action).await });
    }

    async fn run(&self, n: usize, action: Action) {
        if let Action::Schedule(op) = action {
            return self.schedule_op(n, op).await;
        }
        let Some(corr) = correlation(n) else {
            return;
        };
        let key = corr.as_str().to_owned();
        let s = &self.service;
        let cmd = |task| TaskCommand {
            task_id: task,
            actor: actor(),
            correlation: corr.clone(),
        };
        let (what, result): (String, Result<Acked, Error>) = match action {
            Action::Create {
                auto_start,
                behaviour,
                restart,
                timers,
            } => {
                let restart_policy = match restart {
                    Some(p) => RestartPolicySpec {
                        auto_restart: Some(true),
                        max_restarts: Some(p.max_restarts),
                        window_seconds: Some(p.window_seconds),
                        initial_backoff_ms: Some(p.initial_backoff_ms),
                        max_backoff_ms: Some(p.max_backoff_ms),
                    },
                    None => RestartPolicySpec::default(),
                };
                let new = NewTask {
                    title: Title::from_db(format!("task of op {n}")),
                    description: Description::from_db(String::new()),
                    actor: actor(),
                    correlation: corr.clone(),
                    auto_start,
                    metadata: metadata(&behaviour),
                    template: TemplateName::from_db("default".into()),
                    restart_policy,
                    request_id: None,
                    timeout_seconds: timers.timeout_s,
                    deadline: timers
                        .deadline_ms
                        .map(|ms| s.pods().ports().clock.wall_micros() + i64::from(ms) * 1000),
                    priority: match timers.priority {
                        1 => Priority::Low,
                        3 => Priority::High,
                        4 => Priority::Critical,
                        _ => Priority::Medium,
                    },
                    queue: timers.queue,
                    queue_timeout_seconds: timers.queue_timeout_s,
                    depends_on: self.dependencies(n),
                };
                let r = s.create_task(new).await.map(|t| {
                    self.tasks
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(t.task_id);
                    Acked::Created(t.task_id)
                });
                ("create".into(), r)
            }
            other => {
                let task = match &other {
                    Action::Start { task, .. }
                    | Action::Stop { task }
                    | Action::Restart { task }
                    | Action::Complete { task }
                    | Action::Cancel { task } => self.pick(*task),
                    _ => None,
                };
                let Some(task) = task else {
                    self.trace.note(format!("op-{n}: no task yet; skipped"));
                    return;
                };
                let r: Result<Acked, Error> = match other {
                    Action::Start { queue, .. } => match s.start_pod(cmd(task), queue).await {
                        Ok(StartOrQueue::Started(p)) => Ok(Acked::Started {
                            task,
                            generation: p.generation,
                        }),
                        // Queued now or already (no event then): the queue
                        // checks (`world::queue`) judge what follows.
                        Ok(StartOrQueue::Queued) if queue => Ok(Acked::Queued(task)),
                        Ok(StartOrQueue::Queued) => {
                            Err(Error::Internal("queued without queue".into()))
                        }
                        Err(e) => Err(e),
                    },
                    Action::Restart { .. } => {
                        s.restart_pod(cmd(task)).await.map(|p| Acked::Started {
                            task,
                            generation: p.generation,
                        })
                    }
                    Action::Stop { .. } => {
                        let stop = StopPod {
                            task_id: task,
                            actor: actor(),
                            reason: "sim".into(),
                            correlation: corr.clone(),
                        };
                        let generation = |t: Option<_>| {
                            t.and_then(|t: central_manager::domain::TaskRecord| t.pod)
                                .map_or(0, |p| p.generation)
                        };
                        let from = generation(s.get_task(task).await.ok());
                        match s.stop_pod(stop).await {
                            Ok(()) => s.get_task(task).await.map(|t| Acked::Stopped {
                                task,
                                from,
                                to: generation(Some(t)),
                            }),
                            Err(e) => Err(e),
                        }
                    }
                    Action::Complete { .. } => s
                        .complete_task(cmd(task))
                        .await
                        .map(|()| Acked::Completed(task)),
                    _ => s
                        .cancel_task(CancelTask {
                            task_id: task,
                            reason: "sim".into(),
                            actor: actor(),
                            correlation: corr.clone(),
                        })
                        .await
                        .map(|()| Acked::Cancelled(task)),
                };
                (format!("{} {task}", other.kind()), r)
            }
        };
        match result {
            Ok(a) => {
                self.trace.note(format!("op-{n} {what}: ok"));
                self.acked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, a);
            }
            Err(e) => self.note_error(n, &what, &e),
        }
    }

    /// Traces an operation's error and counts its reason (coverage).
    pub(super) fn note_error(&self, n: usize, what: &str, e: &Error) {
        let msg = e.public_message();
        let reason = msg.split(':').next().unwrap_or("").to_owned();
        self.trace.note(format!("op-{n} {what}: {msg}"));
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(reason);
    }
}
