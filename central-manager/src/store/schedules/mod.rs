//! Schedule writes, run inside the writer's transaction like every other
//! command: create, pause, resume, delete, and the fire. A fire reads the
//! schedule row and its previous task, asks the pure rules
//! (`domain::schedule`: catch-up window, overlap policy), and applies the
//! answer, creating the task (stream, `task_created`, row, metadata) in the
//! same transaction as the fire's bookkeeping (`next_fire_at`, counts, the
//! `schedule_fires` row whose primary key is the fire time). So a fire and
//! its task commit together or not at all: a crash in the middle of a fire
//! leaves either both or neither, and the next fire of that time finds
//! `next_fire_at` already moved on.

pub mod rows;

use futures::future::BoxFuture;
use rusqlite::{Connection, params};
use serde_json::json;

use super::Store;
use super::commands::{Command, Outcome, create_task, finish_task};
use crate::core::ports::schedules::{Buffered, ScheduleStore};
use crate::domain::schedule::{
    FireAction, Lateness, META_SCHEDULE_ID, META_SCHEDULED_FOR, NewSchedule, ScheduleCommand,
    ScheduleEventType, ScheduleId, ScheduleKey, ScheduleRecord, decide_overlap, lateness,
};
use crate::domain::{ActorId, EventRecord, Finish, Metadata, NewTask, TaskId};
use crate::error::{Error, Result};
use rows::{ScheduleEventRecord, TaskJson, append_event};

pub use crate::core::ports::schedules::{
    Fire, FireKind, FireOutcome, ScheduleOutcome, ScheduleWrite,
};

/// Runs one schedule write.
pub fn apply(
    c: &Connection,
    w: &ScheduleWrite,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<ScheduleOutcome> {
    match w {
        ScheduleWrite::Create {
            schedule_id,
            schedule,
            now: at,
        } => create(c, *schedule_id, schedule, *at, now).map(boxed),
        ScheduleWrite::Pause(cmd) => pause(c, cmd, now).map(boxed),
        ScheduleWrite::Resume { cmd, now: at } => resume(c, cmd, *at, now).map(boxed),
        ScheduleWrite::Delete(cmd) => delete(c, cmd, now),
        ScheduleWrite::Fire(f) => fire(c, f, now, events).map(ScheduleOutcome::Fired),
        ScheduleWrite::PruneFires { up_to } => {
            let n = c
                .prepare_cached("DELETE FROM schedule_fires WHERE fired_at <= ?")?
                .execute([up_to])?;
            Ok(ScheduleOutcome::Pruned(n as u64))
        }
    }
}

fn boxed(s: ScheduleRecord) -> ScheduleOutcome {
    ScheduleOutcome::Schedule(Box::new(s))
}

fn existing(c: &Connection, id: ScheduleId) -> Result<ScheduleRecord> {
    rows::get(c, id)?.ok_or_else(|| Error::ScheduleNotFound(id.to_string()))
}

fn create(
    c: &Connection,
    id: ScheduleId,
    s: &NewSchedule,
    at: i64,
    now: i64,
) -> Result<ScheduleRecord> {
    if rows::get_by_name(c, s.name.as_str())?.is_some() {
        return Err(Error::NameTaken(s.name.as_str().to_owned()));
    }
    let first = s.timetable.next_after(at);
    if first.is_none() {
        return Err(Error::InvalidSchedule(format!(
            "cron {:?} has no fire time after now",
            s.timetable.cron()
        )));
    }
    let next = if s.paused { None } else { first };
    c.prepare_cached(
        "INSERT INTO schedules (schedule_id, name, cron, interval_seconds, timezone, task_json, \
         overlap, catchup_window_seconds, paused, next_fire_at, created_by, created_at, \
         updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        id.to_string(),
        s.name.as_str(),
        s.timetable.cron(),
        s.timetable.interval_seconds() as i64,
        s.timetable.timezone(),
        TaskJson::encode(&s.task)?,
        s.overlap.as_db(),
        s.catchup_window_seconds,
        s.paused,
        next,
        s.actor.as_str(),
        now,
        now,
    ])?;
    append_event(
        c,
        id,
        ScheduleEventType::Created,
        json!({
            "name": s.name.as_str(),
            "cron": s.timetable.cron(),
            "interval_seconds": s.timetable.interval_seconds(),
            "timezone": s.timetable.timezone(),
            "overlap": s.overlap.as_db(),
            "catchup_window_seconds": s.catchup_window_seconds,
            "paused": s.paused,
            "next_fire_at": next,
        }),
        &s.actor,
        s.correlation.as_str(),
        now,
    )?;
    existing(c, id)
}

fn pause(c: &Connection, cmd: &ScheduleCommand, now: i64) -> Result<ScheduleRecord> {
    let s = existing(c, cmd.schedule_id)?;
    if s.paused {
        return Ok(s);
    }
    // A waiting BUFFER_ONE fire is dropped: nothing fires while paused.
    let dropped = u64::from(s.buffered_fire_at.is_some());
    c.prepare_cached(
        "UPDATE schedules SET paused = 1, next_fire_at = NULL, buffered_fire_at = NULL, \
         skipped_count = skipped_count + ?, updated_at = ? WHERE schedule_id = ?",
    )?
    .execute(params![dropped as i64, now, cmd.schedule_id.to_string()])?;
    let (actor, corr) = (&cmd.actor, cmd.correlation.as_str());
    if let Some(at) = s.buffered_fire_at {
        let data = json!({ "reason": "paused", "count": 1, "scheduled_for": at });
        append_event(
            c,
            cmd.schedule_id,
            ScheduleEventType::Skipped,
            data,
            actor,
            corr,
            now,
        )?;
    }
    append_event(
        c,
        cmd.schedule_id,
        ScheduleEventType::Paused,
        json!({}),
        actor,
        corr,
        now,
    )?;
    existing(c, cmd.schedule_id)
}

fn resume(c: &Connection, cmd: &ScheduleCommand, at: i64, now: i64) -> Result<ScheduleRecord> {
    let s = existing(c, cmd.schedule_id)?;
    if !s.paused {
        return Ok(s);
    }
    // Fire times that passed while paused are not caught up: pausing means
    // "do not run".
    let next = s.timetable.next_after(at);
    c.prepare_cached(
        "UPDATE schedules SET paused = 0, next_fire_at = ?, updated_at = ? WHERE schedule_id = ?",
    )?
    .execute(params![next, now, cmd.schedule_id.to_string()])?;
    append_event(
        c,
        cmd.schedule_id,
        ScheduleEventType::Resumed,
        json!({ "next_fire_at": next }),
        &cmd.actor,
        cmd.correlation.as_str(),
        now,
    )?;
    existing(c, cmd.schedule_id)
}

fn delete(c: &Connection, cmd: &ScheduleCommand, now: i64) -> Result<ScheduleOutcome> {
    let s = existing(c, cmd.schedule_id)?;
    c.prepare_cached("DELETE FROM schedules WHERE schedule_id = ?")?
        .execute([cmd.schedule_id.to_string()])?;
    append_event(
        c,
        cmd.schedule_id,
        ScheduleEventType::Deleted,
        json!({ "name": s.name.as_str(), "fired_count": s.fired_count,
                "skipped_count": s.skipped_count }),
        &cmd.actor,
        cmd.correlation.as_str(),
        now,
    )?;
    Ok(ScheduleOutcome::Deleted)
}

/// The fire time as RFC 3339 (UTC; fractions only when not whole seconds).
pub fn rfc3339(micros: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| micros.to_string())
}

/// Updates the schedule after a fire decision: `next` (for timetable
/// fires), counts, and the buffered and last-task columns.
struct Bookkeeping {
    next_fire_at: Option<Option<i64>>,
    fired: u64,
    skipped: u64,
    last_fire: Option<(i64, TaskId)>,
    buffered: Option<Option<i64>>,
}

fn book(c: &Connection, id: ScheduleId, b: &Bookkeeping, now: i64) -> Result<()> {
    // Each optional part keeps the column when unset (CASE on a flag), so
    // one cached statement serves every decision.
    c.prepare_cached(
        "UPDATE schedules SET \
           next_fire_at = CASE WHEN ?1 THEN ?2 ELSE next_fire_at END, \
           fired_count = fired_count + ?3, skipped_count = skipped_count + ?4, \
           last_fire_at = CASE WHEN ?5 THEN ?6 ELSE last_fire_at END, \
           last_task_id = CASE WHEN ?5 THEN ?7 ELSE last_task_id END, \
           buffered_fire_at = CASE WHEN ?8 THEN ?9 ELSE buffered_fire_at END, \
           updated_at = ?10 \
         WHERE schedule_id = ?11",
    )?
    .execute(params![
        b.next_fire_at.is_some(),
        b.next_fire_at.flatten(),
        b.fired as i64,
        b.skipped as i64,
        b.last_fire.is_some(),
        b.last_fire.map(|(at, _)| at),
        b.last_fire.map(|(_, t)| t.to_string()),
        b.buffered.is_some(),
        b.buffered.flatten(),
        now,
        id.to_string(),
    ])?;
    Ok(())
}

fn fire(c: &Connection, f: &Fire, now: i64, events: &mut Vec<EventRecord>) -> Result<FireOutcome> {
    let Some(s) = rows::get(c, f.schedule_id)? else {
        return match f.kind {
            FireKind::Trigger => Err(Error::ScheduleNotFound(f.schedule_id.to_string())),
            _ => Ok(FireOutcome::Stale),
        };
    };
    let (actor, corr) = (&f.actor, f.correlation.as_str());
    let event = |t: ScheduleEventType, data: serde_json::Value| {
        append_event(c, f.schedule_id, t, data, actor, corr, now)
    };
    let previous_running = match s.last_task_id {
        Some(t) => rows::task_running(c, t)?,
        None => false,
    };
    // The fire time, and the timetable's next one when this is a
    // timetable fire.
    let (scheduled_for, next) = match f.kind {
        FireKind::Due { at } => {
            if s.paused || s.next_fire_at != Some(at) {
                return Ok(FireOutcome::Stale);
            }
            if let Lateness::Missed { skipped, next } =
                lateness(&s.timetable, at, f.now, s.catchup_window_seconds)
            {
                book(
                    c,
                    f.schedule_id,
                    &Bookkeeping {
                        next_fire_at: Some(next),
                        fired: 0,
                        skipped,
                        last_fire: None,
                        buffered: None,
                    },
                    now,
                )?;
                event(
                    ScheduleEventType::Skipped,
                    json!({ "reason": "missed", "count": skipped, "from": rfc3339(at),
                            "next_fire_at": next.map(rfc3339) }),
                )?;
                return Ok(FireOutcome::Missed { count: skipped });
            }
            (at, Some(s.timetable.next_after(at)))
        }
        FireKind::Buffered => match s.buffered_fire_at {
            Some(at) if !previous_running => (at, None),
            _ => return Ok(FireOutcome::Stale),
        },
        FireKind::Trigger => (f.now, None),
    };
    let action = match f.kind {
        FireKind::Buffered => FireAction::Start,
        _ => decide_overlap(s.overlap, previous_running, s.buffered_fire_at.is_some()),
    };
    let previous = s.last_task_id.filter(|_| previous_running);
    match action {
        FireAction::Skip => {
            book(
                c,
                f.schedule_id,
                &Bookkeeping {
                    next_fire_at: next,
                    fired: 0,
                    skipped: 1,
                    last_fire: None,
                    buffered: None,
                },
                now,
            )?;
            event(
                ScheduleEventType::Skipped,
                json!({ "reason": "overlap", "count": 1, "scheduled_for": rfc3339(scheduled_for),
                        "previous_task_id": previous.map(|t| t.to_string()) }),
            )?;
            Ok(FireOutcome::Skipped)
        }
        FireAction::Buffer => {
            let previous =
                previous.ok_or_else(|| Error::Internal("buffer without a previous task".into()))?;
            book(
                c,
                f.schedule_id,
                &Bookkeeping {
                    next_fire_at: next,
                    fired: 0,
                    skipped: 0,
                    last_fire: None,
                    buffered: Some(Some(scheduled_for)),
                },
                now,
            )?;
            event(
                ScheduleEventType::Buffered,
                json!({ "scheduled_for": rfc3339(scheduled_for),
                        "previous_task_id": previous.to_string() }),
            )?;
            Ok(FireOutcome::Buffered { previous })
        }
        FireAction::Start | FireAction::CancelPreviousThenStart => {
            // The fire time is the task's idempotency key: a second task
            // for it cannot be inserted.
            let inserted = c
                .prepare_cached(
                    "INSERT INTO schedule_fires (schedule_id, scheduled_for, task_id, fired_at) \
                     VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                )?
                .execute(params![
                    f.schedule_id.to_string(),
                    scheduled_for,
                    f.task_id.to_string(),
                    now
                ])?;
            if inserted == 0 {
                return Ok(FireOutcome::Stale);
            }
            let mut stop_pod = None;
            if let (FireAction::CancelPreviousThenStart, Some(prev)) = (action, previous) {
                let reason = format!(
                    "schedule {} fired again (overlap CANCEL_PREVIOUS)",
                    s.name.as_str()
                );
                if let Outcome::Finished { stop_pod: p } = finish_task(
                    c,
                    prev,
                    Finish::Cancel,
                    &ActorId::system(),
                    &f.correlation,
                    Some(&reason),
                    now,
                    events,
                )? {
                    stop_pod = p;
                }
            }
            // A buffered fire left over although its previous task ended
            // (the timetable fire came first) gives way to this one.
            let stale_buffer = f.kind != FireKind::Buffered && s.buffered_fire_at.is_some();
            let task = fired_task(&s, f, scheduled_for)?;
            let created = create_task(c, f.task_id, &task, &f.pod_message, now, events)?;
            book(
                c,
                f.schedule_id,
                &Bookkeeping {
                    next_fire_at: next,
                    fired: 1,
                    skipped: u64::from(stale_buffer),
                    last_fire: Some((scheduled_for, f.task_id)),
                    buffered: (f.kind == FireKind::Buffered || stale_buffer).then_some(None),
                },
                now,
            )?;
            // Counted as skipped, so it has its skipped event like every
            // other fire time that made no task (the audit trail and
            // `skipped_count` agree; found by the simulator).
            if let (true, Some(at)) = (stale_buffer, s.buffered_fire_at) {
                event(
                    ScheduleEventType::Skipped,
                    json!({ "reason": "superseded", "count": 1, "scheduled_for": rfc3339(at),
                            "by": rfc3339(scheduled_for) }),
                )?;
            }
            event(
                ScheduleEventType::Fired,
                json!({ "scheduled_for": rfc3339(scheduled_for), "task_id": f.task_id.to_string(),
                        "trigger": f.kind == FireKind::Trigger,
                        "buffered": f.kind == FireKind::Buffered,
                        "cancelled_task_id": (action == FireAction::CancelPreviousThenStart)
                            .then_some(previous).flatten().map(|t| t.to_string()) }),
            )?;
            let task = match created {
                Outcome::Task { task, .. } => task,
                other => return Err(Error::Internal(format!("unexpected outcome {other:?}"))),
            };
            Ok(FireOutcome::Started { task, stop_pod })
        }
    }
}

/// The CreateTask a fire makes: the schedule's task fields plus the two
/// `ipa.schedule_*` keys.
pub(crate) fn fired_task(s: &ScheduleRecord, f: &Fire, scheduled_for: i64) -> Result<NewTask> {
    let mut metadata = s.task.metadata.entries().clone();
    metadata.insert(META_SCHEDULE_ID.to_owned(), s.schedule_id.to_string());
    metadata.insert(META_SCHEDULED_FOR.to_owned(), rfc3339(scheduled_for));
    Ok(NewTask {
        title: s.task.title.clone(),
        description: s.task.description.clone(),
        actor: f.actor.clone(),
        correlation: f.correlation.clone(),
        auto_start: false,
        metadata: Metadata::from_map(metadata),
        template: s.task.template.clone(),
        restart_policy: s.task.restart_policy,
        request_id: None,
        timeout_seconds: s.task.timeout_seconds,
        // A schedule's tasks have no absolute deadline (each would share it).
        deadline: None,
        priority: s.task.priority,
        // "Always started, queued if no room" (docs/api.md Schedules).
        queue: true,
        queue_timeout_seconds: None,
        depends_on: Vec::new(),
    })
}

impl Store {
    /// Runs a schedule write.
    pub async fn schedule(&self, w: ScheduleWrite) -> Result<ScheduleOutcome> {
        match self.write(Command::Schedule(w)).await? {
            Outcome::Schedule(o) => Ok(o),
            other => Err(Error::Internal(format!("unexpected outcome {other:?}"))),
        }
    }

    /// GetSchedule.
    pub async fn get_schedule(&self, key: &ScheduleKey) -> Result<Option<ScheduleRecord>> {
        let key = key.clone();
        self.readers
            .run(move |c| match &key {
                ScheduleKey::Id(id) => rows::get(c, *id),
                ScheduleKey::Name(n) => rows::get_by_name(c, n),
            })
            .await
    }

    /// ListSchedules.
    pub async fn list_schedules(&self, limit: u32, offset: u32) -> Result<Vec<ScheduleRecord>> {
        self.readers
            .run(move |c| rows::list(c, limit, offset))
            .await
    }

    /// Schedules due at `now`.
    pub async fn due_schedules(&self, now: i64, limit: u32) -> Result<Vec<(ScheduleId, i64)>> {
        self.readers.run(move |c| rows::due(c, now, limit)).await
    }

    /// The earliest fire time of any schedule.
    pub async fn earliest_fire(&self) -> Result<Option<i64>> {
        self.readers.run(rows::earliest_fire).await
    }

    /// Schedules with a buffered fire and the task it waits for.
    pub async fn buffered_schedules(&self) -> Result<Vec<(ScheduleId, Option<TaskId>)>> {
        self.readers.run(rows::buffered).await
    }

    /// Fired tasks since `since` that never got a start attempt.
    pub async fn unstarted_fires(&self, since: i64) -> Result<Vec<TaskId>> {
        self.readers
            .run(move |c| rows::unstarted_fires(c, since))
            .await
    }

    /// A schedule's audit trail.
    pub async fn schedule_events(
        &self,
        id: ScheduleId,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<ScheduleEventRecord>> {
        self.readers
            .run(move |c| rows::events(c, id, after_id, limit))
            .await
    }
}

impl ScheduleStore for Store {
    fn get_schedule<'a>(
        &'a self,
        key: &'a ScheduleKey,
    ) -> BoxFuture<'a, Result<Option<ScheduleRecord>>> {
        Box::pin(Store::get_schedule(self, key))
    }

    fn list_schedules(
        &self,
        limit: u32,
        offset: u32,
    ) -> BoxFuture<'_, Result<Vec<ScheduleRecord>>> {
        Box::pin(Store::list_schedules(self, limit, offset))
    }

    fn due_schedules(&self, now: i64, limit: u32) -> BoxFuture<'_, Result<Vec<(ScheduleId, i64)>>> {
        Box::pin(Store::due_schedules(self, now, limit))
    }

    fn earliest_fire(&self) -> BoxFuture<'_, Result<Option<i64>>> {
        Box::pin(Store::earliest_fire(self))
    }

    fn buffered_schedules(&self) -> BoxFuture<'_, Result<Vec<Buffered>>> {
        Box::pin(Store::buffered_schedules(self))
    }

    fn unstarted_fires(&self, since: i64) -> BoxFuture<'_, Result<Vec<TaskId>>> {
        Box::pin(Store::unstarted_fires(self, since))
    }

    fn schedule_events(
        &self,
        id: ScheduleId,
        after_id: i64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<ScheduleEventRecord>>> {
        Box::pin(Store::schedule_events(self, id, after_id, limit))
    }
}

#[cfg(test)]
mod tests;
