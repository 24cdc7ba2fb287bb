//! Time as an input for the loops that act at wall-clock times (the
//! schedule firing loop, the archiver): "now" and "sleep until" come from a
//! [`Clock`], so tests run them on tokio's paused clock ([`TokioClock`])
//! and a deterministic simulator can drive them later.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed sleep.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Wall-clock time in unix micros, and sleeping until one.
pub trait Clock: Send + Sync + 'static {
    /// Now, unix micros.
    fn now_micros(&self) -> i64;
    /// Completes at (or soon after) the wall time `at`; at once if it has
    /// passed.
    fn sleep_until(&self, at: i64) -> Sleep;
}

/// The system clock. A sleep is measured on the monotonic clock from the
/// moment it starts, so a wall-clock step (NTP) is noticed at the next
/// wake-up: callers cap their sleeps (the firing loop wakes at least every
/// minute).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_micros(&self) -> i64 {
        ipa_proto::time::now_micros()
    }

    fn sleep_until(&self, at: i64) -> Sleep {
        let ahead = at.saturating_sub(self.now_micros()).max(0);
        Box::pin(tokio::time::sleep(Duration::from_micros(ahead as u64)))
    }
}

/// Wall time derived from tokio's clock: `base` (unix micros) plus the time
/// elapsed since creation. Under a paused tokio runtime it is virtual time
/// that advances only when every task waits, so timer tests are exact and
/// instant.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    base: i64,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `base` now.
    pub fn starting_at(base: i64) -> Self {
        Self {
            base,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now_micros(&self) -> i64 {
        let elapsed = i64::try_from(self.start.elapsed().as_micros()).unwrap_or(i64::MAX);
        self.base.saturating_add(elapsed)
    }

    fn sleep_until(&self, at: i64) -> Sleep {
        let offset = u64::try_from(at.saturating_sub(self.base)).unwrap_or(0);
        Box::pin(tokio::time::sleep_until(
            self.start + Duration::from_micros(offset),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_sleeps_to_the_wall_time() {
        let c = TokioClock::starting_at(1_000_000);
        assert_eq!(c.now_micros(), 1_000_000);
        c.sleep_until(3_500_000).await;
        assert_eq!(c.now_micros(), 3_500_000);
        // A time in the past completes at once.
        c.sleep_until(0).await;
        assert_eq!(c.now_micros(), 3_500_000);
    }
}
