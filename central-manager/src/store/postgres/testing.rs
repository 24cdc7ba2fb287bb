//! A PostgreSQL store on a fresh database of the test process's shared
//! private server (`ipa-pg-harness`), for the store tests that run on both
//! backends.

use std::sync::Arc;

use ipa_pg_harness::PgServer;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::PgStore;
use crate::watch::EventHub;

pub(crate) struct PgTestDb {
    pub url: String,
    pub store: PgStore,
    pub hub: EventHub,
    pub tracker: TaskTracker,
    pub stop: CancellationToken,
    // Last: the server stops after the store has closed its connections.
    pub server: Arc<PgServer>,
}

impl PgTestDb {
    pub async fn open() -> Self {
        Self::open_with(EventHub::default()).await
    }

    pub async fn open_with(hub: EventHub) -> Self {
        let server = tokio::task::spawn_blocking(ipa_pg_harness::shared)
            .await
            .unwrap()
            .expect("starting PostgreSQL");
        Self::open_on(server, hub).await
    }

    /// A store on a fresh database of `server` (a private one, for a test
    /// that stops it).
    pub async fn open_on(server: Arc<PgServer>, hub: EventHub) -> Self {
        let (server, url) = tokio::task::spawn_blocking(move || {
            let url = server.database().expect("creating a database");
            (server, url)
        })
        .await
        .unwrap();
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        let store = PgStore::open(&url, hub.clone(), &tracker, stop.clone())
            .await
            .unwrap();
        Self {
            url,
            store,
            hub,
            tracker,
            stop,
            server,
        }
    }

    /// Runs one SQL statement on a side connection (test set-up).
    pub async fn exec(&self, sql: &str) {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
        sqlx::query(sql).execute(&mut c).await.unwrap();
        c.close().await.unwrap();
    }

    /// Shuts this store down and opens the same database again.
    pub async fn shutdown_and_reopen(self) -> Self {
        let url = self.url.clone();
        let server = self.server.clone();
        self.shutdown().await;
        let hub = EventHub::default();
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        let store = PgStore::open(&url, hub.clone(), &tracker, stop.clone())
            .await
            .unwrap();
        Self {
            url,
            store,
            hub,
            tracker,
            stop,
            server,
        }
    }

    /// Stops the writer (draining it) and closes the pool.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        self.store.close().await;
    }
}

/// A second store on a test database: another replica, with a writer of
/// its own on `tracker`, stopped by [`Replica::close`].
pub(crate) struct Replica {
    store: PgStore,
    pub tracker: TaskTracker,
    pub stop: CancellationToken,
}

impl PgTestDb {
    /// Opens another replica's store on this database, publishing to `hub`.
    pub async fn replica(&self, hub: EventHub) -> (PgStore, Replica) {
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        let store = PgStore::open(&self.url, hub, &tracker, stop.clone())
            .await
            .unwrap();
        let replica = Replica {
            store: store.clone(),
            tracker,
            stop,
        };
        (store, replica)
    }
}

impl Replica {
    /// Stops its writer (draining it) and closes its pool.
    pub async fn close(self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        self.store.close().await;
    }
}
