//! The schedule part of the store port: the reads ScheduleService and the
//! firing loop make ([`ScheduleStore`]), the schedule writes (create,
//! pause, resume, delete, fire) and what each returns. The adapters
//! (`store::Store`, `store::postgres::PgStore`, and
//! `store::memory::MemoryStore` for the simulator)
//! run each write inside the writer's transaction, a fire together with
//! the task it makes, with the same rules (`store::schedules`,
//! `store::postgres::schedules`).

use futures::future::BoxFuture;

use super::store::{Command, Outcome, TaskStore};
use crate::domain::schedule::{
    NewSchedule, ScheduleCommand, ScheduleEventRecord, ScheduleId, ScheduleKey, ScheduleRecord,
};
use crate::domain::{ActorId, CorrelationId, PodRef, TaskId, TaskRecord};
use crate::error::{Error, Result};

/// A schedule with a buffered fire, and the task it waits for.
pub type Buffered = (ScheduleId, Option<TaskId>);

/// The store as the schedule operations and the firing loop use it: the
/// task store plus the schedule reads. Writes go through
/// [`TaskStore::write`] as [`Command::Schedule`] (see
/// [`ScheduleStore::schedule`]).
pub trait ScheduleStore: TaskStore {
    /// GetSchedule by id or name.
    fn get_schedule<'a>(
        &'a self,
        key: &'a ScheduleKey,
    ) -> BoxFuture<'a, Result<Option<ScheduleRecord>>>;

    /// ListSchedules, by name.
    fn list_schedules(&self, limit: u32, offset: u32)
    -> BoxFuture<'_, Result<Vec<ScheduleRecord>>>;

    /// Active schedules whose `next_fire_at` is at or before `now`, with
    /// it, earliest first, at most `limit`.
    fn due_schedules(&self, now: i64, limit: u32) -> BoxFuture<'_, Result<Vec<(ScheduleId, i64)>>>;

    /// The earliest `next_fire_at` of any active schedule.
    fn earliest_fire(&self) -> BoxFuture<'_, Result<Option<i64>>>;

    /// Schedules with a buffered fire, and the task it waits for.
    fn buffered_schedules(&self) -> BoxFuture<'_, Result<Vec<Buffered>>>;

    /// Tasks fired since `since` that never got a start attempt.
    fn unstarted_fires(&self, since: i64) -> BoxFuture<'_, Result<Vec<TaskId>>>;

    /// A schedule's audit trail after `after_id`, oldest first.
    fn schedule_events(
        &self,
        id: ScheduleId,
        after_id: i64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<ScheduleEventRecord>>>;
}

impl dyn ScheduleStore {
    /// Runs a schedule write.
    pub async fn schedule(&self, w: ScheduleWrite) -> Result<ScheduleOutcome> {
        match self.write(Command::Schedule(w)).await? {
            Outcome::Schedule(o) => Ok(o),
            other => Err(Error::Internal(format!("unexpected outcome {other:?}"))),
        }
    }

    /// EVENT_STORE_UNAVAILABLE at once while the store is known to be
    /// unwritable.
    pub fn ensure_writable(&self) -> Result<()> {
        let tasks: &dyn TaskStore = self;
        tasks.ensure_writable()
    }
}

/// Which fire time a fire is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FireKind {
    /// The timetable's fire time `at` (the row's `next_fire_at`).
    Due {
        /// The fire time.
        at: i64,
    },
    /// The BUFFER_ONE fire waiting for the previous task to end.
    Buffered,
    /// TriggerSchedule: a fire at `now`, outside the timetable.
    Trigger,
}

/// A fire, as sent to the writer.
#[derive(Debug, Clone)]
pub struct Fire {
    /// The schedule.
    pub schedule_id: ScheduleId,
    /// Which fire time.
    pub kind: FireKind,
    /// The scheduler's clock (unix micros): catch-up decisions and
    /// Trigger's fire time.
    pub now: i64,
    /// Id of the task, if the fire makes one.
    pub task_id: TaskId,
    /// `system` for the timetable and buffered fires; the caller for
    /// Trigger.
    pub actor: ActorId,
    /// Correlation id of the fire's events and its task's.
    pub correlation: CorrelationId,
    /// The task's initial `pod_message` (no pod-host had room when the
    /// fire was prepared).
    pub pod_message: String,
}

/// A schedule write.
#[derive(Debug, Clone)]
pub enum ScheduleWrite {
    /// CreateSchedule; `now` is the caller's clock (first fire after it).
    Create {
        /// Id for the new schedule.
        schedule_id: ScheduleId,
        /// The validated request.
        schedule: Box<NewSchedule>,
        /// Unix micros.
        now: i64,
    },
    /// PauseSchedule.
    Pause(ScheduleCommand),
    /// ResumeSchedule; the next fire is the first after `now`.
    Resume {
        /// The call.
        cmd: ScheduleCommand,
        /// Unix micros.
        now: i64,
    },
    /// DeleteSchedule.
    Delete(ScheduleCommand),
    /// A fire.
    Fire(Box<Fire>),
    /// Forget `schedule_fires` rows fired at or before this time.
    PruneFires {
        /// Unix micros.
        up_to: i64,
    },
}

/// What a fire did.
#[derive(Debug, Clone, PartialEq)]
pub enum FireOutcome {
    /// It made this task; `stop_pod` is the cancelled previous task's pod
    /// (CANCEL_PREVIOUS), to stop after commit.
    Started {
        /// The new task.
        task: Box<TaskRecord>,
        /// The previous task's pod to stop, with its host.
        stop_pod: Option<(PodRef, String)>,
    },
    /// BUFFER_ONE: it waits for `previous` to end.
    Buffered {
        /// The running previous task.
        previous: TaskId,
    },
    /// The overlap policy skipped it.
    Skipped,
    /// The fire time (and maybe later ones) was older than the catch-up
    /// window: `count` fire times skipped.
    Missed {
        /// How many.
        count: u64,
    },
    /// Nothing to do: the schedule changed since the fire was planned
    /// (paused, deleted, already fired, buffer not ready).
    Stale,
}

/// What a schedule write returns.
#[derive(Debug, Clone, PartialEq)]
pub enum ScheduleOutcome {
    /// The schedule after the change.
    Schedule(Box<ScheduleRecord>),
    /// Deleted.
    Deleted,
    /// A fire's result.
    Fired(FireOutcome),
    /// PruneFires: rows removed.
    Pruned(u64),
}
