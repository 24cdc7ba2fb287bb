//! Exponential backoff with jitter: how long to wait before attempt `n`. Used for
//! reconnecting to pod-hosts, retrying supervision writes and the restart
//! policy. Jitter spreads a reconnect storm across the whole fleet.

use std::time::Duration;

/// Delay before attempt `attempt` (0-based): `initial · 2^attempt`, capped
/// at `max`, then scaled by `jitter` ∈ [0, 1] mapped to [50 %, 100 %] of
/// the value ("equal jitter": never less than half, so a flapping peer is
/// not hammered).
pub fn delay(initial: Duration, max: Duration, attempt: u32, jitter: f64) -> Duration {
    let exp = initial.saturating_mul(2u32.saturating_pow(attempt.min(31)));
    let capped = exp.min(max);
    let j = jitter.clamp(0.0, 1.0);
    capped.mul_f64(0.5 + 0.5 * j)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_then_caps() {
        assert_eq!(delay(100 * MS, 5000 * MS, 0, 1.0), 100 * MS);
        assert_eq!(delay(100 * MS, 5000 * MS, 1, 1.0), 200 * MS);
        assert_eq!(delay(100 * MS, 5000 * MS, 5, 1.0), 3200 * MS);
        assert_eq!(delay(100 * MS, 5000 * MS, 6, 1.0), 5000 * MS);
        assert_eq!(delay(100 * MS, 5000 * MS, 1000, 1.0), 5000 * MS);
    }

    #[test]
    fn jitter_stays_within_half_and_full() {
        assert_eq!(delay(100 * MS, 5000 * MS, 2, 0.0), 200 * MS);
        assert_eq!(delay(100 * MS, 5000 * MS, 2, 0.5), 300 * MS);
        assert_eq!(delay(Duration::ZERO, 5000 * MS, 3, 0.7), Duration::ZERO);
    }
}
