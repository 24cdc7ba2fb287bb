//! Opening the SQLite database: the writer's one connection (which also
//! applies the embedded migrations) and the read pool.
//!
//! Pragmas: WAL so readers never block the writer nor each other;
//! `synchronous=FULL` so a commit is on disk before anyone is told (group
//! commit pays one fsync per batch, not per call); foreign keys on; a short
//! busy timeout so a locked or unreachable database turns into
//! EVENT_STORE_UNAVAILABLE within about a second instead of a hanging call.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, SqliteConnection};

/// How long a statement waits for a lock held by someone else (another
/// process opening the file, a checkpoint) before it fails.
pub const BUSY_TIMEOUT: Duration = Duration::from_millis(1000);

/// How long a read waits for a free pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Read connections. Reads are short indexed queries; the machine this runs
/// on is small, and SQLite reads in WAL mode do not block each other.
const READ_CONNECTIONS: u32 = 4;

/// The embedded migrations (`migrations/` at the workspace root).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Where and how to open the database.
#[derive(Debug, Clone)]
pub struct DbConfig {
    /// The database file.
    pub path: PathBuf,
    /// See [`BUSY_TIMEOUT`].
    pub busy_timeout: Duration,
}

impl DbConfig {
    /// Defaults for the file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            busy_timeout: BUSY_TIMEOUT,
        }
    }

    fn options(&self) -> SqliteConnectOptions {
        SqliteConnectOptions::new()
            .filename(&self.path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(self.busy_timeout)
    }

    /// Opens the writer's connection, creating the file (and its parent
    /// directory) if missing.
    pub async fn open_writer(&self) -> Result<SqliteConnection, sqlx::Error> {
        create_parent_dir(&self.path)?;
        self.options().create_if_missing(true).connect().await
    }

    /// Opens the read pool. Its connections are `query_only`, so a bug can
    /// never write around the single writer.
    pub async fn open_readers(&self) -> Result<SqlitePool, sqlx::Error> {
        SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .min_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(self.options().pragma("query_only", "ON"))
            .await
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

/// Opens the writer connection and applies pending migrations on it.
pub async fn open_and_migrate(db: &DbConfig) -> Result<SqliteConnection, sqlx::Error> {
    let mut conn = db.open_writer().await?;
    MIGRATOR.run_direct(&mut conn).await?;
    Ok(conn)
}
