//! The schedule operations ([`ScheduleService`]): the schedule RPCs, and
//! the fire that both the firing loop ([`super::scheduler`]) and
//! TriggerSchedule use. A fire is one writer command (the decision, the
//! task and the bookkeeping commit together, see `store::schedules`);
//! after it commits, the cancelled previous task's pod is stopped and the
//! new task's pod started, as an operation detached from the caller.

use std::sync::Arc;

use tokio::sync::Notify;

use super::TaskService;
use super::ports::Clock;
use super::ports::schedules::{
    Fire, FireKind, FireOutcome, ScheduleOutcome, ScheduleStore, ScheduleWrite,
};
use crate::domain::schedule::{
    NewSchedule, ScheduleCommand, ScheduleEventRecord, ScheduleId, ScheduleKey, ScheduleRecord,
};
use crate::domain::{ActorId, Cause, CorrelationId, TaskId};
use crate::error::{Error, Result};

/// The schedule operations. Cheap to share (`Arc`).
pub struct ScheduleService {
    tasks: Arc<TaskService>,
    /// The store port (SQLite in production, the simulator's in-memory
    /// store under simulation).
    store: Arc<dyn ScheduleStore>,
    clock: Arc<dyn Clock>,
    /// Wakes the firing loop when a schedule's timetable changed (created,
    /// resumed, deleted) or a fire was buffered.
    changed: Arc<Notify>,
}

impl ScheduleService {
    /// Schedules over `tasks`' store, on `clock`.
    pub fn new(
        tasks: Arc<TaskService>,
        store: Arc<dyn ScheduleStore>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            tasks,
            store,
            clock,
            changed: Arc::new(Notify::new()),
        }
    }

    /// The clock fires are judged on.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Notified when the firing loop should look at the schedules again.
    pub fn changed(&self) -> &Arc<Notify> {
        &self.changed
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn ScheduleStore> {
        &self.store
    }

    /// The task operations.
    pub fn tasks(&self) -> &Arc<TaskService> {
        &self.tasks
    }

    /// Ids come from the entropy port, so a simulated run replays.
    fn new_id(&self) -> uuid::Uuid {
        self.tasks.pods().ports().entropy.new_id()
    }

    /// A schedule write; the firing loop looks again whatever the answer,
    /// since a write reported failed may still have committed (a lost
    /// reply; found by the simulator with `--lost-replies`).
    async fn write(&self, w: ScheduleWrite) -> Result<ScheduleOutcome> {
        let written = self.store.schedule(w).await;
        self.changed.notify_one();
        written
    }

    fn record(o: ScheduleOutcome) -> Result<ScheduleRecord> {
        match o {
            ScheduleOutcome::Schedule(s) => Ok(*s),
            other => Err(Error::Internal(format!("unexpected outcome {other:?}"))),
        }
    }

    /// CreateSchedule: ALREADY_EXISTS for a taken name, INVALID_SCHEDULE
    /// for a timetable without a fire time after now.
    pub async fn create(&self, s: NewSchedule) -> Result<ScheduleRecord> {
        let w = ScheduleWrite::Create {
            schedule_id: ScheduleId::from_uuid(self.new_id()),
            schedule: Box::new(s),
            now: self.clock.wall_micros(),
        };
        Self::record(self.write(w).await?)
    }

    /// GetSchedule.
    pub async fn get(&self, key: &ScheduleKey) -> Result<ScheduleRecord> {
        self.store.get_schedule(key).await?.ok_or_else(|| {
            Error::ScheduleNotFound(match key {
                ScheduleKey::Id(id) => format!("with id {id}"),
                ScheduleKey::Name(n) => format!("named {n:?}"),
            })
        })
    }

    /// ListSchedules, by name.
    pub async fn list(&self, limit: u32, offset: u32) -> Result<Vec<ScheduleRecord>> {
        self.store.list_schedules(limit, offset).await
    }

    /// PauseSchedule (a no-op on a paused schedule).
    pub async fn pause(&self, c: ScheduleCommand) -> Result<ScheduleRecord> {
        Self::record(self.write(ScheduleWrite::Pause(c)).await?)
    }

    /// ResumeSchedule: the next fire is the first after now; fire times
    /// passed while paused are not caught up.
    pub async fn resume(&self, c: ScheduleCommand) -> Result<ScheduleRecord> {
        let w = ScheduleWrite::Resume {
            cmd: c,
            now: self.clock.wall_micros(),
        };
        Self::record(self.write(w).await?)
    }

    /// DeleteSchedule: its tasks and audit trail stay.
    pub async fn delete(&self, c: ScheduleCommand) -> Result<()> {
        self.write(ScheduleWrite::Delete(c)).await?;
        Ok(())
    }

    /// TriggerSchedule: a fire now, outside the timetable, by the caller;
    /// the overlap rules apply. The task made, if any (none when skipped
    /// or buffered).
    pub async fn trigger(self: &Arc<Self>, c: ScheduleCommand) -> Result<Option<TaskId>> {
        let this = self.clone();
        self.tasks
            .detached(async move {
                let outcome = this
                    .fire_and_follow(
                        c.schedule_id,
                        FireKind::Trigger,
                        c.actor,
                        c.correlation,
                        true,
                    )
                    .await?;
                Ok(match outcome {
                    FireOutcome::Started { task, .. } => Some(task.task_id),
                    _ => None,
                })
            })
            .await
    }

    /// A schedule's audit trail.
    pub async fn events(
        &self,
        id: ScheduleId,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<ScheduleEventRecord>> {
        self.store.schedule_events(id, after_id, limit).await
    }

    /// One fire by `system` (the firing loop), with its follow-up (pod stop
    /// and start) detached so the loop never waits on a pod-host.
    pub async fn fire(self: &Arc<Self>, id: ScheduleId, kind: FireKind) -> Result<FireOutcome> {
        let correlation = CorrelationId::parse_or_new("")?;
        self.fire_and_follow(id, kind, ActorId::system(), correlation, false)
            .await
    }

    /// Commits the fire, then stops the pod of a task it cancelled and
    /// starts the pod of the task it made. With `wait`, returns after the
    /// start (TriggerSchedule); otherwise the start runs detached.
    async fn fire_and_follow(
        self: &Arc<Self>,
        id: ScheduleId,
        kind: FireKind,
        actor: ActorId,
        correlation: CorrelationId,
        wait: bool,
    ) -> Result<FireOutcome> {
        let store = &self.store;
        // Fail fast while the store refuses writes, before asking a host.
        store.ensure_writable()?;
        // As CreateTask's auto_start: a placement that already fails is
        // recorded with the task, so GetTask shows why no pod runs.
        let pod_message = self.placement_problem(id).await;
        let fire = Fire {
            schedule_id: id,
            kind,
            now: self.clock.wall_micros(),
            task_id: TaskId::from_uuid(self.new_id()),
            actor: actor.clone(),
            correlation: correlation.clone(),
            pod_message: pod_message.clone(),
        };
        let written = store.schedule(ScheduleWrite::Fire(Box::new(fire))).await;
        // A fire may cancel the previous task (OVERLAP_CANCEL_PREVIOUS).
        let written = written.inspect_err(|e| self.tasks.pods().after_ambiguous_write(e));
        let outcome = match written? {
            ScheduleOutcome::Fired(o) => o,
            other => return Err(Error::Internal(format!("unexpected outcome {other:?}"))),
        };
        match &outcome {
            FireOutcome::Started { task, stop_pod } => {
                tracing::info!(schedule_id = %id, task_id = %task.task_id, "schedule fired");
                let this = self.clone();
                let stop_pod = stop_pod.clone();
                let task_id = task.task_id;
                let start = pod_message.is_empty();
                let cause = Cause::by(&actor, &correlation);
                let follow = async move {
                    if let Some((pod, host)) = stop_pod {
                        this.tasks
                            .pods()
                            .stop_after_finish(pod, host, "cancelled by its schedule")
                            .await;
                    }
                    if start {
                        this.start_fired(task_id, cause).await;
                    }
                    Ok(())
                };
                if wait {
                    follow.await?;
                } else {
                    drop(self.tasks.spawn_operation(follow));
                }
            }
            FireOutcome::Buffered { .. } => self.changed.notify_one(),
            FireOutcome::Skipped | FireOutcome::Missed { .. } | FireOutcome::Stale => {}
        }
        Ok(outcome)
    }

    /// NO_POD_HOST and the like, as `REASON: sentence`, when no pod-host
    /// can take the schedule's task now; empty when one can.
    async fn placement_problem(&self, id: ScheduleId) -> String {
        let Ok(Some(s)) = self.store.get_schedule(&ScheduleKey::Id(id)).await else {
            // The fire itself reports a missing schedule.
            return String::new();
        };
        let hosts = self.tasks.pods().hosts();
        match hosts.place(&s.task.template).await {
            Ok(p) => {
                hosts.start_done(&p.host_id, None);
                String::new()
            }
            Err(e) => e.public_message(),
        }
    }

    /// Starts a fired task's pod, or queues it when no host has room
    /// ("always started, queued if no room"); a failure is logged (the
    /// task stays INACTIVE and can be started by hand).
    pub async fn start_fired(&self, task_id: TaskId, cause: Cause) {
        if let Err(e) = self.tasks.pods().start_or_queue(task_id, cause).await {
            tracing::warn!(%task_id, error = %e, "a scheduled task's pod did not start");
        }
    }
}
