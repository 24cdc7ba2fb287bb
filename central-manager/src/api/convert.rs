//! Proto ⇄ domain conversions. Requests become validated domain requests
//! through `TryFrom`; records become proto messages. Proto types go no
//! further than this module and the handlers.
//!
//! Validation order: the fields of a request are checked in proto field
//! order and the first bad one is reported; whether the task exists and
//! what state it is in are checked after that, by the core.
//! E.g. CreateTask: title, description, actor_id, correlation_id, metadata,
//! template, restart_policy, request_id. CancelTask: task_id, reason,
//! actor_id, correlation_id.

use ipa_proto::time::{micros_from_timestamp, timestamp_from_micros};
use ipa_proto::v1 as pb;

use crate::auth::Caller;
use crate::auth::actor::bind;
use crate::domain::limits::MAX_PAGE_BYTES;
use crate::domain::timeout::check_timeout;
use crate::domain::{
    CancelTask, CorrelationId, Description, EventRecord, EventsQuery, ListQuery, LogsQuery,
    MAX_REASON_CHARS, Metadata, NewTask, Order, OrderBy, Phase, PodInfo, PodStatus, Priority,
    RequestId, RestartDefaults, RestartPolicySpec, StopPod, TaskCommand, TaskFilter, TaskId,
    TaskRecord, TaskStatus, TemplateName, Title, WatchQuery, page_limit, tail_lines,
};
use crate::error::{Error, Result};
use crate::hosts::directory::{HostState, HostView};

// ---------- enums ----------

fn task_status_from_pb(v: i32, field: &'static str) -> Result<Option<TaskStatus>> {
    let s = pb::TaskStatus::try_from(v).map_err(|_| unknown_enum(field, v))?;
    Ok(match s {
        pb::TaskStatus::Unspecified => None,
        pb::TaskStatus::Inactive => Some(TaskStatus::Inactive),
        pb::TaskStatus::Active => Some(TaskStatus::Active),
        pb::TaskStatus::Completed => Some(TaskStatus::Completed),
        pb::TaskStatus::Cancelled => Some(TaskStatus::Cancelled),
        pb::TaskStatus::Failed => Some(TaskStatus::Failed),
    })
}

/// A proto phase; `None` for UNSPECIFIED, INVALID_ARGUMENT naming `field`
/// for an unknown value.
pub fn phase_from_pb(v: i32, field: &'static str) -> Result<Option<Phase>> {
    let p = pb::Phase::try_from(v).map_err(|_| unknown_enum(field, v))?;
    Ok(match p {
        pb::Phase::Unspecified => None,
        pb::Phase::SpecClarification => Some(Phase::SpecClarification),
        pb::Phase::Planning => Some(Phase::Planning),
        pb::Phase::Development => Some(Phase::Development),
        pb::Phase::Review => Some(Phase::Review),
        pb::Phase::Completed => Some(Phase::Completed),
        pb::Phase::Cancelled => Some(Phase::Cancelled),
    })
}

fn order_by_from_pb(v: i32) -> Result<OrderBy> {
    Ok(
        match pb::OrderBy::try_from(v).map_err(|_| unknown_enum("order_by", v))? {
            pb::OrderBy::Unspecified | pb::OrderBy::UpdatedAt => OrderBy::UpdatedAt,
            pb::OrderBy::CreatedAt => OrderBy::CreatedAt,
        },
    )
}

fn order_from_pb(v: i32) -> Result<Order> {
    Ok(
        match pb::Order::try_from(v).map_err(|_| unknown_enum("order", v))? {
            pb::Order::Unspecified | pb::Order::Desc => Order::Desc,
            pb::Order::Asc => Order::Asc,
        },
    )
}

fn unknown_enum(field: &'static str, v: i32) -> Error {
    Error::invalid(field, format!("unknown enum value {v}"))
}

/// The proto value of a status.
pub fn task_status_to_pb(s: TaskStatus) -> pb::TaskStatus {
    match s {
        TaskStatus::Inactive => pb::TaskStatus::Inactive,
        TaskStatus::Active => pb::TaskStatus::Active,
        TaskStatus::Completed => pb::TaskStatus::Completed,
        TaskStatus::Cancelled => pb::TaskStatus::Cancelled,
        TaskStatus::Failed => pb::TaskStatus::Failed,
    }
}

/// The proto value of a phase.
pub fn phase_to_pb(p: Phase) -> pb::Phase {
    match p {
        Phase::SpecClarification => pb::Phase::SpecClarification,
        Phase::Planning => pb::Phase::Planning,
        Phase::Development => pb::Phase::Development,
        Phase::Review => pb::Phase::Review,
        Phase::Completed => pb::Phase::Completed,
        Phase::Cancelled => pb::Phase::Cancelled,
    }
}

fn pod_status_to_pb(p: PodStatus) -> pb::PodStatus {
    match p {
        PodStatus::Stopped => pb::PodStatus::Stopped,
        PodStatus::Starting => pb::PodStatus::Starting,
        PodStatus::Running => pb::PodStatus::Running,
        PodStatus::Unknown => pb::PodStatus::Unknown,
        PodStatus::Queued => pb::PodStatus::Queued,
    }
}

/// A request's `priority`: unknown values are INVALID_ARGUMENT naming
/// `field`; unset is `None`.
pub fn priority_from_pb(v: i32, field: &'static str) -> Result<Option<Priority>> {
    let p = pb::Priority::try_from(v)
        .map_err(|_| Error::invalid(field, format!("unknown enum value {v}")))?;
    Ok(match p {
        pb::Priority::Unspecified => None,
        pb::Priority::Low => Some(Priority::Low),
        pb::Priority::Medium => Some(Priority::Medium),
        pb::Priority::High => Some(Priority::High),
        pb::Priority::Critical => Some(Priority::Critical),
    })
}

/// A priority as the API shows it.
pub fn priority_to_pb(p: Priority) -> pb::Priority {
    match p {
        Priority::Low => pb::Priority::Low,
        Priority::Medium => pb::Priority::Medium,
        Priority::High => pb::Priority::High,
        Priority::Critical => pb::Priority::Critical,
    }
}

/// A request's `pod_status` filter: unknown values are INVALID_ARGUMENT;
/// unset is `None`.
pub fn pod_status_filter(v: i32) -> Result<Option<PodStatus>> {
    let s = pb::PodStatus::try_from(v)
        .map_err(|_| Error::invalid("pod_status", format!("unknown enum value {v}")))?;
    Ok(match s {
        pb::PodStatus::Unspecified => None,
        pb::PodStatus::Stopped => Some(PodStatus::Stopped),
        pb::PodStatus::Starting => Some(PodStatus::Starting),
        pb::PodStatus::Running => Some(PodStatus::Running),
        pb::PodStatus::Unknown => Some(PodStatus::Unknown),
        pb::PodStatus::Queued => Some(PodStatus::Queued),
    })
}

fn host_state_to_pb(s: HostState) -> pb::PodHostState {
    match s {
        HostState::Ready => pb::PodHostState::Ready,
        HostState::Unreachable => pb::PodHostState::Unreachable,
        HostState::Lost => pb::PodHostState::Lost,
        HostState::Draining => pb::PodHostState::Draining,
    }
}

// ---------- requests ----------

/// A mutating request with its authenticated caller (`None`: auth is off),
/// which decides what its `actor_id` may be (`auth::actor::bind`).
pub struct WithCaller<'a, T>(pub T, pub Option<&'a Caller>);

/// Mutating requests convert with or without a caller; without one is the
/// auth-off behaviour (used here and by the admin conversions).
macro_rules! without_caller {
    ($($req:ty => $domain:ty),* $(,)?) => {$(
        impl TryFrom<$req> for $domain {
            type Error = $crate::error::Error;
            fn try_from(r: $req) -> $crate::error::Result<Self> {
                Self::try_from($crate::api::convert::WithCaller(r, None))
            }
        }
    )*};
}
pub(crate) use without_caller;

/// A request's restart policy, validated (unset: the server's defaults).
pub fn restart_policy(p: Option<pb::RestartPolicy>) -> Result<RestartPolicySpec> {
    p.map(|p| RestartPolicySpec {
        auto_restart: p.auto_restart,
        max_restarts: p.max_restarts,
        window_seconds: p.window_seconds,
        initial_backoff_ms: p.initial_backoff_ms,
        max_backoff_ms: p.max_backoff_ms,
    })
    .unwrap_or_default()
    .validate()
}

without_caller! {
    pb::CreateTaskRequest => NewTask,
    pb::CompleteTaskRequest => TaskCommand,
    pb::StartPodRequest => TaskCommand,
    pb::RestartPodRequest => TaskCommand,
    pb::CancelTaskRequest => CancelTask,
    pb::StopPodRequest => StopPod,
}

impl TryFrom<WithCaller<'_, pb::CreateTaskRequest>> for NewTask {
    type Error = Error;

    fn try_from(WithCaller(r, caller): WithCaller<'_, pb::CreateTaskRequest>) -> Result<Self> {
        let title = Title::parse(&r.title)?;
        let description = Description::parse(&r.description)?;
        let actor = bind(&r.actor_id, caller)?;
        let correlation = CorrelationId::parse_or_new(&r.correlation_id)?;
        let metadata = Metadata::parse(r.metadata)?;
        let template = TemplateName::parse(&r.template)?;
        let restart_policy = restart_policy(r.restart_policy)?;
        let request_id = RequestId::parse(&r.request_id)?;
        let timeout_seconds = r
            .timeout_seconds
            .map(|s| check_timeout("timeout_seconds", s))
            .transpose()?;
        // Whether it is in the future is judged by the core, on its clock.
        let deadline = r
            .deadline
            .map(|ts| {
                micros_from_timestamp(&ts)
                    .ok_or_else(|| Error::invalid("deadline", "is not a valid timestamp"))
            })
            .transpose()?;
        let priority = priority_from_pb(r.priority, "priority")?.unwrap_or_default();
        let queue_timeout_seconds = r
            .queue_timeout_seconds
            .map(|s| check_timeout("queue_timeout_seconds", s))
            .transpose()?;
        let depends_on = crate::domain::dependencies::parse(&r.depends_on)?;
        Ok(Self {
            title,
            description,
            actor,
            correlation,
            auto_start: r.auto_start,
            metadata,
            template,
            restart_policy,
            request_id,
            timeout_seconds,
            deadline,
            priority,
            queue: r.queue,
            queue_timeout_seconds,
            depends_on,
        })
    }
}

/// The `task_id` of a request that needs one.
pub fn task_id(s: &str) -> Result<TaskId> {
    TaskId::parse(s, "task_id")
}

fn task_command(
    task: &str,
    actor: &str,
    correlation: &str,
    caller: Option<&Caller>,
) -> Result<TaskCommand> {
    Ok(TaskCommand {
        task_id: task_id(task)?,
        actor: bind(actor, caller)?,
        correlation: CorrelationId::parse_or_new(correlation)?,
    })
}

fn reason_text(reason: &str) -> Result<String> {
    let n = reason.chars().count();
    if n > MAX_REASON_CHARS {
        return Err(Error::invalid(
            "reason",
            format!("is {n} characters long; the limit is {MAX_REASON_CHARS}"),
        ));
    }
    Ok(reason.to_owned())
}

impl TryFrom<WithCaller<'_, pb::CompleteTaskRequest>> for TaskCommand {
    type Error = Error;
    fn try_from(WithCaller(r, caller): WithCaller<'_, pb::CompleteTaskRequest>) -> Result<Self> {
        task_command(&r.task_id, &r.actor_id, &r.correlation_id, caller)
    }
}

impl TryFrom<WithCaller<'_, pb::StartPodRequest>> for TaskCommand {
    type Error = Error;
    fn try_from(WithCaller(r, caller): WithCaller<'_, pb::StartPodRequest>) -> Result<Self> {
        task_command(&r.task_id, &r.actor_id, &r.correlation_id, caller)
    }
}

impl TryFrom<WithCaller<'_, pb::RestartPodRequest>> for TaskCommand {
    type Error = Error;
    fn try_from(WithCaller(r, caller): WithCaller<'_, pb::RestartPodRequest>) -> Result<Self> {
        task_command(&r.task_id, &r.actor_id, &r.correlation_id, caller)
    }
}

impl TryFrom<WithCaller<'_, pb::CancelTaskRequest>> for CancelTask {
    type Error = Error;
    fn try_from(WithCaller(r, caller): WithCaller<'_, pb::CancelTaskRequest>) -> Result<Self> {
        let task_id = task_id(&r.task_id)?;
        if r.reason.trim().is_empty() {
            return Err(Error::MissingReason);
        }
        let reason = reason_text(&r.reason)?;
        Ok(Self {
            task_id,
            reason,
            actor: bind(&r.actor_id, caller)?,
            correlation: CorrelationId::parse_or_new(&r.correlation_id)?,
        })
    }
}

impl TryFrom<WithCaller<'_, pb::StopPodRequest>> for StopPod {
    type Error = Error;
    fn try_from(WithCaller(r, caller): WithCaller<'_, pb::StopPodRequest>) -> Result<Self> {
        Ok(Self {
            task_id: task_id(&r.task_id)?,
            actor: bind(&r.actor_id, caller)?,
            reason: reason_text(&r.reason)?,
            correlation: CorrelationId::parse_or_new(&r.correlation_id)?,
        })
    }
}

fn filter(
    status: i32,
    phase: i32,
    created_after: Option<prost_types::Timestamp>,
    created_by: String,
) -> Result<TaskFilter> {
    let status = task_status_from_pb(status, "status")?;
    let phase = phase_from_pb(phase, "phase")?;
    let created_after = created_after
        .map(|ts| {
            micros_from_timestamp(&ts)
                .ok_or_else(|| Error::invalid("created_after", "is not a valid timestamp"))
        })
        .transpose()?;
    let created_by = created_by.trim();
    let created_by = (!created_by.is_empty()).then(|| created_by.to_owned());
    Ok(TaskFilter {
        status,
        phase,
        created_after,
        created_by,
        ..Default::default()
    })
}

/// `metadata_equals`: the limits of task metadata (entries, key and value
/// lengths, total bytes), with errors naming `metadata_equals`.
pub fn metadata_filter(
    map: std::collections::HashMap<String, String>,
) -> Result<std::collections::BTreeMap<String, String>> {
    Metadata::parse(map)
        .map(|m| m.entries().clone())
        .map_err(|e| match e {
            Error::InvalidArgument { problem, .. } => Error::invalid("metadata_equals", problem),
            other => other,
        })
}

impl TryFrom<pb::ListTasksRequest> for ListQuery {
    type Error = Error;
    fn try_from(r: pb::ListTasksRequest) -> Result<Self> {
        let mut filter = filter(r.status, r.phase, r.created_after, r.created_by)?;
        let limit = page_limit(r.limit, "limit")?;
        let order_by = order_by_from_pb(r.order_by)?;
        let order = order_from_pb(r.order)?;
        filter.metadata_equals = metadata_filter(r.metadata_equals)?;
        filter.include_archived = r.include_archived;
        filter.priority = priority_from_pb(r.priority, "priority")?;
        filter.pod_status = pod_status_filter(r.pod_status)?;
        Ok(Self {
            filter,
            limit,
            offset: r.offset,
            order_by,
            order,
        })
    }
}

impl TryFrom<pb::CountTasksRequest> for TaskFilter {
    type Error = Error;
    fn try_from(r: pb::CountTasksRequest) -> Result<Self> {
        let mut f = filter(r.status, r.phase, r.created_after, r.created_by)?;
        f.metadata_equals = metadata_filter(r.metadata_equals)?;
        f.include_archived = r.include_archived;
        f.priority = priority_from_pb(r.priority, "priority")?;
        f.pod_status = pod_status_filter(r.pod_status)?;
        Ok(f)
    }
}

impl TryFrom<pb::GetTaskEventsRequest> for EventsQuery {
    type Error = Error;
    fn try_from(r: pb::GetTaskEventsRequest) -> Result<Self> {
        Ok(Self {
            task_id: task_id(&r.task_id)?,
            after_version: r.after_version,
            limit: page_limit(r.limit, "limit")?,
            include_archived: r.include_archived,
        })
    }
}

impl TryFrom<pb::WatchEventsRequest> for WatchQuery {
    type Error = Error;
    fn try_from(r: pb::WatchEventsRequest) -> Result<Self> {
        let task_id = if r.task_id.is_empty() {
            None
        } else {
            Some(task_id(&r.task_id)?)
        };
        Ok(Self {
            after_position: r.after_position,
            task_id,
        })
    }
}

impl TryFrom<pb::GetPodLogsRequest> for LogsQuery {
    type Error = Error;
    fn try_from(r: pb::GetPodLogsRequest) -> Result<Self> {
        Ok(Self {
            task_id: task_id(&r.task_id)?,
            follow: r.follow,
            tail_lines: tail_lines(r.tail_lines)?,
        })
    }
}

// ---------- responses ----------

/// A task as the API shows it: the effective restart policy, and the pod
/// only while one is starting/running/unknown.
pub fn task_to_pb(t: &TaskRecord, defaults: &RestartDefaults) -> pb::Task {
    let p = t.restart_policy.resolve(defaults);
    // A queued task has no pod either (the row may still name its last).
    let has_pod = matches!(
        t.pod_status,
        PodStatus::Starting | PodStatus::Running | PodStatus::Unknown
    );
    pb::Task {
        task_id: t.task_id.to_string(),
        title: t.title.as_str().to_owned(),
        description: t.description.as_str().to_owned(),
        phase: phase_to_pb(t.phase) as i32,
        status: task_status_to_pb(t.status) as i32,
        created_at: Some(timestamp_from_micros(t.created_at)),
        updated_at: Some(timestamp_from_micros(t.updated_at)),
        created_by: t.created_by.clone(),
        metadata: t
            .metadata
            .entries()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        template: t.template.as_str().to_owned(),
        pod_status: pod_status_to_pb(t.pod_status) as i32,
        pod: if has_pod {
            t.pod.as_ref().map(pod_to_pb)
        } else {
            None
        },
        version: if has_pod { t.live_version } else { 0 },
        restart_count: t.restart_count,
        restart_policy: Some(pb::RestartPolicy {
            auto_restart: Some(p.auto_restart),
            max_restarts: Some(p.max_restarts),
            window_seconds: Some(p.window_seconds),
            initial_backoff_ms: Some(p.initial_backoff_ms),
            max_backoff_ms: Some(p.max_backoff_ms),
        }),
        pod_message: t.pod_message.clone(),
        next_restart_at: t.next_restart_at.map(timestamp_from_micros),
        archived: t.archived,
        timeout_seconds: t.timeout_seconds,
        deadline: t.deadline.map(timestamp_from_micros),
        priority: priority_to_pb(t.priority) as i32,
        queue_position: t.queue.map_or(0, |q| q.position),
        waiting_for: crate::store::queue::waiting_for(t).to_owned(),
        queue_timeout_seconds: t.queue_timeout_seconds,
        queued_at: t.queue.map(|q| timestamp_from_micros(q.queued_at)),
        depends_on: t.depends_on.iter().map(ToString::to_string).collect(),
    }
}

/// A pod.
pub fn pod_to_pb(p: &PodInfo) -> pb::Pod {
    pb::Pod {
        pod_id: p.pod_id.clone(),
        pod_host: p.pod_host.clone(),
        pid: p.pid,
        generation: p.generation,
        // A claimed pod not yet confirmed by its host has no start time.
        started_at: (p.started_at != 0).then(|| timestamp_from_micros(p.started_at)),
    }
}

/// An event.
pub fn event_to_pb(e: EventRecord) -> pb::Event {
    pb::Event {
        position: e.position,
        task_id: e.task_id.to_string(),
        version: e.version,
        r#type: e.event_type,
        data_json: e.data_json,
        actor_id: e.actor_id,
        correlation_id: e.correlation_id,
        occurred_at: Some(timestamp_from_micros(e.occurred_at)),
    }
}

/// A pod-host.
pub fn host_to_pb(h: HostView) -> pb::PodHostInfo {
    pb::PodHostInfo {
        host_id: h.host_id,
        address: h.address,
        state: host_state_to_pb(h.state) as i32,
        capacity: h.capacity,
        running_pods: h.running_pods,
        templates: h.templates,
        last_heartbeat_at: Some(timestamp_from_micros(h.last_heartbeat_at)),
        boot_id: h.boot_id,
        conflict_endpoint: h.conflict_endpoint,
    }
}

/// Drops items from the end until the page's encoding fits
/// [`MAX_PAGE_BYTES`]; true if any was dropped. The store already cut the
/// page by the records' size hints, which never undercount, so this only
/// guards the promise that no response passes the limit.
pub fn keep_within_page<T: prost::Message>(items: &mut Vec<T>) -> bool {
    let mut total = 0usize;
    for (i, item) in items.iter().enumerate() {
        // The repeated field's tag and length prefix: at most 1 + 5 bytes.
        total = total.saturating_add(item.encoded_len() + 6);
        if total > MAX_PAGE_BYTES && i > 0 {
            tracing::warn!(kept = i, of = items.len(), "page cut by its encoded size");
            items.truncate(i);
            return true;
        }
    }
    false
}

/// ListActivePods' `after_task_id`: empty, or a task id.
pub fn after_task_id(s: &str) -> Result<Option<TaskId>> {
    if s.is_empty() {
        Ok(None)
    } else {
        TaskId::parse(s, "after_task_id").map(Some)
    }
}

#[cfg(test)]
mod tests;
