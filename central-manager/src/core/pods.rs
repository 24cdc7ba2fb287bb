//! Starting and stopping pods through their pod-hosts: StartPod, StopPod,
//! RestartPod, the stop half of CompleteTask/CancelTask and automatic
//! restarts (the stops are in [`stop`]; GetPodLogs is in `logs`).
//!
//! StartPod, step by step (docs/architecture.md "the database is the arbiter"):
//! 1. read the task for the fast refusals (ALREADY_*, ALREADY_STARTED,
//!    POD_STATE_UNKNOWN);
//! 2. place it on a READY host serving its template with a free slot
//!    (NO_POD_HOST);
//! 3. claim it with a conditional update that bumps the generation: of N
//!    concurrent calls exactly one changes the row, the rest get
//!    ALREADY_STARTED;
//! 4. ask the host to start it; commit `pod_started` with the pid.
//!
//! If the host refuses, the claim is undone. If the host does not answer
//! (so the pod may or may not run), the pod is fenced by a stop with its
//! generation before the claim is undone; if even that cannot be done the
//! row stays STARTING on that host, which the host-loss rules then settle
//! safely: the caller gets POD_STATE_UNKNOWN.

mod answers;
mod stop;
mod turn;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::ports::{HostCommands, Ports, TaskStore};
use super::supervisor::host_events::{Job, JobQueue};
use super::supervisor::runner::RestartQueue;
use super::supervisor::unsettled::Unsettled;
use crate::domain::host::{HostCallError, PodExit, Refusal, StartRequest};
use crate::domain::{
    Cause, EndReport, Ending, PodInfo, PodRef, PodStatus, RestartDefaults, TaskId, TaskRecord,
    decide_start, ending::exit_detail,
};
use crate::error::{Error, Result};
use crate::hosts::directory::{HostDirectory, Placement};
use crate::hosts::session::HostClock;
use crate::store::pods::{ClaimedPod, PodCommand, PodOutcome};
use answers::{Fence, is_refusal, stop_request};
pub use turn::Turn;

/// How long a pod-host may take to spawn a pod. Spawning takes
/// milliseconds; this only bounds a host that stopped answering.
const HOST_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a StopPod may take on the host: its stop grace (5 s by default,
/// configured on the host) plus reaping, with room to spare.
const HOST_STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// A stale pod gets no grace: it must not run on (1 ms, as 0 would mean
/// the host's default grace).
const FENCE_GRACE_MS: u32 = 1;
/// Bound on the fence attempt after a start whose outcome is unknown.
const FENCE_TIMEOUT: Duration = Duration::from_secs(5);

/// Pod operations, shared by the API and the supervisor.
#[derive(Clone)]
pub struct Pods {
    ports: Ports,
    hosts: HostDirectory,
    defaults: RestartDefaults,
    /// The supervisor's restart queue, for restarts scheduled by a write
    /// made here (a spawn failure counts as a crash); set once it runs.
    restarts: Arc<OnceLock<RestartQueue>>,
    /// The supervisor's ordered writer, for a start's outcome that could
    /// not be written (see [`Pods::write_or_queue`]); set once it runs.
    supervision: Arc<OnceLock<JobQueue>>,
    /// Hosts to ask again about rows left unsettled on them.
    unsettled: Unsettled,
    /// Wakes the queue's dispatcher (`core::queue`).
    queue: super::queue::QueueSignal,
}

/// Where a claimed pod is being started.
struct Starting<'a> {
    host: &'a Arc<dyn HostCommands>,
    host_id: &'a str,
    /// The lease the StartPod is issued under: the host's boot and its
    /// newest clock reading central has received.
    boot_id: &'a str,
    host_clock: &'a HostClock,
    pod: &'a PodRef,
    cause: &'a Cause,
    /// An automatic restart's retry time: a refused restart stays due.
    retry_at: Option<i64>,
    /// The queue entry the claim took the task out of: a refused start
    /// puts it back.
    requeue: Option<crate::domain::QueueEntry>,
    /// A dispatched start's turn to write its outcome (`core::queue`).
    turn: Option<&'a Turn>,
}

impl Pods {
    pub fn new(ports: Ports, hosts: HostDirectory, defaults: RestartDefaults) -> Self {
        Self {
            ports,
            hosts,
            defaults,
            restarts: Arc::default(),
            supervision: Arc::default(),
            unsettled: Unsettled::default(),
            queue: super::queue::QueueSignal::default(),
        }
    }

    /// The dispatcher's wake-up for queue changes.
    pub fn queue_signal(&self) -> &super::queue::QueueSignal {
        &self.queue
    }

    /// Hands a start's outcome that could not be written to the
    /// supervisor's ordered writer.
    pub fn attach_supervision(&self, queue: JobQueue) {
        let _ = self.supervision.set(queue);
    }

    /// A start's outcome (started, aborted, ended): written now, or, while
    /// the store cannot be written, queued for the supervisor's ordered
    /// writer, which applies it once the store is back (and schedules the
    /// restart it may ask for). Without this a failed write would leave the
    /// row STARTING until the host happened to reconnect. The caller still
    /// gets EVENT_STORE_UNAVAILABLE.
    async fn write_or_queue(&self, command: PodCommand, task_id: TaskId) -> Result<PodOutcome> {
        self.write_in_turn(command, task_id, None).await
    }

    /// [`Self::write_or_queue`], passing `turn` on once the write is queued.
    async fn write_in_turn(
        &self,
        command: PodCommand,
        task_id: TaskId,
        turn: Option<&Turn>,
    ) -> Result<PodOutcome> {
        let queued: Box<dyn FnOnce() + Send + '_> = match turn {
            Some(t) => Box::new(move || t.pass()),
            None => Box::new(|| {}),
        };
        match self.store().pod_ordered(command.clone(), queued).await {
            Err(e @ Error::StoreUnavailable(_)) => {
                match self.supervision.get() {
                    Some(q) => q.push(Job::Settle { task_id, command }),
                    None => tracing::warn!(%task_id, "no supervisor to settle the pod operation"),
                }
                Err(e)
            }
            other => other,
        }
    }

    fn store(&self) -> &dyn TaskStore {
        self.ports.store.as_ref()
    }

    /// The task a pod operation acts on, refused at once (touching
    /// nothing) while the store is known to be unwritable, since the
    /// operation's outcome must be recorded.
    pub(super) async fn writable_task(&self, task_id: TaskId) -> Result<TaskRecord> {
        self.store().ensure_writable()?;
        self.store()
            .task(task_id)
            .await?
            .ok_or(Error::TaskNotFound(task_id))
    }

    /// Hands automatic restarts scheduled here to the supervisor.
    pub fn attach_restarts(&self, queue: RestartQueue) {
        let _ = self.restarts.set(queue);
    }

    /// The hosts to ask again about unsettled rows (read by the
    /// supervisor).
    pub fn unsettled(&self) -> &Unsettled {
        &self.unsettled
    }

    /// A write that ends a task (or decides its pod's fate) failed with
    /// EVENT_STORE_UNAVAILABLE: it may still have committed, with the pod
    /// then stopped by nobody. Every known host is asked again (ListPods)
    /// once the store answers, and the pods no row places on it are fenced
    /// (`supervisor::requery`); found by the simulator with lost replies.
    pub fn after_ambiguous_write(&self, e: &Error) {
        if !matches!(e, Error::StoreUnavailable(_)) {
            return;
        }
        let now = self.ports.clock.now();
        for h in self.hosts.list() {
            self.unsettled
                .mark_host_for_orphans(&self.hosts, &h.host_id, now);
        }
    }

    /// The shared host state.
    pub fn hosts(&self) -> &HostDirectory {
        &self.hosts
    }

    /// The ports (store, clock, entropy).
    pub fn ports(&self) -> &Ports {
        &self.ports
    }

    /// The restart defaults.
    pub fn defaults(&self) -> &RestartDefaults {
        &self.defaults
    }

    /// StartPod (and automatic restarts, with `automatic`). `Ok(None)` only
    /// for an automatic restart that a user action overtook.
    pub async fn start(
        &self,
        task_id: TaskId,
        cause: Cause,
        automatic: bool,
    ) -> Result<Option<PodInfo>> {
        // Fail fast rather than wait for a placement whose claim cannot be
        // written.
        let task = self.writable_task(task_id).await?;
        decide_start(task_id, task.status, task.pod_status)?;
        self.place_and_start(&task, cause, automatic).await
    }

    /// The dispatcher's start of a queued task (`core::queue`): the same
    /// placement and the same conditional claim as StartPod, so racing a
    /// StartPod on the task starts one pod. `Ok(None)` when the task left
    /// the queue meanwhile.
    pub async fn start_queued(&self, task_id: TaskId, cause: Cause) -> Result<Option<PodInfo>> {
        let Some(task) = self.queued_task(task_id).await? else {
            return Ok(None);
        };
        self.place_and_start(&task, cause, false).await
    }

    /// The task if it still waits in the queue (and can be written).
    pub(super) async fn queued_task(&self, task_id: TaskId) -> Result<Option<TaskRecord>> {
        let task = self.writable_task(task_id).await?;
        Ok((task.pod_status == PodStatus::Queued && !task.status.is_terminal()).then_some(task))
    }

    /// Reserves room for `task` on a host (the directory's slot, in the
    /// order of the calls); [`Pods::start_placed`] claims and starts it.
    pub(super) async fn place(&self, task: &TaskRecord) -> Result<Placement> {
        self.hosts.place(&task.template).await
    }

    /// Places `task` on a host with room, claims it and starts its pod.
    async fn place_and_start(
        &self,
        task: &TaskRecord,
        cause: Cause,
        automatic: bool,
    ) -> Result<Option<PodInfo>> {
        let placement = self.place(task).await?;
        self.start_placed(task, placement, cause, automatic, None)
            .await
    }

    /// Claims `task` on the host `placement` reserved and starts its pod;
    /// the reservation is released whatever happens. With a `turn`, the
    /// outcome is written in that turn.
    pub(super) async fn start_placed(
        &self,
        task: &TaskRecord,
        placement: Placement,
        cause: Cause,
        automatic: bool,
        turn: Option<&Turn>,
    ) -> Result<Option<PodInfo>> {
        let task_id = task.task_id;
        let pod_id = self.ports.entropy.new_id().to_string();
        let claim = self
            .store()
            .pod(PodCommand::Claim {
                task_id,
                pod_id: pod_id.clone(),
                host_id: placement.host_id.clone(),
                cause: cause.clone(),
                automatic,
            })
            .await;
        let claimed = match claim {
            Ok(PodOutcome::Claimed(c)) => c,
            Ok(_) => {
                self.hosts.start_done(&placement.host_id, None);
                return Ok(None);
            }
            Err(e) => {
                self.hosts.start_done(&placement.host_id, None);
                if matches!(e, Error::StoreUnavailable(_)) {
                    // The claim may have committed with its reply lost: a
                    // row STARTING there with no start on its way.
                    let now = self.ports.clock.now();
                    self.unsettled
                        .mark_host(&self.hosts, &placement.host_id, now);
                }
                return Err(e);
            }
        };
        let pod = PodRef {
            task_id,
            pod_id,
            generation: claimed.generation,
        };
        self.hosts.set_starting(&pod.pod_id, true);
        // A refused automatic restart stays due (and durable) for a retry.
        let retry_at = automatic.then(|| {
            let delay = i64::try_from(super::supervisor::runner::RESTART_RETRY.as_micros())
                .unwrap_or(i64::MAX);
            self.ports.clock.wall_micros().saturating_add(delay)
        });
        let starting = Starting {
            host: &placement.client,
            host_id: &placement.host_id,
            boot_id: &placement.boot_id,
            host_clock: &placement.host_clock,
            pod: &pod,
            cause: &cause,
            retry_at,
            requeue: claimed.queued,
            turn,
        };
        let result = self.start_on_host(&starting, &claimed).await;
        self.hosts.set_starting(&pod.pod_id, false);
        let started = result.as_ref().ok().map(|_| pod.pod_id.as_str());
        self.hosts.start_done(&placement.host_id, started);
        result.map(Some)
    }

    /// Sends the claimed pod's StartPod and settles the claim by the
    /// answer: started, refused (claim undone), spawn failed (a crash), or
    /// unknown (fenced, then undone).
    async fn start_on_host(&self, s: &Starting<'_>, claimed: &ClaimedPod) -> Result<PodInfo> {
        let metadata = serde_json::from_str(&claimed.metadata_json).unwrap_or_default();
        let req = StartRequest {
            task_id: s.pod.task_id.to_string(),
            pod_id: s.pod.pod_id.clone(),
            generation: s.pod.generation,
            template: claimed.template.clone(),
            title: claimed.title.clone(),
            description: claimed.description.clone(),
            metadata,
            correlation_id: claimed.correlation.clone(),
            // Read now, as the request leaves: the lease it is issued under.
            echo_host_clock_ms: s.host_clock.get(),
            host_boot_id: s.boot_id.to_owned(),
        };
        let answer = tokio::time::timeout(HOST_START_TIMEOUT, s.host.start_pod(req)).await;
        if let Some(turn) = s.turn {
            turn.wait().await;
        }
        match answer {
            Ok(Ok(started)) => {
                let now = self.ports.clock.wall_micros();
                let started_at = crate::hosts::hello::plausible_time(started.started_at, now, now);
                self.confirm_started(s, started.pid, started_at).await
            }
            Ok(Err(HostCallError::Refused {
                refusal: Refusal::SpawnFailed,
                message,
            })) => Err(self.spawn_failed(s.pod, s.host_id, &message).await),
            Ok(Err(e)) if is_refusal(&e) => {
                let message = format!("pod-host {} refused the start: {}", s.host_id, e.message());
                let abort = PodCommand::AbortStart {
                    pod: s.pod.clone(),
                    message: message.clone(),
                    retry_at: s.retry_at,
                    requeue: s.requeue,
                };
                self.write_or_queue(abort, s.pod.task_id).await?;
                Err(Error::NoPodHost(message))
            }
            Ok(Err(e)) => self.start_unknown(s, e.message()).await,
            Err(_) => self.start_unknown(s, "no answer in time".to_owned()).await,
        }
    }

    /// The host started the pod: commit `pod_started`. If the row no
    /// longer has this pod as STARTING, either its end was applied first
    /// (it did start: fine), or the task moved on while the start was in
    /// flight (Complete or Cancel, a StopPod that reached the host before
    /// the pod did); unless the row has it running, make sure it is not
    /// left running unsupervised (a stop by generation is harmless for a
    /// pod that already ended).
    async fn confirm_started(
        &self,
        s: &Starting<'_>,
        pid: u32,
        started_at: i64,
    ) -> Result<PodInfo> {
        let pod = s.pod;
        let started = PodCommand::Started {
            pod: pod.clone(),
            pid,
            started_at,
            host_id: s.host_id.to_owned(),
            cause: s.cause.clone(),
        };
        let outcome = self.write_in_turn(started, pod.task_id, s.turn).await?;
        if outcome == PodOutcome::Ignored {
            let task = self.store().task(pod.task_id).await?;
            let running_ours = task.is_some_and(|t| {
                !t.status.is_terminal()
                    && matches!(t.pod_status, PodStatus::Running | PodStatus::Unknown)
                    && t.pod.is_some_and(|p| p.pod_id == pod.pod_id)
            });
            // Its host reported its end while the start was in flight
            // (a pod that exits at once): gone, nothing to fence.
            let ended = self.hosts.ended_while_starting(&pod.pod_id, s.host_id);
            if !running_ours && !ended {
                tracing::info!(task_id = %pod.task_id, pod_id = %pod.pod_id, "started pod is no longer current; fencing it");
                self.fence_unrecorded_start(s, "no longer current").await?;
            }
        }
        Ok(PodInfo {
            pod_id: pod.pod_id.clone(),
            pod_host: s.host_id.to_owned(),
            pid,
            generation: pod.generation,
            started_at,
        })
    }

    /// No usable answer to StartPod: the pod may or may not run. Fence it
    /// by its generation; once the host confirms it is gone the claim is
    /// undone, else the row stays STARTING on that host, which the
    /// host-loss rules settle, and the caller gets POD_STATE_UNKNOWN.
    async fn start_unknown(&self, s: &Starting<'_>, why: String) -> Result<PodInfo> {
        let (pod, host_id) = (s.pod, s.host_id);
        tracing::warn!(task_id = %pod.task_id, %host_id, %why, "start outcome unknown; fencing the pod");
        if !self
            .fence_unrecorded_start(s, "start outcome unknown")
            .await?
        {
            // Nothing may answer for this pod again on this call, and a
            // host that stays connected sends no hello: ask it later.
            self.unsettled
                .mark_host(&self.hosts, host_id, self.ports.clock.now());
            return Err(Error::PodStateUnknown(pod.task_id));
        }
        let message = format!("pod-host {host_id} failed to start the pod: {why}");
        let abort = PodCommand::AbortStart {
            pod: pod.clone(),
            message,
            retry_at: s.retry_at,
            requeue: s.requeue,
        };
        self.write_or_queue(abort, pod.task_id).await?;
        Err(Error::NoPodHost(format!(
            "pod-host {host_id} failed to start the pod"
        )))
    }

    /// The host could not create the pod's process: nothing ran, so the
    /// claim ends in one `pod_crashed` carrying the reason (no
    /// `pod_started`), the restart policy decides as for a crash, and the
    /// caller gets SPAWN_FAILED.
    async fn spawn_failed(&self, pod: &PodRef, host_id: &str, why: &str) -> Error {
        tracing::warn!(task_id = %pod.task_id, %host_id, %why, "pod-host could not spawn the pod");
        let exit = PodExit {
            exit_code: None,
            signal: None,
            cause: crate::domain::host::ExitCause::SpawnFailed,
            reported_completed: false,
            message: why.to_owned(),
        };
        let message = format!("pod-host {host_id} could not start the pod: {why}");
        let report = EndReport {
            ending: Ending::SpawnFailed,
            detail: exit_detail(&exit),
            message: message.clone(),
            last_phase: None,
        };
        let ended = PodCommand::Ended {
            pod: pod.clone(),
            host_id: host_id.to_owned(),
            report,
            cause: Cause::system(),
            defaults: self.defaults,
            jitter: self.ports.entropy.jitter(),
        };
        let ended = self.write_or_queue(ended, pod.task_id).await;
        match ended {
            Ok(PodOutcome::Applied {
                restart_at: Some(at),
            }) => match self.restarts.get() {
                Some(q) => q.schedule(pod.task_id, at),
                None => tracing::warn!(task_id = %pod.task_id, "no supervisor to restart the task"),
            },
            Ok(_) => {}
            Err(e) => return e,
        }
        Error::SpawnFailed(message)
    }

    /// Kills `pod` on its host as stale; true when the host confirmed it is
    /// gone (or never had it).
    pub async fn fence_on_host(&self, host: &dyn HostCommands, pod: &PodRef, reason: &str) -> bool {
        self.fence(host, pod, reason).await.confirmed()
    }

    async fn fence(&self, host: &dyn HostCommands, pod: &PodRef, reason: &str) -> Fence {
        let req = stop_request(pod, FENCE_GRACE_MS, reason, true);
        match tokio::time::timeout(FENCE_TIMEOUT, host.stop_pod(req)).await {
            // An exit with a code or a signal: its process ran.
            Ok(Ok(Some(exit))) if exit.exit_code.is_some() || exit.signal.is_some() => Fence::Ran,
            Ok(Ok(_)) => Fence::NotThere,
            Ok(Err(e)) => match e.refusal() {
                Some(Refusal::PodNotFound | Refusal::StaleGeneration) => Fence::NotThere,
                _ => Fence::Unconfirmed,
            },
            Err(_) => Fence::Unconfirmed,
        }
    }

    /// Fences a pod whose start central will not record as running (its
    /// outcome was unknown, or the task moved on while it was in flight).
    /// When the host's answer shows the process did run, `pod_fenced` says
    /// so on the task (found by scripts/chaos), so the trail never hides a
    /// process that ran. True when the pod is known to be gone.
    async fn fence_unrecorded_start(&self, s: &Starting<'_>, reason: &str) -> Result<bool> {
        let fence = self.fence(s.host.as_ref(), s.pod, reason).await;
        if fence == Fence::Ran {
            let fenced = PodCommand::Fenced {
                pod: s.pod.clone(),
                host_id: s.host_id.to_owned(),
                reason: format!("{reason}; the pod had started"),
            };
            self.write_or_queue(fenced, s.pod.task_id).await?;
        }
        Ok(fence.confirmed())
    }
}
