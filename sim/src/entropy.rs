//! The core's entropy port, seeded: jitter and ids come from one generator
//! per run, so a seed replays a whole run. Ids are UUID v7 with the
//! virtual wall clock's time, as the production ids carry real time.

use std::sync::{Arc, Mutex};

use central_manager::core::ports::{Clock, Entropy};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

/// Seeded randomness.
pub struct SeededEntropy {
    rng: Mutex<StdRng>,
    clock: Arc<dyn Clock>,
}

impl SeededEntropy {
    pub fn new(seed: u64, clock: Arc<dyn Clock>) -> Self {
        Self {
            rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0x656e_7472_6f70_7900)),
            clock,
        }
    }
}

impl Entropy for SeededEntropy {
    fn jitter(&self) -> f64 {
        self.rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .random::<f64>()
    }

    fn new_id(&self) -> Uuid {
        let bytes: [u8; 10] = self.rng.lock().unwrap_or_else(|e| e.into_inner()).random();
        let ms = u64::try_from(self.clock.wall_micros() / 1000).unwrap_or(0);
        uuid::Builder::from_unix_timestamp_millis(ms, &bytes).into_uuid()
    }
}
