//! Priorities and the queue: the values a task waits in the queue with and
//! the pure rules of its order. Where the queue lives and how it is
//! dispatched: `store::queue` (the rows) and `core::queue` (the
//! dispatcher); docs/architecture.md "The queue".
//!
//! Order: strict priority, then first queued first. Within a template the
//! dispatcher always starts the task that sorts first by
//! ([`Priority`] descending, enqueue sequence ascending); the sequence is
//! the position of the task's `pod_queued` event, so it is total and
//! durable. Strict, not aged: a priority is a promise that urgent work is
//! never held back by background work, and the order a task sees in
//! `queue_position` is the one it gets. Starvation of low priorities is
//! bounded by `queue_timeout_seconds`, not by promotion.

use crate::error::{Error, Result};

/// How urgently a task gets a pod when capacity is short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Background work.
    Low,
    /// The default.
    #[default]
    Medium,
    /// Ahead of medium.
    High,
    /// Ahead of everything.
    Critical,
}

impl Priority {
    /// Every value, lowest first.
    pub const ALL: [Self; 4] = [Self::Low, Self::Medium, Self::High, Self::Critical];

    /// How it is stored: 1 (low) .. 4 (critical), so `ORDER BY priority
    /// DESC` is the dispatch order.
    pub const fn as_db(self) -> i64 {
        match self {
            Self::Low => 1,
            Self::Medium => 2,
            Self::High => 3,
            Self::Critical => 4,
        }
    }

    /// Parses a stored value.
    pub fn from_db(v: i64) -> Result<Self> {
        match v {
            1 => Ok(Self::Low),
            2 => Ok(Self::Medium),
            3 => Ok(Self::High),
            4 => Ok(Self::Critical),
            other => Err(Error::Internal(format!(
                "bad priority in database: {other}"
            ))),
        }
    }

    /// Its lowercase name (metrics labels, event data).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// Why a queued task waits (`Task.waiting_for`).
pub const WAITING_FOR_CAPACITY: &str = "capacity";

/// A task's place in the queue, as stored and as GetTask shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueEntry {
    /// The position of its `pod_queued` event: FIFO within a priority.
    pub seq: i64,
    /// When it entered the queue, unix µs.
    pub queued_at: i64,
    /// 1-based place in its template's queue (computed on read).
    pub position: u32,
}

/// The head of one template's queue: the next task to start there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueHead {
    /// The task.
    pub task_id: super::TaskId,
    /// Its priority.
    pub priority: Priority,
    /// Its enqueue sequence.
    pub seq: i64,
}

/// Whether a new request of `priority` must wait behind `head` (the
/// current head of its template's queue): it must when the head is of the
/// same or a higher priority, so a start that finds room never overtakes
/// a task that waited for it (FIFO within a priority, strict between).
pub fn must_wait_behind(priority: Priority, head: Option<&QueueHead>) -> bool {
    head.is_some_and(|h| h.priority >= priority)
}

/// When a task queued at `queued_at` with `timeout_seconds` expires.
pub fn expires_at(queued_at: i64, timeout_seconds: u32) -> i64 {
    super::timeout::pod_timeout_at(queued_at, timeout_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TaskId;

    #[test]
    fn stored_values_order_by_urgency() {
        for p in Priority::ALL {
            assert_eq!(Priority::from_db(p.as_db()).unwrap(), p);
        }
        assert!(Priority::Critical > Priority::High);
        assert!(Priority::High > Priority::Medium);
        assert!(Priority::Medium > Priority::Low);
        assert!(Priority::Critical.as_db() > Priority::Low.as_db());
        assert!(Priority::from_db(0).is_err());
        assert!(Priority::from_db(5).is_err());
        assert_eq!(Priority::default(), Priority::Medium);
    }

    #[test]
    fn a_start_waits_behind_an_equal_or_higher_head() {
        let head = |priority| QueueHead {
            task_id: TaskId::new(),
            priority,
            seq: 7,
        };
        assert!(!must_wait_behind(Priority::Low, None));
        assert!(must_wait_behind(
            Priority::Medium,
            Some(&head(Priority::Medium))
        ));
        assert!(must_wait_behind(
            Priority::Medium,
            Some(&head(Priority::High))
        ));
        assert!(!must_wait_behind(
            Priority::High,
            Some(&head(Priority::Medium))
        ));
        assert!(!must_wait_behind(
            Priority::Critical,
            Some(&head(Priority::High))
        ));
    }

    #[test]
    fn expiry_counts_from_the_enqueue_time() {
        assert_eq!(expires_at(1_000_000, 2), 3_000_000);
        assert_eq!(expires_at(i64::MAX - 1, 5), i64::MAX);
    }
}
