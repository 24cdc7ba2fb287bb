//! Pods as the core names them: which pod of which task ([`PodRef`]), who
//! caused a change ([`Cause`]) and how a pod ended ([`EndReport`]).

use super::ending::Ending;
use super::{ActorId, CorrelationId, Phase, TaskId};

/// The actor of automatic events (docs/api.md).
pub const SYSTEM_ACTOR: &str = "system";

/// One pod of one task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodRef {
    /// The task.
    pub task_id: TaskId,
    /// The pod.
    pub pod_id: String,
    /// Its generation.
    pub generation: u64,
}

/// Who caused a change: the caller of an RPC, or `system`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `actor_id` on the event.
    pub actor: String,
    /// The authenticated caller when it is not `actor` (an admin acting
    /// for someone): recorded in the event data.
    pub authenticated_as: Option<String>,
    /// `correlation_id` on the event; empty = the pod's start correlation.
    pub correlation: String,
}

impl Cause {
    /// An automatic change, correlated with the request that started the
    /// pod.
    pub fn system() -> Self {
        Self {
            actor: SYSTEM_ACTOR.into(),
            authenticated_as: None,
            correlation: String::new(),
        }
    }

    /// A caller's command.
    pub fn by(actor: &ActorId, correlation: &CorrelationId) -> Self {
        Self {
            actor: actor.as_str().to_owned(),
            authenticated_as: actor.authenticated_as_principal().map(str::to_owned),
            correlation: correlation.as_str().to_owned(),
        }
    }
}

/// How a pod ended, as reported.
#[derive(Debug, Clone, PartialEq)]
pub struct EndReport {
    /// What it means for the task.
    pub ending: Ending,
    /// Event data: exit code, signal, cause, message…
    pub detail: serde_json::Value,
    /// Human summary for `pod_message` (empty for requested stops).
    pub message: String,
    /// The last phase the pod reported, if any.
    pub last_phase: Option<Phase>,
}
