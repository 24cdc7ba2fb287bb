//! The ground truth the invariants are checked against: every pod process
//! the simulated pod-hosts ever ran (alive or dead, on which host, of which
//! task and generation), each host's freeze and fence deadline, and the
//! violations found. The simulated hosts update it at every process start
//! and death; [`Ledger::check_overlap`] runs after every step.

use std::collections::BTreeMap;

use tokio::time::Instant;

/// One pod process.
#[derive(Debug, Clone)]
pub struct Proc {
    pub task_id: String,
    pub host: usize,
    pub generation: u64,
    pub alive: bool,
    /// When it died (virtual time).
    pub died_at: Option<Instant>,
}

/// What the checks need to know of a host.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    /// The host process is frozen (its reaper still runs).
    pub frozen: bool,
    /// Its whole machine is frozen (its pods and its reaper too).
    pub machine_frozen: bool,
    /// When the host would fence its pods if nothing arrives (its own last
    /// contact + its fence timeout); `None` before any contact.
    pub fence_deadline: Option<Instant>,
    /// Its whole machine was frozen at some time in the run (its pods'
    /// lifetimes then include time they did not run).
    pub machine_frozen_ever: bool,
}

/// The ledger.
#[derive(Debug, Default)]
pub struct Ledger {
    pub procs: BTreeMap<String, Proc>,
    pub hosts: Vec<HostFacts>,
    /// What went wrong, in the order found.
    pub violations: Vec<String>,
}

impl Ledger {
    pub fn started(&mut self, pod_id: &str, task_id: &str, host: usize, generation: u64) {
        self.procs.insert(
            pod_id.to_owned(),
            Proc {
                task_id: task_id.to_owned(),
                host,
                generation,
                alive: true,
                died_at: None,
            },
        );
    }

    pub fn died(&mut self, pod_id: &str) {
        if let Some(p) = self.procs.get_mut(pod_id)
            && p.alive
        {
            p.alive = false;
            p.died_at = Some(Instant::now());
        }
    }

    /// Whether `p` may overlap with a newer pod: its whole machine is
    /// frozen past the host's fence deadline, so neither the host nor its
    /// reaper can kill `p`, which is stopped too (docs/architecture.md: the
    /// one case no lease covers). A frozen host *process* is no excuse: its
    /// reaper's backstop kills its pods before central's deadline.
    pub fn exempt_host(&self, host: usize, now: Instant) -> bool {
        self.hosts
            .get(host)
            .is_some_and(|h| h.machine_frozen && h.fence_deadline.is_some_and(|d| d <= now))
    }

    fn exempt(&self, p: &Proc, now: Instant) -> bool {
        self.exempt_host(p.host, now)
    }

    /// Never two live pods of one task (pods on a machine frozen past the
    /// deadline exempt).
    pub fn check_overlap(&mut self, now: Instant) {
        let mut by_task: BTreeMap<&str, Vec<(&String, &Proc)>> = BTreeMap::new();
        for (id, p) in self.procs.iter().filter(|(_, p)| p.alive) {
            if !self.exempt(p, now) {
                by_task.entry(p.task_id.as_str()).or_default().push((id, p));
            }
        }
        let mut found = Vec::new();
        for (task, pods) in by_task.into_iter().filter(|(_, v)| v.len() > 1) {
            let list: Vec<String> = pods
                .iter()
                .map(|(id, p)| format!("pod {id} gen {} on host-{}", p.generation, p.host))
                .collect();
            found.push(format!(
                "two live pods of task {task}: {}",
                list.join(" and ")
            ));
        }
        for v in found {
            if !self.violations.contains(&v) {
                self.violations.push(v);
            }
        }
    }
}
