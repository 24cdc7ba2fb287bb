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
//!
//! Memory is bounded whoever stops reading (API.md Limits):
//! - the hub keeps only small events ([`HUB_EVENT_BYTES`]); a bigger one is
//!   published as a marker and each watcher reads it from the database, so
//!   the hub's ring never pins megabytes;
//! - each watcher buffers at most [`CLIENT_BYTES`] (and [`CLIENT_BUFFER`]
//!   events) towards its client; beyond that it waits, and a client that
//!   takes no event for `--watch-lag-limit-ms` is dropped with
//!   RESOURCE_EXHAUSTED `WATCH_TOO_SLOW` naming the position to resume
//!   after (every event before the error was delivered in order).

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::core::ports::TaskStore;
use crate::domain::{EventRecord, TaskId, WatchQuery, WireSize};
use crate::error::{Error, Result};

/// Events buffered in the hub per subscriber before a slow watcher lags
/// (and catches up from the database instead).
pub const HUB_CAPACITY: usize = 4096;

/// Largest event carried by the hub itself (its `data_json`, bytes); a
/// bigger one travels as a marker, read from the database by each watcher.
/// Bounds the hub's ring to about 4096 × 4 KiB whatever clients do.
pub const HUB_EVENT_BYTES: usize = 4096;

/// Events read from the database per replay query.
const REPLAY_PAGE: u32 = 500;

/// Events buffered towards one client before the watcher waits for it.
const CLIENT_BUFFER: usize = 256;

/// Bytes (by events' size hints) buffered towards one client before the
/// watcher waits for it.
pub const CLIENT_BYTES: usize = 1024 * 1024;

/// What the hub carries.
#[derive(Debug, Clone)]
enum Live {
    Event(Arc<EventRecord>),
    /// A committed event too big for the hub, at this position.
    Fetch(u64),
}

/// Fans committed events out to live watchers. Cheap to clone.
#[derive(Clone)]
pub struct EventHub {
    tx: broadcast::Sender<Live>,
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
            let live = if e.data_json.len() > HUB_EVENT_BYTES {
                Live::Fetch(e.position)
            } else {
                Live::Event(Arc::new(e))
            };
            // No subscriber is fine.
            let _ = self.tx.send(live);
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Live> {
        self.tx.subscribe()
    }
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new(HUB_CAPACITY)
    }
}

/// What a watcher yields: events in position order, then possibly one
/// final error.
pub struct WatchStream {
    rx: mpsc::Receiver<(EventRecord, u32)>,
    bytes: Arc<Semaphore>,
    end: Option<oneshot::Receiver<Error>>,
}

impl WatchStream {
    /// The next item (for tests and simple consumers).
    pub async fn recv(&mut self) -> Option<Result<EventRecord>> {
        futures::StreamExt::next(self).await
    }
}

impl Stream for WatchStream {
    type Item = Result<EventRecord>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some((ev, size))) => {
                // The client took it: its bytes no longer count.
                self.bytes.add_permits(size as usize);
                Poll::Ready(Some(Ok(ev)))
            }
            Poll::Ready(None) => match self.end.as_mut() {
                // The watcher is done: its final error, if any, after
                // every event it buffered.
                Some(end) => {
                    let r = Pin::new(end).poll(cx);
                    match r {
                        Poll::Ready(r) => {
                            self.end = None;
                            Poll::Ready(r.ok().map(Err))
                        }
                        Poll::Pending => Poll::Pending,
                    }
                }
                None => Poll::Ready(None),
            },
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Starts a watcher task for `q` on `tracker`. It ends when the client goes
/// away, on `shutdown`, after a database error, or when the client has not
/// taken an event for `lag_limit` while one waited.
pub fn start_watch(
    store: Arc<dyn TaskStore>,
    hub: &EventHub,
    q: WatchQuery,
    lag_limit: Duration,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> WatchStream {
    // Subscribe before anything is read from the database: see module docs.
    let live = hub.subscribe();
    let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
    let (end_tx, end_rx) = oneshot::channel();
    let bytes = Arc::new(Semaphore::new(CLIENT_BYTES));
    let span = tracing::info_span!(
        "watcher",
        after_position = q.after_position,
        task_id = q.task_id.map(|t| t.to_string()),
    );
    let w = Watcher {
        store,
        live,
        tx,
        bytes: bytes.clone(),
        end: Some(end_tx),
        last: q.after_position,
        task: q.task_id,
        lag_limit,
        shutdown,
    };
    tracker.spawn(w.run().instrument(span));
    WatchStream {
        rx,
        bytes,
        end: Some(end_rx),
    }
}

struct Watcher {
    store: Arc<dyn TaskStore>,
    live: broadcast::Receiver<Live>,
    tx: mpsc::Sender<(EventRecord, u32)>,
    bytes: Arc<Semaphore>,
    end: Option<oneshot::Sender<Error>>,
    /// Position of the last event sent (or the client's start position).
    last: u64,
    task: Option<TaskId>,
    lag_limit: Duration,
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
            match &e {
                Error::WatchTooSlow { position, .. } => {
                    tracing::info!(position, "dropping a watcher whose client reads too slowly");
                }
                _ => tracing::warn!(error = %e, "watcher failed"),
            }
            if let Some(end) = self.end.take() {
                let _ = end.send(e);
            }
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
                Ok(Live::Event(ev)) => {
                    if ev.position <= self.last || self.task.is_some_and(|t| t != ev.task_id) {
                        continue;
                    }
                    if let Flow::Stop = self.send(EventRecord::clone(&ev)).await? {
                        return Ok(());
                    }
                }
                Ok(Live::Fetch(position)) => {
                    if position > self.last
                        && let Flow::Stop = self.catch_up().await?
                    {
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
                if let Flow::Stop = self.send(ev).await? {
                    return Ok(Flow::Stop);
                }
            }
            if !full {
                return Ok(Flow::Continue);
            }
        }
    }

    /// Buffers one event for the client, waiting for room at most the lag
    /// limit.
    async fn send(&mut self, ev: EventRecord) -> Result<Flow> {
        let position = ev.position;
        let size = ev.wire_size_hint().clamp(1, CLIENT_BYTES) as u32;
        let (bytes, tx) = (self.bytes.clone(), self.tx.clone());
        let room = async move {
            let permit = bytes.acquire_many_owned(size).await;
            let slot = tx.reserve_owned().await;
            (permit, slot)
        };
        let closed = self.tx.clone();
        let result = tokio::select! {
            r = tokio::time::timeout(self.lag_limit, room) => r,
            () = closed.closed() => return Ok(Flow::Stop),
            () = self.shutdown.cancelled() => return Ok(Flow::Stop),
        };
        match result {
            Ok((Ok(permit), Ok(slot))) => {
                // Given back by the stream when the client takes it.
                permit.forget();
                slot.send((ev, size));
                self.last = position;
                Ok(Flow::Continue)
            }
            // The client is gone.
            Ok(_) => Ok(Flow::Stop),
            Err(_) => Err(Error::WatchTooSlow {
                position: self.last,
                limit_ms: u64::try_from(self.lag_limit.as_millis()).unwrap_or(u64::MAX),
            }),
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
        let mut rx = start_watch(
            Arc::new(db.store.clone()),
            &db.hub,
            q,
            T,
            &db.tracker,
            stop.clone(),
        );
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
        let mut rx = start_watch(
            Arc::new(db.store.clone()),
            &db.hub,
            q,
            T,
            &db.tracker,
            stop.clone(),
        );
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
            Arc::new(db.store.clone()),
            &db.hub,
            WatchQuery {
                after_position: 0,
                task_id: Some(target),
            },
            T,
            &db.tracker,
            stop.clone(),
        );
        let mut all: Vec<_> = (0..8)
            .map(|_| {
                start_watch(
                    Arc::new(db.store.clone()),
                    &db.hub,
                    WatchQuery {
                        after_position: 0,
                        task_id: None,
                    },
                    T,
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

    /// A task whose description (4-byte characters, at most 39 KiB) makes
    /// its `task_created` event about `kib` KiB: too big for the hub, and
    /// heavy for a client buffer.
    async fn create_big(db: &TestDb, kib: usize) -> TaskId {
        let mut t = new_task("big", "alice");
        t.description = crate::domain::Description::parse(&"😀".repeat(kib * 256)).unwrap();
        create(&db.store, t).await.unwrap().0.task_id
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn big_events_reach_live_watchers_through_the_database() {
        let db = TestDb::open().await;
        let stop = CancellationToken::new();
        let q = WatchQuery {
            after_position: 0,
            task_id: None,
        };
        let mut rx = start_watch(
            Arc::new(db.store.clone()),
            &db.hub,
            q,
            T,
            &db.tracker,
            stop.clone(),
        );
        create_n(&db, 1).await;
        assert_eq!(next(&mut rx).await.position, 1);
        // Live now: a 9 KiB event travels the hub as a marker only.
        let id = create_big(&db, 9).await;
        let e = next(&mut rx).await;
        assert_eq!((e.position, e.task_id), (2, id));
        assert!(e.data_json.len() > HUB_EVENT_BYTES);
        create_n(&db, 1).await;
        assert_eq!(next(&mut rx).await.position, 3);
        stop.cancel();
        db.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_stops_reading_is_bounded_then_dropped_with_its_resume_position() {
        let db = TestDb::open().await;
        // 40 events of ~39 KiB: 1.5 MiB, more than the client buffer.
        for _ in 0..40 {
            create_big(&db, 39).await;
        }
        let stop = CancellationToken::new();
        let q = WatchQuery {
            after_position: 0,
            task_id: None,
        };
        let lag = Duration::from_millis(300);
        let mut rx = start_watch(
            Arc::new(db.store.clone()),
            &db.hub,
            q,
            lag,
            &db.tracker,
            stop.clone(),
        );
        // The client reads nothing for longer than the lag limit.
        tokio::time::sleep(lag * 3).await;
        // Bounded: the watcher stopped filling at the byte budget.
        let buffered = CLIENT_BYTES - rx.bytes.available_permits();
        assert!(buffered <= CLIENT_BYTES, "{buffered}");
        // Everything it buffered arrives in order, then the error names the
        // last delivered position.
        let mut got = Vec::new();
        let err = loop {
            match tokio::time::timeout(T, rx.recv()).await.expect("in time") {
                Some(Ok(e)) => got.push(e.position),
                Some(Err(e)) => break e,
                None => panic!("stream ended without WATCH_TOO_SLOW"),
            }
        };
        assert!(!got.is_empty() && got.len() < 40, "{}", got.len());
        assert_eq!(got, (1..=got.len() as u64).collect::<Vec<_>>());
        match err {
            Error::WatchTooSlow { position, .. } => assert_eq!(position, got.len() as u64),
            other => panic!("{other:?}"),
        }
        let status = tonic::Status::from(err);
        assert!(status.message().starts_with("WATCH_TOO_SLOW: "));
        assert!(
            status
                .message()
                .ends_with(&format!("resume after position {}", got.len())),
            "{}",
            status.message()
        );
        assert!(rx.recv().await.is_none());
        // Resuming from there delivers the rest, no gap, no repeat.
        let q = WatchQuery {
            after_position: got.len() as u64,
            task_id: None,
        };
        let mut again = start_watch(
            Arc::new(db.store.clone()),
            &db.hub,
            q,
            T,
            &db.tracker,
            stop.clone(),
        );
        for p in got.len() as u64 + 1..=40 {
            assert_eq!(next(&mut again).await.position, p);
        }
        stop.cancel();
        db.shutdown().await;
    }
}
