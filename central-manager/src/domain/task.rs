//! A task as stored in the `tasks` table, and an event as stored in the
//! event store.

use super::{
    Description, Metadata, Phase, PodStatus, RestartPolicySpec, TaskId, TaskStatus, TemplateName,
    Title,
};

/// The current state of one task (a `tasks` row). Times are unix micros.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// Its id (also its event stream's id).
    pub task_id: TaskId,
    /// Title.
    pub title: Title,
    /// Description.
    pub description: Description,
    /// Phase.
    pub phase: Phase,
    /// Status.
    pub status: TaskStatus,
    /// Creation time.
    pub created_at: i64,
    /// Time of the last change.
    pub updated_at: i64,
    /// The creating actor.
    pub created_by: String,
    /// Metadata.
    pub metadata: Metadata,
    /// Pod template.
    pub template: TemplateName,
    /// Restart policy as requested (defaults are applied on use).
    pub restart_policy: RestartPolicySpec,
    /// Pod status.
    pub pod_status: PodStatus,
    /// The current (or last) pod, if the task ever had one running.
    pub pod: Option<PodInfo>,
    /// Live state version reported by the running pod (0 when none).
    pub live_version: u64,
    /// Automatic restarts so far.
    pub restart_count: u32,
    /// Why the pod is not running when that is not the caller's doing.
    pub pod_message: String,
    /// When an automatic restart is scheduled.
    pub next_restart_at: Option<i64>,
    /// Read from the archive (ArchiveTasks).
    pub archived: bool,
    /// Run timeout of each pod, in seconds.
    pub timeout_seconds: Option<u32>,
    /// Deadline, unix µs.
    pub deadline: Option<i64>,
    /// Priority.
    pub priority: super::Priority,
    /// Queue timeout, in seconds.
    pub queue_timeout_seconds: Option<u32>,
    /// Its place in the queue while `pod_status` is QUEUED.
    pub queue: Option<super::QueueEntry>,
    /// The tasks it depends on (`depends_on`), in the order given.
    pub depends_on: Vec<TaskId>,
    /// A start was asked for and waits for a dependency to complete
    /// (`pod_status` QUEUED, `waiting_for` "dependencies", no queue entry).
    pub waiting_dependencies: bool,
}

/// A pod of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    /// Pod id.
    pub pod_id: String,
    /// Id of the pod-host running it.
    pub pod_host: String,
    /// OS process id.
    pub pid: u32,
    /// +1 on every start of this task's pod.
    pub generation: u64,
    /// Start time, unix micros.
    pub started_at: i64,
}

/// Event types (docs/api.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// CreateTask.
    TaskCreated,
    /// A pod was started (by StartPod, RestartPod or an automatic restart).
    PodStarted,
    /// A pod was stopped on request (no crash, no restart).
    PodStopped,
    /// A pod exited 0 on its own.
    PodExited,
    /// A pod exited non-zero or was killed by a signal.
    PodCrashed,
    /// A pod's host was lost and the fence deadline passed.
    PodLost,
    /// A pod was re-adopted after its host came back.
    PodRecovered,
    /// A stale pod was killed.
    PodFenced,
    /// A pod ran longer than its task's `timeout_seconds` and was stopped
    /// (counts as a crash for the restart policy).
    PodTimedOut,
    /// The running pod reported a new phase.
    PhaseChanged,
    /// An automatic restart is scheduled.
    RestartScheduled,
    /// CompleteTask, or the pod finished its work.
    TaskCompleted,
    /// CancelTask.
    TaskCancelled,
    /// The restart budget is spent.
    TaskFailed,
    /// No pod-host had room: the task waits in the queue.
    PodQueued,
    /// The task waited in the queue longer than its queue timeout.
    QueueExpired,
}

impl EventType {
    /// Every event type (docs/api.md must name each one; a test in tests/
    /// checks that).
    pub const ALL: &[EventType] = &[
        Self::TaskCreated,
        Self::PodStarted,
        Self::PodStopped,
        Self::PodExited,
        Self::PodCrashed,
        Self::PodLost,
        Self::PodRecovered,
        Self::PodFenced,
        Self::PodTimedOut,
        Self::PhaseChanged,
        Self::RestartScheduled,
        Self::TaskCompleted,
        Self::TaskCancelled,
        Self::TaskFailed,
        Self::PodQueued,
        Self::QueueExpired,
    ];

    /// The wire/database name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TaskCreated => "task_created",
            Self::PodStarted => "pod_started",
            Self::PodStopped => "pod_stopped",
            Self::PodExited => "pod_exited",
            Self::PodCrashed => "pod_crashed",
            Self::PodLost => "pod_lost",
            Self::PodRecovered => "pod_recovered",
            Self::PodFenced => "pod_fenced",
            Self::PodTimedOut => "pod_timed_out",
            Self::PhaseChanged => "phase_changed",
            Self::RestartScheduled => "restart_scheduled",
            Self::TaskCompleted => "task_completed",
            Self::TaskCancelled => "task_cancelled",
            Self::TaskFailed => "task_failed",
            Self::PodQueued => "pod_queued",
            Self::QueueExpired => "queue_expired",
        }
    }
}

/// One committed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// Global position, strictly increasing.
    pub position: u64,
    /// The task (stream) it belongs to.
    pub task_id: TaskId,
    /// Per-task version, 1, 2, 3…
    pub version: u64,
    /// Event type, e.g. `task_created`.
    pub event_type: String,
    /// A JSON object.
    pub data_json: String,
    /// Who caused it.
    pub actor_id: String,
    /// The request that caused it.
    pub correlation_id: String,
    /// Commit-time clock, unix micros.
    pub occurred_at: i64,
}

#[cfg(test)]
mod tests {
    use super::EventType;

    /// A new variant fails to compile here until it gets an index, and the
    /// assertion then fails until it is in `ALL` at that index.
    #[test]
    fn all_lists_every_event_type_once() {
        let index = |e: EventType| match e {
            EventType::TaskCreated => 0,
            EventType::PodStarted => 1,
            EventType::PodStopped => 2,
            EventType::PodExited => 3,
            EventType::PodCrashed => 4,
            EventType::PodLost => 5,
            EventType::PodRecovered => 6,
            EventType::PodFenced => 7,
            EventType::PodTimedOut => 8,
            EventType::PhaseChanged => 9,
            EventType::RestartScheduled => 10,
            EventType::TaskCompleted => 11,
            EventType::TaskCancelled => 12,
            EventType::TaskFailed => 13,
            EventType::PodQueued => 14,
            EventType::QueueExpired => 15,
        };
        for (i, e) in EventType::ALL.iter().enumerate() {
            assert_eq!(index(*e), i, "{}", e.as_str());
        }
        assert_eq!(EventType::ALL.len(), 16);
    }
}
