//! What the store tests share: a store on a temp SQLite file
//! ([`TestDb`]), a store of either backend ([`AnyDb`], [`Backend`]), the
//! [`on_both_backends!`] macro that runs a test on each, and the commands
//! most tests start with.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::core::ports::TaskStore;
use crate::domain::{
    ActorId, CorrelationId, Description, Finish, Metadata, NewTask, RestartPolicySpec, TaskId,
    TaskRecord, TemplateName, Title,
};
use crate::error::Error;
use crate::store::{BUSY_TIMEOUT, Command, DbConfig, Outcome, Store, postgres};
use crate::watch::EventHub;

pub(crate) struct TestDb {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub hub: EventHub,
    pub tracker: TaskTracker,
    pub stop: CancellationToken,
}

impl TestDb {
    pub async fn open() -> Self {
        Self::open_with(EventHub::default(), BUSY_TIMEOUT).await
    }

    pub async fn open_with(hub: EventHub, busy: Duration) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::open_in(dir, hub, busy).await
    }

    pub async fn open_in(dir: tempfile::TempDir, hub: EventHub, busy: Duration) -> Self {
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        let mut db = DbConfig::new(dir.path().join("sub/dir/central.db"));
        db.busy_timeout = busy;
        let store = Store::open(db, hub.clone(), &tracker, stop.clone())
            .await
            .unwrap();
        Self {
            dir,
            store,
            hub,
            tracker,
            stop,
        }
    }

    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("sub/dir/central.db")
    }

    /// Stops the writer (draining it) and closes the pool.
    pub async fn shutdown(self) -> tempfile::TempDir {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        self.store.close().await;
        self.dir
    }
}

/// Which store a conformance test runs on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// A store of either backend, as the core sees it (the port), with the
/// few test hooks that need the backend.
pub(crate) struct AnyDb {
    pub store: Arc<dyn TaskStore>,
    inner: Inner,
}

enum Inner {
    Sqlite(TestDb),
    Postgres(postgres::testing::PgTestDb),
}

impl AnyDb {
    pub async fn open(backend: Backend) -> Self {
        Self::open_with(backend, EventHub::default()).await
    }

    /// Opens a store that publishes its committed events to `hub`.
    pub async fn open_with(backend: Backend, hub: EventHub) -> Self {
        match backend {
            Backend::Sqlite => {
                let db = TestDb::open_with(hub, BUSY_TIMEOUT).await;
                Self {
                    store: Arc::new(db.store.clone()),
                    inner: Inner::Sqlite(db),
                }
            }
            Backend::Postgres => {
                let db = postgres::testing::PgTestDb::open_with(hub).await;
                Self {
                    store: Arc::new(db.store.clone()),
                    inner: Inner::Postgres(db),
                }
            }
        }
    }

    /// The lease port on this database.
    pub fn lease(&self) -> Arc<dyn crate::core::ports::LeaseStore> {
        match &self.inner {
            Inner::Sqlite(db) => Arc::new(db.store.lease()),
            Inner::Postgres(db) => Arc::new(db.store.lease()),
        }
    }

    /// The writer's leadership fence.
    pub fn fence(&self) -> crate::store::fence::Fence {
        match &self.inner {
            Inner::Sqlite(db) => db.store.fence().clone(),
            Inner::Postgres(db) => db.store.fence().clone(),
        }
    }

    /// The hub the store publishes to.
    pub fn hub(&self) -> &EventHub {
        match &self.inner {
            Inner::Sqlite(db) => &db.hub,
            Inner::Postgres(db) => &db.hub,
        }
    }

    /// The tracker of the store's tasks (for tasks a test adds).
    pub fn tracker(&self) -> &TaskTracker {
        match &self.inner {
            Inner::Sqlite(db) => &db.tracker,
            Inner::Postgres(db) => &db.tracker,
        }
    }

    /// The same store as the schedule port (schedule reads and writes).
    pub fn schedules(&self) -> Arc<dyn crate::core::ports::ScheduleStore> {
        match &self.inner {
            Inner::Sqlite(db) => Arc::new(db.store.clone()),
            Inner::Postgres(db) => Arc::new(db.store.clone()),
        }
    }

    /// The same store as the retention port (retention reads, GetStats).
    pub fn retention(&self) -> Arc<dyn crate::core::ports::RetentionStore> {
        match &self.inner {
            Inner::Sqlite(db) => Arc::new(db.store.clone()),
            Inner::Postgres(db) => Arc::new(db.store.clone()),
        }
    }

    /// The SQLite file, on SQLite.
    pub fn sqlite_path(&self) -> Option<std::path::PathBuf> {
        match &self.inner {
            Inner::Sqlite(db) => Some(db.path()),
            Inner::Postgres(_) => None,
        }
    }

    /// The database's URL, on PostgreSQL.
    pub fn pg_url(&self) -> Option<&str> {
        match &self.inner {
            Inner::Sqlite(_) => None,
            Inner::Postgres(db) => Some(&db.url),
        }
    }

    /// Runs one SQL statement (the same text on both) on a side connection.
    pub async fn exec(&self, sql: &str) {
        match &self.inner {
            Inner::Sqlite(db) => {
                let url = format!("sqlite://{}", db.path().display());
                let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::query(sql).execute(&mut c).await.unwrap();
                c.close().await.unwrap();
            }
            Inner::Postgres(db) => db.exec(sql).await,
        }
    }

    /// The first column of the first row of one query (the same text on
    /// both), as an integer, on a side connection; `None` without a row.
    pub async fn query_i64(&self, sql: &str) -> Option<i64> {
        match &self.inner {
            Inner::Sqlite(db) => {
                let url = format!("sqlite://{}", db.path().display());
                let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
                let v = sqlx::query_scalar(sql)
                    .fetch_optional(&mut c)
                    .await
                    .unwrap();
                c.close().await.unwrap();
                v
            }
            Inner::Postgres(db) => {
                let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
                let v = sqlx::query_scalar(sql)
                    .fetch_optional(&mut c)
                    .await
                    .unwrap();
                c.close().await.unwrap();
                v
            }
        }
    }

    /// Committed (batches, commands) of the writer so far.
    pub fn committed(&self) -> (u64, u64) {
        match &self.inner {
            Inner::Sqlite(db) => {
                let s = db.store.writer_stats();
                (s.batches, s.commands)
            }
            Inner::Postgres(db) => {
                let s = db.store.writer_stats();
                (s.batches, s.commands)
            }
        }
    }

    /// Stops the writer, draining what is queued.
    pub fn stop_writer(&self) {
        match &self.inner {
            Inner::Sqlite(db) => db.stop.cancel(),
            Inner::Postgres(db) => db.stop.cancel(),
        }
    }

    /// Opens the same database again after `shutdown` of this one.
    pub async fn shutdown_and_reopen(self) -> Self {
        let Self { store, inner } = self;
        drop(store);
        match inner {
            Inner::Sqlite(db) => {
                let dir = db.shutdown().await;
                let db = TestDb::open_in(dir, EventHub::default(), BUSY_TIMEOUT).await;
                Self {
                    store: Arc::new(db.store.clone()),
                    inner: Inner::Sqlite(db),
                }
            }
            Inner::Postgres(db) => {
                let db = db.shutdown_and_reopen().await;
                Self {
                    store: Arc::new(db.store.clone()),
                    inner: Inner::Postgres(db),
                }
            }
        }
    }

    pub async fn shutdown(self) {
        drop(self.store);
        match self.inner {
            Inner::Sqlite(db) => {
                db.shutdown().await;
            }
            Inner::Postgres(db) => db.shutdown().await,
        }
    }
}

/// Runs each listed `async fn name(backend: Backend)` as two tests,
/// `on_sqlite::name` and `on_postgres::name`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await
                }
            )*
        }
    };
}
pub(crate) use on_both_backends;
pub(crate) fn new_task(title: &str, actor: &str) -> NewTask {
    NewTask {
        title: Title::parse(title).unwrap(),
        description: Description::parse("desc").unwrap(),
        actor: ActorId::parse(actor).unwrap(),
        correlation: CorrelationId::parse_or_new("corr-1").unwrap(),
        auto_start: false,
        metadata: Metadata::parse([("k".to_string(), "v".to_string())].into()).unwrap(),
        template: TemplateName::parse("").unwrap(),
        restart_policy: RestartPolicySpec {
            max_restarts: Some(0),
            ..Default::default()
        },
        request_id: None,
        timeout_seconds: None,
        deadline: None,
        priority: crate::domain::Priority::default(),
        queue: false,
        queue_timeout_seconds: None,
        depends_on: Vec::new(),
    }
}

pub(crate) async fn create(store: &dyn TaskStore, t: NewTask) -> Result<(TaskRecord, bool), Error> {
    match store
        .write(Command::CreateTask {
            task_id: TaskId::new(),
            task: Box::new(t),
            pod_message: String::new(),
        })
        .await?
    {
        Outcome::Task { task, created } => Ok((*task, created)),
        other => panic!("unexpected {other:?}"),
    }
}

pub(crate) fn finish_cmd(id: TaskId, finish: Finish, reason: Option<&str>) -> Command {
    Command::Finish {
        task_id: id,
        finish,
        actor: ActorId::parse("bob").unwrap(),
        correlation: CorrelationId::parse_or_new("c2").unwrap(),
        reason: reason.map(str::to_owned),
    }
}
