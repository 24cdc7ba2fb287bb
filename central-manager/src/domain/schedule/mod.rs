//! Schedules: tasks created (and started) at cron or interval fire times.
//! The types here are validated like the task types ([`ScheduleName::parse`],
//! [`ScheduleTask::new`]); [`timetable`] says when a schedule fires and
//! [`firing`] what a fire does.

mod firing;
mod timetable;

use std::fmt;

use uuid::Uuid;

pub use firing::{
    FireAction, Lateness, MAX_SKIP_STEP, MIN_CATCHUP_WINDOW_SECONDS, Overlap, decide_overlap,
    lateness,
};
pub use timetable::Timetable;

use super::fields::MAX_METADATA_ENTRIES;
use super::limits::{MAX_SCHEDULE_METADATA_BYTES, MAX_SCHEDULE_NAME_CHARS as MAX_NAME_CHARS};
use super::{
    ActorId, CorrelationId, Description, Metadata, RestartPolicySpec, TaskId, TemplateName, Title,
};
use crate::error::{Error, Result};

/// Metadata key a fire sets on its task: the schedule's id.
pub const META_SCHEDULE_ID: &str = "ipa.schedule_id";
/// Metadata key a fire sets on its task: the fire time, RFC 3339.
pub const META_SCHEDULED_FOR: &str = "ipa.scheduled_for";

/// A schedule id: a UUID v7, lowercase and hyphenated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScheduleId(Uuid);

impl ScheduleId {
    /// A fresh time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// An id minted elsewhere (the core's entropy port).
    pub fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    /// Parses a client-supplied id; `field` names it in the error.
    pub fn parse(s: &str, field: &'static str) -> Result<Self> {
        // The same rules as task ids.
        TaskId::parse(s, field).map(|t| Self(t.uuid()))
    }

    /// Parses an id read back from our own database.
    pub fn from_db(s: &str) -> Result<Self> {
        Uuid::try_parse(s)
            .map(Self)
            .map_err(|_| Error::Internal(format!("bad schedule id in database: {s:?}")))
    }
}

impl Default for ScheduleId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ScheduleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

/// A schedule's unique name: 1..=128 characters of `[A-Za-z0-9_.-]`, not
/// shaped like a UUID (clients such as ipactl accept an id or a name in the
/// same place and tell them apart by that shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleName(String);

impl ScheduleName {
    /// Validates a client-supplied name (INVALID_ARGUMENT naming `name`).
    pub fn parse(s: &str) -> Result<Self> {
        let n = s.chars().count();
        if n == 0 {
            return Err(Error::invalid("name", "is required"));
        }
        if n > MAX_NAME_CHARS {
            return Err(Error::invalid(
                "name",
                format!("is {n} characters long; the limit is {MAX_NAME_CHARS}"),
            ));
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err(Error::invalid(
                "name",
                "may contain only letters, digits, '_', '.' and '-'",
            ));
        }
        if s.len() == 36 && Uuid::try_parse(s).is_ok() {
            return Err(Error::invalid(
                "name",
                "must not look like a schedule id (a UUID)",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// A name read back from our own database.
    pub fn from_db(s: String) -> Self {
        Self(s)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The CreateTask fields a fire uses.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleTask {
    /// Title of every task.
    pub title: Title,
    /// Description.
    pub description: Description,
    /// Metadata, without the two keys a fire adds.
    pub metadata: Metadata,
    /// Pod template.
    pub template: TemplateName,
    /// Restart policy as requested (defaults apply when used).
    pub restart_policy: RestartPolicySpec,
    /// Run timeout of each task's pods, in seconds (checked by the api
    /// layer as CreateTask's); `None` by [`ScheduleTask::new`].
    pub timeout_seconds: Option<u32>,
    /// Priority of every task (medium by [`ScheduleTask::new`]).
    pub priority: crate::domain::Priority,
}

impl ScheduleTask {
    /// Checks what the task fields of a schedule add to CreateTask's rules:
    /// the two `ipa.schedule_*` keys are the fire's to set, so they and two
    /// of the 64 entries are reserved.
    pub fn new(
        title: Title,
        description: Description,
        metadata: Metadata,
        template: TemplateName,
        restart_policy: RestartPolicySpec,
    ) -> Result<Self> {
        for key in [META_SCHEDULE_ID, META_SCHEDULED_FOR] {
            if metadata.entries().contains_key(key) {
                return Err(Error::invalid(
                    "task.metadata",
                    format!("key {key:?} is set by each fire and cannot be given"),
                ));
            }
        }
        let most = MAX_METADATA_ENTRIES - 2;
        if metadata.entries().len() > most {
            return Err(Error::invalid(
                "task.metadata",
                format!(
                    "has {} entries; a schedule's task may have {most} (each fire adds 2)",
                    metadata.entries().len()
                ),
            ));
        }
        let bytes: usize = metadata
            .entries()
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        if bytes > MAX_SCHEDULE_METADATA_BYTES {
            return Err(Error::invalid(
                "task.metadata",
                format!(
                    "is {bytes} bytes; a schedule's task may have {MAX_SCHEDULE_METADATA_BYTES} \
                     (each fire adds 2 keys)"
                ),
            ));
        }
        Ok(Self {
            title,
            description,
            metadata,
            template,
            restart_policy,
            timeout_seconds: None,
            priority: crate::domain::Priority::default(),
        })
    }
}

/// CreateSchedule, validated.
#[derive(Debug, Clone)]
pub struct NewSchedule {
    /// Unique name.
    pub name: ScheduleName,
    /// When it fires.
    pub timetable: Timetable,
    /// What each fire creates.
    pub task: ScheduleTask,
    /// Overlap policy.
    pub overlap: Overlap,
    /// Catch-up window, seconds (0 ..= [`MAX_CATCHUP_WINDOW_SECONDS`]).
    pub catchup_window_seconds: u32,
    /// Created paused.
    pub paused: bool,
    /// Creator.
    pub actor: ActorId,
    /// Correlation id of its events.
    pub correlation: CorrelationId,
}

/// A change to one schedule by an actor: Pause, Resume, Trigger, Delete.
#[derive(Debug, Clone)]
pub struct ScheduleCommand {
    /// The schedule.
    pub schedule_id: ScheduleId,
    /// Caller.
    pub actor: ActorId,
    /// Correlation id.
    pub correlation: CorrelationId,
}

/// GetSchedule: by id, or by name when no id is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleKey {
    /// By id.
    Id(ScheduleId),
    /// By name.
    Name(String),
}

/// A schedule as stored. Times are unix micros.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRecord {
    /// Its id.
    pub schedule_id: ScheduleId,
    /// Unique name.
    pub name: ScheduleName,
    /// When it fires.
    pub timetable: Timetable,
    /// What each fire creates.
    pub task: ScheduleTask,
    /// Overlap policy.
    pub overlap: Overlap,
    /// Catch-up window as given.
    pub catchup_window_seconds: u32,
    /// Paused: nothing fires.
    pub paused: bool,
    /// The next fire time; `None` while paused or when the timetable ended.
    pub next_fire_at: Option<i64>,
    /// The fire time of the last task made.
    pub last_fire_at: Option<i64>,
    /// Tasks made.
    pub fired_count: u64,
    /// Fire times that made no task (overlap, missed, dropped buffer).
    pub skipped_count: u64,
    /// A BUFFER_ONE fire waiting for the previous task to end.
    pub buffered_fire_at: Option<i64>,
    /// The last task this schedule made.
    pub last_task_id: Option<TaskId>,
    /// Creator.
    pub created_by: String,
    /// Creation time.
    pub created_at: i64,
}

/// The audit trail of schedules (table `schedule_events`): every change by a
/// caller and every fire decision, with its actor and correlation id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleEventType {
    /// CreateSchedule.
    Created,
    /// PauseSchedule.
    Paused,
    /// ResumeSchedule.
    Resumed,
    /// DeleteSchedule.
    Deleted,
    /// A fire made a task (timetable, buffered or TriggerSchedule).
    Fired,
    /// A BUFFER_ONE fire is waiting for the previous task.
    Buffered,
    /// Fire times that made no task, with why (overlap, missed, buffer
    /// dropped).
    Skipped,
}

impl ScheduleEventType {
    /// Every type (docs/api.md names each one).
    pub const ALL: &[Self] = &[
        Self::Created,
        Self::Paused,
        Self::Resumed,
        Self::Deleted,
        Self::Fired,
        Self::Buffered,
        Self::Skipped,
    ];

    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Created => "schedule_created",
            Self::Paused => "schedule_paused",
            Self::Resumed => "schedule_resumed",
            Self::Deleted => "schedule_deleted",
            Self::Fired => "schedule_fired",
            Self::Buffered => "schedule_buffered",
            Self::Skipped => "schedule_skipped",
        }
    }
}

/// One entry of the schedule audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleEventRecord {
    /// Order of recording (global across schedules).
    pub id: i64,
    /// The schedule.
    pub schedule_id: ScheduleId,
    /// `schedule_*`.
    pub event_type: String,
    /// A JSON object.
    pub data_json: String,
    /// Who.
    pub actor_id: String,
    /// Which request.
    pub correlation_id: String,
    /// When (unix micros).
    pub occurred_at: i64,
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn names() {
        for ok in [
            "nightly",
            "a",
            "build.v2_fast-1",
            &"n".repeat(MAX_NAME_CHARS),
        ] {
            assert_eq!(ScheduleName::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "has space",
            "a/b",
            &"n".repeat(MAX_NAME_CHARS + 1),
            "0b6f5a4e-8d7c-4b3a-9e21-5f0c7d8e9a10",
        ] {
            assert!(
                matches!(
                    ScheduleName::parse(bad),
                    Err(Error::InvalidArgument { field: "name", .. })
                ),
                "{bad:?}"
            );
        }
    }

    fn task(meta: HashMap<String, String>) -> Result<ScheduleTask> {
        ScheduleTask::new(
            Title::parse("t").unwrap(),
            Description::default(),
            Metadata::parse(meta)?,
            TemplateName::parse("").unwrap(),
            RestartPolicySpec::default(),
        )
    }

    #[test]
    fn the_fire_keys_are_reserved() {
        for key in [META_SCHEDULE_ID, META_SCHEDULED_FOR] {
            let m = HashMap::from([(key.to_owned(), "x".to_owned())]);
            assert!(matches!(
                task(m),
                Err(Error::InvalidArgument {
                    field: "task.metadata",
                    ..
                })
            ));
        }
        let most = MAX_METADATA_ENTRIES - 2;
        let ok: HashMap<_, _> = (0..most).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(task(ok).is_ok());
        let over: HashMap<_, _> = (0..=most).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(task(over).is_err());
    }

    #[test]
    fn schedule_ids_parse_like_task_ids() {
        let id = ScheduleId::new();
        assert_eq!(
            ScheduleId::parse(&id.to_string(), "schedule_id").unwrap(),
            id
        );
        assert!(matches!(
            ScheduleId::parse("nope", "schedule_id"),
            Err(Error::InvalidArgument {
                field: "schedule_id",
                ..
            })
        ));
    }

    #[test]
    fn event_types_are_distinct() {
        let mut names: Vec<_> = ScheduleEventType::ALL.iter().map(|e| e.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ScheduleEventType::ALL.len());
    }
}
