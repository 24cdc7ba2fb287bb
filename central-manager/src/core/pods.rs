//! Starting and stopping pods through their pod-hosts: StartPod, StopPod,
//! RestartPod, the stop half of CompleteTask/CancelTask and automatic
//! restarts (GetPodLogs is in `logs`).
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

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::hosts::TracedChannel as Channel;
use ipa_proto::v1::{self as pb, pod_host_client::PodHostClient};
use ipa_proto::{ErrorReason, reason_of};

use crate::domain::{
    ActorId, CorrelationId, PodInfo, PodStatus, RestartDefaults, TaskId, decide_start, decide_stop,
};
use crate::error::{Error, Result};
use crate::hosts::directory::{HostDirectory, PendingStop};
use crate::store::Store;
use crate::store::pods::{Cause, ClaimedPod, EndReport, PodCommand, PodOutcome, PodRef};
use crate::supervisor::exit::{Ending, classify, describe};
use crate::supervisor::runner::RestartQueue;

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
    store: Store,
    hosts: HostDirectory,
    defaults: RestartDefaults,
    /// The supervisor's restart queue, for restarts scheduled by a write
    /// made here (a spawn failure counts as a crash); set once it runs.
    restarts: Arc<OnceLock<RestartQueue>>,
}

impl Pods {
    pub fn new(store: Store, hosts: HostDirectory, defaults: RestartDefaults) -> Self {
        Self {
            store,
            hosts,
            defaults,
            restarts: Arc::default(),
        }
    }

    /// Hands automatic restarts scheduled here to the supervisor.
    pub fn attach_restarts(&self, queue: RestartQueue) {
        let _ = self.restarts.set(queue);
    }

    /// The shared host state.
    pub fn hosts(&self) -> &HostDirectory {
        &self.hosts
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
        self.store.ensure_writable()?;
        let task = self
            .store
            .task(task_id)
            .await?
            .ok_or(Error::TaskNotFound(task_id))?;
        decide_start(task_id, task.status, task.pod_status)?;
        let placement = self.hosts.place(&task.template).await?;
        let pod_id = uuid::Uuid::now_v7().to_string();
        let claim = self
            .store
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
                self.hosts.start_done(&placement.host_id, false);
                return Ok(None);
            }
            Err(e) => {
                self.hosts.start_done(&placement.host_id, false);
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
            let delay = i64::try_from(crate::supervisor::runner::RESTART_RETRY.as_micros())
                .unwrap_or(i64::MAX);
            ipa_proto::time::now_micros().saturating_add(delay)
        });
        let result = self
            .start_on_host(
                placement.client,
                &placement.host_id,
                &pod,
                &claimed,
                &cause,
                retry_at,
            )
            .await;
        self.hosts.set_starting(&pod.pod_id, false);
        self.hosts.start_done(&placement.host_id, result.is_ok());
        result.map(Some)
    }

    async fn start_on_host(
        &self,
        client: PodHostClient<Channel>,
        host_id: &str,
        pod: &PodRef,
        claimed: &ClaimedPod,
        cause: &Cause,
        retry_at: Option<i64>,
    ) -> Result<PodInfo> {
        let metadata: HashMap<String, String> =
            serde_json::from_str(&claimed.metadata_json).unwrap_or_default();
        let req = pb::HostStartPodRequest {
            task_id: pod.task_id.to_string(),
            pod_id: pod.pod_id.clone(),
            generation: pod.generation,
            template: claimed.template.clone(),
            title: claimed.title.clone(),
            description: claimed.description.clone(),
            metadata,
            correlation_id: claimed.correlation.clone(),
        };
        let answer = tokio::time::timeout(HOST_START_TIMEOUT, client.clone().start_pod(req)).await;
        match answer {
            Ok(Ok(resp)) => {
                let info = resp.into_inner().pod.unwrap_or_default();
                if let Some(exit) = info
                    .exit
                    .as_ref()
                    .filter(|e| e.cause == pb::ExitCause::SpawnFailed as i32)
                {
                    // An older pod-host answers a failed spawn with the pod
                    // already ended.
                    return Err(self.spawn_failed(pod, host_id, &exit.message).await);
                }
                let now = ipa_proto::time::now_micros();
                let started_at =
                    crate::hosts::hello::plausible_time(info.started_at.as_ref(), now, now);
                let outcome = self
                    .store
                    .pod(PodCommand::Started {
                        pod: pod.clone(),
                        pid: info.pid,
                        started_at,
                        host_id: host_id.to_owned(),
                        cause: cause.clone(),
                    })
                    .await?;
                if outcome == PodOutcome::Ignored {
                    // The row no longer has this pod as STARTING. Either its
                    // end was applied first (it did start: fine), or the
                    // task moved on while the start was in flight (Complete
                    // or Cancel, a StopPod that reached the host before the
                    // pod did). Unless the row has it running, make sure it
                    // is not left running unsupervised: a stop by generation
                    // is harmless for a pod that already ended.
                    let task = self.store.task(pod.task_id).await?;
                    let running_ours = task.is_some_and(|t| {
                        !t.status.is_terminal()
                            && matches!(t.pod_status, PodStatus::Running | PodStatus::Unknown)
                            && t.pod.is_some_and(|p| p.pod_id == pod.pod_id)
                    });
                    if !running_ours {
                        tracing::info!(task_id = %pod.task_id, pod_id = %pod.pod_id, "started pod is no longer current; fencing it");
                        self.fence_on_host(client.clone(), pod, "no longer current")
                            .await;
                    }
                }
                Ok(PodInfo {
                    pod_id: pod.pod_id.clone(),
                    pod_host: host_id.to_owned(),
                    pid: info.pid,
                    generation: pod.generation,
                    started_at,
                })
            }
            Ok(Err(status)) if reason_of(&status) == Some(ErrorReason::SpawnFailed) => {
                let why = status.message();
                let why = why.strip_prefix("SPAWN_FAILED: ").unwrap_or(why);
                Err(self.spawn_failed(pod, host_id, why).await)
            }
            Ok(Err(status)) if is_refusal(&status) => {
                let message = format!(
                    "pod-host {host_id} refused the start: {}",
                    crate::hosts::hello::clip(status.message())
                );
                self.store
                    .pod(PodCommand::AbortStart {
                        pod: pod.clone(),
                        message: message.clone(),
                        retry_at,
                    })
                    .await?;
                Err(Error::NoPodHost(message))
            }
            other => {
                let why = match other {
                    Ok(Err(s)) => crate::hosts::hello::clip(s.message()),
                    _ => "no answer in time".to_owned(),
                };
                tracing::warn!(task_id = %pod.task_id, %host_id, %why, "start outcome unknown; fencing the pod");
                if self
                    .fence_on_host(client, pod, "start outcome unknown")
                    .await
                {
                    let message = format!("pod-host {host_id} failed to start the pod: {why}");
                    self.store
                        .pod(PodCommand::AbortStart {
                            pod: pod.clone(),
                            message,
                            retry_at,
                        })
                        .await?;
                    Err(Error::NoPodHost(format!(
                        "pod-host {host_id} failed to start the pod"
                    )))
                } else {
                    Err(Error::PodStateUnknown(pod.task_id))
                }
            }
        }
    }

    /// The host could not create the pod's process: nothing ran, so the
    /// claim ends in one `pod_crashed` carrying the reason (no
    /// `pod_started`), the restart policy decides as for a crash, and the
    /// caller gets SPAWN_FAILED.
    async fn spawn_failed(&self, pod: &PodRef, host_id: &str, why: &str) -> Error {
        tracing::warn!(task_id = %pod.task_id, %host_id, %why, "pod-host could not spawn the pod");
        let exit = pb::PodExit {
            cause: pb::ExitCause::SpawnFailed as i32,
            message: why.to_owned(),
            ..Default::default()
        };
        let message = format!("pod-host {host_id} could not start the pod: {why}");
        let report = EndReport {
            ending: Ending::SpawnFailed,
            detail: exit_detail(&exit),
            message: message.clone(),
            last_phase: None,
        };
        let ended = self
            .store
            .pod(PodCommand::Ended {
                pod: pod.clone(),
                host_id: host_id.to_owned(),
                report,
                cause: Cause::system(),
                defaults: self.defaults,
                jitter: rand::random::<f64>(),
            })
            .await;
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
    pub async fn fence_on_host(
        &self,
        mut client: PodHostClient<Channel>,
        pod: &PodRef,
        reason: &str,
    ) -> bool {
        let req = stop_request(pod, FENCE_GRACE_MS, reason, true);
        match tokio::time::timeout(FENCE_TIMEOUT, client.stop_pod(req)).await {
            Ok(Ok(_)) => true,
            Ok(Err(s)) => matches!(
                reason_of(&s),
                Some(ErrorReason::PodNotFound | ErrorReason::StaleGeneration)
            ),
            Err(_) => false,
        }
    }

    /// StopPod: graceful stop through the host, then `pod_stopped` with the
    /// caller as actor.
    pub async fn stop(
        &self,
        task_id: TaskId,
        actor: &ActorId,
        correlation: &CorrelationId,
        reason: &str,
    ) -> Result<()> {
        // The stop's end must be recorded: refuse at once (touching
        // nothing) while the store is known to be unwritable.
        self.store.ensure_writable()?;
        let task = self
            .store
            .task(task_id)
            .await?
            .ok_or(Error::TaskNotFound(task_id))?;
        decide_stop(task_id, task.status, task.pod_status)?;
        let pod_info = task.pod.ok_or(Error::NotRunning(task_id))?;
        let pod = PodRef {
            task_id,
            pod_id: pod_info.pod_id.clone(),
            generation: pod_info.generation,
        };
        let cause = Cause::by(actor, correlation);
        self.stop_pod(&pod, &pod_info.pod_host, cause, reason).await
    }

    /// Stops `pod` on `host_id` and commits its end as a requested stop.
    async fn stop_pod(
        &self,
        pod: &PodRef,
        host_id: &str,
        cause: Cause,
        reason: &str,
    ) -> Result<()> {
        let mut client = self
            .hosts
            .client(host_id)
            .ok_or(Error::PodStateUnknown(pod.task_id))?;
        self.hosts.begin_stop(
            &pod.pod_id,
            PendingStop {
                cause: cause.clone(),
                reason: reason.to_owned(),
            },
        );
        let req = stop_request(pod, 0, reason, false);
        let exit = match tokio::time::timeout(HOST_STOP_TIMEOUT, client.stop_pod(req)).await {
            Ok(Ok(resp)) => resp.into_inner().pod.and_then(|p| p.exit),
            // The host does not have it (any more): it is not running.
            Ok(Err(s)) if reason_of(&s) == Some(ErrorReason::PodNotFound) => None,
            Ok(Err(s)) => {
                self.hosts.take_stop(&pod.pod_id);
                tracing::warn!(task_id = %pod.task_id, error = %s.message(), "pod-host failed to stop the pod");
                return Err(Error::PodStateUnknown(pod.task_id));
            }
            Err(_) => {
                self.hosts.take_stop(&pod.pod_id);
                return Err(Error::PodStateUnknown(pod.task_id));
            }
        };
        // Whatever way it ended while being stopped, the caller asked for it:
        // a requested stop is never a crash.
        let mut detail = exit
            .as_ref()
            .map(exit_detail)
            .unwrap_or_else(|| serde_json::json!({}));
        if let Some(o) = detail.as_object_mut() {
            o.insert("reason".into(), serde_json::json!(reason));
        }
        let report = EndReport {
            ending: Ending::Stopped,
            detail,
            message: String::new(),
            last_phase: None,
        };
        self.hosts.clear_live(pod.task_id, &pod.pod_id);
        // If this commit fails (the store went down meanwhile), the pending
        // stop stays: the host's own exit event for the pod, applied once
        // the store is back, is then recorded as this caller's stop, never
        // as a crash or a loss.
        self.store
            .pod(PodCommand::Ended {
                pod: pod.clone(),
                host_id: host_id.to_owned(),
                report,
                cause,
                defaults: self.defaults,
                jitter: 0.0,
            })
            .await?;
        self.hosts.take_stop(&pod.pod_id);
        self.hosts.release(host_id);
        Ok(())
    }

    /// RestartPod: stop the running pod (if any), then start a new
    /// generation.
    pub async fn restart(
        &self,
        task_id: TaskId,
        actor: &ActorId,
        correlation: &CorrelationId,
    ) -> Result<PodInfo> {
        self.store.ensure_writable()?;
        let task = self
            .store
            .task(task_id)
            .await?
            .ok_or(Error::TaskNotFound(task_id))?;
        crate::domain::ensure_not_terminal(task_id, task.status)?;
        let cause = Cause::by(actor, correlation);
        match task.pod_status {
            PodStatus::Unknown => return Err(Error::PodStateUnknown(task_id)),
            PodStatus::Starting | PodStatus::Running => {
                let p = task
                    .pod
                    .ok_or(Error::Internal("running task without pod".into()))?;
                let pod = PodRef {
                    task_id,
                    pod_id: p.pod_id,
                    generation: p.generation,
                };
                self.stop_pod(&pod, &p.pod_host, cause.clone(), "restart")
                    .await?;
            }
            PodStatus::Stopped => {}
        }
        self.start(task_id, cause, false)
            .await?
            .ok_or(Error::AlreadyStarted(task_id))
    }

    /// After CompleteTask/CancelTask: kill the task's pod, which is no
    /// longer current. Best effort: if its host is unreachable, the pod is
    /// fenced when the host returns, or the host fences itself.
    pub async fn stop_after_finish(&self, pod: PodRef, host_id: String, reason: &str) {
        self.hosts.clear_live(pod.task_id, &pod.pod_id);
        let Some(mut client) = self.hosts.client(&host_id) else {
            return;
        };
        let req = stop_request(&pod, 0, reason, false);
        match tokio::time::timeout(HOST_STOP_TIMEOUT, client.stop_pod(req)).await {
            Ok(Ok(_)) => self.hosts.release(&host_id),
            Ok(Err(s)) if reason_of(&s) == Some(ErrorReason::PodNotFound) => {}
            other => {
                tracing::warn!(task_id = %pod.task_id, ?other, "could not stop the pod of a finished task; it will be fenced")
            }
        }
    }
}

/// A StopPod for `pod` by its generation. `grace_ms` 0 takes the host's
/// `--stop-grace-ms`; `fence` reports the exit as FENCED.
fn stop_request(pod: &PodRef, grace_ms: u32, reason: &str, fence: bool) -> pb::HostStopPodRequest {
    pb::HostStopPodRequest {
        task_id: pod.task_id.to_string(),
        pod_id: pod.pod_id.clone(),
        generation: pod.generation,
        grace_ms,
        reason: reason.to_owned(),
        fence,
    }
}

/// A host error that means "definitely not started".
fn is_refusal(s: &tonic::Status) -> bool {
    matches!(
        reason_of(s),
        Some(
            ErrorReason::NoCapacity
                | ErrorReason::InvalidArgument
                | ErrorReason::ShuttingDown
                | ErrorReason::StaleGeneration
        )
    )
}

/// Event data for an exit.
pub fn exit_detail(exit: &pb::PodExit) -> serde_json::Value {
    let cause = pb::ExitCause::try_from(exit.cause).unwrap_or(pb::ExitCause::Unspecified);
    serde_json::json!({
        "exit_code": exit.exit_code,
        "signal": exit.signal,
        "cause": cause.as_str_name(),
        "reported_completed": exit.reported_completed,
        "message": crate::hosts::hello::clip(&exit.message),
    })
}

/// The report for an exit streamed by a host (its free text clipped).
pub fn end_report(exit: &pb::PodExit, last_phase: Option<crate::domain::Phase>) -> EndReport {
    let exit = &pb::PodExit {
        message: crate::hosts::hello::clip(&exit.message),
        ..exit.clone()
    };
    let ending = classify(exit);
    let message = match ending {
        Ending::Crashed | Ending::Lost => describe(exit),
        Ending::SpawnFailed => format!("could not be started: {}", exit.message),
        Ending::HostShutdown => "its pod-host shut down".to_owned(),
        _ => String::new(),
    };
    EndReport {
        ending,
        detail: exit_detail(exit),
        message,
        last_phase,
    }
}
