//! Deterministic simulation of the IPA supervision core (issue 17).
//!
//! The *real* core — `central_manager::core` (the task operations, the
//! supervisor loop and its ordered writer of host events), the session
//! logic of `hosts::session`, the registry's silence rules, the SQL that
//! decides claims and conditional updates — runs single-threaded on a
//! paused tokio runtime against simulated peers through the core's ports
//! (`central_manager::core::ports`):
//!
//! | port | simulated by |
//! |---|---|
//! | `TaskStore` | `store::memory::MemoryStore` (the production SQL, inline, in memory) with [`faults::StoreFaults`]: outages, stalls, replies lost after commit |
//! | `Dialer` / `HostCommands` | [`net`]: TCP-like connections with delays, held and reset partitions, slow links |
//! | the pod-hosts behind them | [`host::SimHost`]: the real pod-host's rules, its self-fencing code (`pod_host::fence`), freezes, reboots, scripted pods |
//! | `Clock` | `DerivedClock` on tokio's paused clock (virtual time) |
//! | `Entropy` | [`entropy::SeededEntropy`] |
//!
//! and random clients issue the public operations (create, start, stop,
//! restart, complete, cancel).
//!
//! One seed drives a whole run: it generates the [`plan::Plan`] (the
//! operations and faults, with their times) and seeds every generator the
//! run draws from (latencies, pod scripts, jitter, ids). Nothing else
//! varies: time is virtual, no thread or OS randomness is involved, the
//! core iterates only ordered maps where order decides and its `select!`s
//! are `biased`. So a seed replays a run exactly, and a failing run is
//! shrunk to the shortest plan that still fails ([`shrink`]), printed with
//! the seed.
//!
//! The invariants ([`world`]'s checks) are those of docs/architecture.md:
//! never two live pods of a task, nothing acknowledged lost, every pod's
//! end recorded exactly once, restarts as the policy says, convergence once
//! faults stop, the registry consistent with the timeouts.
//!
//! Extending it (docs/architecture.md, "The supervision core and its
//! simulator"): a new timer in the core needs nothing here (tokio timers
//! are virtual); a new fault is a [`plan::Action`] variant, generated in
//! `Plan::generate` and carried out in `World::apply`; a new invariant is
//! a function in `world/checks.rs` called from `periodic` or `at_end`
//! (or, for one that must hold after every step, a check in
//! [`ledger::Ledger`] that the hosts call).

pub mod config;
pub mod coverage;
pub mod entropy;
pub mod faults;
pub mod host;
pub mod ledger;
pub mod net;
pub mod plan;
pub mod schedule_ops;
pub mod shrink;
pub mod trace;
pub mod world;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

pub use config::{Bugs, SimConfig};
pub use coverage::Coverage;
pub use plan::Plan;
pub use world::Outcome;

/// A failing seed, shrunk.
#[derive(Debug)]
pub struct Failure {
    pub seed: u64,
    /// What the full run violated.
    pub violations: Vec<String>,
    /// Steps of the generated plan.
    pub steps: usize,
    /// The shortest failing plan found, its step indices and its run.
    pub shrunk: Plan,
    pub kept: Vec<usize>,
    pub shrunk_outcome: Outcome,
    pub shrink_runs: usize,
}

impl Failure {
    /// The report: the seed, what failed, how to replay it, the shortest
    /// plan and the trace of its run.
    pub fn report(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "seed {} FAILED:", self.seed);
        for v in &self.violations {
            let _ = writeln!(s, "  - {v}");
        }
        let keep: Vec<String> = self.kept.iter().map(usize::to_string).collect();
        let _ = writeln!(
            s,
            "shortest failing plan: {} of {} steps ({} shrink runs); replay: scripts/simulate --seed {} --keep {}",
            self.kept.len(),
            self.steps,
            self.shrink_runs,
            self.seed,
            if keep.is_empty() {
                "none".to_owned()
            } else {
                keep.join(",")
            }
        );
        for (step, i) in self.shrunk.steps.iter().zip(&self.kept) {
            let _ = writeln!(s, "  [{i}] {step}");
        }
        let _ = writeln!(s, "it violates:");
        for v in &self.shrunk_outcome.violations {
            let _ = writeln!(s, "  - {v}");
        }
        let _ = writeln!(s, "trace of the shortest run:");
        for l in &self.shrunk_outcome.trace {
            let _ = writeln!(s, "  {l}");
        }
        s
    }
}

/// Runs seed `seed` (its whole generated plan, or only the steps `keep`).
pub fn run_seed(seed: u64, config: &SimConfig, keep: Option<&[usize]>) -> (Plan, Outcome) {
    let mut plan = Plan::generate(seed, &config.knobs, config.timing.fence);
    if let Some(k) = keep {
        let k: Vec<usize> = k
            .iter()
            .copied()
            .filter(|&i| i < plan.steps.len())
            .collect();
        plan = plan.subset(&k);
    }
    let outcome = world::run(&plan, config);
    (plan, outcome)
}

/// Runs seed `seed`; on a violation, shrinks it (at most `shrink_budget`
/// more runs).
pub fn check_seed(
    seed: u64,
    config: &SimConfig,
    shrink_budget: usize,
) -> Result<Outcome, Box<Failure>> {
    let (plan, outcome) = run_seed(seed, config, None);
    if outcome.violations.is_empty() {
        return Ok(outcome);
    }
    let shrunk = shrink::shrink(&plan, shrink_budget, |p| {
        !world::run(p, config).violations.is_empty()
    });
    let shrunk_outcome = world::run(&shrunk.plan, config);
    Err(Box::new(Failure {
        seed,
        violations: outcome.violations,
        steps: plan.steps.len(),
        shrunk: shrunk.plan,
        kept: shrunk.kept,
        shrunk_outcome,
        shrink_runs: shrunk.runs,
    }))
}

/// What a batch of seeds did.
#[derive(Debug, Default)]
pub struct Batch {
    pub seeds: u64,
    pub coverage: Coverage,
    pub failures: Vec<Failure>,
    pub virtual_time: Duration,
    pub wall_time: Duration,
}

/// Runs `count` seeds from `first` on `threads` threads (each run is
/// single-threaded; seeds are independent). Stops early after
/// `max_failures` failures.
pub fn run_batch(
    first: u64,
    count: u64,
    threads: usize,
    config: &SimConfig,
    shrink_budget: usize,
    max_failures: usize,
) -> Batch {
    let started = Instant::now();
    let next = std::sync::atomic::AtomicU64::new(first);
    let end = first.saturating_add(count);
    let results = std::sync::Mutex::new(Batch::default());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if seed >= end {
                        return;
                    }
                    if results
                        .lock()
                        .map(|r| r.failures.len() >= max_failures)
                        .unwrap_or(true)
                    {
                        return;
                    }
                    let r = check_seed(seed, config, shrink_budget);
                    let mut b = results.lock().unwrap_or_else(|e| e.into_inner());
                    b.seeds += 1;
                    match r {
                        Ok(o) => {
                            b.coverage.merge(&o.coverage);
                            b.virtual_time += o.virtual_time;
                        }
                        Err(f) => b.failures.push(*f),
                    }
                }
            });
        }
    });
    let mut b = results.into_inner().unwrap_or_else(|e| e.into_inner());
    b.failures.sort_by_key(|f| f.seed);
    b.wall_time = started.elapsed();
    b
}
