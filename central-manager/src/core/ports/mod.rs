//! The core's ports: the narrow traits through which the supervision core
//! reaches the world, and nothing else.
//!
//! | port | what | production adapter | simulation adapter |
//! |---|---|---|---|
//! | [`TaskStore`] | writes (claims, pod commands) and reads | `store::Store` (SQLite, group commit); `store::postgres::PgStore` (PostgreSQL, the same commands in its own SQL) | `store::memory::MemoryStore` with injected faults |
//! | [`ScheduleStore`] | the task store plus the schedule reads | `store::Store`; `store::postgres::PgStore` | `store::memory::MemoryStore` |
//! | [`RetentionStore`] | the task store plus the retention reads (CancelTasks' selection, deletions log, GetStats) | `store::Store`; `store::postgres::PgStore` | — |
//! | [`LeaseStore`] | the leader lease row and the replicas table (replicas) | `store::lease` (SQLite); `store::postgres::lease` | — (the simulated central always leads) |
//! | [`HostCommands`] | StartPod/StopPod/GetPodLogs of one host | `hosts::grpc` (tonic client) | the simulator's pod-hosts over its network |
//! | [`Dialer`] | a supervision stream to a host ([`Link`]) | `hosts::grpc` | the simulator's network |
//! | [`Clock`] | monotonic and wall-clock now | [`SystemClock`] | [`DerivedClock`] on a paused runtime |
//! | [`Entropy`] | jitter and ids | [`OsEntropy`] | a seeded generator |
//!
//! What crosses a port is domain types (`crate::domain`, `domain::host`
//! for the pod-host protocol), never proto or SQL types. The core's inputs
//! are RPC commands (`TaskService` methods), host messages (through the
//! sessions) and timers (tokio's, virtual under the simulator); its
//! outputs are store commands, host commands and replies.

pub mod clock;
pub mod entropy;
pub mod hosts;
pub mod lease;
pub mod queue;
pub mod retention;
pub mod schedules;
pub mod store;

use std::sync::Arc;

pub use clock::{Clock, DerivedClock, SystemClock};
pub use entropy::{Entropy, OsEntropy};
pub use hosts::{Dialer, HostCommands, HostLogStream, Link};
pub use lease::LeaseStore;
pub use retention::RetentionStore;
pub use schedules::ScheduleStore;
pub use store::TaskStore;

use super::bugs::SimBugs;

/// The ports every part of the core shares. Cheap to clone.
#[derive(Clone)]
pub struct Ports {
    pub store: Arc<dyn TaskStore>,
    pub clock: Arc<dyn Clock>,
    pub entropy: Arc<dyn Entropy>,
    /// Past bugs the simulator may switch back on (always off in
    /// production: nothing outside the simulator sets them).
    pub bugs: SimBugs,
}

impl Ports {
    /// Production ports over `store`: the system clock and OS randomness.
    pub fn production(store: Arc<dyn TaskStore>) -> Self {
        Self {
            store,
            clock: Arc::new(SystemClock),
            entropy: Arc::new(OsEntropy),
            bugs: SimBugs::default(),
        }
    }
}
