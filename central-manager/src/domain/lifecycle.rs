//! The task lifecycle as pure functions over the current state: which
//! command is allowed in which state and what it changes. The writer reads
//! the row inside its transaction, asks these functions, and applies the
//! answer, so the rules are unit-tested without a database.
//!
//! status: `inactive ⇄ active`, and from either to a terminal `completed`,
//! `cancelled` or `failed`; terminal tasks refuse lifecycle calls with the
//! ALREADY_* reason of their status.

use super::{EventType, Phase, PodStatus, TaskId, TaskStatus};
use crate::error::{Error, Result};

/// A terminal command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// CompleteTask.
    Complete,
    /// CancelTask.
    Cancel,
}

/// What a successful command changes on the row, and the event it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// New status.
    pub status: TaskStatus,
    /// New phase.
    pub phase: Phase,
    /// New pod status.
    pub pod_status: PodStatus,
    /// The event recording it.
    pub event: EventType,
    /// Whether a pod must be stopped as part of it (its pod-host is told
    /// after commit).
    pub stop_pod: bool,
}

/// The ALREADY_* error for a terminal status, `Ok` otherwise.
pub fn ensure_not_terminal(id: TaskId, status: TaskStatus) -> Result<()> {
    match status {
        TaskStatus::Completed => Err(Error::AlreadyCompleted(id)),
        TaskStatus::Cancelled => Err(Error::AlreadyCancelled(id)),
        TaskStatus::Failed => Err(Error::AlreadyFailed(id)),
        TaskStatus::Inactive | TaskStatus::Active => Ok(()),
    }
}

/// CompleteTask / CancelTask: from any non-terminal status to the terminal
/// one, phase to match, pod stopped. Allowed whatever the pod status is
/// (also UNKNOWN: the pod is fenced later, docs/api.md POD_STATE_UNKNOWN).
pub fn finish(id: TaskId, status: TaskStatus, pod: PodStatus, cmd: Finish) -> Result<Transition> {
    ensure_not_terminal(id, status)?;
    let (status, phase, event) = match cmd {
        Finish::Complete => (
            TaskStatus::Completed,
            Phase::Completed,
            EventType::TaskCompleted,
        ),
        Finish::Cancel => (
            TaskStatus::Cancelled,
            Phase::Cancelled,
            EventType::TaskCancelled,
        ),
    };
    Ok(Transition {
        status,
        phase,
        pod_status: PodStatus::Stopped,
        event,
        stop_pod: !matches!(pod, PodStatus::Stopped | PodStatus::Queued),
    })
}

/// What StartPod (and the start half of RestartPod) may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartDecision {
    /// Nothing runs: place a pod.
    Place,
}

/// StartPod: ALREADY_* on a terminal task, ALREADY_STARTED while a pod runs
/// or starts, POD_STATE_UNKNOWN while its pod-host is unreachable.
pub fn decide_start(id: TaskId, status: TaskStatus, pod: PodStatus) -> Result<StartDecision> {
    ensure_not_terminal(id, status)?;
    match pod {
        PodStatus::Stopped => Ok(StartDecision::Place),
        // Queued: it starts by itself when room appears (StartPod with
        // `queue` answers `queued` instead, see `core::queue`).
        PodStatus::Starting | PodStatus::Running | PodStatus::Queued => {
            Err(Error::AlreadyStarted(id))
        }
        PodStatus::Unknown => Err(Error::PodStateUnknown(id)),
    }
}

/// What StopPod may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopDecision {
    /// A pod runs or starts: stop it.
    Stop,
    /// The task waits in the queue: take it out (`pod_stopped` with
    /// `{"queued": true}`).
    Unqueue,
}

/// StopPod: ALREADY_* on a terminal task, NOT_RUNNING when no pod runs,
/// POD_STATE_UNKNOWN while its pod-host is unreachable.
pub fn decide_stop(id: TaskId, status: TaskStatus, pod: PodStatus) -> Result<StopDecision> {
    ensure_not_terminal(id, status)?;
    match pod {
        PodStatus::Stopped => Err(Error::NotRunning(id)),
        PodStatus::Starting | PodStatus::Running => Ok(StopDecision::Stop),
        PodStatus::Queued => Ok(StopDecision::Unqueue),
        PodStatus::Unknown => Err(Error::PodStateUnknown(id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> TaskId {
        TaskId::new()
    }

    #[test]
    fn finish_from_live_statuses() {
        for status in [TaskStatus::Inactive, TaskStatus::Active] {
            for pod in PodStatus::ALL {
                let t = finish(id(), status, *pod, Finish::Complete).unwrap();
                assert_eq!(t.status, TaskStatus::Completed);
                assert_eq!(t.phase, Phase::Completed);
                assert_eq!(t.pod_status, PodStatus::Stopped);
                assert_eq!(t.event, EventType::TaskCompleted);
                assert_eq!(
                    t.stop_pod,
                    !matches!(*pod, PodStatus::Stopped | PodStatus::Queued)
                );
                let t = finish(id(), status, *pod, Finish::Cancel).unwrap();
                assert_eq!(t.status, TaskStatus::Cancelled);
                assert_eq!(t.phase, Phase::Cancelled);
                assert_eq!(t.event, EventType::TaskCancelled);
            }
        }
    }

    #[test]
    fn terminal_tasks_refuse_everything_with_their_reason() {
        let cases = [
            (TaskStatus::Completed, "AlreadyCompleted"),
            (TaskStatus::Cancelled, "AlreadyCancelled"),
            (TaskStatus::Failed, "AlreadyFailed"),
        ];
        for (status, want) in cases {
            let check = |e: Error| {
                let got = format!("{e:?}");
                assert!(got.starts_with(want), "{status}: {got}");
            };
            for cmd in [Finish::Complete, Finish::Cancel] {
                check(finish(id(), status, PodStatus::Stopped, cmd).unwrap_err());
            }
            check(decide_start(id(), status, PodStatus::Stopped).unwrap_err());
            check(decide_stop(id(), status, PodStatus::Running).unwrap_err());
        }
    }

    #[test]
    fn start_depends_on_pod_status() {
        let s = TaskStatus::Inactive;
        assert_eq!(
            decide_start(id(), s, PodStatus::Stopped).unwrap(),
            StartDecision::Place
        );
        assert!(matches!(
            decide_start(id(), s, PodStatus::Starting),
            Err(Error::AlreadyStarted(_))
        ));
        assert!(matches!(
            decide_start(id(), s, PodStatus::Running),
            Err(Error::AlreadyStarted(_))
        ));
        assert!(matches!(
            decide_start(id(), s, PodStatus::Unknown),
            Err(Error::PodStateUnknown(_))
        ));
    }

    #[test]
    fn stop_depends_on_pod_status() {
        let s = TaskStatus::Active;
        assert!(matches!(
            decide_stop(id(), s, PodStatus::Stopped),
            Err(Error::NotRunning(_))
        ));
        assert_eq!(
            decide_stop(id(), s, PodStatus::Running).unwrap(),
            StopDecision::Stop
        );
        assert_eq!(
            decide_stop(id(), s, PodStatus::Starting).unwrap(),
            StopDecision::Stop
        );
        assert!(matches!(
            decide_stop(id(), s, PodStatus::Unknown),
            Err(Error::PodStateUnknown(_))
        ));
    }
}
