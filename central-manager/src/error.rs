//! The one error type of central-manager. Every layer below the api returns
//! it; `api::error` turns it into a gRPC status in exactly one place.
//!
//! The `Display` text of each variant is the human sentence that follows the
//! reason on the wire, so it must never contain internals: the two variants
//! that wrap internal detail (`StoreUnavailable`, `Internal`) keep it for the
//! logs and are given a fixed public sentence by the mapping.

use ipa_proto::ErrorReason;

use crate::domain::TaskId;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a request, by API reason.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// INVALID_TITLE: empty/whitespace or longer than 255 characters.
    #[error("{0}")]
    InvalidTitle(String),
    /// MISSING_ACTOR_ID: a mutating call without `actor_id`.
    #[error("actor_id is required for this call")]
    MissingActorId,
    /// MISSING_REASON: CancelTask without `reason`.
    #[error("reason is required to cancel a task")]
    MissingReason,
    /// INVALID_ARGUMENT: any other bad field; the message names it.
    #[error("{field}: {problem}")]
    InvalidArgument {
        /// The request field, as named in the proto.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// TASK_NOT_FOUND.
    #[error("no task with id {0}")]
    TaskNotFound(TaskId),
    /// ALREADY_COMPLETED.
    #[error("task {0} is already completed")]
    AlreadyCompleted(TaskId),
    /// ALREADY_CANCELLED.
    #[error("task {0} is already cancelled")]
    AlreadyCancelled(TaskId),
    /// ALREADY_FAILED.
    #[error("task {0} has already failed")]
    AlreadyFailed(TaskId),
    /// ALREADY_STARTED: the task's pod runs or is starting.
    #[error("the pod of task {0} is already running or starting")]
    AlreadyStarted(TaskId),
    /// NOT_RUNNING: StopPod when no pod runs.
    #[error("task {0} has no running pod")]
    NotRunning(TaskId),
    /// POD_STATE_UNKNOWN: the task's pod-host is unreachable.
    #[error("the pod of task {0} is on an unreachable pod-host and may still run")]
    PodStateUnknown(TaskId),
    /// NO_POD_HOST: nowhere to place a pod.
    #[error("{0}")]
    NoPodHost(String),
    /// SPAWN_FAILED: the pod-host could not create the pod's process (the
    /// template's program or working directory is missing, …); recorded as
    /// one `pod_crashed`. The sentence says what failed.
    #[error("{0}")]
    SpawnFailed(String),
    /// INVALID_SCHEDULE: a bad cron expression, time zone or interval, or
    /// both or neither of cron and interval.
    #[error("{0}")]
    InvalidSchedule(String),
    /// SCHEDULE_NOT_FOUND: no schedule with that id or name.
    #[error("no schedule {0}")]
    ScheduleNotFound(String),
    /// ALREADY_EXISTS: a schedule with that name exists.
    #[error("a schedule named {0:?} already exists")]
    NameTaken(String),
    /// TASK_NOT_TERMINAL: DeleteTask on a task that is not finished.
    #[error("task {0} is not completed, cancelled or failed; cancel it first")]
    TaskNotTerminal(TaskId),
    /// DEPENDENCIES_NOT_MET: StartPod without `queue` on a task with a
    /// dependency that is not COMPLETED (the first such one).
    #[error(
        "task {0} depends on task {1}, which is not completed (StartPod with queue waits for it)"
    )]
    DependenciesNotMet(TaskId, TaskId),
    /// EVENT_STORE_UNAVAILABLE: the database cannot be reached or written.
    /// The string is for the logs only.
    #[error("the event store is unavailable ({0})")]
    StoreUnavailable(String),
    /// UNAUTHENTICATED: auth is on and the caller brought no token or
    /// certificate we accept.
    #[error("{0}")]
    Unauthenticated(String),
    /// PERMISSION_DENIED: the caller's role lacks the RPC.
    #[error("{0}")]
    PermissionDenied(String),
    /// ACTOR_MISMATCH: `actor_id` is not the caller (and the caller may not
    /// act for others), or it is the reserved `system`.
    #[error("{0}")]
    ActorMismatch(String),
    /// The server is shutting down and no longer takes commands.
    #[error("central-manager is shutting down")]
    ShuttingDown,
    /// SHUTTING_DOWN: this replica led at epoch `mine`, the lease row now
    /// says `current`: it was deposed, writes nothing more, and exits.
    #[error(
        "this replica lost the leadership (its epoch {mine}, the database's {current}) and is stopping; retry on another replica"
    )]
    Deposed { mine: u64, current: u64 },
    /// TOO_MANY_STREAMS: `--max-streams` WatchEvents + GetPodLogs streams
    /// are open.
    #[error(
        "{0} WatchEvents and GetPodLogs streams are open, the limit (--max-streams); retry later"
    )]
    TooManyStreams(u32),
    /// WATCH_TOO_SLOW: the watcher's client read nothing for the lag limit
    /// while events waited; it may resume after `position`.
    #[error(
        "the client read no event for {limit_ms} ms while events waited (--watch-lag-limit-ms); resume after position {position}"
    )]
    WatchTooSlow {
        /// The last position delivered before this error.
        position: u64,
        /// The lag limit, milliseconds.
        limit_ms: u64,
    },
    /// INTERNAL: a bug or an impossible state. The string is for the logs
    /// only.
    #[error("internal error ({0})")]
    Internal(String),
}

impl Error {
    /// INVALID_ARGUMENT for `field`.
    pub fn invalid(field: &'static str, problem: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            problem: problem.into(),
        }
    }
}

/// SQLite primary result codes that mean "cannot use the database right
/// now" rather than "this statement is wrong": BUSY, LOCKED, NOMEM,
/// READONLY, IOERR, CORRUPT, FULL, CANTOPEN, NOTADB.
fn is_unavailable(code: i32) -> bool {
    matches!(code & 0xff, 5 | 6 | 7 | 8 | 10 | 11 | 13 | 14 | 26)
}

/// PostgreSQL SQLSTATEs that mean "the database cannot take this now":
/// connection exceptions (08), insufficient resources such as a full disk
/// (53), operator intervention such as a shutdown or a cancelled statement
/// (57), system errors (58), serialization failures and deadlocks (40001,
/// 40P01), a read-only transaction (25006, a standby), and a lock not
/// available (55P03).
fn pg_unavailable(code: &str) -> bool {
    matches!(code.get(..2), Some("08" | "53" | "57" | "58"))
        || matches!(code, "40001" | "40P01" | "25006" | "55P03")
}

impl From<sqlx::Error> for Error {
    /// Database trouble is EVENT_STORE_UNAVAILABLE (the database cannot be
    /// reached, is locked past the busy timeout, full, read-only, …); a row
    /// we cannot decode or a violated constraint is a bug: INTERNAL.
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        let unavailable = match &e {
            E::Io(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed | E::Tls(_) => true,
            E::Database(db) => match db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                Some(pg) => pg_unavailable(pg.code()),
                None => db
                    .code()
                    .and_then(|c| c.parse::<i32>().ok())
                    .is_some_and(is_unavailable),
            },
            _ => false,
        };
        if unavailable {
            Self::StoreUnavailable(e.to_string())
        } else {
            Self::Internal(e.to_string())
        }
    }
}

impl From<rusqlite::Error> for Error {
    /// The same split as for sqlx errors.
    fn from(e: rusqlite::Error) -> Self {
        if e.sqlite_error()
            .is_some_and(|f| is_unavailable(f.extended_code))
        {
            Self::StoreUnavailable(e.to_string())
        } else {
            Self::Internal(e.to_string())
        }
    }
}

impl Error {
    /// The API reason (and so the gRPC code) of this error.
    pub fn reason(&self) -> ErrorReason {
        match self {
            Self::InvalidTitle(_) => ErrorReason::InvalidTitle,
            Self::MissingActorId => ErrorReason::MissingActorId,
            Self::MissingReason => ErrorReason::MissingReason,
            Self::InvalidArgument { .. } => ErrorReason::InvalidArgument,
            Self::TaskNotFound(_) => ErrorReason::TaskNotFound,
            Self::AlreadyCompleted(_) => ErrorReason::AlreadyCompleted,
            Self::AlreadyCancelled(_) => ErrorReason::AlreadyCancelled,
            Self::AlreadyFailed(_) => ErrorReason::AlreadyFailed,
            Self::AlreadyStarted(_) => ErrorReason::AlreadyStarted,
            Self::NotRunning(_) => ErrorReason::NotRunning,
            Self::PodStateUnknown(_) => ErrorReason::PodStateUnknown,
            Self::NoPodHost(_) => ErrorReason::NoPodHost,
            Self::SpawnFailed(_) => ErrorReason::SpawnFailed,
            Self::InvalidSchedule(_) => ErrorReason::InvalidSchedule,
            Self::ScheduleNotFound(_) => ErrorReason::ScheduleNotFound,
            Self::NameTaken(_) => ErrorReason::AlreadyExists,
            Self::TaskNotTerminal(_) => ErrorReason::TaskNotTerminal,
            Self::DependenciesNotMet(..) => ErrorReason::DependenciesNotMet,
            Self::StoreUnavailable(_) => ErrorReason::EventStoreUnavailable,
            Self::Unauthenticated(_) => ErrorReason::Unauthenticated,
            Self::PermissionDenied(_) => ErrorReason::PermissionDenied,
            Self::ActorMismatch(_) => ErrorReason::ActorMismatch,
            Self::ShuttingDown | Self::Deposed { .. } => ErrorReason::ShuttingDown,
            Self::TooManyStreams(_) => ErrorReason::TooManyStreams,
            Self::WatchTooSlow { .. } => ErrorReason::WatchTooSlow,
            Self::Internal(_) => ErrorReason::Internal,
        }
    }

    /// The sentence a client sees after the reason: internals replaced by
    /// a fixed text.
    pub fn public_sentence(&self) -> String {
        match self {
            Self::StoreUnavailable(_) => {
                "the event store cannot be reached or written right now; retry later".into()
            }
            Self::Internal(_) => "an unexpected error occurred; it has been logged".into(),
            other => other.to_string(),
        }
    }

    /// `REASON: sentence`, as on the wire (also used for `pod_message`).
    pub fn public_message(&self) -> String {
        format!("{}: {}", self.reason(), self.public_sentence())
    }

    /// Whether the error hides detail that must be logged.
    pub fn is_internal(&self) -> bool {
        matches!(self, Self::StoreUnavailable(_) | Self::Internal(_))
    }
}
