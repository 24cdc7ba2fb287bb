//! Schedule rows on PostgreSQL: the reads of the SQLite store's
//! `schedules::rows` (GetSchedule, ListSchedules, the firing loop's due
//! and buffered schedules, unstarted fires, the audit trail) and the audit
//! trail's append, on a pooled read connection or inside the writer's
//! transaction. Rows become [`ScheduleRecord`]s through the SQLite store's
//! [`RawSchedule`], so both backends decode a row the same way.

use sqlx::postgres::PgRow;
use sqlx::{Executor, PgConnection, Postgres, Row};

use crate::domain::schedule::{ScheduleEventRecord, ScheduleEventType, ScheduleId, ScheduleRecord};
use crate::domain::{ActorId, TaskId};
use crate::error::Result;
use crate::store::schedules::rows::RawSchedule;

/// The columns of a `schedules` row, in [`record`] order.
const COLUMNS: &str = "schedule_id, name, cron, interval_seconds, timezone, task_json, overlap, \
     catchup_window_seconds, paused, next_fire_at, last_fire_at, fired_count, skipped_count, \
     buffered_fire_at, last_task_id, created_by, created_at";

/// A row selected with [`COLUMNS`].
fn record(r: &PgRow) -> Result<ScheduleRecord> {
    ScheduleRecord::try_from(RawSchedule {
        schedule_id: r.try_get(0)?,
        name: r.try_get(1)?,
        cron: r.try_get(2)?,
        interval_seconds: r.try_get(3)?,
        timezone: r.try_get(4)?,
        task_json: r.try_get(5)?,
        overlap: r.try_get(6)?,
        catchup_window_seconds: r.try_get(7)?,
        paused: r.try_get(8)?,
        next_fire_at: r.try_get(9)?,
        last_fire_at: r.try_get(10)?,
        fired_count: r.try_get(11)?,
        skipped_count: r.try_get(12)?,
        buffered_fire_at: r.try_get(13)?,
        last_task_id: r.try_get(14)?,
        created_by: r.try_get(15)?,
        created_at: r.try_get(16)?,
    })
}

/// One schedule by id. `lock`: FOR UPDATE, so a command of another replica
/// on this schedule waits for this transaction (writer only).
pub async fn get<'c>(
    c: impl Executor<'c, Database = Postgres>,
    id: ScheduleId,
    lock: bool,
) -> Result<Option<ScheduleRecord>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM schedules WHERE schedule_id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row: Option<PgRow> = sqlx::query(&sql)
        .bind(id.to_string())
        .fetch_optional(c)
        .await?;
    row.as_ref().map(record).transpose()
}

/// One schedule by name.
pub async fn get_by_name<'c>(
    c: impl Executor<'c, Database = Postgres>,
    name: &str,
) -> Result<Option<ScheduleRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM schedules WHERE name = $1");
    let row: Option<PgRow> = sqlx::query(&sql).bind(name).fetch_optional(c).await?;
    row.as_ref().map(record).transpose()
}

/// ListSchedules: by name.
pub async fn list<'c>(
    c: impl Executor<'c, Database = Postgres>,
    limit: u32,
    offset: u32,
) -> Result<Vec<ScheduleRecord>> {
    // COLLATE "C": byte order, as SQLite's default BINARY collation.
    let sql =
        format!("SELECT {COLUMNS} FROM schedules ORDER BY name COLLATE \"C\" LIMIT $1 OFFSET $2");
    let rows: Vec<PgRow> = sqlx::query(&sql)
        .bind(i64::from(limit))
        .bind(i64::from(offset))
        .fetch_all(c)
        .await?;
    rows.iter().map(record).collect()
}

/// Schedules whose next fire time is at or before `now`, earliest first.
pub async fn due<'c>(
    c: impl Executor<'c, Database = Postgres>,
    now: i64,
    limit: u32,
) -> Result<Vec<(ScheduleId, i64)>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT schedule_id, next_fire_at FROM schedules \
         WHERE next_fire_at IS NOT NULL AND next_fire_at <= $1 ORDER BY next_fire_at LIMIT $2",
    )
    .bind(now)
    .bind(i64::from(limit))
    .fetch_all(c)
    .await?;
    rows.into_iter()
        .map(|(id, at)| Ok((ScheduleId::from_db(&id)?, at)))
        .collect()
}

/// The earliest next fire time of any schedule (the loop's timer).
pub async fn earliest_fire<'c>(c: impl Executor<'c, Database = Postgres>) -> Result<Option<i64>> {
    Ok(
        sqlx::query_scalar(
            "SELECT MIN(next_fire_at) FROM schedules WHERE next_fire_at IS NOT NULL",
        )
        .fetch_one(c)
        .await?,
    )
}

/// Schedules with a buffered fire, with the task whose end starts it.
pub async fn buffered<'c>(
    c: impl Executor<'c, Database = Postgres>,
) -> Result<Vec<(ScheduleId, Option<TaskId>)>> {
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT schedule_id, last_task_id FROM schedules WHERE buffered_fire_at IS NOT NULL",
    )
    .fetch_all(c)
    .await?;
    rows.into_iter()
        .map(|(s, t)| {
            Ok((
                ScheduleId::from_db(&s)?,
                t.as_deref().map(TaskId::from_db).transpose()?,
            ))
        })
        .collect()
}

/// Tasks made by fires since `since` that were never started: no pod was
/// ever claimed and no start failure recorded.
pub async fn unstarted_fires<'c>(
    c: impl Executor<'c, Database = Postgres>,
    since: i64,
) -> Result<Vec<TaskId>> {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT f.task_id FROM schedule_fires f JOIN tasks t ON t.task_id = f.task_id \
         WHERE f.fired_at >= $1 AND t.status = 'inactive' AND t.pod_generation = 0 \
           AND t.pod_message = '' ORDER BY f.fired_at",
    )
    .bind(since)
    .fetch_all(c)
    .await?;
    rows.iter().map(|t| TaskId::from_db(t)).collect()
}

/// Whether the task exists and is not terminal (the overlap policy's
/// "previous still runs"); locks its row, so its status cannot change
/// under the fire's decision.
pub async fn task_running(c: &mut PgConnection, id: TaskId) -> Result<bool> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM tasks WHERE task_id = $1 FOR UPDATE")
            .bind(id.to_string())
            .fetch_optional(&mut *c)
            .await?;
    Ok(matches!(status.as_deref(), Some("inactive" | "active")))
}

/// Appends to the schedule audit trail (with `authenticated_as` in the data
/// when an admin acted for someone else).
pub async fn append_event(
    c: &mut PgConnection,
    id: ScheduleId,
    event: ScheduleEventType,
    mut data: serde_json::Value,
    actor: &ActorId,
    correlation: &str,
    now: i64,
) -> Result<()> {
    super::commands::note_principal(&mut data, actor.authenticated_as_principal());
    sqlx::query(
        "INSERT INTO schedule_events (schedule_id, type, data_json, actor_id, correlation_id, \
         occurred_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id.to_string())
    .bind(event.as_str())
    .bind(data.to_string())
    .bind(actor.as_str())
    .bind(correlation)
    .bind(now)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// A schedule's audit trail, oldest first, after `after_id`.
pub async fn events<'c>(
    c: impl Executor<'c, Database = Postgres>,
    id: ScheduleId,
    after_id: i64,
    limit: u32,
) -> Result<Vec<ScheduleEventRecord>> {
    type Row = (i64, String, String, String, String, String, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, schedule_id, type, data_json, actor_id, correlation_id, occurred_at \
         FROM schedule_events WHERE schedule_id = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(id.to_string())
    .bind(after_id)
    .bind(i64::from(limit))
    .fetch_all(c)
    .await?;
    rows.into_iter()
        .map(|(id, s, t, d, a, c, at)| {
            Ok(ScheduleEventRecord {
                id,
                schedule_id: ScheduleId::from_db(&s)?,
                event_type: t,
                data_json: d,
                actor_id: a,
                correlation_id: c,
                occurred_at: at,
            })
        })
        .collect()
}
