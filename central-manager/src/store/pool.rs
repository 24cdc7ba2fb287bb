//! Opening the SQLite database: the embedded migrations (sqlx's migrator),
//! the writer's one connection and the pool of read connections.
//!
//! The connections the service runs on are synchronous (`rusqlite`): a
//! SQLite call is a function call on the thread that makes it. The writer
//! owns its connection on a thread of its own and the reads run on tokio's
//! blocking pool, so no statement ever blocks the async runtime and a
//! statement costs no hop between threads (sqlx's SQLite driver sends every
//! statement, and every row, to a worker thread and back; at a few µs of
//! SQL per statement, those hops were most of the cost of a call).
//!
//! Pragmas: WAL so readers never block the writer nor each other;
//! `synchronous=FULL` so a commit is on disk before anyone is told (group
//! commit pays one fsync per batch, not per call); foreign keys on; a short
//! busy timeout so a locked or unreachable database turns into
//! EVENT_STORE_UNAVAILABLE within about a second instead of a hanging call.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection as _};
use tokio::sync::Semaphore;

use crate::error::{Error, Result};

/// How long a statement waits for a lock held by someone else (another
/// process opening the file, a checkpoint) before it fails.
pub const BUSY_TIMEOUT: Duration = Duration::from_millis(1000);

/// How long a read waits for a free read connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Read connections. Reads are short indexed queries; SQLite reads in WAL
/// mode do not block each other, and the machine this runs on is small.
const READ_CONNECTIONS: usize = 4;

/// Prepared statements kept per connection. The distinct statements are the
/// fixed ones plus one per ListTasks/CountTasks filter shape (at most 64).
const STATEMENT_CACHE: usize = 128;

/// The embedded migrations (`migrations/` at the workspace root).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Where and how to open the database.
#[derive(Debug, Clone)]
pub struct DbConfig {
    /// The database file.
    pub path: PathBuf,
    /// See [`BUSY_TIMEOUT`].
    pub busy_timeout: Duration,
    /// The writer's leadership fence (shared with the elector).
    pub fence: super::fence::Fence,
}

impl DbConfig {
    /// Defaults for the file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            busy_timeout: BUSY_TIMEOUT,
            fence: super::fence::Fence::default(),
        }
    }

    /// Creates the file (and its parent directory) if missing, sets WAL
    /// mode and applies pending migrations.
    pub async fn migrate(&self) -> Result<(), sqlx::Error> {
        create_parent_dir(&self.path)?;
        let mut conn = SqliteConnectOptions::new()
            .filename(&self.path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(self.busy_timeout)
            .create_if_missing(true)
            .connect()
            .await?;
        MIGRATOR.run_direct(&mut conn).await?;
        conn.close().await
    }

    fn open(&self, read_only: bool) -> rusqlite::Result<Connection> {
        // Read-write even for readers: WAL readers write the shared-memory
        // index. `query_only` is what keeps them from writing the database.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags)?;
        conn.busy_timeout(self.busy_timeout)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(%mode, "SQLite did not switch to WAL mode");
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        if read_only {
            conn.pragma_update(None, "query_only", true)?;
        } else {
            // Savepoints journal the pages they change: in memory, not in
            // a temp file (a profile of group commit with a savepoint per
            // command had a quarter of the writer's time in those writes).
            conn.pragma_update(None, "temp_store", "MEMORY")?;
        }
        Ok(conn)
    }

    /// Whether every embedded migration is applied (read-only check, for a
    /// start on a database that cannot be written): `Ok` if so, else the
    /// error that stops the start.
    pub fn check_schema_current(&self) -> Result<()> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(self.busy_timeout)?;
        let applied: std::collections::BTreeSet<i64> = conn
            .prepare("SELECT version FROM _sqlx_migrations WHERE success = 1")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let missing: Vec<i64> = MIGRATOR
            .iter()
            .map(|m| m.version)
            .filter(|v| !applied.contains(v))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::StoreUnavailable(format!(
                "the database cannot be written and lacks migrations {missing:?}"
            )))
        }
    }

    /// Opens the writer's connection (the file must exist: see
    /// [`Self::migrate`]).
    pub fn open_writer(&self) -> Result<Connection> {
        let conn = self.open(false)?;
        // The checkpointer thread copies the WAL into the database; this
        // connection's commits only do it if the WAL grows this long (see
        // `store::checkpoint`).
        conn.pragma_update(None, "wal_autocheckpoint", super::checkpoint::WAL_BACKSTOP)?;
        Ok(conn)
    }

    /// Opens the checkpointer's connection: it writes only the database
    /// file (copying the WAL into it), never a row.
    pub fn open_checkpointer(&self) -> Result<Connection> {
        Ok(self.open(false)?)
    }

    /// Opens one read connection. It is `query_only`, so a bug can never
    /// write around the single writer.
    fn open_reader(&self) -> Result<Connection> {
        Ok(self.open(true)?)
    }
}

fn create_parent_dir(path: &Path) -> Result<(), sqlx::Error> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)
        }
        _ => Ok(()),
    }
}

/// The read connections: at most [`READ_CONNECTIONS`] pooled reads at a time, each
/// on tokio's blocking pool with a connection of its own. Connections are
/// opened when first needed and kept; one that failed with a database error
/// is dropped, so the next read opens a fresh one.
#[derive(Clone)]
pub struct Readers {
    inner: Arc<ReadersInner>,
}

struct ReadersInner {
    db: DbConfig,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl ReadersInner {
    fn idle_connection(&self) -> Result<Connection> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match idle {
            Some(c) => Ok(c),
            None => self.db.open_reader(),
        }
    }

    /// Keeps `conn` for the next read, unless the read it served found the
    /// database unusable (then the next read opens a fresh one).
    fn give_back<T>(&self, conn: Connection, result: &Result<T>) {
        if !matches!(result, Err(Error::StoreUnavailable(_))) {
            self.idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
        }
    }
}

impl Readers {
    /// The pool for `db`, with one connection opened now so that a database
    /// that cannot be read fails at start-up.
    pub fn open(db: DbConfig) -> Result<Self> {
        let first = db.open_reader()?;
        Ok(Self {
            inner: Arc::new(ReadersInner {
                db,
                idle: Mutex::new(vec![first]),
                permits: Arc::new(Semaphore::new(READ_CONNECTIONS)),
            }),
        })
    }

    /// Runs a lookup by key on the calling thread. Such a read is a few µs
    /// of SQLite (a cached statement, one index probe), about ten times
    /// less than the hop to the blocking pool and back that [`Self::run`]
    /// costs (futex wake-ups and context switches; a profile of GetTask at
    /// 16 clients had half of central's samples on that path). In WAL mode a
    /// reader does not wait for the writer, so this does not stall the
    /// async runtime on the disk. Reads whose size the caller chooses go
    /// through [`Self::run`].
    pub fn run_inline<T>(&self, read: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        if self.inner.permits.is_closed() {
            return Err(Error::ShuttingDown);
        }
        // One connection per runtime thread in here at a time, on top of
        // the pooled reads: the idle list stays small.
        let conn = self.inner.idle_connection()?;
        let result = read(&conn);
        self.inner.give_back(conn, &result);
        result
    }

    /// Runs `read` on a read connection, on tokio's blocking pool.
    pub async fn run<T, F>(&self, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let permit =
            tokio::time::timeout(ACQUIRE_TIMEOUT, self.inner.permits.clone().acquire_owned())
                .await
                .map_err(|_| {
                    Error::StoreUnavailable(format!(
                        "no read connection free within {ACQUIRE_TIMEOUT:?}"
                    ))
                })?
                .map_err(|_| Error::ShuttingDown)?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = inner.idle_connection()?;
            let result = read(&conn);
            inner.give_back(conn, &result);
            result
        })
        .await
        .map_err(|e| Error::Internal(format!("read task failed: {e}")))?
    }

    /// Refuses new reads and closes the idle connections (reads in flight
    /// finish and close theirs).
    pub fn close(&self) {
        self.inner.permits.close();
        self.inner
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}
