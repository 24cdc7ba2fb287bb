//! The queue's writes (see `store::queue` for their SQL and
//! `core::queue` for the dispatcher that empties the queue).
//!
//! Each is conditional on the row, like every store command: an enqueue
//! applies only to a live task with no pod, an unqueue or expiry only to
//! a task still in the queue (and an expiry only to the same queue entry
//! the timer saw), so each races the dispatcher's claim safely: whichever
//! commits first wins.

use crate::domain::{Cause, TaskId};

/// A queue write.
#[derive(Debug, Clone)]
pub enum QueueWrite {
    /// No pod-host has room: the task waits (`pod_queued`). A task already
    /// queued stays where it is.
    Enqueue {
        task_id: TaskId,
        cause: Cause,
        /// Why it could not start (the NO_POD_HOST message).
        message: String,
    },
    /// StopPod on a queued task: out of the queue, INACTIVE, `pod_stopped`
    /// with `{"queued": true}`.
    Unqueue {
        task_id: TaskId,
        cause: Cause,
        reason: String,
    },
    /// The queue timeout of the entry `seq` passed: INACTIVE,
    /// `queue_expired`.
    Expire { task_id: TaskId, seq: i64 },
}

/// What a [`QueueWrite`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueOutcome {
    /// The task is in the queue; `already`: it was before this write.
    Queued { already: bool },
    /// Taken out of the queue (Unqueue) or expired (Expire).
    Removed,
    /// Not in the queue (any more): nothing changed.
    NotQueued,
}
