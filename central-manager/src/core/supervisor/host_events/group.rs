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
//! after it. Which jobs group is pure (tested here); [`HostEvents::apply_group`]
//! writes a group.

use std::collections::HashSet;

use super::{EventAction, HostEvents, Job};
use crate::domain::TaskId;
use crate::error::{Error, Result};

/// Most jobs written together: two transactions of the production store's
/// writer (it batches up to 256 commands), so the next group's writes are
/// queued while the first transaction commits.
pub const MAX_GROUP: usize = 512;

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
        | Job::Requery { .. }
        | Job::HostUnreachable { .. }
        | Job::HostLost { .. }
        | Job::Fenced { .. }
        | Job::PruneCrashes { .. }
        // Rare (only after the store was down) and it may schedule a
        // restart: kept in strict order with everything around it.
        | Job::Settle { .. } => Slot::Barrier,
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

impl HostEvents {
    /// Writes a group's jobs together; those not committed (the store was
    /// unavailable) are tried again until they are. Then, in queue order,
    /// its events are recorded as applied and acknowledged. False when
    /// shutting down.
    pub(super) async fn apply_group(&mut self, jobs: &[Job]) -> bool {
        // Per job: `Some(acknowledge?)` once committed.
        let mut done: Vec<Option<bool>> = vec![None; jobs.len()];
        let mut attempt: u32 = 0;
        loop {
            let todo: Vec<usize> = (0..jobs.len()).filter(|i| done[*i].is_none()).collect();
            let writes = todo.iter().map(|&i| self.write(&jobs[i]));
            let results = futures::future::join_all(writes).await;
            let mut failed = None;
            for (&i, r) in todo.iter().zip(results) {
                match r {
                    Ok(ack) => done[i] = Some(ack),
                    Err(Error::ShuttingDown) => return false,
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
            let Some(e) = failed else { break };
            if attempt == 0 {
                tracing::warn!(error = %e, jobs = jobs.len(),
                    "supervision writes failed; holding them and every later job until the store is back");
            }
            if !self.wait_for_store(attempt).await {
                return false;
            }
            attempt = attempt.saturating_add(1);
        }
        if attempt > 0 {
            tracing::info!(
                attempts = attempt + 1,
                jobs = jobs.len(),
                "supervision writes applied after the store came back"
            );
            self.reschedule_restarts().await;
        }
        for (job, ack) in jobs.iter().zip(done) {
            if let (
                Job::Event {
                    host_id,
                    boot_id,
                    seq,
                    ..
                },
                Some(true),
            ) = (job, ack)
            {
                self.acknowledge(host_id, boot_id, *seq);
            }
        }
        true
    }

    /// The write of a job that may be grouped (an event or a released
    /// phase change). `Ok(true)`: an event to acknowledge; `Ok(false)`:
    /// nothing to acknowledge (a replay, a released phase change).
    pub(super) async fn write(&self, job: &Job) -> Result<bool> {
        match job {
            Job::Event {
                host_id,
                boot_id,
                seq,
                action,
                in_flight: _,
            } => {
                let replayed = self
                    .applied
                    .get(host_id)
                    .is_some_and(|(b, s)| b == boot_id && *seq <= *s);
                if replayed {
                    return Ok(false);
                }
                match action {
                    EventAction::Nothing => {}
                    EventAction::Phase(r) => self.phase(r).await?,
                    EventAction::End { pod, report } => {
                        self.end_reported(host_id, pod, report).await?
                    }
                }
                Ok(true)
            }
            Job::Phase(r) => self.phase(r).await.map(|()| false),
            other => {
                // Never: `slot` makes every other job a barrier.
                debug_assert_eq!(slot(other), Slot::Barrier);
                tracing::error!(job = other.kind(), "a barrier job reached a group; skipped");
                Ok(false)
            }
        }
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

    #[test]
    fn a_settled_operation_is_a_barrier() {
        let job = Job::Settle {
            task_id: task(),
            command: crate::store::pods::PodCommand::PruneCrashes { up_to: 0 },
        };
        assert_eq!(slot(&job), Slot::Barrier);
    }
}
