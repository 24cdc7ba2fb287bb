//! The event store and the `tasks` table (SQLite through sqlx): opening
//! the database, the single group-committing writer, and the read queries.
//!
//! Schema (see `migrations/`): `streams` (one per task), `events`
//! (append-only, global `position`, per-stream `version`), `tasks` (the
//! queryable state, updated in the same transaction as its events) and
//! `idempotency_keys` (CreateTask `request_id`s). Times are unix micros.

mod commands;
mod pod_end;
pub mod pods;
mod pool;
mod queries;
mod rows;
mod writer;

pub use commands::{Command, IDEMPOTENCY_WINDOW_MICROS, Outcome};
pub use pool::{BUSY_TIMEOUT, DbConfig, MIGRATOR};
pub use writer::{MAX_BATCH, WriterHandle, WriterStats};

use sqlx::SqlitePool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::{EventRecord, EventsQuery, ListQuery, PodInfo, TaskFilter, TaskId, TaskRecord};
use crate::error::Result;
use crate::watch::EventHub;
use writer::Writer;

/// Handle to the database: writes go to the single writer, reads to the
/// read pool. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    readers: SqlitePool,
    writer: WriterHandle,
}

impl Store {
    /// Opens (creating if missing) and migrates the database, starts the
    /// writer on `tracker` and opens the read pool. The writer publishes
    /// committed events to `hub` and stops when `stop` is cancelled, after
    /// finishing what is queued.
    pub async fn open(
        db: DbConfig,
        hub: EventHub,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> Result<Self, sqlx::Error> {
        let conn = pool::open_and_migrate(&db).await?;
        let readers = db.open_readers().await?;
        let writer = Writer::start(conn, db, hub, tracker, stop);
        Ok(Self { readers, writer })
    }

    /// Committed batches and commands so far (group-commit observability).
    pub fn writer_stats(&self) -> WriterStats {
        self.writer.stats()
    }

    /// Runs a write command (see [`Command`]).
    pub async fn write(&self, command: Command) -> Result<Outcome> {
        self.writer.submit(command).await
    }

    /// One task.
    pub async fn task(&self, id: TaskId) -> Result<Option<TaskRecord>> {
        queries::get_task(&self.readers, id).await
    }

    /// ListTasks.
    pub async fn list_tasks(&self, q: &ListQuery) -> Result<Vec<TaskRecord>> {
        queries::list_tasks(&self.readers, q).await
    }

    /// CountTasks.
    pub async fn count_tasks(&self, f: &TaskFilter) -> Result<u64> {
        queries::count_tasks(&self.readers, f).await
    }

    /// Whether the task exists (its stream does).
    pub async fn task_exists(&self, id: TaskId) -> Result<bool> {
        queries::stream_exists(&self.readers, id).await
    }

    /// GetTaskEvents.
    pub async fn task_events(&self, q: &EventsQuery) -> Result<Vec<EventRecord>> {
        queries::task_events(&self.readers, q).await
    }

    /// Events after `after`, oldest first, at most `limit`.
    pub async fn events_after(
        &self,
        after: u64,
        task: Option<TaskId>,
        limit: u32,
    ) -> Result<Vec<EventRecord>> {
        queries::events_after(&self.readers, after, task, limit).await
    }

    /// Tasks with a pod that is starting, running or unknown.
    pub async fn active_pods(&self) -> Result<Vec<(TaskId, PodInfo)>> {
        queries::active_pods(&self.readers).await
    }

    /// Runs a pod supervision command.
    pub async fn pod(&self, command: pods::PodCommand) -> Result<pods::PodOutcome> {
        match self.writer.submit(Command::Pod(command)).await? {
            Outcome::Pod(o) => Ok(o),
            other => Err(crate::error::Error::Internal(format!(
                "unexpected outcome {other:?}"
            ))),
        }
    }

    /// The current pods placed on `host_id`.
    pub async fn pods_on_host(
        &self,
        host_id: &str,
    ) -> Result<Vec<(pods::PodRef, crate::domain::PodStatus)>> {
        queries::pods_on_host(&self.readers, host_id).await
    }

    /// Hosts that run pods according to the database.
    pub async fn hosts_with_pods(&self) -> Result<Vec<String>> {
        queries::hosts_with_pods(&self.readers).await
    }

    /// Scheduled automatic restarts.
    pub async fn scheduled_restarts(&self) -> Result<Vec<(TaskId, i64)>> {
        queries::scheduled_restarts(&self.readers).await
    }

    /// Closes the read pool (the writer closes its own connection when it
    /// stops).
    pub async fn close(&self) {
        self.readers.close().await;
    }
}

#[cfg(test)]
pub(crate) mod tests;
