//! Latency samples and their summary (median, p99, rate), and the
//! concurrent load driver every throughput figure uses.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A set of latency samples.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    v: Vec<Duration>,
}

impl Samples {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, d: Duration) {
        self.v.push(d);
    }

    pub fn extend(&mut self, other: Samples) {
        self.v.extend(other.v);
    }

    pub fn len(&self) -> usize {
        self.v.len()
    }

    /// The `q` quantile (0..=1), nearest rank; zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.v.is_empty() {
            return Duration::ZERO;
        }
        let mut v = self.v.clone();
        v.sort_unstable();
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    }

    pub fn p50(&self) -> Duration {
        self.quantile(0.5)
    }

    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }

    pub fn max(&self) -> Duration {
        self.v.iter().max().copied().unwrap_or_default()
    }
}

/// Milliseconds with a precision that suits the magnitude.
pub fn ms(d: Duration) -> String {
    let m = d.as_secs_f64() * 1e3;
    if m < 1.0 {
        format!("{m:.3} ms")
    } else if m < 100.0 {
        format!("{m:.2} ms")
    } else {
        format!("{m:.0} ms")
    }
}

/// `p50 X / p99 Y (n=N)`.
pub fn p50_p99(s: &Samples) -> String {
    format!("p50 {} / p99 {} (n={})", ms(s.p50()), ms(s.p99()), s.len())
}

/// Result of a concurrent load run.
#[derive(Default)]
pub struct Load {
    pub samples: Samples,
    pub ok: usize,
    pub errors: usize,
    pub elapsed: Duration,
}

impl Load {
    /// Successful calls per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `op(client_index, call_index)` from `clients` concurrent workers
/// until `total` calls are done or `duration` has passed (whichever is
/// set and first). Each worker owns its state `S` (e.g. its own gRPC
/// connection), made by `make`. Latency is recorded for successful calls.
pub async fn drive<S, M, MF, O, OF, E>(
    clients: usize,
    total: Option<usize>,
    duration: Option<Duration>,
    make: M,
    op: O,
) -> Load
where
    S: Send + 'static,
    M: Fn(usize) -> MF,
    MF: Future<Output = S>,
    O: Fn(S, usize) -> OF + Send + Sync + 'static,
    OF: Future<Output = (S, Result<(), E>)> + Send,
    E: std::fmt::Display + Send,
{
    let mut states = Vec::with_capacity(clients);
    for i in 0..clients {
        states.push(make(i).await);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let op = Arc::new(op);
    let start = Instant::now();
    let deadline = duration.map(|d| start + d);
    let mut workers = Vec::with_capacity(clients);
    for state in states {
        let next = next.clone();
        let op = op.clone();
        workers.push(tokio::spawn(async move {
            let mut state = state;
            let mut samples = Samples::new();
            let mut errors = 0usize;
            let mut first_error: Option<String> = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if total.is_some_and(|t| i >= t) || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let t0 = Instant::now();
                let (s, r) = op(state, i).await;
                state = s;
                match r {
                    Ok(()) => samples.push(t0.elapsed()),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (samples, errors, first_error)
        }));
    }
    let mut samples = Samples::new();
    let mut errors = 0;
    for w in workers {
        let (s, e, first) = w.await.expect("load worker");
        if let Some(f) = first {
            eprintln!("  load error (first of this worker): {f}");
        }
        samples.extend(s);
        errors += e;
    }
    let elapsed = start.elapsed();
    Load {
        ok: samples.len(),
        samples,
        errors,
        elapsed,
    }
}
