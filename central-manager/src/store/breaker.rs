//! The store's circuit breaker: after [`OPEN_AFTER`] write batches in a row
//! fail because the database cannot be written (full disk, read-only file,
//! lock held elsewhere, I/O errors), the breaker *opens*: every write is
//! refused at once with EVENT_STORE_UNAVAILABLE instead of queueing behind
//! a database that keeps failing, and grpc health reports NOT_SERVING for
//! `ipa.v1.CentralManager`. While open, the [`Prober`] writes one small row
//! through the writer with a backoff from [`PROBE_INITIAL`] to
//! [`PROBE_MAX`]; the first success closes the breaker, so writes and
//! health come back by themselves within about [`PROBE_MAX`] of the
//! database recovering.
//!
//! Any committed batch closes the breaker and resets the failure count.
//! Reads do not go through the breaker: they keep being served while the
//! read connections work.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use futures::future::BoxFuture;

use super::writer::WriterHandle;
use crate::error::Result;

/// Failed batches in a row that open the breaker. One failure may be a
/// transient lock held by a backup tool; three in a row are an outage.
pub const OPEN_AFTER: u32 = 3;

/// First probe delay after opening.
pub const PROBE_INITIAL: Duration = Duration::from_millis(50);

/// Longest delay between probes: bounds how long writes stay refused after
/// the database is back (API.md: SERVING again within 2 s).
pub const PROBE_MAX: Duration = Duration::from_millis(800);

/// Shared breaker state. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Breaker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    failures: AtomicU32,
    open: AtomicBool,
    /// `true` while open; health and waiting tasks watch it.
    state: watch::Sender<bool>,
}

impl Default for Breaker {
    fn default() -> Self {
        Self::new()
    }
}

impl Breaker {
    /// A closed breaker.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                failures: AtomicU32::new(0),
                open: AtomicBool::new(false),
                state: watch::channel(false).0,
            }),
        }
    }

    /// Whether writes are being refused.
    pub fn is_open(&self) -> bool {
        self.inner.open.load(Ordering::Acquire)
    }

    /// A batch committed: the database is writable.
    pub fn record_success(&self) {
        self.inner.failures.store(0, Ordering::Relaxed);
        if self.inner.open.swap(false, Ordering::AcqRel) {
            tracing::info!("event store writable again; circuit breaker closed");
            self.inner.state.send_replace(false);
        }
    }

    /// A batch failed because the database could not be written.
    pub fn record_failure(&self) {
        let n = self.inner.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= OPEN_AFTER {
            self.open(&format!("{n} write batches failed in a row"));
        }
    }

    /// Opens the breaker at once (e.g. the database could not be migrated
    /// at start-up).
    pub fn open(&self, why: &str) {
        if !self.inner.open.swap(true, Ordering::AcqRel) {
            tracing::error!(%why, "event store unavailable; circuit breaker open, writes refused until a probe succeeds");
            self.inner.state.send_replace(true);
        }
    }

    /// Watches the state: `true` while open.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.inner.state.subscribe()
    }

    /// Returns once the breaker is closed (at once if it is).
    pub async fn closed(&self) {
        let mut rx = self.subscribe();
        let _ = rx.wait_for(|open| !*open).await;
    }
}

/// The delay before probe number `attempt` (0-based): doubling from
/// [`PROBE_INITIAL`], capped at [`PROBE_MAX`].
pub fn probe_delay(attempt: u32) -> Duration {
    PROBE_INITIAL
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(PROBE_MAX)
}

/// One probe write (a success closes the breaker).
pub type Probe = Arc<dyn Fn() -> BoxFuture<'static, Result<()>> + Send + Sync>;

/// The background loop that closes an open breaker: probes the database
/// through the writer with backoff while the breaker is open.
pub struct Prober {
    breaker: Breaker,
    probe: Probe,
}

impl Prober {
    /// Probes through the production writer.
    pub fn new(breaker: Breaker, writer: WriterHandle) -> Self {
        let probe: Probe = Arc::new(move || {
            let writer = writer.clone();
            Box::pin(async move { writer.probe().await })
        });
        Self::with_probe(breaker, probe)
    }

    /// Probes with `probe` (another store adapter's write path).
    pub fn with_probe(breaker: Breaker, probe: Probe) -> Self {
        Self { breaker, probe }
    }

    /// Runs the loop on `tracker` until `shutdown`.
    pub fn start(self, tracker: &TaskTracker, shutdown: CancellationToken) {
        tracker.spawn(
            self.run(shutdown)
                .instrument(tracing::info_span!("store_prober")),
        );
    }

    async fn run(self, shutdown: CancellationToken) {
        let mut state = self.breaker.subscribe();
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                r = state.wait_for(|open| *open) => if r.is_err() { return },
            }
            let mut attempt = 0;
            while self.breaker.is_open() {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(probe_delay(attempt)) => {}
                }
                // A success closes the breaker (the writer records it); a
                // failure is logged by the writer.
                if (self.probe)().await.is_ok() {
                    break;
                }
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_repeated_failures_and_closes_on_success() {
        let b = Breaker::new();
        let rx = b.subscribe();
        for _ in 1..OPEN_AFTER {
            b.record_failure();
            assert!(!b.is_open());
        }
        b.record_failure();
        assert!(b.is_open());
        assert!(*rx.borrow());
        b.record_success();
        assert!(!b.is_open());
        assert!(!*rx.borrow());
        // The count starts again after a success.
        b.record_failure();
        assert!(!b.is_open());
    }

    #[test]
    fn a_success_between_failures_resets_the_count() {
        let b = Breaker::new();
        for _ in 0..10 {
            b.record_failure();
            b.record_success();
        }
        assert!(!b.is_open());
    }

    #[test]
    fn probe_delays_double_and_cap() {
        assert_eq!(probe_delay(0), PROBE_INITIAL);
        assert_eq!(probe_delay(1), PROBE_INITIAL * 2);
        assert_eq!(probe_delay(2), PROBE_INITIAL * 4);
        assert_eq!(probe_delay(100), PROBE_MAX);
        // The API bound: back within 2 s of the database recovering.
        assert!(PROBE_MAX < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn closed_waits_for_the_breaker_to_close() {
        let b = Breaker::new();
        b.open("test");
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.closed().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        b.record_success();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("closed() returns once closed")
            .unwrap();
    }
}
