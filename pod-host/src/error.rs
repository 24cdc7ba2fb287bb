//! The pod-host's error enum and its one mapping to a gRPC status
//! (`REASON: sentence` + ErrorInfo, via `ipa_proto::error::status`).

use ipa_proto::ErrorReason;
use tonic::Status;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("task {task_id}: generation {requested} is older than generation {known}")]
    StaleGeneration {
        task_id: String,
        requested: u64,
        known: u64,
    },
    #[error("all {capacity} pod slots are in use")]
    NoCapacity { capacity: u32 },
    #[error("{0}")]
    PodNotFound(String),
    /// `field` is named first in the message (docs/api.md).
    #[error("{field}: {problem}")]
    InvalidArgument {
        field: &'static str,
        problem: String,
    },
    #[error("the pod-host is shutting down")]
    ShuttingDown,
    /// No orphan reaper runs, so a pod could outlive a crash of the host.
    #[error("no pod can start here now: the orphan reaper is down and could not be restarted")]
    Unprotected,
    /// The pod's process could not be created; the sentence says what
    /// failed (the program, the working directory, …).
    #[error("{0}")]
    SpawnFailed(String),
    /// A StartPod issued under a lease that has expired here (see
    /// `crate::fence`): nothing is started.
    #[error("{0}")]
    LeaseExpired(String),
    /// A Connect or command from a central-manager whose leader epoch is
    /// older than the newest this pod-host has seen (see `crate::epoch`):
    /// nothing is started, stopped or replaced.
    #[error(
        "epoch {epoch} is older than epoch {newest}, the newest this pod-host has seen (a deposed leader)"
    )]
    StaleEpoch { epoch: u64, newest: u64 },
    /// `--client-ca` is set and the call came without a verified client
    /// certificate.
    #[error("{0}")]
    Unauthenticated(String),
    /// The client certificate names no `--allowed-client`.
    #[error("{0}")]
    PermissionDenied(String),
    /// Logged in full where it happens; the client sees no internals.
    #[error("internal error")]
    Internal,
}

/// `s` quoted for an error message, cut to 64 characters: a value from a
/// request is echoed back, and a 4 MiB one must not become a 4 MiB status
/// header.
pub fn quote(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        None => format!("{s:?}"),
        Some((end, _)) => format!("{:?}…", &s[..end]),
    }
}

impl HostError {
    pub fn invalid(field: &'static str, problem: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            problem: problem.into(),
        }
    }

    pub fn reason(&self) -> ErrorReason {
        match self {
            Self::StaleGeneration { .. } => ErrorReason::StaleGeneration,
            // A refusal central handles like a full host.
            Self::NoCapacity { .. } | Self::Unprotected => ErrorReason::NoCapacity,
            Self::PodNotFound(_) => ErrorReason::PodNotFound,
            Self::InvalidArgument { .. } => ErrorReason::InvalidArgument,
            Self::ShuttingDown => ErrorReason::ShuttingDown,
            Self::SpawnFailed(_) => ErrorReason::SpawnFailed,
            Self::LeaseExpired(_) => ErrorReason::LeaseExpired,
            Self::StaleEpoch { .. } => ErrorReason::StaleEpoch,
            Self::Unauthenticated(_) => ErrorReason::Unauthenticated,
            Self::PermissionDenied(_) => ErrorReason::PermissionDenied,
            Self::Internal => ErrorReason::Internal,
        }
    }
}

impl From<HostError> for Status {
    fn from(e: HostError) -> Self {
        ipa_proto::status(e.reason(), &e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn quoted_values_are_bounded() {
        assert_eq!(quote("ab\"c"), "\"ab\\\"c\"");
        let long = quote(&"é".repeat(1 << 20));
        assert!(long.chars().count() <= 64 + 3, "{}", long.len());
    }

    #[test]
    fn maps_to_reason_code_and_message() {
        let s: Status = HostError::StaleGeneration {
            task_id: "t".into(),
            requested: 1,
            known: 2,
        }
        .into();
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert!(s.message().starts_with("STALE_GENERATION: task t"));
        let s: Status = HostError::invalid("template", "no template named \"x\"").into();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(
            s.message(),
            "INVALID_ARGUMENT: template: no template named \"x\""
        );
        let s: Status = HostError::NoCapacity { capacity: 2 }.into();
        assert_eq!(s.code(), Code::ResourceExhausted);
        let s: Status = HostError::ShuttingDown.into();
        assert_eq!(s.code(), Code::Unavailable);
        let s: Status = HostError::PodNotFound("no pod x".into()).into();
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(ipa_proto::reason_of(&s), Some(ErrorReason::PodNotFound));
        let s: Status = HostError::StaleEpoch {
            epoch: 1,
            newest: 2,
        }
        .into();
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert!(
            s.message()
                .starts_with("STALE_EPOCH: epoch 1 is older than epoch 2"),
            "{}",
            s.message()
        );
        assert_eq!(ipa_proto::reason_of(&s), Some(ErrorReason::StaleEpoch));
    }
}
