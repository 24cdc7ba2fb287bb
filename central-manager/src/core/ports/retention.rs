//! The retention writes of the store port: archiving terminal tasks in
//! bounded batches, DeleteTask and CancelTasks, and what each returns. The
//! adapter (`store::retention`) runs each inside the writer's transaction.

use std::time::Duration;

use crate::domain::{ActorId, CorrelationId, PodRef, TaskId};

/// A retention write.
#[derive(Debug, Clone)]
pub enum RetentionWrite {
    /// Records the start of an archive run; returns its id.
    StartArchiveRun {
        /// Tasks that finished before this (unix micros) are archived.
        finished_before: i64,
        /// Who asked (`system` for `--archive-after-days`).
        actor: ActorId,
        /// Correlation id.
        correlation: CorrelationId,
    },
    /// Moves at most `limit` terminal tasks finished before
    /// `finished_before`, oldest first, with their events.
    ArchiveBatch {
        /// The run it belongs to.
        run_id: i64,
        /// Unix micros.
        finished_before: i64,
        /// Most tasks moved by this write.
        limit: u32,
    },
    /// DeleteTask.
    DeleteTask {
        /// The task.
        task_id: TaskId,
        /// Why (required).
        reason: String,
        /// Who.
        actor: ActorId,
        /// Correlation id.
        correlation: CorrelationId,
    },
    /// CancelTasks: cancels those of `task_ids` that are still not
    /// terminal.
    CancelMany {
        /// The tasks.
        task_ids: Vec<TaskId>,
        /// Recorded in each `task_cancelled` event.
        reason: String,
        /// Who.
        actor: ActorId,
        /// Correlation id.
        correlation: CorrelationId,
    },
}

/// What a retention write returns.
#[derive(Debug, Clone, PartialEq)]
pub enum RetentionOutcome {
    /// StartArchiveRun.
    RunStarted(i64),
    /// ArchiveBatch: tasks moved (fewer than the limit means the run is
    /// done), and how long its statements took inside the transaction:
    /// what the next batch is sized by (the commit and the wait for the
    /// writer are not the batch's doing, and a loaded disk would otherwise
    /// shrink every batch to one task).
    Archived { moved: u64, took: Duration },
    /// DeleteTask.
    Deleted,
    /// CancelMany: the tasks cancelled, with the pods to stop.
    Cancelled(Vec<(TaskId, Option<(PodRef, String)>)>),
}
