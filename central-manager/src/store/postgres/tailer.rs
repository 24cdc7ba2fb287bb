//! The event tailer: on PostgreSQL, the ONLY publisher of committed events
//! to this process's [`EventHub`] (WatchEvents' live feed and the
//! in-process followers: run timeouts, the queue dispatcher, the schedule
//! loop). Several replicas write to one database; each replica's hub must
//! carry every replica's events, exactly once and in position order.
//!
//! The tailer keeps the last position it published (the head when the
//! store opened) and reads `events` (and `events_archive`, where archiving
//! moves them with their positions) `WHERE position > last ORDER BY
//! position`, a page at a time, whenever
//! - this process's writer committed: the writer hands over its committed
//!   events and the answers to its callers; when they follow `last`
//!   directly they are published without reading the database, otherwise
//!   what lies between (another replica's commits) is read first. The
//!   answers go out after the publication, so a caller that got its answer
//!   finds its events in the hub's past (as with SQLite's writer);
//! - a notification arrives on channel [`CHANNEL`]: every transaction that
//!   appends events notifies it at commit with the head it committed
//!   (migration `20261204000005_event_notify.sql`), heard by a `LISTEN` on
//!   a connection of its own that reconnects when lost ([`listen`]). While
//!   this process's writer has a batch under way the read waits for that
//!   batch's hand-over: the notification is most often the writer's own
//!   commit, heard before the writer has its answer, and reading those
//!   events back cost the database and this process a query per batch and
//!   held the callers' answers behind it (60 % of batches at 64 clients
//!   creating tasks). After the hand-over anything notified beyond it
//!   (another replica's commits) is read;
//! - the fallback poll ([`POLL`]) ticks, which covers notifications lost
//!   with a listener connection.
//!
//! Why reading `position > last` never skips an event that commits later:
//! every writer transaction (of every replica) locks the `event_log_head`
//! row first (`writer::attempt`) and holds that lock to its commit, and
//! every event's position is taken from that row in the same transaction.
//! So transactions that append events commit one at a time, in the order of
//! their positions; PostgreSQL makes a commit visible before it releases
//! its locks, so the next appender starts only once every smaller position
//! is visible. A snapshot that sees position p therefore sees every
//! position below p, and a later read starting after p misses nothing. A
//! sequence would not give this: transactions draw numbers in one order and
//! commit in another, and a reader could see 6 before 5 commits and skip 5
//! for good. Every write that inserts events goes through the writer's
//! transaction (commands, pods, the queue, dependencies, schedules'
//! fires, retention's cancellations); archiving moves events without
//! changing positions, which this read covers by reading both tables in one
//! statement. The one way an event leaves both tables is DeleteTask; if it
//! removes a task's events before the tailer read them, the hub never
//! carries them, as a replay from the database would not either.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::queries;
use crate::domain::EventRecord;
use crate::error::Result;
use crate::watch::EventHub;

/// The channel every event-appending transaction notifies at commit.
pub const CHANNEL: &str = "ipa_events";

/// The fallback poll: the longest another replica's events wait to reach
/// this hub when notifications are lost.
pub const POLL: Duration = Duration::from_millis(500);

/// Events read per query.
const PAGE: u32 = 1000;

/// How long the listener waits before connecting again after a failure.
const RECONNECT: Duration = Duration::from_secs(1);

/// Commits of this process's writer waiting for the tailer.
const OWN_QUEUE: usize = 64;

/// What the writer hands over after a commit: its events (in position
/// order) and what to do once they are published (answer the callers).
pub struct Committed {
    pub events: Vec<EventRecord>,
    pub then: Box<dyn FnOnce() + Send>,
}

/// The writer's side of the tailer. Cheap to clone.
#[derive(Clone)]
pub struct TailerHandle {
    tx: mpsc::Sender<Committed>,
    heard: Arc<Heard>,
}

impl TailerHandle {
    /// A batch is under way: until it is handed over ([`Self::committed`])
    /// or given up ([`Self::abandoned`]) a notification waits for it.
    pub fn begin(&self) {
        self.heard.own_pending.fetch_add(1, Ordering::AcqRel);
    }

    /// Hands a commit over (after [`Self::begin`]). If the tailer is gone
    /// (shutting down), the callers are answered at once: their writes are
    /// committed, and the events stay readable from the database.
    pub async fn committed(&self, c: Committed) {
        if let Err(mpsc::error::SendError(c)) = self.tx.send(c).await {
            self.heard.own_done();
            (c.then)();
        }
    }

    /// The tailer's counters (without keeping the tailer running: it stops
    /// once every handle is dropped).
    pub fn stats(&self) -> TailerStats {
        TailerStats(self.heard.clone())
    }

    /// The batch begun failed (nothing committed): what was notified
    /// meanwhile is read now.
    pub fn abandoned(&self) {
        self.heard.own_done();
        self.heard.wake.notify_one();
    }
}

/// Starts the tailer and its listener on `tracker`, from the head as it is
/// now. The tailer runs until every [`TailerHandle`] is dropped (the writer
/// stopped, after its last commit); the listener until `stop`.
pub async fn start(
    reads: PgPool,
    options: PgConnectOptions,
    hub: EventHub,
    tracker: &TaskTracker,
    stop: CancellationToken,
) -> Result<TailerHandle> {
    let head: i64 = sqlx::query_scalar("SELECT position FROM event_log_head WHERE id = 1")
        .fetch_one(&reads)
        .await?;
    let (tx, rx) = mpsc::channel(OWN_QUEUE);
    let heard = Arc::new(Heard::default());
    let tailer = Tailer {
        reads,
        hub,
        last: u64::try_from(head).unwrap_or(0),
        own: rx,
        heard: heard.clone(),
        failing: false,
    };
    tracker.spawn(
        listen(options, heard.clone(), stop).instrument(tracing::info_span!("pg_event_listener")),
    );
    tracker.spawn(
        tailer
            .run()
            .instrument(tracing::info_span!("pg_event_tailer")),
    );
    Ok(TailerHandle { tx, heard })
}

/// The tailer's counters. Cheap to clone.
#[derive(Clone)]
pub struct TailerStats(Arc<Heard>);

impl TailerStats {
    /// How many times the tailer read new events from the database on a
    /// notification or a hand-over (the writer's own hand-overs need none;
    /// the fallback poll's reads are not counted).
    pub fn reads(&self) -> u64 {
        self.0.reads.load(Ordering::Relaxed)
    }
}

/// What the listener heard: the highest head notified, whether
/// notifications may have been lost (a new connection), and a wake-up;
/// and the writer's batches under way, not yet handed over.
#[derive(Default)]
struct Heard {
    head: AtomicU64,
    lost: AtomicBool,
    wake: Notify,
    own_pending: AtomicU64,
    /// Catch-ups the tailer made on a notification or a hand-over (not
    /// its fallback poll's).
    reads: AtomicU64,
}

impl Heard {
    /// One batch of this writer handed over or given up.
    fn own_done(&self) {
        let _ = self
            .own_pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            });
    }
}

struct Tailer {
    reads: PgPool,
    hub: EventHub,
    /// The last position published.
    last: u64,
    own: mpsc::Receiver<Committed>,
    heard: Arc<Heard>,
    /// The last read failed (logged once until one succeeds).
    failing: bool,
}

impl Tailer {
    async fn run(mut self) {
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                c = self.own.recv() => match c {
                    Some(c) => self.own_commit(c).await,
                    None => break,
                },
                () = self.heard.wake.notified() => {
                    let lost = self.heard.lost.swap(false, Ordering::AcqRel);
                    // A batch of this writer under way: its hand-over
                    // comes next and reads what else was notified.
                    let own = self.heard.own_pending.load(Ordering::Acquire) > 0;
                    if lost || (!own && self.heard.head.load(Ordering::Acquire) > self.last) {
                        self.heard.reads.fetch_add(1, Ordering::Relaxed);
                        self.catch_up().await;
                    }
                }
                _ = poll.tick() => self.catch_up().await,
            }
        }
        tracing::debug!(last = self.last, "tailer stopped");
    }

    /// This writer's commit: published directly when it follows `last`,
    /// after reading what another replica committed in between otherwise.
    async fn own_commit(&mut self, c: Committed) {
        let Committed { events, then } = c;
        let contiguous = events
            .windows(2)
            .all(|w| w[1].position == w[0].position + 1);
        match events.first() {
            Some(first) if contiguous && first.position == self.last + 1 => {
                self.last = events.last().map_or(self.last, |e| e.position);
                self.hub.publish(events);
            }
            // Already read from the database (a notification came first).
            Some(_) if events.last().is_some_and(|e| e.position <= self.last) => {}
            // The database has them all (they are committed): read from
            // `last` on. If that read fails they stay for the next one.
            Some(_) => {
                self.heard.reads.fetch_add(1, Ordering::Relaxed);
                self.catch_up().await;
            }
            None => {}
        }
        then();
        self.heard.own_done();
        // Notified while the batch was under way, beyond it: another
        // replica's commits (or this writer's next batch, already under
        // way: its own hand-over comes).
        if self.heard.own_pending.load(Ordering::Acquire) == 0
            && self.heard.head.load(Ordering::Acquire) > self.last
        {
            self.heard.reads.fetch_add(1, Ordering::Relaxed);
            self.catch_up().await;
        }
    }

    /// Publishes everything committed after `last`.
    async fn catch_up(&mut self) {
        loop {
            let page = match queries::events_after(&self.reads, self.last, None, PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    if !self.failing {
                        tracing::warn!(error = %e, last = self.last, "reading new events failed; retrying");
                    }
                    self.failing = true;
                    return;
                }
            };
            self.failing = false;
            let full = page.len() == PAGE as usize;
            if let Some(e) = page.last() {
                self.last = e.position;
            }
            self.hub.publish(page);
            if !full {
                return;
            }
        }
    }
}

/// LISTENs on [`CHANNEL`] on a connection of its own until `stop`,
/// connecting again after a failure; wakes the tailer for every
/// notification and after every reconnection (notifications sent while
/// the connection was down are lost).
async fn listen(options: PgConnectOptions, heard: Arc<Heard>, stop: CancellationToken) {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options);
    let mut listener: Option<PgListener> = None;
    let mut failing = false;
    loop {
        if listener.is_none() {
            let connected = async {
                let mut l = PgListener::connect_with(&pool).await?;
                l.listen(CHANNEL).await?;
                Ok::<_, sqlx::Error>(l)
            };
            let result = tokio::select! {
                () = stop.cancelled() => break,
                r = connected => r,
            };
            match result {
                Ok(l) => {
                    listener = Some(l);
                    failing = false;
                    heard.lost.store(true, Ordering::Release);
                    heard.wake.notify_one();
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "listening for new events failed; polling until it works");
                    }
                    failing = true;
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(RECONNECT) => continue,
                    }
                }
            }
        }
        let Some(l) = listener.as_mut() else {
            continue;
        };
        let got = tokio::select! {
            () = stop.cancelled() => break,
            r = l.try_recv() => r,
        };
        match got {
            Ok(Some(n)) => {
                if let Ok(head) = n.payload().parse::<u64>() {
                    heard.head.fetch_max(head, Ordering::AcqRel);
                }
                heard.wake.notify_one();
            }
            // The connection was lost (and opened again): what was
            // notified meanwhile is lost, so catch up.
            Ok(None) => {
                heard.lost.store(true, Ordering::Release);
                heard.wake.notify_one();
            }
            Err(e) => {
                tracing::debug!(error = %e, "the event listener's connection failed");
                listener = None;
            }
        }
    }
    drop(listener);
    pool.close().await;
}
