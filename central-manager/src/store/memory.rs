//! The second adapter of the store port: the same SQL as the production
//! store (`commands`, `pods`, `pod_end`: the conditional updates that
//! decide claims and races, and the read queries), run inline on one
//! in-memory SQLite connection. No threads, no files: a run on a paused
//! single-threaded tokio runtime is deterministic, which is what the
//! simulator needs (`sim/`), and core tests get a real store in
//! microseconds.
//!
//! It keeps the production writer's observable rules: writes run one at a
//! time in the order they were submitted (the single writer's queue), a
//! caller gives up after the writer's reply timeout while its write still
//! runs, committed events are published to the hub, and every write's fate
//! is reported to the same circuit [`Breaker`] (refusing writes at once
//! while it is open, closed again by the same [`Prober`]).
//!
//! Faults are injected through [`WriteFaults`]: a write can fail as if the
//! disk were full, stall (holding up every write behind it, as a hung disk
//! does), or commit and still report a failure to its caller (a reply lost
//! after the commit).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use rusqlite::Connection;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::breaker::{Breaker, Probe, Prober};
use super::schedules::rows;
use super::writer::REPLY_TIMEOUT;
use super::{Command, MIGRATOR, Outcome, commands, queries};
use crate::core::ports::schedules::{Buffered, ScheduleStore};
use crate::core::ports::{Clock, TaskStore};
use crate::domain::schedule::{ScheduleEventRecord, ScheduleId, ScheduleKey, ScheduleRecord};
use crate::domain::{
    EventRecord, EventsQuery, ListQuery, Page, PodInfo, PodRef, PodStatus, TaskFilter, TaskId,
    TaskRecord,
};
use crate::error::{Error, Result};
use crate::watch::EventHub;

/// What to do to one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFault {
    /// Run it.
    None,
    /// Fail it as if the database could not be written (nothing commits).
    Fail,
    /// Wait this long first, holding up every write behind it.
    Stall(Duration),
    /// Commit it, then report EVENT_STORE_UNAVAILABLE to the caller.
    CommitThenFail,
}

/// Decides the fate of each write (the simulator's store faults).
pub trait WriteFaults: Send + Sync + 'static {
    fn on_write(&self, command: &Command) -> WriteFault;
}

/// The in-memory store. Cheap to clone.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Mutex<Connection>,
    /// Writes take turns here, in submission order (tokio's mutex is fair).
    turn: tokio::sync::Mutex<()>,
    breaker: Breaker,
    hub: EventHub,
    clock: Arc<dyn Clock>,
    faults: Option<Arc<dyn WriteFaults>>,
    /// Last commit clock: times never go backwards.
    last_now: AtomicI64,
    tracker: TaskTracker,
}

impl MemoryStore {
    /// A fresh migrated database. Writes run on `tracker` (so a write whose
    /// caller gave up still finishes); the breaker's prober runs until
    /// `stop`.
    pub fn open(
        clock: Arc<dyn Clock>,
        hub: EventHub,
        faults: Option<Arc<dyn WriteFaults>>,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> Result<Self> {
        let conn = Connection::open_in_memory()?;
        conn.pragma_update(None, "foreign_keys", true)?;
        for m in MIGRATOR.iter() {
            if !m.migration_type.is_down_migration() {
                conn.execute_batch(&m.sql)?;
            }
        }
        let store = Self {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                turn: tokio::sync::Mutex::new(()),
                breaker: Breaker::new(),
                hub,
                clock,
                faults,
                last_now: AtomicI64::new(0),
                tracker: tracker.clone(),
            }),
        };
        let probing = store.clone();
        let probe: Probe = Arc::new(move || {
            let s = probing.clone();
            Box::pin(async move { s.submit(Command::Probe).await.map(drop) })
        });
        Prober::with_probe(store.inner.breaker.clone(), probe).start(tracker, stop);
        Ok(store)
    }

    /// The circuit breaker.
    pub fn breaker(&self) -> &Breaker {
        &self.inner.breaker
    }

    /// Runs `read` on the connection (reads never wait for writes, as in
    /// WAL mode).
    pub fn read<T>(&self, read: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self
            .inner
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        read(&conn)
    }

    async fn submit(&self, command: Command) -> Result<Outcome> {
        if self.inner.breaker.is_open() && !command.is_probe() {
            return Err(unavailable());
        }
        let inner = self.inner.clone();
        let job = self
            .inner
            .tracker
            .spawn(async move { inner.run(command).await });
        match tokio::time::timeout(REPLY_TIMEOUT, job).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(Error::Internal(format!("write task failed: {e}"))),
            Err(_) => {
                self.inner.breaker.record_failure();
                Err(Error::StoreUnavailable(format!(
                    "no answer from the writer within {REPLY_TIMEOUT:?}"
                )))
            }
        }
    }
}

fn unavailable() -> Error {
    Error::StoreUnavailable("circuit breaker open: the database could not be written".into())
}

impl Inner {
    /// One write, in its turn.
    async fn run(&self, command: Command) -> Result<Outcome> {
        let _turn = self.turn.lock().await;
        let fault = self
            .faults
            .as_ref()
            .map_or(WriteFault::None, |f| f.on_write(&command));
        if let WriteFault::Stall(d) = fault {
            tokio::time::sleep(d).await;
        }
        // Queued before the breaker opened: failed without touching the
        // database, as the writer does.
        if self.breaker.is_open() && !command.is_probe() {
            return Err(unavailable());
        }
        if fault == WriteFault::Fail {
            self.breaker.record_failure();
            return Err(Error::StoreUnavailable(
                "the database could not be written (injected)".into(),
            ));
        }
        let now = self
            .clock
            .wall_micros()
            .max(self.last_now.load(Ordering::Relaxed));
        self.last_now.store(now, Ordering::Relaxed);
        let (result, events) = self.transact(&command, now)?;
        self.breaker.record_success();
        self.hub.publish(events);
        if fault == WriteFault::CommitThenFail {
            return Err(Error::StoreUnavailable(
                "the reply was lost after the commit (injected)".into(),
            ));
        }
        result
    }

    /// Runs `command` in a transaction: committed when it succeeds, rolled
    /// back when it fails (its error goes to the caller, as with the
    /// writer's savepoints). `Err` only when the database itself failed.
    fn transact(&self, command: &Command, now: i64) -> Result<(Result<Outcome>, Vec<EventRecord>)> {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let tx = conn.transaction()?;
        let mut events = Vec::new();
        match commands::apply(&tx, command, now, &mut events) {
            Ok(outcome) => {
                tx.commit()?;
                Ok((Ok(outcome), events))
            }
            Err(e @ Error::StoreUnavailable(_)) => Err(e),
            Err(e) => Ok((Err(e), Vec::new())),
        }
    }
}

impl TaskStore for MemoryStore {
    fn write(&self, command: Command) -> BoxFuture<'_, Result<Outcome>> {
        Box::pin(self.submit(command))
    }

    fn writable(&self) -> bool {
        !self.inner.breaker.is_open()
    }

    fn until_writable(&self) -> BoxFuture<'static, ()> {
        let breaker = self.inner.breaker.clone();
        Box::pin(async move { breaker.closed().await })
    }

    fn task(&self, id: TaskId) -> BoxFuture<'_, Result<Option<TaskRecord>>> {
        Box::pin(async move { self.read(|c| queries::get_task(c, id)) })
    }

    fn task_or_archived(&self, id: TaskId) -> BoxFuture<'_, Result<Option<TaskRecord>>> {
        Box::pin(async move {
            self.read(|c| match queries::get_task(c, id)? {
                Some(t) => Ok(Some(t)),
                None => queries::get_archived_task(c, id),
            })
        })
    }

    fn list_tasks<'a>(&'a self, q: &'a ListQuery) -> BoxFuture<'a, Result<Page<TaskRecord>>> {
        Box::pin(async move { self.read(|c| queries::list_tasks(c, q)) })
    }

    fn count_tasks<'a>(&'a self, f: &'a TaskFilter) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move { self.read(|c| queries::count_tasks(c, f)) })
    }

    fn task_exists(&self, id: TaskId) -> BoxFuture<'_, Result<bool>> {
        Box::pin(async move { self.read(|c| queries::stream_exists(c, id)) })
    }

    fn task_events<'a>(&'a self, q: &'a EventsQuery) -> BoxFuture<'a, Result<Page<EventRecord>>> {
        Box::pin(async move { self.read(|c| queries::task_events(c, q)) })
    }

    fn events_after(
        &self,
        after: u64,
        task: Option<TaskId>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<EventRecord>>> {
        Box::pin(async move { self.read(|c| queries::events_after(c, after, task, limit)) })
    }

    fn active_pods(&self, after: Option<TaskId>) -> BoxFuture<'_, Result<Page<(TaskId, PodInfo)>>> {
        Box::pin(async move { self.read(|c| queries::active_pods(c, after)) })
    }

    fn count_active_pods(&self) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move { self.read(queries::count_active_pods) })
    }

    fn pods_on_host<'a>(
        &'a self,
        host_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(PodRef, PodStatus)>>> {
        Box::pin(async move { self.read(|c| queries::pods_on_host(c, host_id)) })
    }

    fn hosts_with_pods(&self) -> BoxFuture<'_, Result<Vec<String>>> {
        Box::pin(async move { self.read(queries::hosts_with_pods) })
    }

    fn scheduled_restarts(&self) -> BoxFuture<'_, Result<Vec<(TaskId, i64)>>> {
        Box::pin(async move { self.read(queries::scheduled_restarts) })
    }

    fn earliest_timer(&self) -> BoxFuture<'_, Result<Option<i64>>> {
        Box::pin(async move { self.read(super::timeouts::earliest_timer) })
    }

    fn due_timers(
        &self,
        now: i64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<crate::domain::timeout::Timer>>> {
        Box::pin(async move { self.read(move |c| super::timeouts::due_timers(c, now, limit)) })
    }

    fn queue_heads(&self) -> BoxFuture<'_, Result<Vec<(String, crate::domain::QueueHead)>>> {
        Box::pin(async move { self.read(super::queue::queue_heads) })
    }

    fn queue_head<'a>(
        &'a self,
        template: &'a str,
    ) -> BoxFuture<'a, Result<Option<crate::domain::QueueHead>>> {
        Box::pin(async move { self.read(|c| super::queue::queue_head(c, template)) })
    }

    fn queue_front<'a>(
        &'a self,
        template: &'a str,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<crate::domain::QueueHead>>> {
        Box::pin(async move { self.read(|c| super::queue::queue_front(c, template, limit)) })
    }

    fn queue_stats(&self) -> BoxFuture<'_, Result<crate::core::ports::store::QueueStats>> {
        Box::pin(async move { self.read(super::queue::queue_stats) })
    }
}

/// The schedule reads: the production queries (`store::schedules::rows`)
/// on the one connection.
impl ScheduleStore for MemoryStore {
    fn get_schedule<'a>(
        &'a self,
        key: &'a ScheduleKey,
    ) -> BoxFuture<'a, Result<Option<ScheduleRecord>>> {
        Box::pin(async move {
            self.read(|c| match key {
                ScheduleKey::Id(id) => rows::get(c, *id),
                ScheduleKey::Name(n) => rows::get_by_name(c, n),
            })
        })
    }

    fn list_schedules(
        &self,
        limit: u32,
        offset: u32,
    ) -> BoxFuture<'_, Result<Vec<ScheduleRecord>>> {
        Box::pin(async move { self.read(|c| rows::list(c, limit, offset)) })
    }

    fn due_schedules(&self, now: i64, limit: u32) -> BoxFuture<'_, Result<Vec<(ScheduleId, i64)>>> {
        Box::pin(async move { self.read(|c| rows::due(c, now, limit)) })
    }

    fn earliest_fire(&self) -> BoxFuture<'_, Result<Option<i64>>> {
        Box::pin(async move { self.read(rows::earliest_fire) })
    }

    fn buffered_schedules(&self) -> BoxFuture<'_, Result<Vec<Buffered>>> {
        Box::pin(async move { self.read(rows::buffered) })
    }

    fn unstarted_fires(&self, since: i64) -> BoxFuture<'_, Result<Vec<TaskId>>> {
        Box::pin(async move { self.read(|c| rows::unstarted_fires(c, since)) })
    }

    fn schedule_events(
        &self,
        id: ScheduleId,
        after_id: i64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<ScheduleEventRecord>>> {
        Box::pin(async move { self.read(|c| rows::events(c, id, after_id, limit)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ports::DerivedClock;
    use crate::domain::Finish;
    use crate::store::tests::new_task;

    struct Scripted(Mutex<Vec<WriteFault>>);

    impl WriteFaults for Scripted {
        fn on_write(&self, _: &Command) -> WriteFault {
            self.0.lock().unwrap().pop().unwrap_or(WriteFault::None)
        }
    }

    fn create(id: TaskId) -> Command {
        Command::CreateTask {
            task_id: id,
            task: Box::new(new_task("t", "alice")),
            pod_message: String::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn commands_commit_business_errors_roll_back_and_faults_apply() {
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        // Popped from the end: the first write fails, the second commits
        // but reports a failure, the rest run.
        let faults = Arc::new(Scripted(Mutex::new(vec![
            WriteFault::CommitThenFail,
            WriteFault::Fail,
        ])));
        let store = MemoryStore::open(
            Arc::new(DerivedClock::new(1_700_000_000_000_000)),
            EventHub::default(),
            Some(faults),
            &tracker,
            stop.clone(),
        )
        .unwrap();
        let (a, b) = (TaskId::new(), TaskId::new());
        assert!(matches!(
            store.write(create(a)).await,
            Err(Error::StoreUnavailable(_))
        ));
        assert_eq!(store.task(a).await.unwrap(), None);
        assert!(matches!(
            store.write(create(b)).await,
            Err(Error::StoreUnavailable(_))
        ));
        assert!(store.task(b).await.unwrap().is_some(), "committed anyway");
        // A business error changes nothing and goes to its caller.
        let finish = Command::Finish {
            task_id: a,
            finish: Finish::Complete,
            actor: crate::domain::ActorId::parse("x").unwrap(),
            correlation: crate::domain::CorrelationId::parse_or_new("c").unwrap(),
            reason: None,
        };
        assert!(matches!(
            store.write(finish).await,
            Err(Error::TaskNotFound(_))
        ));
        assert!(store.write(create(a)).await.is_ok());
        assert_eq!(
            store.task(a).await.unwrap().unwrap().created_at,
            1_700_000_000_000_000
        );
        stop.cancel();
        tracker.close();
        tracker.wait().await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_opens_the_breaker_and_the_prober_closes_it() {
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        let faults = Arc::new(Scripted(Mutex::new(vec![WriteFault::Fail; 4])));
        let store = MemoryStore::open(
            Arc::new(DerivedClock::new(1_700_000_000_000_000)),
            EventHub::default(),
            Some(faults),
            &tracker,
            stop.clone(),
        )
        .unwrap();
        for _ in 0..super::super::breaker::OPEN_AFTER {
            assert!(store.write(create(TaskId::new())).await.is_err());
        }
        assert!(!store.writable());
        // The prober's first probe fails (the fourth injected failure), the
        // next one succeeds and closes the breaker.
        store.until_writable().await;
        assert!(store.writable());
        assert!(store.write(create(TaskId::new())).await.is_ok());
        stop.cancel();
        tracker.close();
        tracker.wait().await;
    }
}
