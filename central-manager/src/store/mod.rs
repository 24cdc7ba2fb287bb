//! The event store and the `tasks` table (SQLite): opening
//! the database, the single group-committing writer, and the read queries.
//!
//! Schema (see `migrations/`): `streams` (one per task), `events`
//! (append-only, global `position`, per-stream `version`), `tasks` (the
//! queryable state, updated in the same transaction as its events) and
//! `idempotency_keys` (CreateTask `request_id`s). Times are unix micros.

mod any;
pub mod breaker;
mod checkpoint;
mod commands;
mod dependencies;
pub mod fence;
pub mod lease;
pub mod memory;
mod pod_end;
mod pod_row;
pub mod pods;
mod pool;
pub mod postgres;
mod queries;
pub mod queue;
pub mod retention;
mod rows;
pub mod schedules;
pub mod stats;
mod timeouts;
mod writer;

pub use any::AnyStore;
pub use checkpoint::CheckpointResult;
pub use commands::{Command, IDEMPOTENCY_WINDOW_MICROS, Outcome};
pub use pool::{BUSY_TIMEOUT, DbConfig, MIGRATOR};
pub use writer::{MAX_BATCH, WriterHandle, WriterStats};

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::core::ports::TaskStore;
use crate::domain::{
    EventRecord, EventsQuery, ListQuery, Page, PodInfo, PodRef, PodStatus, TaskFilter, TaskId,
    TaskRecord,
};
use crate::error::{Error, Result};
use crate::watch::EventHub;
use breaker::{Breaker, Prober};
use pool::Readers;
use writer::Writer;

/// Handle to the database: writes go to the single writer, reads to the
/// read pool. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    readers: Readers,
    writer: WriterHandle,
    lease: lease::SqliteLease,
    fence: fence::Fence,
}

impl Store {
    /// Opens (creating if missing) and migrates the database, starts the
    /// writer and the breaker's prober on `tracker` and opens the read pool.
    /// The writer publishes committed events to `hub` and stops when `stop`
    /// is cancelled, after finishing what is queued.
    ///
    /// A database that exists with every migration applied but cannot be
    /// written right now (full disk, read-only file) does not stop the
    /// start: central-manager comes up with the breaker open, serves reads,
    /// keeps its pod-hosts' pods alive, and starts writing when a probe
    /// succeeds. Anything else that fails here fails the start.
    pub async fn open(
        db: DbConfig,
        hub: EventHub,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> Result<Self> {
        let breaker = Breaker::new();
        let conn = match db.migrate().await.map_err(Error::from) {
            Ok(()) => match db.open_writer() {
                Ok(c) => Some(c),
                Err(e @ Error::StoreUnavailable(_)) => {
                    breaker.open(&format!("opening the write connection: {e}"));
                    None
                }
                Err(e) => return Err(e),
            },
            Err(e @ Error::StoreUnavailable(_)) => {
                // Only a database that needs nothing from us can be served
                // read-only until it is writable again.
                db.check_schema_current()?;
                breaker.open(&format!("migrating the database: {e}"));
                None
            }
            Err(e) => return Err(e),
        };
        let readers = Readers::open(db.clone())?;
        let lease = lease::SqliteLease::new(db.clone());
        let fence = db.fence.clone();
        let writer = Writer::start(conn, db, hub, breaker.clone(), tracker, stop.clone());
        // One write now, so a database that cannot be written (a read-only
        // file opened read-only without an error) shows at once in health
        // instead of at the third failed command.
        if !breaker.is_open()
            && let Err(e) = writer.probe().await
        {
            breaker.open(&format!("the start-up probe write failed: {e}"));
        }
        Prober::new(breaker, writer.clone()).start(tracker, stop);
        Ok(Self {
            readers,
            writer,
            lease,
            fence,
        })
    }

    /// The leader-lease port on this file.
    pub fn lease(&self) -> lease::SqliteLease {
        self.lease.clone()
    }

    /// The writer's leadership fence.
    pub fn fence(&self) -> &fence::Fence {
        &self.fence
    }

    /// EVENT_STORE_UNAVAILABLE at once while the breaker is open: for
    /// operations that act before they write (StopPod, RestartPod).
    pub fn ensure_writable(&self) -> Result<()> {
        if self.breaker().is_open() {
            return Err(Error::StoreUnavailable(
                "circuit breaker open: the database could not be written".into(),
            ));
        }
        Ok(())
    }

    /// The store's circuit breaker (health follows it).
    pub fn breaker(&self) -> &Breaker {
        self.writer.breaker()
    }

    /// Committed batches and commands so far (group-commit observability).
    pub fn writer_stats(&self) -> WriterStats {
        self.writer.stats()
    }

    /// Runs a write command (see [`Command`]).
    pub async fn write(&self, command: Command) -> Result<Outcome> {
        self.writer.submit(command).await
    }

    /// [`Self::write`], calling `queued` once later writes will commit
    /// after this one (see [`writer::Writer::submit_ordered`]).
    pub async fn write_ordered(
        &self,
        command: Command,
        queued: impl FnOnce() + Send,
    ) -> Result<Outcome> {
        self.writer.submit_ordered(command, queued).await
    }

    /// One task.
    pub async fn task(&self, id: TaskId) -> Result<Option<TaskRecord>> {
        self.readers.run_inline(|c| queries::get_task(c, id))
    }

    /// ListTasks (one page, at most 4 MiB).
    pub async fn list_tasks(&self, q: &ListQuery) -> Result<Page<TaskRecord>> {
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

    /// GetTaskEvents (one page, at most 4 MiB).
    pub async fn task_events(&self, q: &EventsQuery) -> Result<Page<EventRecord>> {
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

    /// Tasks with a pod that is starting, running or unknown, after
    /// `after` by task id (one page, at most 4 MiB).
    pub async fn active_pods(&self, after: Option<TaskId>) -> Result<Page<(TaskId, PodInfo)>> {
        self.readers
            .run(move |c| queries::active_pods(c, after))
            .await
    }

    /// How many tasks have a pod starting, running or unknown.
    pub async fn count_active_pods(&self) -> Result<u64> {
        self.readers.run(queries::count_active_pods).await
    }

    /// Runs a pod supervision command.
    pub async fn pod(&self, command: pods::PodCommand) -> Result<pods::PodOutcome> {
        (self as &dyn TaskStore).pod(command).await
    }

    /// The current pods placed on `host_id`.
    pub async fn pods_on_host(
        &self,
        host_id: &str,
    ) -> Result<Vec<(crate::domain::PodRef, crate::domain::PodStatus)>> {
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

    /// The earliest run timeout or deadline.
    pub async fn earliest_timer(&self) -> Result<Option<i64>> {
        self.readers.run(timeouts::earliest_timer).await
    }

    /// Run timeouts and deadlines due at `now`.
    pub async fn due_timers(
        &self,
        now: i64,
        limit: u32,
    ) -> Result<Vec<crate::domain::timeout::Timer>> {
        self.readers
            .run(move |c| timeouts::due_timers(c, now, limit))
            .await
    }

    /// Closes the read pool (the writer closes its own connection when it
    /// stops).
    pub async fn close(&self) {
        self.readers.close();
    }
}

/// The production adapter of the core's store port.
impl TaskStore for Store {
    fn write(&self, command: Command) -> BoxFuture<'_, Result<Outcome>> {
        Box::pin(Store::write(self, command))
    }

    fn write_ordered<'a>(
        &'a self,
        command: Command,
        queued: Box<dyn FnOnce() + Send + 'a>,
    ) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(Store::write_ordered(self, command, queued))
    }

    fn writable(&self) -> bool {
        !self.breaker().is_open()
    }

    fn until_writable(&self) -> BoxFuture<'static, ()> {
        let breaker = self.breaker().clone();
        Box::pin(async move { breaker.closed().await })
    }

    fn task(&self, id: TaskId) -> BoxFuture<'_, Result<Option<TaskRecord>>> {
        Box::pin(Store::task(self, id))
    }

    fn task_or_archived(&self, id: TaskId) -> BoxFuture<'_, Result<Option<TaskRecord>>> {
        Box::pin(Store::task_or_archived(self, id))
    }

    fn list_tasks<'a>(&'a self, q: &'a ListQuery) -> BoxFuture<'a, Result<Page<TaskRecord>>> {
        Box::pin(Store::list_tasks(self, q))
    }

    fn count_tasks<'a>(&'a self, f: &'a TaskFilter) -> BoxFuture<'a, Result<u64>> {
        Box::pin(Store::count_tasks(self, f))
    }

    fn task_exists(&self, id: TaskId) -> BoxFuture<'_, Result<bool>> {
        Box::pin(Store::task_exists(self, id))
    }

    fn task_events<'a>(&'a self, q: &'a EventsQuery) -> BoxFuture<'a, Result<Page<EventRecord>>> {
        Box::pin(Store::task_events(self, q))
    }

    fn events_after(
        &self,
        after: u64,
        task: Option<TaskId>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<EventRecord>>> {
        Box::pin(Store::events_after(self, after, task, limit))
    }

    fn active_pods(&self, after: Option<TaskId>) -> BoxFuture<'_, Result<Page<(TaskId, PodInfo)>>> {
        Box::pin(Store::active_pods(self, after))
    }

    fn count_active_pods(&self) -> BoxFuture<'_, Result<u64>> {
        Box::pin(Store::count_active_pods(self))
    }

    fn pods_on_host<'a>(
        &'a self,
        host_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(PodRef, PodStatus)>>> {
        Box::pin(Store::pods_on_host(self, host_id))
    }

    fn hosts_with_pods(&self) -> BoxFuture<'_, Result<Vec<String>>> {
        Box::pin(Store::hosts_with_pods(self))
    }

    fn scheduled_restarts(&self) -> BoxFuture<'_, Result<Vec<(TaskId, i64)>>> {
        Box::pin(Store::scheduled_restarts(self))
    }

    fn earliest_timer(&self) -> BoxFuture<'_, Result<Option<i64>>> {
        Box::pin(Store::earliest_timer(self))
    }

    fn due_timers(
        &self,
        now: i64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<crate::domain::timeout::Timer>>> {
        Box::pin(Store::due_timers(self, now, limit))
    }

    fn queue_heads(&self) -> BoxFuture<'_, Result<Vec<(String, crate::domain::QueueHead)>>> {
        Box::pin(self.readers.run(queue::queue_heads))
    }

    fn queue_head<'a>(
        &'a self,
        template: &'a str,
    ) -> BoxFuture<'a, Result<Option<crate::domain::QueueHead>>> {
        let template = template.to_owned();
        Box::pin(self.readers.run(move |c| queue::queue_head(c, &template)))
    }

    fn queue_front<'a>(
        &'a self,
        template: &'a str,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<crate::domain::QueueHead>>> {
        let template = template.to_owned();
        Box::pin(
            self.readers
                .run(move |c| queue::queue_front(c, &template, limit)),
        )
    }

    fn queue_stats(&self) -> BoxFuture<'_, Result<crate::core::ports::store::QueueStats>> {
        Box::pin(self.readers.run(queue::queue_stats))
    }
}

#[cfg(test)]
mod dependencies_tests;
#[cfg(test)]
mod lease_tests;
#[cfg(test)]
mod outage_tests;
#[cfg(test)]
mod pod_tests;
#[cfg(test)]
mod queue_tests;
#[cfg(test)]
pub(crate) mod tests;
