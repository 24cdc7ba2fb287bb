//! The live event feed: an in-process hub the writer publishes committed
//! events to (in position order), and the per-watcher task behind
//! WatchEvents.
//!
//! A watcher subscribes to the hub FIRST, then replays from the database
//! everything after the client's position (in pages), then forwards live
//! events, skipping any position it already sent. Every event committed
//! after the subscription reaches the hub after it; every event committed
//! before is visible to the replay; so nothing falls between the two, and
//! the skip removes the overlap. A watcher too slow for the hub's buffer
//! gets `Lagged` and falls back to a database catch-up from its last sent
//! position. Result: no gap, no repeat, in order.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::domain::{EventRecord, TaskId, WatchQuery};
use crate::error::Result;
use crate::store::Store;

/// Events buffered in the hub per subscriber before a slow watcher lags
/// (and catches up from the database instead).
pub const HUB_CAPACITY: usize = 4096;

/// Events read from the database per replay query.
const REPLAY_PAGE: u32 = 500;

/// Events buffered towards one client before the watcher waits for it.
const CLIENT_BUFFER: usize = 256;

/// Fans committed events out to live watchers. Cheap to clone.
#[derive(Clone)]
pub struct EventHub {
    tx: broadcast::Sender<Arc<EventRecord>>,
}

impl EventHub {
    /// A hub keeping up to `capacity` events for slow subscribers.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity);
        Self { tx }
    }

    /// Publishes committed events; call in position order.
    pub fn publish(&self, events: Vec<EventRecord>) {
        for e in events {
            // No subscriber is fine.
            let _ = self.tx.send(Arc::new(e));
        }
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EventRecord>> {
        self.tx.subscribe()
    }
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new(HUB_CAPACITY)
    }
}

/// What a watcher yields: events in position order, or one final error.
pub type WatchStream = mpsc::Receiver<Result<EventRecord>>;

/// Starts a watcher task for `q` on `tracker`. It ends when the client goes
/// away, on `shutdown`, or after sending a database error.
pub fn start_watch(
    store: Store,
    hub: &EventHub,
    q: WatchQuery,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> WatchStream {
    // Subscribe before anything is read from the database: see module docs.
    let live = hub.subscribe();
    let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
    let span = tracing::info_span!(
        "watcher",
        after_position = q.after_position,
        task_id = q.task_id.map(|t| t.to_string()),
    );
    let w = Watcher {
        store,
        live,
        tx,
        last: q.after_position,
        task: q.task_id,
        shutdown,
    };
    tracker.spawn(w.run().instrument(span));
    rx
}

struct Watcher {
    store: Store,
    live: broadcast::Receiver<Arc<EventRecord>>,
    tx: mpsc::Sender<Result<EventRecord>>,
    /// Position of the last event sent (or the client's start position).
    last: u64,
    task: Option<TaskId>,
    shutdown: CancellationToken,
}

/// Whether to keep going.
enum Flow {
    Continue,
    Stop,
}

impl Watcher {
    async fn run(mut self) {
        if let Err(e) = self.drive().await {
            tracing::warn!(error = %e, "watcher failed");
            let _ = self.tx.send(Err(e)).await;
        }
        tracing::debug!(last = self.last, "watcher ended");
    }

    async fn drive(&mut self) -> Result<()> {
        if let Flow::Stop = self.catch_up().await? {
            return Ok(());
        }
        loop {
            let msg = tokio::select! {
                () = self.shutdown.cancelled() => return Ok(()),
                () = self.tx.closed() => return Ok(()),
                m = self.live.recv() => m,
            };
            match msg {
                Ok(ev) => {
                    if ev.position <= self.last || self.task.is_some_and(|t| t != ev.task_id) {
                        continue;
                    }
                    if let Flow::Stop = self.send(EventRecord::clone(&ev)).await {
                        return Ok(());
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "watcher lagged; catching up from the database");
                    if let Flow::Stop = self.catch_up().await? {
                        return Ok(());
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            }
        }
    }

    /// Sends everything committed after `last` from the database.
    async fn catch_up(&mut self) -> Result<Flow> {
        loop {
            let page = self
                .store
                .events_after(self.last, self.task, REPLAY_PAGE)
                .await?;
            let full = page.len() == REPLAY_PAGE as usize;
            for ev in page {
                if let Flow::Stop = self.send(ev).await {
                    return Ok(Flow::Stop);
                }
            }
            if !full {
                return Ok(Flow::Continue);
            }
        }
    }

    async fn send(&mut self, ev: EventRecord) -> Flow {
        let position = ev.position;
        tokio::select! {
            r = self.tx.send(Ok(ev)) => match r {
                Ok(()) => {
                    self.last = position;
                    Flow::Continue
                }
                Err(_) => Flow::Stop, // client gone
            },
            () = self.shutdown.cancelled() => Flow::Stop,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::BUSY_TIMEOUT;
    use crate::store::tests::{TestDb, create, new_task};

    const T: Duration = Duration::from_secs(20);

    async fn next(rx: &mut WatchStream) -> EventRecord {
        tokio::time::timeout(T, rx.recv())
            .await
            .expect("event in time")
            .expect("stream open")
            .expect("no error")
    }

    async fn create_n(db: &TestDb, n: usize) -> Vec<TaskId> {
        let mut joins = Vec::new();
        for i in 0..n {
            let store = db.store.clone();
            joins.push(tokio::spawn(async move {
                create(&store, new_task(&format!("w{i}"), "alice"))
                    .await
                    .unwrap()
                    .0
                    .task_id
            }));
        }
        let mut ids = Vec::new();
        for j in joins {
            ids.push(j.await.unwrap());
        }
        ids
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replay_then_live_without_gap_or_repeat() {
        let db = TestDb::open().await;
        create_n(&db, 20).await;
        let stop = CancellationToken::new();
        let q = WatchQuery {
            after_position: 5,
            task_id: None,
        };
        let mut rx = start_watch(db.store.clone(), &db.hub, q, &db.tracker, stop.clone());
        // Writers race with the replay.
        let writer = {
            let store = db.store.clone();
            tokio::spawn(async move {
                for i in 0..40 {
                    create(&store, new_task(&format!("live{i}"), "bob"))
                        .await
                        .unwrap();
                }
            })
        };
        let mut got = Vec::new();
        for _ in 0..55 {
            got.push(next(&mut rx).await.position);
        }
        writer.await.unwrap();
        assert_eq!(got, (6..=60).collect::<Vec<u64>>());
        stop.cancel();
        assert!(
            tokio::time::timeout(T, rx.recv()).await.unwrap().is_none(),
            "ends on shutdown"
        );
        db.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lagging_watcher_catches_up_from_the_database() {
        // A hub of 4 and a client that reads nothing until 700 events are
        // committed: the watcher must lag and recover.
        let db = TestDb::open_with(EventHub::new(4), BUSY_TIMEOUT).await;
        let stop = CancellationToken::new();
        let q = WatchQuery {
            after_position: 0,
            task_id: None,
        };
        let mut rx = start_watch(db.store.clone(), &db.hub, q, &db.tracker, stop.clone());
        for chunk in 0..7 {
            let _ = chunk;
            create_n(&db, 100).await;
        }
        let mut got = Vec::new();
        for _ in 0..700 {
            got.push(next(&mut rx).await.position);
        }
        assert_eq!(got, (1..=700).collect::<Vec<u64>>());
        // And live again afterwards.
        create_n(&db, 1).await;
        assert_eq!(next(&mut rx).await.position, 701);
        stop.cancel();
        db.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn task_filter_and_many_watchers() {
        let db = TestDb::open().await;
        let ids = create_n(&db, 3).await;
        let target = ids[1];
        let stop = CancellationToken::new();
        let mut filtered = start_watch(
            db.store.clone(),
            &db.hub,
            WatchQuery {
                after_position: 0,
                task_id: Some(target),
            },
            &db.tracker,
            stop.clone(),
        );
        let mut all: Vec<_> = (0..8)
            .map(|_| {
                start_watch(
                    db.store.clone(),
                    &db.hub,
                    WatchQuery {
                        after_position: 0,
                        task_id: None,
                    },
                    &db.tracker,
                    stop.clone(),
                )
            })
            .collect();
        create_n(&db, 10).await;
        let cancel = crate::store::Command::Finish {
            task_id: target,
            finish: crate::domain::Finish::Cancel,
            actor: crate::domain::ActorId::parse("a").unwrap(),
            correlation: crate::domain::CorrelationId::parse_or_new("").unwrap(),
            reason: Some("r".into()),
        };
        db.store.write(cancel).await.unwrap();
        let e1 = next(&mut filtered).await;
        let e2 = next(&mut filtered).await;
        assert_eq!((e1.task_id, e1.version), (target, 1));
        assert_eq!((e2.task_id, e2.version, e2.position), (target, 2, 14));
        for rx in &mut all {
            let mut got = Vec::new();
            for _ in 0..14 {
                got.push(next(rx).await.position);
            }
            assert_eq!(got, (1..=14).collect::<Vec<u64>>());
        }
        stop.cancel();
        assert!(
            tokio::time::timeout(T, filtered.recv())
                .await
                .unwrap()
                .is_none()
        );
        db.shutdown().await;
    }
}
