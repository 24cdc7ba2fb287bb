//! Which queued supervision jobs the applier writes together.
//!
//! Applied one at a time, each pod event waits for its own commit: one
//! fsync per event, so 1,000 pods crashing at once took the applier about
//! two seconds (and 10,000 pods starting left twenty seconds of phase
//! records behind them) while the writer sat mostly idle between commits.
//! Jobs about *different* tasks do not depend on each other, so the applier
//! takes the job at the head of the queue and, behind it, every queued job
//! about a task not yet in the group; their writes go to the writer
//! together and share its transactions (group commit). A pod's own history
//! stays in order: two jobs about one task are never in one group.
//!
//! A job about many tasks at once (a hello's reconciliation, a host's
//! silence or loss, a fenced pod, pruning) is a barrier: it is applied
//! alone, after everything queued before it and before anything queued
//! after it. Pure: tested here.

use std::collections::HashSet;

use super::host_events::{EventAction, Job};
use crate::domain::TaskId;

/// Most jobs written together: two of the writer's transactions
/// ([`crate::store::MAX_BATCH`]), so the next group's writes are queued
/// while the first transaction commits.
pub const MAX_GROUP: usize = 2 * crate::store::MAX_BATCH;

/// How a job may be grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Applied alone.
    Barrier,
    /// Writes nothing (only its acknowledgement): joins any group.
    Free,
    /// Writes about this task.
    Task(TaskId),
}

/// The slot of `job`.
pub fn slot(job: &Job) -> Slot {
    match job {
        Job::Event { action, .. } => match action {
            EventAction::Nothing => Slot::Free,
            EventAction::Phase(r) => Slot::Task(r.change.pod.task_id),
            EventAction::End { pod, .. } => Slot::Task(pod.task_id),
        },
        Job::Phase(r) => Slot::Task(r.change.pod.task_id),
        Job::Reconcile { .. }
        | Job::HostUnreachable { .. }
        | Job::HostLost { .. }
        | Job::Fenced { .. }
        | Job::PruneCrashes { .. } => Slot::Barrier,
    }
}

/// The tasks of the group being gathered.
#[derive(Debug, Default)]
pub struct Group {
    tasks: HashSet<TaskId>,
    len: usize,
}

impl Group {
    /// Whether a job in `slot` may join the group (it is then counted).
    pub fn admit(&mut self, slot: Slot) -> bool {
        if self.len >= MAX_GROUP {
            return false;
        }
        let ok = match slot {
            Slot::Barrier => false,
            Slot::Free => true,
            Slot::Task(t) => self.tasks.insert(t),
        };
        self.len += usize::from(ok);
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> TaskId {
        TaskId::from_db(&uuid::Uuid::now_v7().to_string()).expect("task id")
    }

    #[test]
    fn different_tasks_and_free_jobs_group_one_task_twice_does_not() {
        let (a, b) = (task(), task());
        let mut g = Group::default();
        assert!(g.admit(Slot::Task(a)));
        assert!(g.admit(Slot::Free));
        assert!(g.admit(Slot::Task(b)));
        assert!(g.admit(Slot::Free));
        assert!(!g.admit(Slot::Task(a)), "a task's jobs stay in order");
    }

    #[test]
    fn barriers_never_join() {
        let mut g = Group::default();
        assert!(!g.admit(Slot::Barrier));
        assert!(g.admit(Slot::Task(task())));
        assert!(!g.admit(Slot::Barrier));
    }

    #[test]
    fn a_group_is_bounded() {
        let mut g = Group::default();
        for _ in 0..MAX_GROUP {
            assert!(g.admit(Slot::Task(task())));
        }
        assert!(!g.admit(Slot::Task(task())));
        assert!(!g.admit(Slot::Free));
    }

    #[test]
    fn jobs_about_many_tasks_are_barriers() {
        assert_eq!(
            slot(&Job::HostLost {
                host_id: "h".into()
            }),
            Slot::Barrier
        );
        assert_eq!(
            slot(&Job::HostUnreachable {
                host_id: "h".into()
            }),
            Slot::Barrier
        );
        assert_eq!(slot(&Job::PruneCrashes { up_to: 0 }), Slot::Barrier);
    }
}
