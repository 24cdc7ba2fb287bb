//! The pod-host's answers as the pod operations read them: the StopPod
//! they send by generation, how a fence went, which refusals mean "not
//! started".

use crate::domain::PodRef;
use crate::domain::host::{HostCallError, Refusal, StopRequest};

/// A StopPod for `pod` by its generation. `grace_ms` 0 takes the host's
/// `--stop-grace-ms`; `fence` reports the exit as FENCED.
pub(super) fn stop_request(pod: &PodRef, grace_ms: u32, reason: &str, fence: bool) -> StopRequest {
    StopRequest {
        task_id: pod.task_id.to_string(),
        pod_id: pod.pod_id.clone(),
        generation: pod.generation,
        grace_ms,
        reason: reason.to_owned(),
        fence,
    }
}

/// How fencing a pod on its host went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fence {
    /// The host had the pod and its process ran; it is dead now.
    Ran,
    /// The host has no such pod (or only a newer generation of the task),
    /// or had it but never started its process.
    NotThere,
    /// No answer, or an error: the pod may still run (the host's own fence
    /// or a later reconciliation deals with it).
    Unconfirmed,
}

impl Fence {
    /// The pod is known not to run any more.
    pub(super) fn confirmed(self) -> bool {
        !matches!(self, Self::Unconfirmed)
    }
}

/// A host answer that means "definitely not started".
pub(super) fn is_refusal(e: &HostCallError) -> bool {
    matches!(
        e.refusal(),
        Some(
            Refusal::NoCapacity
                | Refusal::InvalidArgument
                | Refusal::ShuttingDown
                | Refusal::StaleGeneration
                // The host checked the lease before spawning anything.
                | Refusal::LeaseExpired
        )
    )
}
