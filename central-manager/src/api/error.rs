//! The one place an [`Error`] becomes a gRPC status (docs/api.md "Errors"):
//! reason-prefixed message, the reason's code and an ErrorInfo detail, all
//! built by `ipa_proto::status`. Internal detail is logged here, never sent.

use tonic::Status;

use crate::error::Error;

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        if e.is_internal() {
            // The span of the RPC carries task/actor/correlation ids.
            tracing::error!(error = %e, reason = %e.reason(), "request failed");
        } else {
            tracing::debug!(error = %e, "request refused");
        }
        ipa_proto::status(e.reason(), e.public_sentence())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TaskId;
    use ipa_proto::ErrorReason;
    use tonic::Code;
    use tonic_types::StatusExt;

    fn check(e: Error, code: Code, reason: &str) -> Status {
        let s = Status::from(e);
        assert_eq!(s.code(), code, "{}", s.message());
        assert!(
            s.message().starts_with(&format!("{reason}: ")),
            "{}",
            s.message()
        );
        let info = s.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, reason);
        assert_eq!(info.domain, "ipa.v1");
        s
    }

    #[test]
    fn every_error_maps_to_its_reason_and_code() {
        let id = TaskId::new();
        check(
            Error::InvalidTitle("x".into()),
            Code::InvalidArgument,
            "INVALID_TITLE",
        );
        check(
            Error::MissingActorId,
            Code::InvalidArgument,
            "MISSING_ACTOR_ID",
        );
        check(
            Error::MissingReason,
            Code::InvalidArgument,
            "MISSING_REASON",
        );
        let s = check(
            Error::invalid("limit", "too big"),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert!(s.message().contains("limit"));
        check(Error::TaskNotFound(id), Code::NotFound, "TASK_NOT_FOUND");
        check(
            Error::AlreadyCompleted(id),
            Code::FailedPrecondition,
            "ALREADY_COMPLETED",
        );
        check(
            Error::AlreadyCancelled(id),
            Code::FailedPrecondition,
            "ALREADY_CANCELLED",
        );
        check(
            Error::AlreadyFailed(id),
            Code::FailedPrecondition,
            "ALREADY_FAILED",
        );
        check(
            Error::AlreadyStarted(id),
            Code::AlreadyExists,
            "ALREADY_STARTED",
        );
        check(
            Error::NotRunning(id),
            Code::FailedPrecondition,
            "NOT_RUNNING",
        );
        check(
            Error::PodStateUnknown(id),
            Code::Unavailable,
            "POD_STATE_UNKNOWN",
        );
        check(
            Error::NoPodHost("none".into()),
            Code::Unavailable,
            "NO_POD_HOST",
        );
        check(Error::ShuttingDown, Code::Unavailable, "SHUTTING_DOWN");
        check(
            Error::TooManyStreams(3),
            Code::ResourceExhausted,
            "TOO_MANY_STREAMS",
        );
        let s = check(
            Error::WatchTooSlow {
                position: 42,
                limit_ms: 30_000,
            },
            Code::ResourceExhausted,
            "WATCH_TOO_SLOW",
        );
        assert!(
            s.message().ends_with("resume after position 42"),
            "{}",
            s.message()
        );
        check(
            Error::Unauthenticated("no token".into()),
            Code::Unauthenticated,
            "UNAUTHENTICATED",
        );
        check(
            Error::PermissionDenied("reader".into()),
            Code::PermissionDenied,
            "PERMISSION_DENIED",
        );
        check(
            Error::ActorMismatch("not you".into()),
            Code::PermissionDenied,
            "ACTOR_MISMATCH",
        );
    }

    #[test]
    fn internals_are_not_leaked() {
        let s = check(
            Error::StoreUnavailable("disk I/O error at /secret/path".into()),
            Code::Unavailable,
            "EVENT_STORE_UNAVAILABLE",
        );
        assert!(!s.message().contains("/secret/path"));
        let s = check(
            Error::Internal("SELECT * FROM x".into()),
            Code::Internal,
            "INTERNAL",
        );
        assert!(!s.message().contains("SELECT"));
        assert_eq!(ipa_proto::reason_of(&s), Some(ErrorReason::Internal));
    }
}
