//! The clock port: what time it is, monotonic and wall-clock.
//!
//! Monotonic time is tokio's ([`Instant`]): it is what every timer and
//! timeout in the core sleeps on, so a simulator that runs the core on a
//! paused tokio runtime (virtual time that jumps to the next timer when
//! every task is idle) controls both "now" and every deadline with one
//! knob. Wall-clock time (event times, restart due dates, the idempotency
//! window) comes from [`Clock::wall_micros`], never from `SystemTime`
//! directly, so the simulator can derive it from virtual time.
//!
//! A later timer (a queue timeout, a schedule's next fire) needs nothing
//! new here: compute its due time from `now()`/`wall_micros()` and sleep on
//! tokio's clock (`tokio::time::sleep_until`), as the supervisor's loop does.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// What time it is.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic now (tokio's clock: virtual under a paused runtime).
    fn now(&self) -> Instant;

    /// Wall-clock now, unix µs.
    fn wall_micros(&self) -> i64;

    /// Wall-clock now.
    fn wall(&self) -> SystemTime {
        let us = u64::try_from(self.wall_micros()).unwrap_or(0);
        UNIX_EPOCH + Duration::from_micros(us)
    }

    /// The monotonic instant of a wall-clock time (unix µs); past times map
    /// to now.
    fn instant_of(&self, at_us: i64) -> Instant {
        let ahead = u64::try_from(at_us.saturating_sub(self.wall_micros())).unwrap_or(0);
        self.now() + Duration::from_micros(ahead)
    }
}

/// The production clock: tokio's monotonic clock and the system's wall
/// clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall_micros(&self) -> i64 {
        ipa_proto::time::now_micros()
    }
}

/// A clock whose wall time is a fixed origin plus the monotonic time
/// elapsed since it was made: under a paused tokio runtime it is entirely
/// virtual (the simulator's clock), and two runs that advance the same way
/// read the same times.
#[derive(Debug, Clone, Copy)]
pub struct DerivedClock {
    start: Instant,
    origin_us: i64,
}

impl DerivedClock {
    /// A clock reading `origin_us` (unix µs) now.
    pub fn new(origin_us: i64) -> Self {
        Self {
            start: Instant::now(),
            origin_us,
        }
    }
}

impl Clock for DerivedClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall_micros(&self) -> i64 {
        let elapsed = Instant::now().saturating_duration_since(self.start);
        self.origin_us
            .saturating_add(i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_derived_clock_follows_virtual_time() {
        let c = DerivedClock::new(1_000_000);
        assert_eq!(c.wall_micros(), 1_000_000);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(c.wall_micros(), 2_500_000);
        let due = c.instant_of(3_000_000);
        assert_eq!(due - c.now(), Duration::from_millis(500));
        // The past is now.
        assert_eq!(c.instant_of(0), c.now());
    }
}
