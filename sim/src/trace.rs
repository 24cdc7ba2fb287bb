//! What happened in a run, in order, for the report of a failure: the
//! plan's steps as they were carried out, the outcome of each client
//! operation, and noteworthy moves of the simulated world (a host frozen,
//! a pod started, a self-fence). Kept bounded: only the last entries are
//! printed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

/// Most entries kept.
const KEEP: usize = 400;

/// Shared, cheap to clone.
#[derive(Clone)]
pub struct Trace {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    start: Instant,
    lines: VecDeque<String>,
    dropped: usize,
}

impl Trace {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                start: Instant::now(),
                lines: VecDeque::new(),
                dropped: 0,
            })),
        }
    }

    /// Notes `line` at the current virtual time.
    pub fn note(&self, line: impl Into<String>) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let t = Instant::now().saturating_duration_since(g.start);
        g.lines
            .push_back(format!("{:>9.3}s  {}", t.as_secs_f64(), line.into()));
        if g.lines.len() > KEEP {
            g.lines.pop_front();
            g.dropped += 1;
        }
    }

    /// The entries kept, oldest first.
    pub fn lines(&self) -> Vec<String> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(g.lines.len() + 1);
        if g.dropped > 0 {
            out.push(format!("… {} earlier entries", g.dropped));
        }
        out.extend(g.lines.iter().cloned());
        out
    }
}

impl Default for Trace {
    fn default() -> Self {
        Self::new()
    }
}
