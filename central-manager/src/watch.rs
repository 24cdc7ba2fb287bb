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
