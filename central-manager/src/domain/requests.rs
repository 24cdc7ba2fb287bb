//! Validated requests: what the core is asked to do, in domain types. The
//! api layer builds them from proto messages (`api::convert`).

use std::collections::BTreeMap;

use super::{
    ActorId, CorrelationId, Description, Metadata, Phase, PodStatus, RequestId, RestartPolicySpec,
    TaskId, TaskStatus, TemplateName, Title,
};
use crate::error::{Error, Result};

/// Page size when the caller gives 0.
pub const DEFAULT_PAGE: u32 = 100;
/// Largest page a caller may ask for: bounds the work and memory of one
/// call; page with `offset` / `after_*` for more.
pub const MAX_PAGE: u32 = 1000;

/// A page size: 0 → 100, above 1000 → INVALID_ARGUMENT naming `field`.
pub fn page_limit(limit: u32, field: &'static str) -> Result<u32> {
    match limit {
        0 => Ok(DEFAULT_PAGE),
        n if n > MAX_PAGE => Err(Error::invalid(
            field,
            format!("{n} is over the limit of {MAX_PAGE}"),
        )),
        n => Ok(n),
    }
}

/// CreateTask.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// Title.
    pub title: Title,
    /// Description.
    pub description: Description,
    /// Creator.
    pub actor: ActorId,
    /// Correlation id for its events.
    pub correlation: CorrelationId,
    /// Start the pod before replying.
    pub auto_start: bool,
    /// Metadata.
    pub metadata: Metadata,
    /// Pod template.
    pub template: TemplateName,
    /// Restart policy as requested.
    pub restart_policy: RestartPolicySpec,
    /// Idempotency key.
    pub request_id: Option<RequestId>,
    /// Run timeout of each pod, in seconds (validated: 1..=MAX).
    pub timeout_seconds: Option<u32>,
    /// The task's deadline, unix µs.
    pub deadline: Option<i64>,
    /// Priority.
    pub priority: super::Priority,
    /// With `auto_start`: queue when no pod-host has room.
    pub queue: bool,
    /// Queue timeout, in seconds (validated: 1..=MAX).
    pub queue_timeout_seconds: Option<u32>,
    /// Tasks that must be COMPLETED before its pod starts (validated: at
    /// most `dependencies::MAX_DEPENDENCIES`, no repeats).
    pub depends_on: Vec<super::TaskId>,
}

/// A call on one task by an actor: CompleteTask, StartPod, RestartPod.
#[derive(Debug, Clone)]
pub struct TaskCommand {
    /// The task.
    pub task_id: TaskId,
    /// Caller.
    pub actor: ActorId,
    /// Correlation id for its events.
    pub correlation: CorrelationId,
}

/// StopPod.
#[derive(Debug, Clone)]
pub struct StopPod {
    /// The task.
    pub task_id: TaskId,
    /// Caller.
    pub actor: ActorId,
    /// Why (optional).
    pub reason: String,
    /// Correlation id for its events.
    pub correlation: CorrelationId,
}

/// CancelTask.
#[derive(Debug, Clone)]
pub struct CancelTask {
    /// The task.
    pub task_id: TaskId,
    /// Why (required).
    pub reason: String,
    /// Caller.
    pub actor: ActorId,
    /// Correlation id for its events.
    pub correlation: CorrelationId,
}

/// Longest cancel/stop reason, in characters: it is stored in an event.
pub const MAX_REASON_CHARS: usize = 1_000;

/// ListTasks / CountTasks filters; `None` does not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only this status.
    pub status: Option<TaskStatus>,
    /// Only this phase.
    pub phase: Option<Phase>,
    /// Only tasks created strictly after this time (unix micros).
    pub created_after: Option<i64>,
    /// Only tasks created by this actor.
    pub created_by: Option<String>,
    /// Only tasks whose pod status is this.
    pub pod_status: Option<PodStatus>,
    /// Only tasks of this priority.
    pub priority: Option<super::Priority>,
    /// Only tasks whose metadata has every one of these entries.
    pub metadata_equals: BTreeMap<String, String>,
    /// Archived tasks too.
    pub include_archived: bool,
}

/// ListTasks sort key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OrderBy {
    /// Default.
    #[default]
    UpdatedAt,
    /// Creation time.
    CreatedAt,
}

/// ListTasks sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Newest first (default).
    #[default]
    Desc,
    /// Oldest first.
    Asc,
}

/// ListTasks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Filters.
    pub filter: TaskFilter,
    /// Page size (already defaulted and bounded).
    pub limit: u32,
    /// Rows to skip.
    pub offset: u32,
    /// Sort key; ties are broken by task id in the same direction.
    pub order_by: OrderBy,
    /// Sort direction.
    pub order: Order,
}

/// GetTaskEvents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsQuery {
    /// The task.
    pub task_id: TaskId,
    /// Only events with a larger version.
    pub after_version: u64,
    /// Page size (already defaulted and bounded).
    pub limit: u32,
    /// An archived task's events too.
    pub include_archived: bool,
}

/// WatchEvents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchQuery {
    /// Stream events with a larger position.
    pub after_position: u64,
    /// Only this task's events.
    pub task_id: Option<TaskId>,
}

/// Most lines GetPodLogs may ask for (API.md Limits): a tail is found by
/// reading back from the end, so this bounds that work.
pub const MAX_TAIL_LINES: u32 = 10_000;

/// GetPodLogs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogsQuery {
    /// The task whose current (or last) pod's output is read.
    pub task_id: TaskId,
    /// Keep streaming new output until the pod's output ends.
    pub follow: bool,
    /// Start this many lines before the end; 0 = everything retained.
    pub tail_lines: u32,
}

/// A `tail_lines` value: at most [`MAX_TAIL_LINES`].
pub fn tail_lines(n: u32) -> Result<u32> {
    if n > MAX_TAIL_LINES {
        return Err(Error::invalid(
            "tail_lines",
            format!("{n} is over the limit of {MAX_TAIL_LINES}"),
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_limits_both_sides() {
        assert_eq!(page_limit(0, "limit").unwrap(), DEFAULT_PAGE);
        assert_eq!(page_limit(1, "limit").unwrap(), 1);
        assert_eq!(page_limit(MAX_PAGE, "limit").unwrap(), MAX_PAGE);
        assert!(matches!(
            page_limit(MAX_PAGE + 1, "limit"),
            Err(Error::InvalidArgument { field: "limit", .. })
        ));
        assert!(page_limit(u32::MAX, "limit").is_err());
    }

    #[test]
    fn tail_lines_both_sides() {
        assert_eq!(tail_lines(0).unwrap(), 0);
        assert_eq!(tail_lines(MAX_TAIL_LINES).unwrap(), MAX_TAIL_LINES);
        assert!(matches!(
            tail_lines(MAX_TAIL_LINES + 1),
            Err(Error::InvalidArgument {
                field: "tail_lines",
                ..
            })
        ));
    }
}
