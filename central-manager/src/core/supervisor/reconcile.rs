//! Reconciling a pod-host's hello snapshot with what the database says
//! runs there. Pure: it returns the actions; the supervisor carries them
//! out. Used when a host (re)connects and after central-manager restarts.
//!
//! The rule that keeps a task from running twice: a pod the host reports
//! alive is kept only if the task's row names exactly that pod (same pod
//! id and generation) as its current pod; anything else is stale and is
//! killed (`pod_fenced`).

use std::collections::BTreeMap;

/// The database's view of one task whose current pod is on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbPod {
    pub task_id: String,
    pub pod_id: String,
    pub generation: u64,
    /// The row's pod status was UNKNOWN (host had been unreachable).
    pub was_unknown: bool,
}

/// The host's view of one pod, from its snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPod {
    pub task_id: String,
    pub pod_id: String,
    pub generation: u64,
    /// Still running (STARTING or RUNNING).
    pub alive: bool,
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The current pod still runs: keep it; commit `pod_recovered` if the
    /// row had gone UNKNOWN.
    Keep {
        task_id: String,
        pod_id: String,
        recovered: bool,
    },
    /// A live pod the database does not consider current: kill it and
    /// commit `pod_fenced` on its task.
    Fence {
        task_id: String,
        pod_id: String,
        generation: u64,
    },
    /// The database's current pod is not on the host at all and no exit for
    /// it is pending: it is gone (`pod_lost`).
    Lost { task_id: String, pod_id: String },
}

/// Compares the snapshot with the rows. `new_boot` says the host restarted,
/// in which case every row pod is lost whatever the snapshot holds (a new
/// boot cannot hold an old boot's pods). Exited pods in the snapshot are
/// not acted on here: their exit events are replayed and applied as usual,
/// so a row whose pod shows up exited yields no action.
pub fn reconcile(db: &[DbPod], host: &[HostPod], new_boot: bool) -> Vec<Action> {
    let mut out = Vec::new();
    let by_pod: BTreeMap<&str, &HostPod> = host.iter().map(|p| (p.pod_id.as_str(), p)).collect();
    let current: BTreeMap<&str, &DbPod> = db.iter().map(|p| (p.pod_id.as_str(), p)).collect();
    for row in db {
        match by_pod.get(row.pod_id.as_str()) {
            Some(hp) if !new_boot && hp.alive && hp.generation == row.generation => {
                out.push(Action::Keep {
                    task_id: row.task_id.clone(),
                    pod_id: row.pod_id.clone(),
                    recovered: row.was_unknown,
                })
            }
            Some(hp) if !new_boot && !hp.alive => {}
            _ => out.push(Action::Lost {
                task_id: row.task_id.clone(),
                pod_id: row.pod_id.clone(),
            }),
        }
    }
    for hp in host.iter().filter(|p| p.alive) {
        let is_current = current
            .get(hp.pod_id.as_str())
            .is_some_and(|row| row.generation == hp.generation);
        if !is_current || new_boot {
            out.push(Action::Fence {
                task_id: hp.task_id.clone(),
                pod_id: hp.pod_id.clone(),
                generation: hp.generation,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(task: &str, pod: &str, generation: u64, unknown: bool) -> DbPod {
        DbPod {
            task_id: task.into(),
            pod_id: pod.into(),
            generation,
            was_unknown: unknown,
        }
    }
    fn hp(task: &str, pod: &str, generation: u64, alive: bool) -> HostPod {
        HostPod {
            task_id: task.into(),
            pod_id: pod.into(),
            generation,
            alive,
        }
    }

    #[test]
    fn current_pods_are_kept_and_recovered_when_unknown() {
        let a = reconcile(
            &[db("t1", "p1", 1, false), db("t2", "p2", 4, true)],
            &[hp("t1", "p1", 1, true), hp("t2", "p2", 4, true)],
            false,
        );
        assert_eq!(
            a,
            vec![
                Action::Keep {
                    task_id: "t1".into(),
                    pod_id: "p1".into(),
                    recovered: false
                },
                Action::Keep {
                    task_id: "t2".into(),
                    pod_id: "p2".into(),
                    recovered: true
                },
            ]
        );
    }

    #[test]
    fn stale_live_pods_are_fenced() {
        // t1 was declared lost and restarted elsewhere (no row here); t2's
        // row moved on to generation 3 on this host.
        let a = reconcile(
            &[db("t2", "p2b", 3, false)],
            &[
                hp("t1", "p1", 1, true),
                hp("t2", "p2a", 2, true),
                hp("t2", "p2b", 3, true),
            ],
            false,
        );
        assert!(a.contains(&Action::Fence {
            task_id: "t1".into(),
            pod_id: "p1".into(),
            generation: 1
        }));
        assert!(a.contains(&Action::Fence {
            task_id: "t2".into(),
            pod_id: "p2a".into(),
            generation: 2
        }));
        assert!(a.contains(&Action::Keep {
            task_id: "t2".into(),
            pod_id: "p2b".into(),
            recovered: false
        }));
        assert_eq!(a.len(), 3);
    }

    #[test]
    fn missing_pods_are_lost_and_exited_ones_wait_for_their_event() {
        let a = reconcile(
            &[db("t1", "p1", 1, true), db("t2", "p2", 1, false)],
            &[hp("t2", "p2", 1, false)],
            false,
        );
        assert_eq!(
            a,
            vec![Action::Lost {
                task_id: "t1".into(),
                pod_id: "p1".into()
            }]
        );
    }

    #[test]
    fn a_new_boot_loses_everything_and_fences_leftovers() {
        let a = reconcile(
            &[db("t1", "p1", 1, false)],
            &[hp("t1", "p1", 1, true)],
            true,
        );
        assert_eq!(
            a,
            vec![
                Action::Lost {
                    task_id: "t1".into(),
                    pod_id: "p1".into()
                },
                Action::Fence {
                    task_id: "t1".into(),
                    pod_id: "p1".into(),
                    generation: 1
                },
            ]
        );
    }
}
