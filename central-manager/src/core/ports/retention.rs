//! The retention part of the store port: the reads the retention
//! operations make ([`RetentionStore`]: CancelTasks' selection, the
//! deletions log, GetStats), the retention writes (archiving terminal
//! tasks in bounded batches, DeleteTask, CancelTasks) and what each
//! returns. The adapters (`store::retention`, `store::postgres::retention`)
//! run each write inside the writer's transaction.

use std::time::Duration;

use futures::future::BoxFuture;

use super::store::{Command, Outcome, TaskStore};
use crate::domain::stats::{StatsGroup, StatsQuery};
use crate::domain::{ActorId, CorrelationId, PodRef, TaskFilter, TaskId, TaskStatus};
use crate::error::{Error, Result};

/// The store as the retention operations use it: the task store plus the
/// retention and statistics reads. Writes go through [`TaskStore::write`]
/// as [`Command::Retention`] (see [`RetentionStore::retention`]).
pub trait RetentionStore: TaskStore {
    /// The non-terminal tasks matching the filter, oldest first, at most
    /// `MAX_CANCEL_TASKS` (CancelTasks' selection; archived tasks are
    /// terminal and never selected).
    fn cancellable<'a>(&'a self, f: &'a TaskFilter) -> BoxFuture<'a, Result<Vec<TaskId>>>;

    /// The logged deletion of a task, if any.
    fn deletion(&self, id: TaskId) -> BoxFuture<'_, Result<Option<DeletionRecord>>>;

    /// GetStats' groups.
    fn stats(&self, q: StatsQuery) -> BoxFuture<'_, Result<Vec<StatsGroup>>>;
}

impl dyn RetentionStore {
    /// Runs a retention write.
    pub async fn retention(&self, w: RetentionWrite) -> Result<RetentionOutcome> {
        match self.write(Command::Retention(w)).await? {
            Outcome::Retention(o) => Ok(o),
            other => Err(Error::Internal(format!("unexpected outcome {other:?}"))),
        }
    }
}

/// One deletion as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletionRecord {
    /// The deleted task.
    pub task_id: TaskId,
    /// Its title.
    pub title: String,
    /// Its final status.
    pub status: TaskStatus,
    /// Events removed with it.
    pub events_deleted: u64,
    /// It had been archived.
    pub was_archived: bool,
    /// Why.
    pub reason: String,
    /// Who.
    pub deleted_by: String,
    /// Request.
    pub correlation_id: String,
    /// When (unix micros).
    pub deleted_at: i64,
}

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
