//! Schedules in the simulated world: the clients' schedule operations
//! (against the real `ScheduleService`, whose firing loop runs on the
//! virtual clock), and the schedule invariants:
//!
//! - each (schedule, fire time) made at most one task (the tasks'
//!   `ipa.schedule_id` and `ipa.scheduled_for` metadata; at the end);
//! - under OVERLAP_SKIP, never two non-terminal tasks of one schedule
//!   (periodically and at the end);
//! - no fire earlier than its fire time (at the end);
//! - once faults stop, no active schedule's due fire is later than
//!   [`LATE_TOLERANCE`] (periodically, from [`LATE_GRACE`] after the
//!   quiet period began);
//! - `fired_count` and `skipped_count` agree with the tasks, the
//!   `schedule_fires` rows and the `schedule_fired` / `schedule_skipped`
//!   events (at the end).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use central_manager::core::ports::Clock;
use central_manager::core::schedules::ScheduleService;
use central_manager::domain::schedule::{
    NewSchedule, ScheduleCommand, ScheduleId, ScheduleName, ScheduleTask, Timetable,
};
use central_manager::domain::{Description, RestartPolicySpec, TemplateName, Title};
use central_manager::error::Result;
use central_manager::store::memory::MemoryStore;
use rusqlite::Connection;

use super::checks::push;
use super::clients::{Clients, actor, correlation, metadata};
use crate::coverage::Coverage;
use crate::plan::Behaviour;
use crate::schedule_ops::ScheduleOp;

/// How long after the quiet period began lateness is checked: the
/// breaker's prober closes it within a second of the last fault, and a
/// fire that failed meanwhile is retried after the loop's `RETRY`.
pub(super) const LATE_GRACE: Duration = Duration::from_secs(3);
/// How late a due fire may be once faults stopped: the loop's `RETRY`
/// (a tick that failed on the last fault) plus a second for the writes in
/// between.
pub(super) const LATE_TOLERANCE: Duration = Duration::from_secs(2);
/// How long before the end of a run every schedule is paused, so the last
/// fires' tasks settle before the convergence checks.
pub(super) const PAUSE_BEFORE_END: Duration = Duration::from_secs(5);

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// The schedules the clients created, in creation order.
pub(super) type Created = Arc<Mutex<Vec<ScheduleId>>>;

impl Clients {
    /// Runs one schedule operation (step `n`).
    pub(super) async fn schedule_op(&self, n: usize, op: ScheduleOp) {
        let (Some(s), Some(corr)) = (self.schedules.clone(), correlation(n)) else {
            return;
        };
        let r = match op {
            ScheduleOp::Create {
                interval_s,
                overlap,
                catchup_s,
                life_ms,
                end,
            } => {
                self.create_schedule(&s, n, interval_s, overlap, catchup_s, life_ms, end, &corr)
                    .await
            }
            ScheduleOp::Pause { schedule }
            | ScheduleOp::Resume { schedule }
            | ScheduleOp::Trigger { schedule }
            | ScheduleOp::Delete { schedule } => {
                let id = {
                    let c = self.schedule_ids.lock().unwrap_or_else(|e| e.into_inner());
                    (!c.is_empty()).then(|| c[schedule % c.len()])
                };
                let Some(id) = id else {
                    self.trace.note(format!("op-{n}: no schedule yet; skipped"));
                    return;
                };
                let cmd = ScheduleCommand {
                    schedule_id: id,
                    actor: actor(),
                    correlation: corr.clone(),
                };
                match op {
                    ScheduleOp::Pause { .. } => s.pause(cmd).await.map(|_| format!("{id} paused")),
                    ScheduleOp::Resume { .. } => {
                        s.resume(cmd).await.map(|_| format!("{id} resumed"))
                    }
                    ScheduleOp::Trigger { .. } => s
                        .trigger(cmd)
                        .await
                        .map(|t| format!("{id} triggered: task {t:?}")),
                    _ => s.delete(cmd).await.map(|()| format!("{id} deleted")),
                }
            }
        };
        self.report(n, op.kind(), r);
    }

    #[allow(clippy::too_many_arguments)]
    async fn create_schedule(
        &self,
        s: &ScheduleService,
        n: usize,
        interval_s: u64,
        overlap: central_manager::domain::schedule::Overlap,
        catchup_s: u32,
        life_ms: u32,
        end: crate::plan::PodEnd,
        corr: &central_manager::domain::CorrelationId,
    ) -> Result<String> {
        let behaviour = Behaviour {
            life_ms: Some(life_ms),
            end,
            phase_every_ms: None,
            spawn_fails: false,
        };
        let task = ScheduleTask::new(
            Title::from_db(format!("fire of schedule op {n}")),
            Description::from_db(String::new()),
            metadata(&behaviour),
            TemplateName::from_db("default".into()),
            RestartPolicySpec::default(),
        )?;
        let new = NewSchedule {
            name: ScheduleName::parse(&format!("sched-{n}"))?,
            timetable: Timetable::parse("", interval_s, "")?,
            task,
            overlap,
            catchup_window_seconds: catchup_s,
            paused: false,
            actor: actor(),
            correlation: corr.clone(),
        };
        let r = s.create(new).await?;
        self.schedule_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(r.schedule_id);
        Ok(format!("{} created", r.schedule_id))
    }

    fn report(&self, n: usize, what: &str, r: Result<String>) {
        match r {
            Ok(done) => self.trace.note(format!("op-{n} {what}: {done}")),
            Err(e) => self.note_error(n, what, &e),
        }
    }
}

/// Pauses every schedule (the end of a run: the last fires' tasks must
/// settle before the convergence checks).
pub(super) async fn pause_all(s: &ScheduleService, created: &Created) {
    let ids = created.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for id in ids {
        let Some(corr) = central_manager::domain::CorrelationId::parse_or_new("sim-end").ok()
        else {
            continue;
        };
        let cmd = ScheduleCommand {
            schedule_id: id,
            actor: actor(),
            correlation: corr,
        };
        // A deleted schedule answers SCHEDULE_NOT_FOUND: nothing to pause.
        let _ = s.pause(cmd).await;
    }
}

/// The periodic schedule checks' state.
pub(super) struct Watch {
    /// Whether the run has schedules (no reads otherwise).
    enabled: bool,
    store: MemoryStore,
    clock: Arc<dyn Clock>,
    /// Wall micros from which due fires must be on time (`i64::MAX`:
    /// faults may still be on).
    pub(super) on_time_from: Arc<AtomicI64>,
}

impl Watch {
    pub(super) fn new(enabled: bool, store: MemoryStore, clock: Arc<dyn Clock>) -> Self {
        Self {
            enabled,
            store,
            clock,
            on_time_from: Arc::new(AtomicI64::new(i64::MAX)),
        }
    }

    /// The periodic checks.
    pub(super) fn check(&self, found: &mut Vec<String>) {
        if !self.enabled {
            return;
        }
        let now = self.clock.wall_micros();
        let from = self.on_time_from.load(Ordering::Relaxed);
        let late = (now >= from).then(|| now - micros(LATE_TOLERANCE));
        let r = self.store.read(|c| {
            skip_overlaps(c, found)?;
            if let Some(limit) = late {
                overdue(c, limit.max(from), now, found)?;
            }
            Ok(())
        });
        if let Err(e) = r {
            push(
                found,
                format!("schedule: the checks could not read the store: {e}"),
            );
        }
    }
}

fn skip_overlaps(c: &Connection, found: &mut Vec<String>) -> Result<()> {
    let mut st = c.prepare(
        "SELECT m.value, COUNT(*) FROM task_metadata m \
         JOIN tasks t ON t.task_id = m.task_id \
         JOIN schedules s ON s.schedule_id = m.value \
         WHERE m.key = 'ipa.schedule_id' AND s.overlap = 'skip' \
           AND t.status IN ('inactive', 'active') \
         GROUP BY m.value HAVING COUNT(*) > 1",
    )?;
    for r in st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (id, n) = r?;
        push(
            found,
            format!("schedule: OVERLAP_SKIP schedule {id} has {n} non-terminal tasks"),
        );
    }
    Ok(())
}

/// Active schedules whose next fire time is older than `limit`.
fn overdue(c: &Connection, limit: i64, now: i64, found: &mut Vec<String>) -> Result<()> {
    let mut st = c.prepare(
        "SELECT schedule_id, next_fire_at FROM schedules \
         WHERE paused = 0 AND next_fire_at IS NOT NULL AND next_fire_at < ?",
    )?;
    for r in st.query_map([limit], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })? {
        let (id, at) = r?;
        push(
            found,
            format!(
                "schedule: fire of {id} overdue by {:.3}s after the faults stopped",
                (now - at) as f64 / 1e6
            ),
        );
    }
    Ok(())
}

/// The final schedule checks.
pub(super) fn at_end(store: &MemoryStore, found: &mut Vec<String>) {
    let r = store.read(|c| {
        skip_overlaps(c, found)?;
        one_task_per_fire(c, found)?;
        never_early(c, found)?;
        counts(c, found)
    });
    if let Err(e) = r {
        push(
            found,
            format!("schedule: the checks could not read the store: {e}"),
        );
    }
}

fn one_task_per_fire(c: &Connection, found: &mut Vec<String>) -> Result<()> {
    let mut st = c.prepare(
        "SELECT a.value, b.value, COUNT(*) FROM task_metadata a \
         JOIN task_metadata b ON b.task_id = a.task_id AND b.key = 'ipa.scheduled_for' \
         WHERE a.key = 'ipa.schedule_id' GROUP BY a.value, b.value HAVING COUNT(*) > 1",
    )?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for r in rows {
        let (id, at, n) = r?;
        push(
            found,
            format!("schedule: {id} made {n} tasks for its fire time {at}"),
        );
    }
    Ok(())
}

fn never_early(c: &Connection, found: &mut Vec<String>) -> Result<()> {
    let mut st = c.prepare(
        "SELECT f.schedule_id, f.scheduled_for, t.created_at FROM schedule_fires f \
         JOIN tasks t ON t.task_id = f.task_id \
         WHERE t.created_at < f.scheduled_for OR f.fired_at < f.scheduled_for",
    )?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for r in rows {
        let (id, at, created) = r?;
        push(
            found,
            format!(
                "schedule: {id} fired {:.3}s before its fire time",
                (at - created) as f64 / 1e6
            ),
        );
    }
    Ok(())
}

/// `fired_count` and `skipped_count` of every schedule still there
/// against its tasks, fire rows and events.
fn counts(c: &Connection, found: &mut Vec<String>) -> Result<()> {
    let mut st = c.prepare(
        "SELECT s.schedule_id, s.fired_count, s.skipped_count, \
           (SELECT COUNT(*) FROM task_metadata m \
              WHERE m.key = 'ipa.schedule_id' AND m.value = s.schedule_id), \
           (SELECT COUNT(*) FROM schedule_fires f WHERE f.schedule_id = s.schedule_id), \
           (SELECT COUNT(*) FROM schedule_events e \
              WHERE e.schedule_id = s.schedule_id AND e.type = 'schedule_fired'), \
           (SELECT COALESCE(SUM(json_extract(e.data_json, '$.count')), 0) \
              FROM schedule_events e \
              WHERE e.schedule_id = s.schedule_id AND e.type = 'schedule_skipped') \
         FROM schedules s",
    )?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            [
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
            ],
        ))
    })?;
    for r in rows {
        let (id, [fired, skipped, tasks, fires, fired_events, skipped_events]) = r?;
        if fired != tasks || fired != fires || fired != fired_events {
            push(
                found,
                format!(
                    "schedule: {id} fired_count {fired}, but {tasks} tasks, {fires} fire rows, \
                     {fired_events} schedule_fired events"
                ),
            );
        }
        if skipped != skipped_events {
            push(
                found,
                format!(
                    "schedule: {id} skipped_count {skipped}, but its schedule_skipped events \
                     count {skipped_events}"
                ),
            );
        }
    }
    Ok(())
}

/// Coverage: schedule event types, and why fires were skipped.
pub(super) fn cover(store: &MemoryStore, cov: &mut Coverage) {
    let r = store.read(|c| {
        let mut st = c.prepare(
            "SELECT DISTINCT type, COALESCE(json_extract(data_json, '$.reason'), '') \
             FROM schedule_events",
        )?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    });
    for (kind, reason) in r.unwrap_or_default() {
        if !reason.is_empty() {
            cov.events.insert(format!("{kind}/{reason}"));
        }
        cov.events.insert(kind);
    }
}
