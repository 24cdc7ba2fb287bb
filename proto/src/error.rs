//! The error convention of docs/api.md: every error is a gRPC status whose message
//! starts with the reason in capitals, then `: ` and a sentence, and which
//! carries the same reason as a `google.rpc.ErrorInfo` detail in domain
//! `ipa.v1`. Both services build their statuses here so the shape cannot
//! drift between them.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `ErrorInfo.domain` of every error we send.
pub const ERROR_DOMAIN: &str = "ipa.v1";

/// Every reason docs/api.md names, plus the pod-host's internal ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorReason {
    InvalidTitle,
    MissingActorId,
    MissingReason,
    InvalidArgument,
    TaskNotFound,
    AlreadyStarted,
    NotRunning,
    AlreadyCompleted,
    AlreadyCancelled,
    AlreadyFailed,
    PodStateUnknown,
    NoPodHost,
    EventStoreUnavailable,
    /// No or unknown token, no or untrusted certificate (auth on).
    Unauthenticated,
    /// The caller's role lacks the RPC.
    PermissionDenied,
    /// `actor_id` names someone other than the authenticated caller (or
    /// the reserved `system`).
    ActorMismatch,
    /// Unexpected failure; the message never leaks internals.
    Internal,
    /// The server is shutting down.
    ShuttingDown,
    /// No schedule with that id (or name).
    ScheduleNotFound,
    /// A bad timetable: cron expression, time zone, both or neither of
    /// cron and interval.
    InvalidSchedule,
    /// A schedule with that name exists.
    AlreadyExists,
    /// DeleteTask on a task that is not completed, cancelled or failed.
    TaskNotTerminal,
    /// StartPod without `queue` on a task whose dependencies are not all
    /// COMPLETED.
    DependenciesNotMet,
    /// Too many WatchEvents + GetPodLogs streams open (`--max-streams`).
    TooManyStreams,
    /// A WatchEvents client read too slowly and was dropped; the message
    /// says the position to resume after.
    WatchTooSlow,
    /// A request message over the 4 MiB limit.
    MessageTooLarge,
    // --- pod-host (internal API) ---
    /// A command carried an older generation than the pod-host knows.
    StaleGeneration,
    /// The pod-host has no free capacity.
    NoCapacity,
    /// No such pod on this pod-host.
    PodNotFound,
    /// The pod's process could not be created (missing program or working
    /// directory, no permission, out of resources): nothing ran.
    SpawnFailed,
    /// A StartPod issued under a lease that has expired on the pod-host (a
    /// fence timeout old by its clock, or from another boot): it may have
    /// been held up in the network past the point where central gave the
    /// pod up, so nothing is started.
    LeaseExpired,
    /// A pod-host command or Connect from a central-manager whose leader
    /// epoch is older than the newest the pod-host has seen (a deposed
    /// leader).
    StaleEpoch,
}

impl ErrorReason {
    /// The reason as written on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidTitle => "INVALID_TITLE",
            Self::MissingActorId => "MISSING_ACTOR_ID",
            Self::MissingReason => "MISSING_REASON",
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::TaskNotFound => "TASK_NOT_FOUND",
            Self::AlreadyStarted => "ALREADY_STARTED",
            Self::NotRunning => "NOT_RUNNING",
            Self::AlreadyCompleted => "ALREADY_COMPLETED",
            Self::AlreadyCancelled => "ALREADY_CANCELLED",
            Self::AlreadyFailed => "ALREADY_FAILED",
            Self::PodStateUnknown => "POD_STATE_UNKNOWN",
            Self::NoPodHost => "NO_POD_HOST",
            Self::EventStoreUnavailable => "EVENT_STORE_UNAVAILABLE",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::ActorMismatch => "ACTOR_MISMATCH",
            Self::Internal => "INTERNAL",
            Self::ShuttingDown => "SHUTTING_DOWN",
            Self::ScheduleNotFound => "SCHEDULE_NOT_FOUND",
            Self::InvalidSchedule => "INVALID_SCHEDULE",
            Self::AlreadyExists => "ALREADY_EXISTS",
            Self::TaskNotTerminal => "TASK_NOT_TERMINAL",
            Self::DependenciesNotMet => "DEPENDENCIES_NOT_MET",
            Self::TooManyStreams => "TOO_MANY_STREAMS",
            Self::WatchTooSlow => "WATCH_TOO_SLOW",
            Self::MessageTooLarge => "MESSAGE_TOO_LARGE",
            Self::StaleGeneration => "STALE_GENERATION",
            Self::NoCapacity => "NO_CAPACITY",
            Self::PodNotFound => "POD_NOT_FOUND",
            Self::SpawnFailed => "SPAWN_FAILED",
            Self::LeaseExpired => "LEASE_EXPIRED",
            Self::StaleEpoch => "STALE_EPOCH",
        }
    }

    /// The gRPC code docs/api.md pairs with the reason.
    pub const fn code(self) -> Code {
        match self {
            Self::InvalidTitle
            | Self::MissingActorId
            | Self::MissingReason
            | Self::InvalidArgument
            | Self::InvalidSchedule => Code::InvalidArgument,
            Self::TaskNotFound | Self::PodNotFound | Self::ScheduleNotFound => Code::NotFound,
            Self::AlreadyStarted | Self::AlreadyExists => Code::AlreadyExists,
            Self::NotRunning
            | Self::AlreadyCompleted
            | Self::AlreadyCancelled
            | Self::AlreadyFailed
            | Self::StaleGeneration
            | Self::SpawnFailed
            | Self::TaskNotTerminal
            | Self::DependenciesNotMet
            | Self::LeaseExpired
            | Self::StaleEpoch => Code::FailedPrecondition,
            Self::PodStateUnknown
            | Self::NoPodHost
            | Self::EventStoreUnavailable
            | Self::ShuttingDown => Code::Unavailable,
            Self::NoCapacity
            | Self::TooManyStreams
            | Self::WatchTooSlow
            | Self::MessageTooLarge => Code::ResourceExhausted,
            Self::Unauthenticated => Code::Unauthenticated,
            Self::PermissionDenied | Self::ActorMismatch => Code::PermissionDenied,
            Self::Internal => Code::Internal,
        }
    }

    /// Parses a wire reason back (for clients and tests).
    pub fn parse(s: &str) -> Option<Self> {
        ALL.iter().copied().find(|r| r.as_str() == s)
    }
}

/// Every reason, in declaration order (docs/api.md must name each one; a
/// test in tests/ checks that).
pub const ALL: &[ErrorReason] = &[
    ErrorReason::InvalidTitle,
    ErrorReason::MissingActorId,
    ErrorReason::MissingReason,
    ErrorReason::InvalidArgument,
    ErrorReason::TaskNotFound,
    ErrorReason::AlreadyStarted,
    ErrorReason::NotRunning,
    ErrorReason::AlreadyCompleted,
    ErrorReason::AlreadyCancelled,
    ErrorReason::AlreadyFailed,
    ErrorReason::PodStateUnknown,
    ErrorReason::NoPodHost,
    ErrorReason::EventStoreUnavailable,
    ErrorReason::Unauthenticated,
    ErrorReason::PermissionDenied,
    ErrorReason::ActorMismatch,
    ErrorReason::Internal,
    ErrorReason::ShuttingDown,
    ErrorReason::ScheduleNotFound,
    ErrorReason::InvalidSchedule,
    ErrorReason::AlreadyExists,
    ErrorReason::TaskNotTerminal,
    ErrorReason::DependenciesNotMet,
    ErrorReason::TooManyStreams,
    ErrorReason::WatchTooSlow,
    ErrorReason::MessageTooLarge,
    ErrorReason::StaleGeneration,
    ErrorReason::NoCapacity,
    ErrorReason::PodNotFound,
    ErrorReason::SpawnFailed,
    ErrorReason::LeaseExpired,
    ErrorReason::StaleEpoch,
];

impl std::fmt::Display for ErrorReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Builds the status for `reason` with a human sentence:
/// message `REASON: sentence`, the reason's code, and an ErrorInfo detail.
pub fn status(reason: ErrorReason, sentence: impl std::fmt::Display) -> Status {
    let details = ErrorDetails::with_error_info(
        reason.as_str(),
        ERROR_DOMAIN,
        std::collections::HashMap::<String, String>::new(),
    );
    Status::with_error_details(
        reason.code(),
        format!("{}: {sentence}", reason.as_str()),
        details,
    )
}

/// The reason of a status built by [`status`]: from the ErrorInfo detail if
/// present, else from the message prefix.
pub fn reason_of(status: &Status) -> Option<ErrorReason> {
    if let Some(info) = status.get_details_error_info()
        && info.domain == ERROR_DOMAIN
    {
        return ErrorReason::parse(&info.reason);
    }
    let prefix = status.message().split(':').next()?;
    ErrorReason::parse(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_has_prefix_code_and_error_info() {
        let s = status(ErrorReason::TaskNotFound, "no task with id x");
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(s.message(), "TASK_NOT_FOUND: no task with id x");
        let info = s.get_details_error_info().expect("ErrorInfo detail");
        assert_eq!(info.reason, "TASK_NOT_FOUND");
        assert_eq!(info.domain, "ipa.v1");
        assert_eq!(reason_of(&s), Some(ErrorReason::TaskNotFound));
    }

    #[test]
    fn every_reason_round_trips() {
        for r in ALL {
            assert_eq!(ErrorReason::parse(r.as_str()), Some(*r));
        }
        assert_eq!(ErrorReason::parse("NOPE"), None);
    }

    #[test]
    fn reason_from_message_prefix_when_no_detail() {
        let s = Status::new(Code::NotFound, "TASK_NOT_FOUND: gone");
        assert_eq!(reason_of(&s), Some(ErrorReason::TaskNotFound));
    }
}
