//! What pod-hosts and central-manager tell each other, as domain types.
//!
//! The `ipa.v1.PodHost` protocol's messages stop at the session adapter
//! (`hosts::grpc`), which converts them to and from these; the supervision
//! core (`core/`) and the simulator speak only these. Values a host sends
//! are not trusted yet: `hosts::hello` validates and clamps them.

use super::Phase;

/// Longest host-supplied text kept (exit messages, refusals, status line
/// messages): it ends up in events and `pod_message`.
pub const MAX_HOST_TEXT_CHARS: usize = 1000;

/// `s` cut to [`MAX_HOST_TEXT_CHARS`] characters (an ellipsis marks a cut).
pub fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_HOST_TEXT_CHARS) {
        None => s.to_owned(),
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}

/// Why a pod's process ended, as its host reports it (`ipa.v1.ExitCause`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExitCause {
    /// Not said (an older host, or a value this central does not know):
    /// judged by the exit status alone.
    Unspecified,
    /// The process ended on its own.
    Exited,
    /// Stopped on request (StopPod).
    Stopped,
    /// Killed as stale (a newer generation, or a fencing StopPod).
    Fenced,
    /// Killed by its own host's self-fence (no contact with central).
    SelfFenced,
    /// Its host is shutting down.
    HostShutdown,
    /// The process could not be created.
    SpawnFailed,
}

impl ExitCause {
    /// The protocol's name of the value, as recorded in event data.
    pub const fn as_str_name(self) -> &'static str {
        match self {
            Self::Unspecified => "EXIT_CAUSE_UNSPECIFIED",
            Self::Exited => "EXIT_CAUSE_EXITED",
            Self::Stopped => "EXIT_CAUSE_STOPPED",
            Self::Fenced => "EXIT_CAUSE_FENCED",
            Self::SelfFenced => "EXIT_CAUSE_SELF_FENCED",
            Self::HostShutdown => "EXIT_CAUSE_HOST_SHUTDOWN",
            Self::SpawnFailed => "EXIT_CAUSE_SPAWN_FAILED",
        }
    }
}

/// How a pod ended, as its host reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodExit {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub cause: ExitCause,
    /// The pod reported PHASE_COMPLETED before exiting.
    pub reported_completed: bool,
    /// Free text from the host (not trusted: clipped before it is kept).
    pub message: String,
}

/// One pod in a host's hello snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSnapshot {
    /// As the host sent it (not yet parsed: a bad one is fenced).
    pub task_id: String,
    pub pod_id: String,
    pub generation: u64,
    pub pid: u32,
    /// Still running (starting or running), as opposed to exited with its
    /// exit not yet acknowledged.
    pub alive: bool,
    /// Last reported phase (`None`: none yet, or one this central does not
    /// know).
    pub phase: Option<Phase>,
    pub version: u64,
    /// When the host started it, unix µs as the host says (not trusted).
    pub started_at: Option<i64>,
}

/// The first message of a host on a supervision stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hello {
    pub host_id: String,
    pub boot_id: String,
    pub capacity: u32,
    pub templates: Vec<String>,
    pub pods: Vec<PodSnapshot>,
    /// The host's own `--fence-timeout-ms`.
    pub fence_timeout_ms: u32,
    pub last_seq: u64,
    /// The host killed its pods for lack of contact since its last hello.
    pub self_fenced: bool,
    pub draining: bool,
    /// Milliseconds on the host's monotonic clock since its boot.
    pub host_clock_ms: u64,
}

/// What happened to a pod (one entry of a host's event log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodEventKind {
    Started {
        pid: u32,
    },
    /// A status line: `phase` is `None` when the line set none (or one this
    /// central does not know).
    StateChanged {
        phase: Option<Phase>,
        message: String,
        version: u64,
    },
    Exited(PodExit),
    /// A kind this central does not know (a newer host): nothing to do but
    /// acknowledge it in order.
    Unknown,
}

/// A pod event with its per-boot sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEvent {
    pub seq: u64,
    /// As the host sent it (parsed by the supervisor).
    pub task_id: String,
    pub pod_id: String,
    pub generation: u64,
    pub kind: PodEventKind,
}

/// A message from a pod-host on its supervision stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMessage {
    Hello(Hello),
    Heartbeat {
        running_pods: u32,
        draining: bool,
        last_seq: u64,
        /// The host's clock when sent (ms since its boot), echoed back in
        /// pings and StartPods: the host's lease.
        host_clock_ms: u64,
    },
    PodEvent(PodEvent),
}

/// A message from central-manager on a supervision stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CentralMessage {
    /// The first message: the heartbeat interval and where to resume.
    Hello {
        heartbeat_interval_ms: u32,
        /// The boot central last heard from at this endpoint ("" if none).
        known_boot_id: String,
        /// The last event of that boot central has committed.
        acked_seq: u64,
        central_id: String,
    },
    /// Keeps the host's fence timer fresh: the host's lease runs from
    /// `echo_host_clock_ms`, the newest host clock reading central has
    /// received on this stream (0: none yet).
    Ping { echo_host_clock_ms: u64 },
    /// Every event up to `seq` is committed.
    Ack(u64),
}

/// StartPod to a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartRequest {
    pub task_id: String,
    pub pod_id: String,
    pub generation: u64,
    pub template: String,
    pub title: String,
    pub description: String,
    pub metadata: std::collections::BTreeMap<String, String>,
    pub correlation_id: String,
    /// The lease the start is issued under: the newest host clock reading
    /// central had received from the host, and that host's boot. The host
    /// refuses the start (LEASE_EXPIRED) when it is a fence timeout old by
    /// its own clock or from another boot.
    pub echo_host_clock_ms: u64,
    pub host_boot_id: String,
}

/// A host's answer to StartPod: the pod runs (or is starting).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StartedPod {
    pub pid: u32,
    /// Unix µs as the host says (not trusted).
    pub started_at: Option<i64>,
}

/// StopPod to a host, by the pod's generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopRequest {
    pub task_id: String,
    pub pod_id: String,
    pub generation: u64,
    /// 0: the host's `--stop-grace-ms`.
    pub grace_ms: u32,
    pub reason: String,
    /// Report the exit as FENCED (a stale pod) rather than STOPPED.
    pub fence: bool,
}

/// GetPodLogs to a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogsRequest {
    pub task_id: String,
    pub pod_id: String,
    pub follow: bool,
    pub tail_lines: u32,
}

/// A piece of a pod's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    pub data: Vec<u8>,
    /// "stdout" or "stderr".
    pub stream: String,
}

/// Why a host said no. Each of these means the command was not carried
/// out (a start did not start anything, a stop found nothing to stop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NoCapacity,
    InvalidArgument,
    ShuttingDown,
    /// The command's generation is older than one the host has seen for
    /// that task.
    StaleGeneration,
    /// The pod's process could not be created.
    SpawnFailed,
    PodNotFound,
    /// The start was issued under a lease that expired on the host (or
    /// another boot's): nothing was started.
    LeaseExpired,
}

/// A failed call to a pod-host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostCallError {
    /// The host answered and did not do it.
    #[error("{message}")]
    Refused { refusal: Refusal, message: String },
    /// No usable answer (the connection failed, an unexpected error): it
    /// may or may not have been done.
    #[error("{0}")]
    Unknown(String),
}

impl HostCallError {
    /// The refusal, if the host answered with one.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Self::Refused { refusal, .. } => Some(*refusal),
            Self::Unknown(_) => None,
        }
    }

    /// The host's (clipped) text.
    pub fn message(&self) -> String {
        match self {
            Self::Refused { message, .. } | Self::Unknown(message) => clip(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_host_text_is_clipped() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(MAX_HOST_TEXT_CHARS + 5);
        let c = clip(&long);
        assert_eq!(c.chars().count(), MAX_HOST_TEXT_CHARS + 1);
        assert!(c.ends_with('…'));
        assert_eq!(
            clip(&"x".repeat(MAX_HOST_TEXT_CHARS)).len(),
            MAX_HOST_TEXT_CHARS
        );
    }
}
