//! The entropy port: every random choice the core makes (restart and
//! reconnect jitter) and every id it mints (task ids, pod ids). In
//! production it is the OS's randomness; the simulator seeds it, so one
//! seed replays a whole run.

use uuid::Uuid;

/// Randomness and ids.
pub trait Entropy: Send + Sync + 'static {
    /// A uniform value in [0, 1) (backoff and restart jitter).
    fn jitter(&self) -> f64;

    /// A fresh time-ordered id (UUID v7) for a task or a pod.
    fn new_id(&self) -> Uuid;
}

/// The production source: the thread RNG and `Uuid::now_v7`.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn jitter(&self) -> f64 {
        rand::random::<f64>()
    }

    fn new_id(&self) -> Uuid {
        Uuid::now_v7()
    }
}
