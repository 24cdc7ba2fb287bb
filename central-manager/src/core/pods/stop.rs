//! Stopping pods: StopPod, a run timeout's stop, RestartPod's stop half
//! and the stop after CompleteTask/CancelTask. A stop asks the pod's host
//! (its grace, then kill) and commits the end with the caller as cause, so
//! a requested stop is never a crash, while a timeout's is judged as one.

use super::{HOST_STOP_TIMEOUT, Pods, stop_request};
use crate::domain::host::Refusal;
use crate::domain::{
    ActorId, Cause, CorrelationId, EndReport, Ending, PodInfo, PodRef, PodStatus, StopDecision,
    TaskId, decide_stop, ending::exit_detail,
};
use crate::error::{Error, Result};
use crate::hosts::directory::PendingStop;
use crate::store::pods::{PodCommand, PodOutcome};

impl Pods {
    /// StopPod: graceful stop through the host, then `pod_stopped` with the
    /// caller as actor.
    pub async fn stop(
        &self,
        task_id: TaskId,
        actor: &ActorId,
        correlation: &CorrelationId,
        reason: &str,
    ) -> Result<()> {
        // The stop's end must be recorded.
        let mut task = self.writable_task(task_id).await?;
        if decide_stop(task_id, task.status, task.pod_status)? == StopDecision::Unqueue {
            if self
                .unqueue(task_id, Cause::by(actor, correlation), reason)
                .await?
            {
                return Ok(());
            }
            // The dispatcher started it meanwhile: stop that pod.
            task = self.writable_task(task_id).await?;
            decide_stop(task_id, task.status, task.pod_status)?;
        }
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
        self.stop_as(pod, host_id, cause, reason, Ending::Stopped)
            .await
    }

    /// Stops `pod` on `host_id` (the host's grace, then kill) and commits
    /// its end as `ending`: a requested stop, or a run timeout, which the
    /// restart policy judges as a crash (the restart it schedules is handed
    /// to the supervisor).
    pub(crate) async fn stop_as(
        &self,
        pod: &PodRef,
        host_id: &str,
        cause: Cause,
        reason: &str,
        ending: Ending,
    ) -> Result<()> {
        let host = self
            .hosts
            .client(host_id)
            .ok_or(Error::PodStateUnknown(pod.task_id))?;
        self.hosts.begin_stop(
            &pod.pod_id,
            PendingStop {
                cause: cause.clone(),
                reason: reason.to_owned(),
                ending,
            },
        );
        let req = stop_request(pod, 0, reason, false);
        let exit = match tokio::time::timeout(HOST_STOP_TIMEOUT, host.stop_pod(req)).await {
            Ok(Ok(exit)) => exit,
            // The host does not have it (any more): it is not running.
            Ok(Err(e)) if e.refusal() == Some(Refusal::PodNotFound) => None,
            Ok(Err(e)) => {
                self.hosts.take_stop(&pod.pod_id);
                tracing::warn!(task_id = %pod.task_id, error = %e.message(), "pod-host failed to stop the pod");
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
            ending,
            detail,
            message: if ending.is_failure() {
                reason.to_owned()
            } else {
                String::new()
            },
            last_phase: None,
        };
        let jitter = if ending.is_failure() {
            self.ports.entropy.jitter()
        } else {
            0.0
        };
        self.hosts.stop_confirmed(pod.task_id, &pod.pod_id, host_id);
        // If this commit fails (the store went down meanwhile), the pending
        // stop stays: the host's own exit event for the pod, applied once
        // the store is back, is then recorded as this caller's stop, never
        // as a crash or a loss.
        let outcome = self
            .store()
            .pod(PodCommand::Ended {
                pod: pod.clone(),
                host_id: host_id.to_owned(),
                report,
                cause,
                defaults: self.defaults,
                jitter,
            })
            .await?;
        self.hosts.take_stop(&pod.pod_id);
        if let PodOutcome::Applied {
            restart_at: Some(at),
        } = outcome
            && let Some(q) = self.restarts.get()
        {
            q.schedule(pod.task_id, at);
        }
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
        let task = self.writable_task(task_id).await?;
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
            // RestartPod means "run it now": a queued task keeps waiting
            // for room like any other (it would jump the queue otherwise).
            PodStatus::Queued => return Err(Error::AlreadyStarted(task_id)),
        }
        self.start(task_id, cause, false)
            .await?
            .ok_or(Error::AlreadyStarted(task_id))
    }

    /// After CompleteTask/CancelTask: kill the task's pod, which is no
    /// longer current. Best effort: if its host is unreachable, the pod is
    /// fenced when the host returns, or the host fences itself.
    pub async fn stop_after_finish(&self, pod: PodRef, host_id: String, reason: &str) {
        let Some(host) = self.hosts.client(&host_id) else {
            self.hosts.clear_live(pod.task_id, &pod.pod_id);
            return;
        };
        let req = stop_request(&pod, 0, reason, false);
        match tokio::time::timeout(HOST_STOP_TIMEOUT, host.stop_pod(req)).await {
            Ok(Ok(_)) => self
                .hosts
                .stop_confirmed(pod.task_id, &pod.pod_id, &host_id),
            Ok(Err(e)) if e.refusal() == Some(Refusal::PodNotFound) => {
                self.hosts.clear_live(pod.task_id, &pod.pod_id);
            }
            other => {
                self.hosts.clear_live(pod.task_id, &pod.pod_id);
                tracing::warn!(task_id = %pod.task_id, ?other, "could not stop the pod of a finished task; it will be fenced")
            }
        }
    }
}
