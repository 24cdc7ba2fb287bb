//! The event store and the `tasks` table (SQLite): opening
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
pub mod schedules;
mod writer;

pub use commands::{Command, IDEMPOTENCY_WINDOW_MICROS, Outcome};
pub use pool::{BUSY_TIMEOUT, DbConfig, MIGRATOR};
pub use writer::{MAX_BATCH, WriterHandle, WriterStats};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::{EventRecord, EventsQuery, ListQuery, PodInfo, TaskFilter, TaskId, TaskRecord};
use crate::error::Result;
use crate::watch::EventHub;
use pool::Readers;
use writer::Writer;

/// Handle to the database: writes go to the single writer, reads to the
/// read pool. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    readers: Readers,
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
    ) -> Result<Self> {
        db.migrate().await?;
        let conn = db.open_writer()?;
        let readers = Readers::open(db.clone())?;
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
        self.readers.run_inline(|c| queries::get_task(c, id))
    }

    /// ListTasks.
    pub async fn list_tasks(&self, q: &ListQuery) -> Result<Vec<TaskRecord>> {
        let q = q.clone();
        self.readers.run(move |c| queries::list_tasks(c, &q)).await
    }

    /// CountTasks.
    pub async fn count_tasks(&self, f: &TaskFilter) -> Result<u64> {
        let f = f.clone();
        self.readers.run(move |c| queries::count_tasks(c, &f)).await
    }

    /// Whether the task exists (its stream does).
    pub async fn task_exists(&self, id: TaskId) -> Result<bool> {
        self.readers.run_inline(|c| queries::stream_exists(c, id))
    }

    /// GetTaskEvents.
    pub async fn task_events(&self, q: &EventsQuery) -> Result<Vec<EventRecord>> {
        let q = q.clone();
        self.readers.run(move |c| queries::task_events(c, &q)).await
    }

    /// Events after `after`, oldest first, at most `limit`.
    pub async fn events_after(
        &self,
        after: u64,
        task: Option<TaskId>,
        limit: u32,
    ) -> Result<Vec<EventRecord>> {
        self.readers
            .run(move |c| queries::events_after(c, after, task, limit))
            .await
    }

    /// Tasks with a pod that is starting, running or unknown.
    pub async fn active_pods(&self) -> Result<Vec<(TaskId, PodInfo)>> {
        self.readers.run(queries::active_pods).await
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
        let host_id = host_id.to_owned();
        self.readers
            .run(move |c| queries::pods_on_host(c, &host_id))
            .await
    }

    /// Hosts that run pods according to the database.
    pub async fn hosts_with_pods(&self) -> Result<Vec<String>> {
        self.readers.run(queries::hosts_with_pods).await
    }

    /// Scheduled automatic restarts.
    pub async fn scheduled_restarts(&self) -> Result<Vec<(TaskId, i64)>> {
        self.readers.run(queries::scheduled_restarts).await
    }

    /// Closes the read pool (the writer closes its own connection when it
    /// stops).
    pub async fn close(&self) {
        self.readers.close();
    }
}

#[cfg(test)]
pub(crate) mod tests;
