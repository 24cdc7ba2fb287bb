//! The PostgreSQL adapter of the store port (`--database-url postgres://…`),
//! through sqlx's Postgres driver: the same tables and the same command
//! semantics as the SQLite store, with PostgreSQL's own SQL and migrations
//! (`migrations/postgres/`).
//!
//! - Writes go to one group-committing writer ([`writer`]): it drains the
//!   queued commands into one transaction, a savepoint undoing only a
//!   command that fails, commits once, then hands the events and the
//!   answers to the tailer. Its transactions take the lock of the `event_log_head` row
//!   first and hold it to their commit, so event positions are committed
//!   gap-free and in order, and writers of several replicas lock rows in
//!   one order and never deadlock (docs/architecture.md).
//! - The event tailer ([`tailer`]) is the only publisher to the process's
//!   event hub: its own writer's commits, and every other replica's, read
//!   from the database in position order when notified (LISTEN) or polled.
//! - Reads run on a connection pool ([`queries`]).
//! - Health: the circuit breaker and its prober are the SQLite store's
//!   ([`super::breaker`]), fed by this writer.
//!
//! Every command and read of the store ports has its PostgreSQL SQL: the
//! task store, schedules ([`schedules`], [`schedule_rows`]), retention
//! ([`retention`]) and GetStats ([`stats`]), each command in the writer's
//! transaction with its events. central-manager runs on it with
//! `--database-url postgres://…` (`store::AnyStore`).

mod claim;
mod commands;
mod create_run;
mod dependencies;
mod lease;
mod pod_end;
mod pods;
mod queries;
mod queue;
mod queue_reads;
mod retention;
mod schedule_rows;
mod schedules;
mod stats;
mod tailer;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::BUSY_TIMEOUT;
use super::breaker::{Breaker, Probe, Prober};
use crate::core::ports::TaskStore;
use crate::core::ports::retention::{DeletionRecord, RetentionStore};
use crate::core::ports::schedules::{Buffered, ScheduleStore};
use crate::core::ports::store::{Command, Outcome, QueueStats};
use crate::domain::schedule::{ScheduleEventRecord, ScheduleId, ScheduleKey, ScheduleRecord};
use crate::domain::stats::{StatsGroup, StatsQuery};
use crate::domain::timeout::Timer;
use crate::domain::{
    EventRecord, EventsQuery, ListQuery, Page, PodInfo, PodRef, PodStatus, QueueHead, TaskFilter,
    TaskId, TaskRecord,
};
use crate::error::{Error, Result};
use crate::watch::EventHub;
pub use writer::PgWriterStats;
use writer::{PgWriter, PgWriterHandle};

/// The PostgreSQL schema, embedded in the binary.
pub static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Whether a `--database-url` names a PostgreSQL database.
pub fn is_postgres_url(url: &str) -> bool {
    let url = url.trim_start();
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// How long to wait for a pooled read connection (then
/// EVENT_STORE_UNAVAILABLE).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the server lets a writer session sit idle inside a
/// transaction before it ends it (see `open_with`).
const IDLE_IN_TRANSACTION: Duration = Duration::from_millis(2000);

/// Read connections.
const READ_CONNECTIONS: u32 = 8;

/// Handle to a PostgreSQL database. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    reads: PgPool,
    writer: PgWriterHandle,
    tail: tailer::TailerStats,
    lease: lease::PgLease,
    fence: crate::store::fence::Fence,
}

impl PgStore {
    /// Connects to `url`, applies the migrations, and starts the writer and
    /// the breaker's prober on `tracker`. The event tailer publishes every
    /// committed event (of this process's writer and of every other
    /// replica's) to `hub`; the writer stops when `stop` is cancelled,
    /// after finishing what is queued, and the tailer after it. A database that cannot be reached or migrated fails
    /// the start (the message names the URL without its password).
    pub async fn open(
        url: &str,
        hub: EventHub,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> Result<Self> {
        Self::open_with(url, BUSY_TIMEOUT, hub, tracker, stop).await
    }

    /// [`PgStore::open`] with the writer's lock timeout: how long a write
    /// waits for a row lock another session holds (a stuck session, a
    /// manual transaction) before its batch fails as
    /// EVENT_STORE_UNAVAILABLE, as SQLite's busy timeout bounds the wait
    /// for its file lock. Without it the writer would wait forever and
    /// every queued command with it.
    pub async fn open_with(
        url: &str,
        lock_timeout: Duration,
        hub: EventHub,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> Result<Self> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e| Error::Internal(format!("--database-url: {e}")))?;
        let options = options.application_name("ipa-central-manager");
        let reads = PgPoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        PG_MIGRATOR
            .run(&reads)
            .await
            .map_err(|e| Error::StoreUnavailable(format!("migrating the database: {e}")))?;
        let lease = lease::PgLease::new(&options);
        let listen = options.clone();
        // The writer's own connection: reads can never starve it. Lazy, so
        // that a lost connection is simply opened again for the next batch.
        let writes = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options.options([
                (
                    "lock_timeout",
                    format!("{}ms", lock_timeout.as_millis().max(1)),
                ),
                // A writer cut off mid-transaction (a partition, a frozen
                // process) holds the event_log_head lock, which every
                // replica's writer needs, and the leader_epoch share lock a
                // takeover waits for: the server ends such a session, and
                // releases them, once it has been idle that long inside a
                // transaction (the writer never is otherwise: it sends its
                // statements back to back).
                (
                    "idle_in_transaction_session_timeout",
                    format!("{}ms", IDLE_IN_TRANSACTION.as_millis()),
                ),
            ]));
        let tail = tailer::start(reads.clone(), listen, hub, tracker, stop.clone()).await?;
        let tail_stats = tail.stats();
        let breaker = Breaker::new();
        let fence = crate::store::fence::Fence::default();
        let writer = PgWriter::start(
            writes,
            tail,
            breaker.clone(),
            fence.clone(),
            tracker,
            stop.clone(),
        );
        if let Err(e) = writer.probe().await {
            breaker.open(&format!("the start-up probe write failed: {e}"));
        }
        let probe_writer = writer.clone();
        let probe: Probe = Arc::new(move || {
            let w = probe_writer.clone();
            Box::pin(async move { w.probe().await })
        });
        Prober::with_probe(breaker, probe).start(tracker, stop);
        Ok(Self {
            reads,
            writer,
            tail: tail_stats,
            lease,
            fence,
        })
    }

    /// The leader-lease port on this database.
    pub fn lease(&self) -> lease::PgLease {
        self.lease.clone()
    }

    /// The writer's leadership fence.
    pub fn fence(&self) -> &crate::store::fence::Fence {
        &self.fence
    }

    /// The store's circuit breaker (health follows it).
    pub fn breaker(&self) -> &Breaker {
        self.writer.breaker()
    }

    /// Committed batches and commands so far (group-commit observability).
    pub fn writer_stats(&self) -> PgWriterStats {
        self.writer.stats()
    }

    /// How many times the event tailer read new events from the database on
    /// a notification or a hand-over (not its fallback poll's reads).
    pub fn tailer_reads(&self) -> u64 {
        self.tail.reads()
    }

    /// Closes the read pool (the writer closes its own when it stops).
    pub async fn close(&self) {
        self.reads.close().await;
    }
}

/// The PostgreSQL adapter of the core's store port.
impl TaskStore for PgStore {
    fn write(&self, command: Command) -> BoxFuture<'_, Result<Outcome>> {
        Box::pin(self.writer.submit(command))
    }

    fn writable(&self) -> bool {
        !self.breaker().is_open()
    }

    fn until_writable(&self) -> BoxFuture<'static, ()> {
        let breaker = self.breaker().clone();
        Box::pin(async move { breaker.closed().await })
    }

    fn task(&self, id: TaskId) -> BoxFuture<'_, Result<Option<TaskRecord>>> {
        Box::pin(async move { queries::get_task(&self.reads, id).await })
    }

    fn task_or_archived(&self, id: TaskId) -> BoxFuture<'_, Result<Option<TaskRecord>>> {
        Box::pin(async move {
            match queries::get_task(&self.reads, id).await? {
                Some(t) => Ok(Some(t)),
                None => queries::get_archived_task(&self.reads, id).await,
            }
        })
    }

    fn list_tasks<'a>(&'a self, q: &'a ListQuery) -> BoxFuture<'a, Result<Page<TaskRecord>>> {
        Box::pin(queries::list_tasks(&self.reads, q))
    }

    fn count_tasks<'a>(&'a self, f: &'a TaskFilter) -> BoxFuture<'a, Result<u64>> {
        Box::pin(queries::count_tasks(&self.reads, f))
    }

    fn task_exists(&self, id: TaskId) -> BoxFuture<'_, Result<bool>> {
        Box::pin(queries::stream_exists(&self.reads, id))
    }

    fn task_events<'a>(&'a self, q: &'a EventsQuery) -> BoxFuture<'a, Result<Page<EventRecord>>> {
        Box::pin(queries::task_events(&self.reads, q))
    }

    fn events_after(
        &self,
        after: u64,
        task: Option<TaskId>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<EventRecord>>> {
        Box::pin(queries::events_after(&self.reads, after, task, limit))
    }

    fn active_pods(&self, after: Option<TaskId>) -> BoxFuture<'_, Result<Page<(TaskId, PodInfo)>>> {
        Box::pin(queries::active_pods(&self.reads, after))
    }

    fn count_active_pods(&self) -> BoxFuture<'_, Result<u64>> {
        Box::pin(queries::count_active_pods(&self.reads))
    }

    fn pods_on_host<'a>(
        &'a self,
        host_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(PodRef, PodStatus)>>> {
        Box::pin(queries::pods_on_host(&self.reads, host_id))
    }

    fn hosts_with_pods(&self) -> BoxFuture<'_, Result<Vec<String>>> {
        Box::pin(queries::hosts_with_pods(&self.reads))
    }

    fn scheduled_restarts(&self) -> BoxFuture<'_, Result<Vec<(TaskId, i64)>>> {
        Box::pin(queries::scheduled_restarts(&self.reads))
    }

    fn earliest_timer(&self) -> BoxFuture<'_, Result<Option<i64>>> {
        Box::pin(queries::earliest_timer(&self.reads))
    }

    fn due_timers(&self, now: i64, limit: u32) -> BoxFuture<'_, Result<Vec<Timer>>> {
        Box::pin(queries::due_timers(&self.reads, now, limit))
    }

    fn queue_heads(&self) -> BoxFuture<'_, Result<Vec<(String, QueueHead)>>> {
        Box::pin(queue_reads::queue_heads(&self.reads))
    }

    fn queue_head<'a>(&'a self, template: &'a str) -> BoxFuture<'a, Result<Option<QueueHead>>> {
        Box::pin(queue_reads::queue_head(&self.reads, template))
    }

    fn queue_front<'a>(
        &'a self,
        template: &'a str,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<QueueHead>>> {
        Box::pin(queue_reads::queue_front(&self.reads, template, limit))
    }

    fn queue_stats(&self) -> BoxFuture<'_, Result<QueueStats>> {
        Box::pin(queue_reads::queue_stats(&self.reads))
    }
}

/// The schedule reads, on the read pool.
impl ScheduleStore for PgStore {
    fn get_schedule<'a>(
        &'a self,
        key: &'a ScheduleKey,
    ) -> BoxFuture<'a, Result<Option<ScheduleRecord>>> {
        Box::pin(async move {
            match key {
                ScheduleKey::Id(id) => schedule_rows::get(&self.reads, *id, false).await,
                ScheduleKey::Name(n) => schedule_rows::get_by_name(&self.reads, n).await,
            }
        })
    }

    fn list_schedules(
        &self,
        limit: u32,
        offset: u32,
    ) -> BoxFuture<'_, Result<Vec<ScheduleRecord>>> {
        Box::pin(schedule_rows::list(&self.reads, limit, offset))
    }

    fn due_schedules(&self, now: i64, limit: u32) -> BoxFuture<'_, Result<Vec<(ScheduleId, i64)>>> {
        Box::pin(schedule_rows::due(&self.reads, now, limit))
    }

    fn earliest_fire(&self) -> BoxFuture<'_, Result<Option<i64>>> {
        Box::pin(schedule_rows::earliest_fire(&self.reads))
    }

    fn buffered_schedules(&self) -> BoxFuture<'_, Result<Vec<Buffered>>> {
        Box::pin(schedule_rows::buffered(&self.reads))
    }

    fn unstarted_fires(&self, since: i64) -> BoxFuture<'_, Result<Vec<TaskId>>> {
        Box::pin(schedule_rows::unstarted_fires(&self.reads, since))
    }

    fn schedule_events(
        &self,
        id: ScheduleId,
        after_id: i64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<ScheduleEventRecord>>> {
        Box::pin(schedule_rows::events(&self.reads, id, after_id, limit))
    }
}

/// The retention reads, on the read pool.
impl RetentionStore for PgStore {
    fn cancellable<'a>(&'a self, f: &'a TaskFilter) -> BoxFuture<'a, Result<Vec<TaskId>>> {
        Box::pin(retention::cancellable(&self.reads, f))
    }

    fn deletion(&self, id: TaskId) -> BoxFuture<'_, Result<Option<DeletionRecord>>> {
        Box::pin(retention::deletion(&self.reads, id))
    }

    fn stats(&self, q: StatsQuery) -> BoxFuture<'_, Result<Vec<StatsGroup>>> {
        Box::pin(async move { stats::stats(&self.reads, &q).await })
    }
}

#[cfg(test)]
pub(crate) use stats::every_task as every_task_stats;
#[cfg(test)]
mod create_run_tests;
#[cfg(test)]
mod tailer_tests;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
