//! Mapping between database rows and domain records.

use std::collections::BTreeMap;

use crate::domain::{
    Description, EventRecord, Metadata, Phase, PodInfo, PodStatus, Priority, QueueEntry,
    RestartPolicySpec, TaskId, TaskRecord, TaskStatus, TemplateName, Title,
};
use crate::error::{Error, Result};

/// The columns of a `tasks` row, in [`TaskRow::from_row`] order (a macro,
/// so that queries are string literals and their statements are cached).
macro_rules! task_columns {
    () => {
        "task_id, title, description, status, phase, created_at, updated_at, created_by, \
         metadata_json, template, auto_restart, max_restarts, restart_window_seconds, \
         initial_backoff_ms, max_backoff_ms, pod_status, pod_id, pod_host, pod_pid, \
         pod_generation, pod_started_at, live_version, restart_count, pod_message, \
         next_restart_at, timeout_seconds, deadline, priority, queue_timeout_seconds, \
         queued_seq, queued_at, depends_on_json, waiting_dependencies"
    };
}
pub(super) use task_columns;

/// How many columns [`task_columns`] lists (a flag selected after them is
/// at this index).
pub(super) const TASK_COLUMN_COUNT: usize = 33;

/// The columns of an `events` row, in [`EventRow::from_row`] order.
macro_rules! event_columns {
    () => {
        "position, stream_id, version, type, data_json, actor_id, correlation_id, occurred_at"
    };
}
pub(super) use event_columns;

/// A `tasks` row as stored. `FromRow` reads it by column name from a
/// PostgreSQL row (`store::postgres`); SQLite rows go through
/// [`TaskRow::from_row`].
#[derive(Debug, sqlx::FromRow)]
pub struct TaskRow {
    task_id: String,
    title: String,
    description: String,
    status: String,
    phase: String,
    created_at: i64,
    updated_at: i64,
    created_by: String,
    metadata_json: String,
    template: String,
    auto_restart: Option<bool>,
    max_restarts: Option<i64>,
    restart_window_seconds: Option<i64>,
    initial_backoff_ms: Option<i64>,
    max_backoff_ms: Option<i64>,
    pod_status: String,
    pod_id: Option<String>,
    pod_host: Option<String>,
    pod_pid: Option<i64>,
    pod_generation: i64,
    pod_started_at: Option<i64>,
    live_version: i64,
    restart_count: i64,
    pod_message: String,
    next_restart_at: Option<i64>,
    timeout_seconds: Option<i64>,
    deadline: Option<i64>,
    priority: i64,
    queue_timeout_seconds: Option<i64>,
    queued_seq: Option<i64>,
    queued_at: Option<i64>,
    depends_on_json: String,
    waiting_dependencies: bool,
}

impl TaskRow {
    /// Reads a row selected with `task_columns!()`.
    pub fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            task_id: r.get(0)?,
            title: r.get(1)?,
            description: r.get(2)?,
            status: r.get(3)?,
            phase: r.get(4)?,
            created_at: r.get(5)?,
            updated_at: r.get(6)?,
            created_by: r.get(7)?,
            metadata_json: r.get(8)?,
            template: r.get(9)?,
            auto_restart: r.get(10)?,
            max_restarts: r.get(11)?,
            restart_window_seconds: r.get(12)?,
            initial_backoff_ms: r.get(13)?,
            max_backoff_ms: r.get(14)?,
            pod_status: r.get(15)?,
            pod_id: r.get(16)?,
            pod_host: r.get(17)?,
            pod_pid: r.get(18)?,
            pod_generation: r.get(19)?,
            pod_started_at: r.get(20)?,
            live_version: r.get(21)?,
            restart_count: r.get(22)?,
            pod_message: r.get(23)?,
            next_restart_at: r.get(24)?,
            timeout_seconds: r.get(25)?,
            deadline: r.get(26)?,
            priority: r.get(27)?,
            queue_timeout_seconds: r.get(28)?,
            queued_seq: r.get(29)?,
            queued_at: r.get(30)?,
            depends_on_json: r.get(31)?,
            waiting_dependencies: r.get(32)?,
        })
    }
}

fn u32_col(name: &str, v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::Internal(format!("{name} out of range: {v}")))
}

fn opt_u32(name: &str, v: Option<i64>) -> Result<Option<u32>> {
    v.map(|v| u32_col(name, v)).transpose()
}

fn u64_col(name: &str, v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| Error::Internal(format!("{name} out of range: {v}")))
}

impl TryFrom<TaskRow> for TaskRecord {
    type Error = Error;

    fn try_from(r: TaskRow) -> Result<Self> {
        let metadata: BTreeMap<String, String> = serde_json::from_str(&r.metadata_json)
            .map_err(|e| Error::Internal(format!("bad metadata_json: {e}")))?;
        let pod = match (r.pod_id, r.pod_host) {
            (Some(pod_id), Some(pod_host)) => Some(PodInfo {
                pod_id,
                pod_host,
                pid: u32_col("pod_pid", r.pod_pid.unwrap_or(0))?,
                generation: u64_col("pod_generation", r.pod_generation)?,
                started_at: r.pod_started_at.unwrap_or(0),
            }),
            _ => None,
        };
        let mut pod_status = PodStatus::from_db(&r.pod_status)?;
        // A queued task is stored as 'stopped' with its queue entry (see
        // migration 20260501000001_queue); its place is filled in on read.
        let queue = match (pod_status, r.queued_seq) {
            (PodStatus::Stopped, Some(seq)) => {
                pod_status = PodStatus::Queued;
                Some(QueueEntry {
                    seq,
                    queued_at: r.queued_at.unwrap_or(0),
                    position: 0,
                })
            }
            _ => None,
        };
        // Waiting for dependencies: QUEUED too, with no queue entry.
        if pod_status == PodStatus::Stopped && r.waiting_dependencies {
            pod_status = PodStatus::Queued;
        }
        let depends_on = crate::domain::dependencies::from_json(&r.depends_on_json)?;
        Ok(Self {
            task_id: TaskId::from_db(&r.task_id)?,
            // Validated on the way in; not re-validated so that a limit
            // tightened later cannot make old rows unreadable.
            title: Title::from_db(r.title),
            description: Description::from_db(r.description),
            phase: Phase::from_db(&r.phase)?,
            status: TaskStatus::from_db(&r.status)?,
            created_at: r.created_at,
            updated_at: r.updated_at,
            created_by: r.created_by,
            metadata: Metadata::from_map(metadata),
            template: TemplateName::from_db(r.template),
            restart_policy: RestartPolicySpec {
                auto_restart: r.auto_restart,
                max_restarts: opt_u32("max_restarts", r.max_restarts)?,
                window_seconds: opt_u32("restart_window_seconds", r.restart_window_seconds)?,
                initial_backoff_ms: opt_u32("initial_backoff_ms", r.initial_backoff_ms)?,
                max_backoff_ms: opt_u32("max_backoff_ms", r.max_backoff_ms)?,
            },
            pod_status,
            pod,
            live_version: u64_col("live_version", r.live_version)?,
            restart_count: u32_col("restart_count", r.restart_count)?,
            pod_message: r.pod_message,
            next_restart_at: r.next_restart_at,
            archived: false,
            timeout_seconds: r
                .timeout_seconds
                .map(|v| u32_col("timeout_seconds", v))
                .transpose()?,
            deadline: r.deadline,
            priority: Priority::from_db(r.priority)?,
            queue_timeout_seconds: opt_u32("queue_timeout_seconds", r.queue_timeout_seconds)?,
            queue,
            depends_on,
            waiting_dependencies: r.waiting_dependencies,
        })
    }
}

/// An `events` row as stored (read by column name from PostgreSQL, as
/// [`TaskRow`]).
#[derive(Debug, sqlx::FromRow)]
pub struct EventRow {
    position: i64,
    stream_id: String,
    version: i64,
    #[sqlx(rename = "type")]
    event_type: String,
    data_json: String,
    actor_id: String,
    correlation_id: String,
    occurred_at: i64,
}

impl EventRow {
    /// Reads a row selected with `event_columns!()`.
    pub fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            position: r.get(0)?,
            stream_id: r.get(1)?,
            version: r.get(2)?,
            event_type: r.get(3)?,
            data_json: r.get(4)?,
            actor_id: r.get(5)?,
            correlation_id: r.get(6)?,
            occurred_at: r.get(7)?,
        })
    }
}

impl TryFrom<EventRow> for EventRecord {
    type Error = Error;

    fn try_from(r: EventRow) -> Result<Self> {
        Ok(Self {
            position: u64_col("position", r.position)?,
            task_id: TaskId::from_db(&r.stream_id)?,
            version: u64_col("version", r.version)?,
            event_type: r.event_type,
            data_json: r.data_json,
            actor_id: r.actor_id,
            correlation_id: r.correlation_id,
            occurred_at: r.occurred_at,
        })
    }
}
