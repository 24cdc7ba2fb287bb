//! Schedule writes on PostgreSQL, inside the writer's transaction like
//! every other command: the SQLite store's `schedules` (create, pause,
//! resume, delete, the fire, pruning of fire rows) in PostgreSQL's SQL,
//! deciding with the same pure rules (`domain::schedule`: catch-up window,
//! overlap policy). A fire locks its schedule row (FOR UPDATE), so a fire
//! of another replica for the same schedule waits and then finds
//! `next_fire_at` moved on; its task is created in the same transaction as
//! the `schedule_fires` row whose primary key is the fire time, so each
//! fire time makes at most one task, even across crashes and replicas.

use serde_json::json;
use sqlx::PgConnection;

use super::commands::{Who, create_task, finish_task};
use super::schedule_rows::{self as rows, append_event};
use crate::core::ports::schedules::{Fire, FireKind, FireOutcome, ScheduleOutcome, ScheduleWrite};
use crate::core::ports::store::Outcome;
use crate::domain::schedule::{
    FireAction, Lateness, NewSchedule, ScheduleCommand, ScheduleEventType, ScheduleId,
    ScheduleRecord, decide_overlap, lateness,
};
use crate::domain::{ActorId, EventRecord, Finish, TaskId};
use crate::error::{Error, Result};
use crate::store::schedules::rows::TaskJson;
use crate::store::schedules::{fired_task, rfc3339};

/// Runs one schedule write.
pub async fn apply(
    c: &mut PgConnection,
    w: &ScheduleWrite,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<ScheduleOutcome> {
    match w {
        ScheduleWrite::Create {
            schedule_id,
            schedule,
            now: at,
        } => create(c, *schedule_id, schedule, *at, now).await.map(boxed),
        ScheduleWrite::Pause(cmd) => pause(c, cmd, now).await.map(boxed),
        ScheduleWrite::Resume { cmd, now: at } => resume(c, cmd, *at, now).await.map(boxed),
        ScheduleWrite::Delete(cmd) => delete(c, cmd, now).await,
        ScheduleWrite::Fire(f) => fire(c, f, now, events).await.map(ScheduleOutcome::Fired),
        ScheduleWrite::PruneFires { up_to } => {
            let n = sqlx::query("DELETE FROM schedule_fires WHERE fired_at <= $1")
                .bind(up_to)
                .execute(&mut *c)
                .await?;
            Ok(ScheduleOutcome::Pruned(n.rows_affected()))
        }
    }
}

fn boxed(s: ScheduleRecord) -> ScheduleOutcome {
    ScheduleOutcome::Schedule(Box::new(s))
}

/// The schedule, its row locked to the commit.
async fn existing(c: &mut PgConnection, id: ScheduleId) -> Result<ScheduleRecord> {
    rows::get(&mut *c, id, true)
        .await?
        .ok_or_else(|| Error::ScheduleNotFound(id.to_string()))
}

async fn create(
    c: &mut PgConnection,
    id: ScheduleId,
    s: &NewSchedule,
    at: i64,
    now: i64,
) -> Result<ScheduleRecord> {
    let taken = || Error::NameTaken(s.name.as_str().to_owned());
    if rows::get_by_name(&mut *c, s.name.as_str()).await?.is_some() {
        return Err(taken());
    }
    let first = s.timetable.next_after(at);
    if first.is_none() {
        return Err(Error::InvalidSchedule(format!(
            "cron {:?} has no fire time after now",
            s.timetable.cron()
        )));
    }
    let next = if s.paused { None } else { first };
    // ON CONFLICT: another replica's create of the same name that
    // committed after the check above is ALREADY_EXISTS too.
    let inserted = sqlx::query(
        "INSERT INTO schedules (schedule_id, name, cron, interval_seconds, timezone, task_json, \
         overlap, catchup_window_seconds, paused, next_fire_at, created_by, created_at, \
         updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(id.to_string())
    .bind(s.name.as_str())
    .bind(s.timetable.cron())
    .bind(i64::try_from(s.timetable.interval_seconds()).unwrap_or(i64::MAX))
    .bind(s.timetable.timezone())
    .bind(TaskJson::encode(&s.task)?)
    .bind(s.overlap.as_db())
    .bind(i64::from(s.catchup_window_seconds))
    .bind(s.paused)
    .bind(next)
    .bind(s.actor.as_str())
    .bind(now)
    .bind(now)
    .execute(&mut *c)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(taken());
    }
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
    )
    .await?;
    existing(c, id).await
}

async fn pause(c: &mut PgConnection, cmd: &ScheduleCommand, now: i64) -> Result<ScheduleRecord> {
    let s = existing(c, cmd.schedule_id).await?;
    if s.paused {
        return Ok(s);
    }
    // A waiting BUFFER_ONE fire is dropped: nothing fires while paused.
    let dropped = i64::from(s.buffered_fire_at.is_some());
    sqlx::query(
        "UPDATE schedules SET paused = TRUE, next_fire_at = NULL, buffered_fire_at = NULL, \
         skipped_count = skipped_count + $1, updated_at = $2 WHERE schedule_id = $3",
    )
    .bind(dropped)
    .bind(now)
    .bind(cmd.schedule_id.to_string())
    .execute(&mut *c)
    .await?;
    let (actor, corr) = (&cmd.actor, cmd.correlation.as_str());
    if let Some(at) = s.buffered_fire_at {
        let data = json!({ "reason": "paused", "count": 1, "scheduled_for": at });
        let skipped = ScheduleEventType::Skipped;
        append_event(c, cmd.schedule_id, skipped, data, actor, corr, now).await?;
    }
    let paused = ScheduleEventType::Paused;
    append_event(c, cmd.schedule_id, paused, json!({}), actor, corr, now).await?;
    existing(c, cmd.schedule_id).await
}

async fn resume(
    c: &mut PgConnection,
    cmd: &ScheduleCommand,
    at: i64,
    now: i64,
) -> Result<ScheduleRecord> {
    let s = existing(c, cmd.schedule_id).await?;
    if !s.paused {
        return Ok(s);
    }
    // Fire times that passed while paused are not caught up: pausing means
    // "do not run".
    let next = s.timetable.next_after(at);
    sqlx::query(
        "UPDATE schedules SET paused = FALSE, next_fire_at = $1, updated_at = $2 \
         WHERE schedule_id = $3",
    )
    .bind(next)
    .bind(now)
    .bind(cmd.schedule_id.to_string())
    .execute(&mut *c)
    .await?;
    append_event(
        c,
        cmd.schedule_id,
        ScheduleEventType::Resumed,
        json!({ "next_fire_at": next }),
        &cmd.actor,
        cmd.correlation.as_str(),
        now,
    )
    .await?;
    existing(c, cmd.schedule_id).await
}

async fn delete(c: &mut PgConnection, cmd: &ScheduleCommand, now: i64) -> Result<ScheduleOutcome> {
    let s = existing(c, cmd.schedule_id).await?;
    sqlx::query("DELETE FROM schedules WHERE schedule_id = $1")
        .bind(cmd.schedule_id.to_string())
        .execute(&mut *c)
        .await?;
    append_event(
        c,
        cmd.schedule_id,
        ScheduleEventType::Deleted,
        json!({ "name": s.name.as_str(), "fired_count": s.fired_count,
                "skipped_count": s.skipped_count }),
        &cmd.actor,
        cmd.correlation.as_str(),
        now,
    )
    .await?;
    Ok(ScheduleOutcome::Deleted)
}

/// Updates the schedule after a fire decision: `next` (for timetable
/// fires), counts, and the buffered and last-task columns; an unset part
/// keeps its column.
#[derive(Default)]
struct Bookkeeping {
    next_fire_at: Option<Option<i64>>,
    fired: u64,
    skipped: u64,
    last_fire: Option<(i64, TaskId)>,
    buffered: Option<Option<i64>>,
}

async fn book(c: &mut PgConnection, id: ScheduleId, b: &Bookkeeping, now: i64) -> Result<()> {
    sqlx::query(
        "UPDATE schedules SET \
           next_fire_at = CASE WHEN $1 THEN $2 ELSE next_fire_at END, \
           fired_count = fired_count + $3, skipped_count = skipped_count + $4, \
           last_fire_at = CASE WHEN $5 THEN $6 ELSE last_fire_at END, \
           last_task_id = CASE WHEN $5 THEN $7 ELSE last_task_id END, \
           buffered_fire_at = CASE WHEN $8 THEN $9 ELSE buffered_fire_at END, \
           updated_at = $10 \
         WHERE schedule_id = $11",
    )
    .bind(b.next_fire_at.is_some())
    .bind(b.next_fire_at.flatten())
    .bind(i64::try_from(b.fired).unwrap_or(i64::MAX))
    .bind(i64::try_from(b.skipped).unwrap_or(i64::MAX))
    .bind(b.last_fire.is_some())
    .bind(b.last_fire.map(|(at, _)| at))
    .bind(b.last_fire.map(|(_, t)| t.to_string()))
    .bind(b.buffered.is_some())
    .bind(b.buffered.flatten())
    .bind(now)
    .bind(id.to_string())
    .execute(&mut *c)
    .await?;
    Ok(())
}

async fn fire(
    c: &mut PgConnection,
    f: &Fire,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<FireOutcome> {
    let Some(s) = rows::get(&mut *c, f.schedule_id, true).await? else {
        return match f.kind {
            FireKind::Trigger => Err(Error::ScheduleNotFound(f.schedule_id.to_string())),
            _ => Ok(FireOutcome::Stale),
        };
    };
    let (id, actor, corr) = (f.schedule_id, &f.actor, f.correlation.as_str());
    let previous_running = match s.last_task_id {
        Some(t) => rows::task_running(c, t).await?,
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
                let b = Bookkeeping {
                    next_fire_at: Some(next),
                    skipped,
                    ..Default::default()
                };
                book(c, id, &b, now).await?;
                let data = json!({ "reason": "missed", "count": skipped, "from": rfc3339(at),
                                   "next_fire_at": next.map(rfc3339) });
                let ev = ScheduleEventType::Skipped;
                append_event(c, id, ev, data, actor, corr, now).await?;
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
            let b = Bookkeeping {
                next_fire_at: next,
                skipped: 1,
                ..Default::default()
            };
            book(c, id, &b, now).await?;
            let data = json!({ "reason": "overlap", "count": 1,
                               "scheduled_for": rfc3339(scheduled_for),
                               "previous_task_id": previous.map(|t| t.to_string()) });
            let ev = ScheduleEventType::Skipped;
            append_event(c, id, ev, data, actor, corr, now).await?;
            Ok(FireOutcome::Skipped)
        }
        FireAction::Buffer => {
            let previous =
                previous.ok_or_else(|| Error::Internal("buffer without a previous task".into()))?;
            let b = Bookkeeping {
                next_fire_at: next,
                buffered: Some(Some(scheduled_for)),
                ..Default::default()
            };
            book(c, id, &b, now).await?;
            let data = json!({ "scheduled_for": rfc3339(scheduled_for),
                               "previous_task_id": previous.to_string() });
            let ev = ScheduleEventType::Buffered;
            append_event(c, id, ev, data, actor, corr, now).await?;
            Ok(FireOutcome::Buffered { previous })
        }
        FireAction::Start | FireAction::CancelPreviousThenStart => {
            let start = Start {
                s: &s,
                f,
                action,
                previous,
                scheduled_for,
                next,
            };
            start_fire(c, start, now, events).await
        }
    }
}

/// A fire that makes a task.
struct Start<'a> {
    s: &'a ScheduleRecord,
    f: &'a Fire,
    action: FireAction,
    previous: Option<TaskId>,
    scheduled_for: i64,
    next: Option<Option<i64>>,
}

async fn start_fire(
    c: &mut PgConnection,
    st: Start<'_>,
    now: i64,
    events: &mut Vec<EventRecord>,
) -> Result<FireOutcome> {
    let Start {
        s,
        f,
        action,
        previous,
        scheduled_for,
        next,
    } = st;
    let (id, actor, corr) = (f.schedule_id, &f.actor, f.correlation.as_str());
    // The fire time is the task's idempotency key: a second task for it
    // cannot be inserted.
    let inserted = sqlx::query(
        "INSERT INTO schedule_fires (schedule_id, scheduled_for, task_id, fired_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(id.to_string())
    .bind(scheduled_for)
    .bind(f.task_id.to_string())
    .bind(now)
    .execute(&mut *c)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(FireOutcome::Stale);
    }
    let mut stop_pod = None;
    if let (FireAction::CancelPreviousThenStart, Some(prev)) = (action, previous) {
        let reason = format!(
            "schedule {} fired again (overlap CANCEL_PREVIOUS)",
            s.name.as_str()
        );
        let system = ActorId::system();
        let who = Who {
            actor: &system,
            correlation: &f.correlation,
        };
        if let Outcome::Finished { stop_pod: p } =
            finish_task(c, prev, Finish::Cancel, who, Some(&reason), now, events).await?
        {
            stop_pod = p;
        }
    }
    // A buffered fire left over although its previous task ended (the
    // timetable fire came first) gives way to this one.
    let stale_buffer = f.kind != FireKind::Buffered && s.buffered_fire_at.is_some();
    let task = fired_task(s, f, scheduled_for)?;
    let created = create_task(c, f.task_id, &task, &f.pod_message, now, events).await?;
    let b = Bookkeeping {
        next_fire_at: next,
        fired: 1,
        skipped: u64::from(stale_buffer),
        last_fire: Some((scheduled_for, f.task_id)),
        buffered: (f.kind == FireKind::Buffered || stale_buffer).then_some(None),
    };
    book(c, id, &b, now).await?;
    // Counted as skipped, so it has its skipped event like every other
    // fire time that made no task.
    if let (true, Some(at)) = (stale_buffer, s.buffered_fire_at) {
        let data = json!({ "reason": "superseded", "count": 1, "scheduled_for": rfc3339(at),
                           "by": rfc3339(scheduled_for) });
        let ev = ScheduleEventType::Skipped;
        append_event(c, id, ev, data, actor, corr, now).await?;
    }
    let cancelled = (action == FireAction::CancelPreviousThenStart)
        .then_some(previous)
        .flatten()
        .map(|t| t.to_string());
    let data = json!({ "scheduled_for": rfc3339(scheduled_for), "task_id": f.task_id.to_string(),
                       "trigger": f.kind == FireKind::Trigger,
                       "buffered": f.kind == FireKind::Buffered,
                       "cancelled_task_id": cancelled });
    append_event(c, id, ScheduleEventType::Fired, data, actor, corr, now).await?;
    match created {
        Outcome::Task { task, .. } => Ok(FireOutcome::Started { task, stop_pod }),
        other => Err(Error::Internal(format!("unexpected outcome {other:?}"))),
    }
}
