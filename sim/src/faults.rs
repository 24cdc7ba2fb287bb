//! The simulated store's faults, switched by the plan: an outage (every
//! write fails, probes included, so the breaker opens and stays open until
//! it ends), a stall (the next write hangs, holding up every write behind
//! it) and a lost reply (the next write commits but its caller is told
//! EVENT_STORE_UNAVAILABLE).

use std::sync::Mutex;
use std::time::Duration;

use central_manager::store::Command;
use central_manager::store::memory::{WriteFault, WriteFaults};
use tokio::time::Instant;

#[derive(Default)]
struct State {
    outage_until: Option<Instant>,
    stall_next: Option<Duration>,
    lose_next_reply: bool,
}

/// The store's fault switches.
#[derive(Default)]
pub struct StoreFaults(Mutex<State>);

impl StoreFaults {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every write fails for `lasts`.
    pub fn outage(&self, lasts: Duration) {
        let until = Instant::now() + lasts;
        let mut g = self.lock();
        g.outage_until = Some(g.outage_until.map_or(until, |u| u.max(until)));
    }

    /// The next write hangs for `lasts`.
    pub fn stall(&self, lasts: Duration) {
        self.lock().stall_next = Some(lasts);
    }

    /// The next write's reply is lost after its commit.
    pub fn lose_next_reply(&self) {
        self.lock().lose_next_reply = true;
    }

    /// Ends every fault now.
    pub fn heal(&self) {
        *self.lock() = State::default();
    }
}

impl WriteFaults for StoreFaults {
    fn on_write(&self, command: &Command) -> WriteFault {
        let mut g = self.lock();
        if g.outage_until.is_some_and(|u| Instant::now() < u) {
            return WriteFault::Fail;
        }
        if let Some(d) = g.stall_next.take() {
            return WriteFault::Stall(d);
        }
        if g.lose_next_reply && !command.is_probe() {
            g.lose_next_reply = false;
            return WriteFault::CommitThenFail;
        }
        WriteFault::None
    }
}
