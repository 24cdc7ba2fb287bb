//! The restart policy decision, as a pure function of the task's policy,
//! its crash history and the time.
//!
//! Rule (docs/api.md, docs/architecture.md): when auto-restart is on, a crash restarts the
//! pod after an exponential backoff (initial, ×2 per crash in the window,
//! capped, with jitter); more than `max_restarts` crashes within
//! `window_seconds` fail the task instead. So a pod that always crashes is
//! restarted exactly `max_restarts` times, and its next crash fails the
//! task. Crashes older than the window no longer count, which also resets
//! the backoff.

use std::time::Duration;

use super::backoff;

/// The effective policy of one task (defaults already applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub auto_restart: bool,
    pub max_restarts: u32,
    pub window: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

/// What to do after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Auto-restart is off: the task stays inactive.
    Stay,
    /// Restart after `delay`; this is crash number `crashes_in_window`.
    Restart {
        delay: Duration,
        crashes_in_window: u32,
    },
    /// The budget is spent: fail the task.
    GiveUp { crashes_in_window: u32 },
}

/// Decides after a crash at `now_us`. `history_us` holds the times (Unix
/// µs) of this task's earlier crashes, in any order; the current crash is
/// not in it. `jitter` ∈ [0, 1] (random in production, fixed in tests).
pub fn decide(policy: &Policy, history_us: &[i64], now_us: i64, jitter: f64) -> Decision {
    if !policy.auto_restart {
        return Decision::Stay;
    }
    let window_us = i64::try_from(policy.window.as_micros()).unwrap_or(i64::MAX);
    let since = now_us.saturating_sub(window_us);
    let earlier = history_us
        .iter()
        .filter(|&&t| t > since && t <= now_us)
        .count();
    let crashes_in_window = u32::try_from(earlier).unwrap_or(u32::MAX).saturating_add(1);
    if crashes_in_window > policy.max_restarts {
        return Decision::GiveUp { crashes_in_window };
    }
    let delay = backoff::delay(
        policy.initial_backoff,
        policy.max_backoff,
        crashes_in_window - 1,
        jitter,
    );
    Decision::Restart {
        delay,
        crashes_in_window,
    }
}

/// Crash history older than this is pruned (hourly): longer than any
/// sensible window, short enough to keep the table small.
pub const HISTORY_RETENTION: Duration = Duration::from_secs(24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    fn policy() -> Policy {
        Policy {
            auto_restart: true,
            max_restarts: 3,
            window: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(250),
        }
    }

    #[test]
    fn off_means_stay() {
        let p = Policy {
            auto_restart: false,
            ..policy()
        };
        assert_eq!(decide(&p, &[], 100 * S, 1.0), Decision::Stay);
    }

    #[test]
    fn always_crashing_restarts_exactly_max_restarts_times() {
        let p = policy();
        let mut history = vec![];
        let mut restarts = 0;
        let mut now = 1000 * S;
        loop {
            match decide(&p, &history, now, 1.0) {
                Decision::Restart { .. } => restarts += 1,
                Decision::GiveUp { crashes_in_window } => {
                    assert_eq!(crashes_in_window, 4);
                    break;
                }
                Decision::Stay => unreachable!(),
            }
            history.push(now);
            now += S;
        }
        assert_eq!(restarts, 3);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let p = policy();
        let d = |h: &[i64]| match decide(&p, h, 100 * S, 1.0) {
            Decision::Restart { delay, .. } => delay,
            other => panic!("{other:?}"),
        };
        assert_eq!(d(&[]), Duration::from_millis(100));
        assert_eq!(d(&[99 * S]), Duration::from_millis(200));
        assert_eq!(d(&[98 * S, 99 * S]), Duration::from_millis(250));
    }

    #[test]
    fn zero_initial_backoff_restarts_at_once() {
        let p = Policy {
            initial_backoff: Duration::ZERO,
            ..policy()
        };
        assert_eq!(
            decide(&p, &[99 * S], 100 * S, 0.3),
            Decision::Restart {
                delay: Duration::ZERO,
                crashes_in_window: 2
            }
        );
    }

    #[test]
    fn crashes_outside_the_window_do_not_count() {
        let p = policy();
        // Three old crashes, just outside 60 s: this one is the first again.
        let h = [10 * S, 20 * S, 40 * S];
        assert_eq!(
            decide(&p, &h, 100 * S, 1.0),
            Decision::Restart {
                delay: Duration::from_millis(100),
                crashes_in_window: 1
            }
        );
        // Exactly at the window edge is outside; one µs inside counts.
        assert!(matches!(
            decide(&p, &[40 * S + 1, 50 * S, 60 * S], 100 * S, 1.0),
            Decision::GiveUp {
                crashes_in_window: 4
            }
        ));
    }

    #[test]
    fn max_restarts_zero_fails_on_first_crash() {
        let p = Policy {
            max_restarts: 0,
            ..policy()
        };
        assert_eq!(
            decide(&p, &[], 5 * S, 0.0),
            Decision::GiveUp {
                crashes_in_window: 1
            }
        );
    }

    mod properties {
        use proptest::collection::vec;
        use proptest::prelude::*;

        use super::*;

        prop_compose! {
            fn policy()(
                auto_restart in any::<bool>(),
                max_restarts in 0u32..=1000,
                window in 0u64..=604_800,
                initial in 0u64..=3_600_000,
                max in 0u64..=3_600_000,
            ) -> Policy {
                Policy {
                    auto_restart,
                    max_restarts,
                    window: Duration::from_secs(window),
                    initial_backoff: Duration::from_millis(initial),
                    max_backoff: Duration::from_millis(max),
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// The decision is the documented rule: off → stay; else crash
            /// number n in the window (earlier ones in (now − window, now]
            /// plus this one) restarts while n ≤ max_restarts, after a
            /// delay within [½, 1] of min(initial · 2^(n−1), max), and gives
            /// up after.
            #[test]
            fn decide_follows_the_rule(
                p in policy(),
                history in vec(-2_000_000_000_000i64..2_000_000_000_000, 0..40),
                now in 0i64..2_000_000_000_000,
                jitter in 0.0f64..=1.0,
            ) {
                let window_us = p.window.as_micros() as i64;
                let earlier = history.iter().filter(|&&t| t > now - window_us && t <= now).count() as u32;
                let n = earlier + 1;
                match decide(&p, &history, now, jitter) {
                    Decision::Stay => prop_assert!(!p.auto_restart),
                    Decision::GiveUp { crashes_in_window } => {
                        prop_assert!(p.auto_restart);
                        prop_assert_eq!(crashes_in_window, n);
                        prop_assert!(n > p.max_restarts);
                    }
                    Decision::Restart { delay, crashes_in_window } => {
                        prop_assert!(p.auto_restart);
                        prop_assert_eq!(crashes_in_window, n);
                        prop_assert!(n <= p.max_restarts);
                        let full = p.initial_backoff.saturating_mul(2u32.saturating_pow((n - 1).min(31))).min(p.max_backoff);
                        prop_assert!(delay <= full);
                        prop_assert!(delay >= full / 2);
                    }
                }
            }

            /// An always-crashing pod is restarted exactly max_restarts
            /// times within one window, whatever the policy.
            #[test]
            fn always_crashing_stops_after_max_restarts(p in policy(), jitter in 0.0f64..=1.0) {
                let p = Policy { auto_restart: true, window: p.window.max(Duration::from_secs(3600)), ..p };
                let mut history = Vec::new();
                let mut now = 1_000_000_000i64;
                let mut restarts = 0;
                loop {
                    match decide(&p, &history, now, jitter) {
                        Decision::Restart { .. } => restarts += 1,
                        Decision::GiveUp { .. } => break,
                        Decision::Stay => prop_assert!(false, "auto_restart is on"),
                    }
                    history.push(now);
                    now += 1_000; // 1 ms apart: all inside the window
                    prop_assert!(restarts <= 1000);
                }
                prop_assert_eq!(restarts, p.max_restarts);
            }
        }
    }
}
