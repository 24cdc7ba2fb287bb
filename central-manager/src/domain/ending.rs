//! What a pod's end means for its task: the event type docs/api.md prescribes,
//! whether the restart policy gets a say, and the event data recorded for
//! it. Pure.

use super::host::{ExitCause, PodExit, clip};
use super::pod::EndReport;
use super::{EventType, Phase};

/// The consequence of one pod exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Exit 0 after reporting PHASE_COMPLETED: `task_completed` (actor
    /// `system`), task terminal.
    Completed,
    /// Any other exit 0: `pod_exited`, task inactive, no restart.
    Exited,
    /// Non-zero exit or death by signal: `pod_crashed`, task inactive,
    /// restart policy decides.
    Crashed,
    /// The pod could not be created at all (missing program or working
    /// directory, …): one `pod_crashed` with the reason and no
    /// `pod_started` before it (nothing ran); the restart policy decides as
    /// for a crash.
    SpawnFailed,
    /// Stopped on request (StopPod, Complete/Cancel, a newer generation):
    /// `pod_stopped`, no crash recorded, no restart.
    Stopped,
    /// Killed by its own host's self-fence (the host lost contact with us):
    /// `pod_lost`, task inactive, restart policy decides.
    Lost,
    /// Its pod-host is shutting down (drain): `pod_stopped` with that
    /// reason; the task may be placed elsewhere at once (not a crash).
    HostShutdown,
    /// Stopped by central-manager because it ran longer than its task's
    /// `timeout_seconds`: `pod_timed_out`, task inactive, and the restart
    /// policy decides as for a crash.
    TimedOut,
}

impl Ending {
    /// The event type committed for it.
    pub fn event_type(self) -> EventType {
        match self {
            Self::Completed => EventType::TaskCompleted,
            Self::Exited => EventType::PodExited,
            Self::Crashed | Self::SpawnFailed => EventType::PodCrashed,
            Self::Stopped | Self::HostShutdown => EventType::PodStopped,
            Self::Lost => EventType::PodLost,
            Self::TimedOut => EventType::PodTimedOut,
        }
    }

    /// Whether the ending counts against the restart budget.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Self::Crashed | Self::SpawnFailed | Self::Lost | Self::TimedOut
        )
    }
}

/// Classifies an exit as the pod-host reported it.
pub fn classify(exit: &PodExit) -> Ending {
    match exit.cause {
        ExitCause::Stopped | ExitCause::Fenced => Ending::Stopped,
        ExitCause::SelfFenced => Ending::Lost,
        ExitCause::HostShutdown => Ending::HostShutdown,
        ExitCause::SpawnFailed => Ending::SpawnFailed,
        // Unknown causes are judged by the exit status alone.
        ExitCause::Exited | ExitCause::Unspecified => match (exit.exit_code, exit.signal) {
            (Some(0), None) if exit.reported_completed => Ending::Completed,
            (Some(0), None) => Ending::Exited,
            _ => Ending::Crashed,
        },
    }
}

/// A one-line human description, for `pod_message` and event data.
pub fn describe(exit: &PodExit) -> String {
    let how = match (exit.exit_code, exit.signal) {
        (_, Some(sig)) => format!("killed by signal {sig}"),
        (Some(code), None) => format!("exited with code {code}"),
        (None, None) => "ended".to_owned(),
    };
    if exit.message.is_empty() {
        how
    } else {
        format!("{how}: {}", exit.message)
    }
}

/// Event data for an exit.
pub fn exit_detail(exit: &PodExit) -> serde_json::Value {
    serde_json::json!({
        "exit_code": exit.exit_code,
        "signal": exit.signal,
        "cause": exit.cause.as_str_name(),
        "reported_completed": exit.reported_completed,
        "message": clip(&exit.message),
    })
}

/// The report for an exit streamed by a host (its free text clipped).
pub fn end_report(exit: &PodExit, last_phase: Option<Phase>) -> EndReport {
    let exit = &PodExit {
        message: clip(&exit.message),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(cause: ExitCause, code: Option<i32>, signal: Option<i32>, completed: bool) -> PodExit {
        PodExit {
            exit_code: code,
            signal,
            cause,
            reported_completed: completed,
            message: String::new(),
        }
    }

    #[test]
    fn exit_codes_and_signals() {
        use ExitCause::*;
        assert_eq!(
            classify(&exit(Exited, Some(0), None, true)),
            Ending::Completed
        );
        assert_eq!(
            classify(&exit(Exited, Some(0), None, false)),
            Ending::Exited
        );
        assert_eq!(
            classify(&exit(Exited, Some(1), None, true)),
            Ending::Crashed
        );
        assert_eq!(
            classify(&exit(Exited, None, Some(9), false)),
            Ending::Crashed
        );
        assert_eq!(
            classify(&exit(Unspecified, Some(3), None, false)),
            Ending::Crashed
        );
    }

    #[test]
    fn causes_decided_by_the_host() {
        use ExitCause::*;
        assert_eq!(
            classify(&exit(Stopped, None, Some(15), false)),
            Ending::Stopped
        );
        assert_eq!(
            classify(&exit(Fenced, None, Some(9), false)),
            Ending::Stopped
        );
        assert_eq!(
            classify(&exit(SelfFenced, None, Some(9), false)),
            Ending::Lost
        );
        assert_eq!(
            classify(&exit(HostShutdown, Some(0), None, false)),
            Ending::HostShutdown
        );
        assert_eq!(
            classify(&exit(SpawnFailed, None, None, false)),
            Ending::SpawnFailed
        );
        assert_eq!(Ending::SpawnFailed.event_type(), EventType::PodCrashed);
        assert!(Ending::SpawnFailed.is_failure());
        assert!(Ending::Lost.is_failure() && Ending::Crashed.is_failure());
        assert!(Ending::TimedOut.is_failure());
        assert_eq!(Ending::TimedOut.event_type().as_str(), "pod_timed_out");
        assert!(!Ending::Stopped.is_failure() && !Ending::HostShutdown.is_failure());
    }

    #[test]
    fn descriptions() {
        let mut e = exit(ExitCause::Exited, Some(2), None, false);
        assert_eq!(describe(&e), "exited with code 2");
        e.signal = Some(9);
        e.message = "oom".into();
        assert_eq!(describe(&e), "killed by signal 9: oom");
    }
}
