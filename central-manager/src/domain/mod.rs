//! Domain types: what a task is and which values are valid, independent of
//! gRPC and SQL. Values are built through `parse` constructors, so an invalid
//! title, id or metadata map cannot exist past the api layer.

pub mod backoff;
pub mod dependencies;
pub mod ending;
mod fields;
pub mod host;
mod ids;
mod lifecycle;
pub mod limits;
pub mod pod;
#[cfg(test)]
mod properties;
pub mod queue;
mod requests;
mod restart;
pub mod restart_decision;
pub mod schedule;
pub mod stats;
mod status;
mod task;
pub mod timeout;

pub use ending::Ending;
pub use fields::{Description, Metadata, TemplateName, Title};
pub use ids::{ActorId, CorrelationId, RequestId, TaskId};
pub use lifecycle::{
    Finish, StartDecision, StopDecision, Transition, decide_start, decide_stop,
    ensure_not_terminal, finish,
};
pub use limits::{Page, WireSize};
pub use pod::{Cause, EndReport, PodRef, SYSTEM_ACTOR};
pub use queue::{Priority, QueueEntry, QueueHead};
pub use requests::{
    CancelTask, EventsQuery, ListQuery, LogsQuery, MAX_REASON_CHARS, MAX_TAIL_LINES, NewTask,
    Order, OrderBy, StopPod, TaskCommand, TaskFilter, WatchQuery, page_limit, tail_lines,
};
pub use restart::{RestartDefaults, RestartPolicy, RestartPolicySpec};
pub use status::{Phase, PodStatus, TaskStatus};
pub use task::{EventRecord, EventType, PodInfo, TaskRecord};
