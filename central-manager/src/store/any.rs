//! The store `--database-url` names: the SQLite store (`sqlite://…`, the
//! default) or the PostgreSQL store (`postgres://…`), behind one handle
//! that hands out the ports the core uses and that the server closes and
//! follows for health. Nothing above this chooses a backend.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::breaker::Breaker;
use super::postgres::PgStore;
use super::{DbConfig, Store};
use crate::config::Database;
use crate::core::ports::{RetentionStore, ScheduleStore, TaskStore};
use crate::error::Result;
use crate::watch::EventHub;

/// An open store of either backend. Cheap to clone.
#[derive(Clone)]
pub enum AnyStore {
    /// The SQLite store.
    Sqlite(Store),
    /// The PostgreSQL store.
    Postgres(PgStore),
}

impl AnyStore {
    /// Opens (creating and migrating) the database and starts its writer
    /// on `tracker`, stopping when `stop` is cancelled.
    pub async fn open(
        db: &Database,
        hub: EventHub,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> Result<Self> {
        Ok(match db {
            Database::Sqlite(path) => {
                Self::Sqlite(Store::open(DbConfig::new(path), hub, tracker, stop).await?)
            }
            Database::Postgres(url) => {
                Self::Postgres(PgStore::open(url, hub, tracker, stop).await?)
            }
        })
    }

    /// The task store port.
    pub fn tasks(&self) -> Arc<dyn TaskStore> {
        match self {
            Self::Sqlite(s) => Arc::new(s.clone()),
            Self::Postgres(s) => Arc::new(s.clone()),
        }
    }

    /// The schedule store port.
    pub fn schedules(&self) -> Arc<dyn ScheduleStore> {
        match self {
            Self::Sqlite(s) => Arc::new(s.clone()),
            Self::Postgres(s) => Arc::new(s.clone()),
        }
    }

    /// The retention store port.
    pub fn retention(&self) -> Arc<dyn RetentionStore> {
        match self {
            Self::Sqlite(s) => Arc::new(s.clone()),
            Self::Postgres(s) => Arc::new(s.clone()),
        }
    }

    /// The leader-lease port.
    pub fn lease(&self) -> Arc<dyn crate::core::ports::LeaseStore> {
        match self {
            Self::Sqlite(s) => Arc::new(s.lease()),
            Self::Postgres(s) => Arc::new(s.lease()),
        }
    }

    /// The writer's leadership fence.
    pub fn fence(&self) -> super::fence::Fence {
        match self {
            Self::Sqlite(s) => s.fence().clone(),
            Self::Postgres(s) => s.fence().clone(),
        }
    }

    /// The store's circuit breaker (health follows it).
    pub fn breaker(&self) -> &Breaker {
        match self {
            Self::Sqlite(s) => s.breaker(),
            Self::Postgres(s) => s.breaker(),
        }
    }

    /// Closes the read connections (after the writer has stopped).
    pub async fn close(&self) {
        match self {
            Self::Sqlite(s) => s.close().await,
            Self::Postgres(s) => s.close().await,
        }
    }
}
