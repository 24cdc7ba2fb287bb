//! Schedule rows ⇄ [`ScheduleRecord`], the schedule audit trail and the
//! read queries of schedules (run on a read connection for RPCs and the
//! firing loop, or inside the writer's transaction).

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

pub use crate::domain::schedule::ScheduleEventRecord;
use crate::domain::schedule::{
    Overlap, ScheduleEventType, ScheduleId, ScheduleName, ScheduleRecord, ScheduleTask, Timetable,
};
use crate::domain::{
    ActorId, Description, Metadata, RestartPolicySpec, TaskId, TemplateName, Title,
};
use crate::error::{Error, Result};

/// The columns of a `schedules` row, in [`from_row`] order.
macro_rules! schedule_columns {
    () => {
        "schedule_id, name, cron, interval_seconds, timezone, task_json, overlap, \
         catchup_window_seconds, paused, next_fire_at, last_fire_at, fired_count, \
         skipped_count, buffered_fire_at, last_task_id, created_by, created_at"
    };
}

/// How `task_json` stores a [`ScheduleTask`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct TaskJson {
    title: String,
    description: String,
    metadata: BTreeMap<String, String>,
    template: String,
    restart_policy: RestartPolicySpec,
    /// Absent in rows written before run timeouts existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout_seconds: Option<u32>,
    /// 1 (low) ..= 4 (critical); absent in rows written before priorities
    /// existed (medium).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    priority: Option<i64>,
}

impl TaskJson {
    pub(crate) fn encode(t: &ScheduleTask) -> Result<String> {
        let j = TaskJson {
            title: t.title.as_str().to_owned(),
            description: t.description.as_str().to_owned(),
            metadata: t.metadata.entries().clone(),
            template: t.template.as_str().to_owned(),
            restart_policy: t.restart_policy,
            timeout_seconds: t.timeout_seconds,
            priority: Some(t.priority.as_db()),
        };
        serde_json::to_string(&j).map_err(|e| Error::Internal(format!("task_json: {e}")))
    }

    fn decode(s: &str) -> Result<ScheduleTask> {
        let j: TaskJson =
            serde_json::from_str(s).map_err(|e| Error::Internal(format!("bad task_json: {e}")))?;
        // Validated when the schedule was created.
        Ok(ScheduleTask {
            title: Title::from_db(j.title),
            description: Description::from_db(j.description),
            metadata: Metadata::from_map(j.metadata),
            template: TemplateName::from_db(j.template),
            restart_policy: j.restart_policy,
            timeout_seconds: j.timeout_seconds,
            priority: j
                .priority
                .map(crate::domain::Priority::from_db)
                .transpose()?
                .unwrap_or_default(),
        })
    }
}

fn u64_of(name: &str, v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| Error::Internal(format!("{name} out of range: {v}")))
}

/// Reads a row selected with `schedule_columns!()`.
pub(super) fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawSchedule> {
    Ok(RawSchedule {
        schedule_id: r.get(0)?,
        name: r.get(1)?,
        cron: r.get(2)?,
        interval_seconds: r.get(3)?,
        timezone: r.get(4)?,
        task_json: r.get(5)?,
        overlap: r.get(6)?,
        catchup_window_seconds: r.get(7)?,
        paused: r.get(8)?,
        next_fire_at: r.get(9)?,
        last_fire_at: r.get(10)?,
        fired_count: r.get(11)?,
        skipped_count: r.get(12)?,
        buffered_fire_at: r.get(13)?,
        last_task_id: r.get(14)?,
        created_by: r.get(15)?,
        created_at: r.get(16)?,
    })
}

/// A `schedules` row as stored (either backend).
pub(crate) struct RawSchedule {
    pub(crate) schedule_id: String,
    pub(crate) name: String,
    pub(crate) cron: String,
    pub(crate) interval_seconds: i64,
    pub(crate) timezone: String,
    pub(crate) task_json: String,
    pub(crate) overlap: String,
    pub(crate) catchup_window_seconds: i64,
    pub(crate) paused: bool,
    pub(crate) next_fire_at: Option<i64>,
    pub(crate) last_fire_at: Option<i64>,
    pub(crate) fired_count: i64,
    pub(crate) skipped_count: i64,
    pub(crate) buffered_fire_at: Option<i64>,
    pub(crate) last_task_id: Option<String>,
    pub(crate) created_by: String,
    pub(crate) created_at: i64,
}

impl TryFrom<RawSchedule> for ScheduleRecord {
    type Error = Error;

    fn try_from(r: RawSchedule) -> Result<Self> {
        Ok(Self {
            schedule_id: ScheduleId::from_db(&r.schedule_id)?,
            name: ScheduleName::from_db(r.name),
            timetable: Timetable::from_db(
                &r.cron,
                u64_of("interval_seconds", r.interval_seconds)?,
                &r.timezone,
            )?,
            task: TaskJson::decode(&r.task_json)?,
            overlap: Overlap::from_db(&r.overlap)?,
            catchup_window_seconds: u32::try_from(r.catchup_window_seconds).map_err(|_| {
                Error::Internal(format!(
                    "catchup_window_seconds out of range: {}",
                    r.catchup_window_seconds
                ))
            })?,
            paused: r.paused,
            next_fire_at: r.next_fire_at,
            last_fire_at: r.last_fire_at,
            fired_count: u64_of("fired_count", r.fired_count)?,
            skipped_count: u64_of("skipped_count", r.skipped_count)?,
            buffered_fire_at: r.buffered_fire_at,
            last_task_id: r.last_task_id.as_deref().map(TaskId::from_db).transpose()?,
            created_by: r.created_by,
            created_at: r.created_at,
        })
    }
}

/// One schedule by id.
pub fn get(c: &Connection, id: ScheduleId) -> Result<Option<ScheduleRecord>> {
    c.prepare_cached(concat!(
        "SELECT ",
        schedule_columns!(),
        " FROM schedules WHERE schedule_id = ?"
    ))?
    .query_row([id.to_string()], from_row)
    .optional()?
    .map(ScheduleRecord::try_from)
    .transpose()
}

/// One schedule by name.
pub fn get_by_name(c: &Connection, name: &str) -> Result<Option<ScheduleRecord>> {
    c.prepare_cached(concat!(
        "SELECT ",
        schedule_columns!(),
        " FROM schedules WHERE name = ?"
    ))?
    .query_row([name], from_row)
    .optional()?
    .map(ScheduleRecord::try_from)
    .transpose()
}

/// ListSchedules: by name.
pub fn list(c: &Connection, limit: u32, offset: u32) -> Result<Vec<ScheduleRecord>> {
    let mut st = c.prepare_cached(concat!(
        "SELECT ",
        schedule_columns!(),
        " FROM schedules ORDER BY name LIMIT ? OFFSET ?"
    ))?;
    let rows = st.query_map(params![limit, offset], from_row)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(ScheduleRecord::try_from(r?)?);
    }
    Ok(out)
}

/// Schedules whose next fire time is at or before `now`, earliest first.
pub fn due(c: &Connection, now: i64, limit: u32) -> Result<Vec<(ScheduleId, i64)>> {
    let mut st = c.prepare_cached(
        "SELECT schedule_id, next_fire_at FROM schedules \
         WHERE next_fire_at IS NOT NULL AND next_fire_at <= ? ORDER BY next_fire_at LIMIT ?",
    )?;
    let rows = st.query_map(params![now, limit], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    let mut out = Vec::new();
    for r in rows {
        let (id, at) = r?;
        out.push((ScheduleId::from_db(&id)?, at));
    }
    Ok(out)
}

/// The earliest next fire time of any schedule (the loop's timer).
pub fn earliest_fire(c: &Connection) -> Result<Option<i64>> {
    Ok(
        c.prepare_cached("SELECT MIN(next_fire_at) FROM schedules WHERE next_fire_at IS NOT NULL")?
            .query_row([], |r| r.get::<_, Option<i64>>(0))?,
    )
}

/// Schedules with a buffered fire, with the task whose end starts it.
pub fn buffered(c: &Connection) -> Result<Vec<(ScheduleId, Option<TaskId>)>> {
    let mut st = c.prepare_cached(
        "SELECT schedule_id, last_task_id FROM schedules WHERE buffered_fire_at IS NOT NULL",
    )?;
    let rows = st.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
    })?;
    let mut out = Vec::new();
    for r in rows {
        let (s, t) = r?;
        out.push((
            ScheduleId::from_db(&s)?,
            t.as_deref().map(TaskId::from_db).transpose()?,
        ));
    }
    Ok(out)
}

/// Tasks made by fires since `since` that were never started: no pod was
/// ever claimed and no start failure recorded (central-manager stopped
/// between the fire's commit and the start).
pub fn unstarted_fires(c: &Connection, since: i64) -> Result<Vec<TaskId>> {
    let mut st = c.prepare_cached(
        "SELECT f.task_id FROM schedule_fires f JOIN tasks t ON t.task_id = f.task_id \
         WHERE f.fired_at >= ? AND t.status = 'inactive' AND t.pod_generation = 0 \
           AND t.pod_message = '' ORDER BY f.fired_at",
    )?;
    let rows = st.query_map([since], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for r in rows {
        out.push(TaskId::from_db(&r?)?);
    }
    Ok(out)
}

/// Whether the task exists and is not terminal (the overlap policy's
/// "previous still runs"). A task that is gone or archived does not run.
pub fn task_running(c: &Connection, id: TaskId) -> Result<bool> {
    let status: Option<String> = c
        .prepare_cached("SELECT status FROM tasks WHERE task_id = ?")?
        .query_row([id.to_string()], |r| r.get(0))
        .optional()?;
    Ok(matches!(status.as_deref(), Some("inactive" | "active")))
}

/// Appends to the schedule audit trail (with `authenticated_as` in the data
/// when an admin acted for someone else).
pub(super) fn append_event(
    c: &Connection,
    id: ScheduleId,
    event: ScheduleEventType,
    mut data: serde_json::Value,
    actor: &ActorId,
    correlation: &str,
    now: i64,
) -> Result<()> {
    super::super::commands::note_principal(&mut data, actor.authenticated_as_principal());
    c.prepare_cached(
        "INSERT INTO schedule_events (schedule_id, type, data_json, actor_id, correlation_id, \
         occurred_at) VALUES (?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        id.to_string(),
        event.as_str(),
        data.to_string(),
        actor.as_str(),
        correlation,
        now
    ])?;
    Ok(())
}

/// A schedule's audit trail, oldest first, after `after_id`.
pub fn events(
    c: &Connection,
    id: ScheduleId,
    after_id: i64,
    limit: u32,
) -> Result<Vec<ScheduleEventRecord>> {
    let mut st = c.prepare_cached(
        "SELECT id, schedule_id, type, data_json, actor_id, correlation_id, occurred_at \
         FROM schedule_events WHERE schedule_id = ? AND id > ? ORDER BY id LIMIT ?",
    )?;
    let rows = st.query_map(params![id.to_string(), after_id, limit], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, i64>(6)?,
        ))
    })?;
    let mut out = Vec::new();
    for r in rows {
        let (id, s, t, d, a, c, at) = r?;
        out.push(ScheduleEventRecord {
            id,
            schedule_id: ScheduleId::from_db(&s)?,
            event_type: t,
            data_json: d,
            actor_id: a,
            correlation_id: c,
            occurred_at: at,
        });
    }
    Ok(out)
}
