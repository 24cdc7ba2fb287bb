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

    /// Every event committed from now on, for an in-process follower (the
    /// schedule firing loop watches tasks end).
    pub fn follow(&self) -> Follower {
        Follower(self.subscribe())
    }
}

/// An in-process subscriber to committed events.
pub struct Follower(broadcast::Receiver<Live>);

impl Follower {
    /// The next committed event. Events too big for the hub are passed
    /// over: followers act only on small ones (a task's end). `Lagged`
    /// means events were missed and the follower should re-read its state.
    pub async fn recv(
        &mut self,
    ) -> std::result::Result<Arc<EventRecord>, broadcast::error::RecvError> {
        loop {
            match self.0.recv().await? {
                Live::Event(e) => return Ok(e),
                Live::Fetch(_) => {}
            }
        }
    }

    /// The next committed event, or `None` for one too big for the hub
    /// (a follower that must not miss any kind of event re-reads its state
    /// then: the timeout loop).
    pub async fn recv_or_big(
        &mut self,
    ) -> std::result::Result<Option<Arc<EventRecord>>, broadcast::error::RecvError> {
        Ok(match self.0.recv().await? {
            Live::Event(e) => Some(e),
            Live::Fetch(_) => None,
        })
    }

    /// The next event already received, if any, without waiting (a small
    /// one; a test checks what was published before an answer).
    #[cfg(test)]
    pub fn try_next(&mut self) -> Option<Arc<EventRecord>> {
        loop {
            match self.0.try_recv().ok()? {
                Live::Event(e) => return Some(e),
                Live::Fetch(_) => {}
            }
        }
    }

    /// Drops every event already received (a follower about to re-read
    /// its state needs none of them). False when the hub is gone.
    pub fn drain(&mut self) -> bool {
        loop {
            match self.0.try_recv() {
                Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(broadcast::error::TryRecvError::Empty) => return true,
                Err(broadcast::error::TryRecvError::Closed) => return false,
            }
        }
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
mod tests;
