//! The schedule writes of the store port: what the core asks the store to
//! do to schedules (create, pause, resume, delete, fire) and what each
//! returns. The adapter (`store::schedules`) runs each inside the writer's
//! transaction, a fire together with the task it makes.

use crate::domain::schedule::{NewSchedule, ScheduleCommand, ScheduleId, ScheduleRecord};
use crate::domain::{ActorId, CorrelationId, PodRef, TaskId, TaskRecord};

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
