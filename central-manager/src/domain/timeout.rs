//! Run timeouts and task deadlines: the limits on the inputs and the pure
//! computation of when each timer is due, from stored times (when central
//! saw the pod running plus its task's `timeout_seconds`; a task's
//! `deadline`). Nothing here sleeps: the loop in `core::timeouts` arms its sleep from these.

use super::{PodRef, TaskId};
use crate::error::{Error, Result};

/// `timeout_seconds` at most: a week. Longer runs are better bounded by a
/// deadline, and a week keeps `started_at + timeout` far from overflow.
pub const MAX_TIMEOUT_SECONDS: u32 = 604_800;

/// How far in the future a deadline may be: ten years (bounds the value so
/// the timer arithmetic cannot overflow, and catches unit mistakes).
pub const MAX_DEADLINE_AHEAD_SECONDS: i64 = 10 * 366 * 24 * 3600;

const MICROS: i64 = 1_000_000;

/// Checks a requested `timeout_seconds` (1..=[`MAX_TIMEOUT_SECONDS`]).
pub fn check_timeout(field: &'static str, seconds: u32) -> Result<u32> {
    if (1..=MAX_TIMEOUT_SECONDS).contains(&seconds) {
        Ok(seconds)
    } else {
        Err(Error::invalid(
            field,
            format!("must be between 1 and {MAX_TIMEOUT_SECONDS} seconds, got {seconds}"),
        ))
    }
}

/// Checks a requested deadline (unix µs) against `now`: it must be later
/// than now and at most [`MAX_DEADLINE_AHEAD_SECONDS`] ahead.
pub fn check_deadline(field: &'static str, deadline: i64, now: i64) -> Result<i64> {
    if deadline <= now {
        return Err(Error::invalid(field, "is in the past; give a future time"));
    }
    if deadline - now > MAX_DEADLINE_AHEAD_SECONDS * MICROS {
        return Err(Error::invalid(field, "is more than ten years ahead"));
    }
    Ok(deadline)
}

/// When a pod started at `started_at` (unix µs) with `timeout_seconds`
/// times out.
pub fn pod_timeout_at(started_at: i64, timeout_seconds: u32) -> i64 {
    started_at.saturating_add(i64::from(timeout_seconds).saturating_mul(MICROS))
}

/// One timer read from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer {
    /// `pod` (running on `host_id`) runs longer than `timeout_seconds`.
    PodTimeout {
        /// The pod.
        pod: PodRef,
        /// Its host.
        host_id: String,
        /// The task's timeout.
        timeout_seconds: u32,
        /// When it is due (start + timeout), unix µs.
        at: i64,
    },
    /// The task is not terminal at its deadline.
    Deadline {
        /// The task.
        task_id: TaskId,
        /// Its deadline, unix µs.
        at: i64,
    },
    /// The task waited in the queue (entry `seq`) longer than its
    /// `queue_timeout_seconds`.
    QueueExpiry {
        /// The task.
        task_id: TaskId,
        /// The queue entry the timer is about.
        seq: i64,
        /// queued_at + queue timeout, unix µs.
        at: i64,
    },
}

impl Timer {
    /// When it is due, unix µs.
    pub fn at(&self) -> i64 {
        match self {
            Self::PodTimeout { at, .. }
            | Self::Deadline { at, .. }
            | Self::QueueExpiry { at, .. } => *at,
        }
    }

    /// The task it is about.
    pub fn task_id(&self) -> TaskId {
        match self {
            Self::PodTimeout { pod, .. } => pod.task_id,
            Self::Deadline { task_id, .. } | Self::QueueExpiry { task_id, .. } => *task_id,
        }
    }
}

/// When the loop wakes next: the earliest timer, but no later than `cap`
/// after `now` (so a wall-clock step is noticed).
pub fn wake_at(now: i64, earliest: Option<i64>, cap_micros: i64) -> i64 {
    let cap = now.saturating_add(cap_micros);
    earliest.map_or(cap, |at| at.min(cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_is_start_plus_seconds() {
        assert_eq!(pod_timeout_at(1_000_000, 5), 6_000_000);
        assert_eq!(
            pod_timeout_at(0, MAX_TIMEOUT_SECONDS),
            i64::from(MAX_TIMEOUT_SECONDS) * MICROS
        );
        // Never overflows, whatever a row holds.
        assert_eq!(pod_timeout_at(i64::MAX - 1, 10), i64::MAX);
    }

    #[test]
    fn timeouts_are_bounded() {
        assert!(check_timeout("timeout_seconds", 0).is_err());
        assert_eq!(check_timeout("timeout_seconds", 1).unwrap(), 1);
        assert!(check_timeout("timeout_seconds", MAX_TIMEOUT_SECONDS).is_ok());
        let e = check_timeout("timeout_seconds", MAX_TIMEOUT_SECONDS + 1).unwrap_err();
        assert!(e.to_string().contains("timeout_seconds"), "{e}");
    }

    #[test]
    fn deadlines_must_be_ahead() {
        let now = 1_700_000_000_000_000;
        let e = check_deadline("deadline", now - 1, now).unwrap_err();
        assert!(e.to_string().contains("deadline"), "{e}");
        assert!(check_deadline("deadline", now, now).is_err());
        assert_eq!(check_deadline("deadline", now + 1, now).unwrap(), now + 1);
        let far = now + MAX_DEADLINE_AHEAD_SECONDS * MICROS + 1;
        assert!(check_deadline("deadline", far, now).is_err());
    }

    #[test]
    fn wakes_at_the_earliest_timer_or_the_cap() {
        let now = 1_000;
        assert_eq!(wake_at(now, None, 60), now + 60);
        assert_eq!(wake_at(now, Some(now + 5), 60), now + 5);
        assert_eq!(wake_at(now, Some(now + 61), 60), now + 60);
        // Already due: wake at once.
        assert_eq!(wake_at(now, Some(now - 10), 60), now - 10);
    }
}
