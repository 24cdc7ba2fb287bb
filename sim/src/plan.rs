//! A run's plan: everything that happens to the system from outside (client
//! operations, faults), generated from the seed before the run starts. The
//! plan is what shrinking cuts down: a failing run is replayed with fewer
//! steps until no single step can be removed (see `shrink`), and the steps
//! that remain are the shortest trace printed with the seed.
//!
//! What happens *inside* (message latencies, which pod exits when, jitter,
//! ids) is drawn during the run from generators seeded by the same seed.

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::Knobs;
use crate::schedule_ops::{self, ScheduleOp};

/// How a task's pods behave (carried in the task's metadata, read by the
/// simulated pod-host when it spawns a pod).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Behaviour {
    /// How long a pod runs before it ends on its own (`None`: until
    /// stopped).
    pub life_ms: Option<u32>,
    pub end: PodEnd,
    /// A status line with a new phase every so often.
    pub phase_every_ms: Option<u32>,
    /// The pod's process cannot be created (SPAWN_FAILED).
    pub spawn_fails: bool,
}

/// How a pod ends on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodEnd {
    /// Exit 0 (`pod_exited`).
    Exit,
    /// Exit 1 (`pod_crashed`; the restart policy decides).
    Crash,
    /// Reports PHASE_COMPLETED, then exit 0 (`task_completed`).
    Complete,
}

/// A restart policy (all fields set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub max_restarts: u32,
    pub window_seconds: u32,
    pub initial_backoff_ms: u32,
    pub max_backoff_ms: u32,
}

/// One thing that happens from outside.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Create {
        auto_start: bool,
        behaviour: Behaviour,
        /// `Some`: auto-restart with this policy; `None`: the default
        /// (off).
        restart: Option<Policy>,
        /// The task's run timeout and deadline, if any.
        timers: Timers,
    },
    /// An operation on the `task`-th task created so far (modulo the
    /// number created; skipped while there is none).
    Start {
        task: usize,
        /// StartPod with `queue`: wait for room instead of NO_POD_HOST.
        queue: bool,
    },
    Stop {
        task: usize,
    },
    Restart {
        task: usize,
    },
    Complete {
        task: usize,
    },
    Cancel {
        task: usize,
    },
    /// Network partition between central and `host`. `hold`: TCP keeps
    /// the bytes and delivers them late on heal (unless the connection's
    /// keepalive gives up first); else the connection is reset at once.
    Partition {
        host: usize,
        hold: bool,
        lasts: Duration,
    },
    /// The pod-host process is stopped (SIGSTOP, a stalled runtime): its
    /// pods keep running until its reaper's fence backstop kills them.
    /// With `machine`, the whole machine stops (a stalled VM): the pods and
    /// the reaper with it, so nothing runs and nothing is killed until it
    /// wakes.
    Freeze {
        host: usize,
        lasts: Duration,
        machine: bool,
    },
    /// The pod-host process dies (its pods with it) and starts again with
    /// a new boot id after `down`.
    Reboot {
        host: usize,
        down: Duration,
    },
    /// Messages to and from `host` are slow.
    Slow {
        host: usize,
        lasts: Duration,
        latency: Duration,
    },
    /// The database cannot be written.
    StoreOutage {
        lasts: Duration,
    },
    /// The next write hangs, holding up every write behind it.
    StoreStall {
        lasts: Duration,
    },
    /// The next write commits but its caller gets EVENT_STORE_UNAVAILABLE.
    LostReply,
    /// A schedule operation (see [`crate::schedule_ops`]).
    Schedule(ScheduleOp),
}

impl Action {
    /// Whether this is a fault (as opposed to a client operation).
    pub fn is_fault(&self) -> bool {
        !matches!(
            self,
            Self::Create { .. }
                | Self::Start { .. }
                | Self::Stop { .. }
                | Self::Restart { .. }
                | Self::Complete { .. }
                | Self::Cancel { .. }
                | Self::Schedule(_)
        )
    }

    /// A short name for coverage.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Create { .. } => "create",
            Self::Start { .. } => "start",
            Self::Stop { .. } => "stop",
            Self::Restart { .. } => "restart",
            Self::Complete { .. } => "complete",
            Self::Cancel { .. } => "cancel",
            Self::Partition { hold: true, .. } => "partition-hold",
            Self::Partition { hold: false, .. } => "partition-reset",
            Self::Freeze { .. } => "freeze",
            Self::Reboot { .. } => "reboot",
            Self::Slow { .. } => "slow-network",
            Self::StoreOutage { .. } => "store-outage",
            Self::StoreStall { .. } => "store-stall",
            Self::LostReply => "lost-reply",
            Self::Schedule(op) => op.kind(),
        }
    }
}

/// An action at a time (since the run started).
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub at: Duration,
    pub action: Action,
}

/// A simulated pod-host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostSpec {
    pub capacity: u32,
    /// Its own `--fence-timeout-ms` (central waits for the larger of its
    /// own and this).
    pub fence: Duration,
}

/// A whole run, before it happens.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub seed: u64,
    pub hosts: Vec<HostSpec>,
    /// In time order.
    pub steps: Vec<Step>,
}

fn ms(r: &mut StdRng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(r.random_range(lo..=hi))
}

impl Plan {
    /// The plan of `seed`.
    pub fn generate(seed: u64, knobs: &Knobs, central_fence: Duration) -> Self {
        let mut r = StdRng::seed_from_u64(seed);
        // Timers are drawn from a stream of their own, so adding them left
        // every other choice of a seed's plan as it was.
        let mut timers = StdRng::seed_from_u64(seed ^ TIMER_STREAM);
        // The queue's choices too (priorities, `queue`, queue timeouts).
        let mut q = StdRng::seed_from_u64(seed ^ QUEUE_STREAM);
        let n_hosts = r.random_range(knobs.hosts.clone()).max(1);
        let central_fence_ms = central_fence.as_millis() as u64;
        let hosts = (0..n_hosts)
            .map(|_| HostSpec {
                capacity: r.random_range(1..=3),
                // Sometimes the host's own timeout is the larger one.
                fence: ms(&mut r, central_fence_ms / 2, central_fence_ms * 3 / 2),
            })
            .collect();
        let active = knobs.active.as_millis() as u64;
        let mut steps = Vec::new();
        let n_ops = r.random_range(knobs.ops.clone());
        for i in 0..n_ops {
            // The first operations create tasks; later ones mix.
            let at = if i < 2 {
                ms(&mut r, 0, 200)
            } else {
                ms(&mut r, 0, active)
            };
            let action = match r.random_range(0..100) {
                0..30 => create(&mut r, &mut timers, &mut q),
                30..48 => Action::Start {
                    task: r.random_range(0..1024),
                    queue: q.random_bool(0.5),
                },
                48..60 => Action::Stop {
                    task: r.random_range(0..1024),
                },
                60..72 => Action::Restart {
                    task: r.random_range(0..1024),
                },
                72..80 => Action::Complete {
                    task: r.random_range(0..1024),
                },
                80..86 => Action::Cancel {
                    task: r.random_range(0..1024),
                },
                _ if i % 2 == 0 => create(&mut r, &mut timers, &mut q),
                _ => Action::Start {
                    task: r.random_range(0..1024),
                    queue: q.random_bool(0.5),
                },
            };
            let action = if i < 2 {
                create(&mut r, &mut timers, &mut q)
            } else {
                action
            };
            steps.push(Step { at, action });
        }
        let n_faults = r.random_range(knobs.faults.clone());
        // Drawn from a stream of its own so that adding the whole-machine
        // freeze left every seed's plan otherwise as it was.
        let mut whole = StdRng::seed_from_u64(seed ^ 0x006d_6163_6869_6e65);
        for _ in 0..n_faults {
            let at = ms(&mut r, 100, active);
            let host = r.random_range(0..n_hosts);
            let action = match r.random_range(0..100) {
                0..22 => Action::Partition {
                    host,
                    hold: r.random_bool(0.5),
                    lasts: ms(&mut r, 200, 7000),
                },
                22..40 => Action::Freeze {
                    host,
                    lasts: ms(&mut r, 200, 6000),
                    machine: whole.random_bool(0.25),
                },
                40..54 => Action::Reboot {
                    host,
                    down: ms(&mut r, 50, 3000),
                },
                54..66 => Action::Slow {
                    host,
                    lasts: ms(&mut r, 500, 5000),
                    latency: ms(&mut r, 100, 1500),
                },
                66..82 => Action::StoreOutage {
                    lasts: ms(&mut r, 200, 4000),
                },
                82..94 => Action::StoreStall {
                    lasts: ms(&mut r, 100, 3000),
                },
                _ if knobs.lost_replies => Action::LostReply,
                _ => Action::StoreStall {
                    lasts: ms(&mut r, 100, 1000),
                },
            };
            steps.push(Step { at, action });
        }
        if knobs.schedules {
            steps.extend(schedule_ops::generate(seed, knobs));
        }
        steps.sort_by_key(|s| s.at);
        Self { seed, hosts, steps }
    }

    /// The plan with only the steps whose index is in `keep`.
    pub fn subset(&self, keep: &[usize]) -> Self {
        Self {
            seed: self.seed,
            hosts: self.hosts.clone(),
            steps: keep.iter().map(|&i| self.steps[i].clone()).collect(),
        }
    }

    /// Whether any step is a schedule operation (the firing loop runs
    /// only then, so plans without schedules run as before it existed).
    pub fn has_schedules(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s.action, Action::Schedule(_)))
    }

    /// When the last fault or operation happens.
    pub fn last_step_at(&self) -> Duration {
        self.steps.last().map_or(Duration::ZERO, |s| s.at)
    }
}

/// Mixed into the seed of the timers' random stream.
const TIMER_STREAM: u64 = 0x7469_6d65_7273_0001;
const QUEUE_STREAM: u64 = 0x7175_6575_6500_0001;

fn create(r: &mut StdRng, t: &mut StdRng, q: &mut StdRng) -> Action {
    let life_ms = r.random_bool(0.6).then(|| r.random_range(50..=4000));
    let end = match r.random_range(0..10) {
        0..4 => PodEnd::Crash,
        4..7 => PodEnd::Exit,
        _ => PodEnd::Complete,
    };
    let behaviour = Behaviour {
        life_ms,
        end,
        phase_every_ms: r.random_bool(0.4).then(|| r.random_range(20..=800)),
        spawn_fails: r.random_bool(0.04),
    };
    let restart = r.random_bool(0.5).then(|| Policy {
        max_restarts: r.random_range(0..=3),
        window_seconds: 600,
        initial_backoff_ms: r.random_range(0..=300),
        max_backoff_ms: r.random_range(300..=1000),
    });
    let auto_start = r.random_bool(0.6);
    // Short enough to fire within a run, often while faults are on.
    let timers = Timers {
        timeout_s: t.random_bool(0.25).then(|| t.random_range(1..=3)),
        deadline_ms: t.random_bool(0.2).then(|| t.random_range(300..=6000)),
        priority: q.random_range(1..=4),
        queue: q.random_bool(0.5),
        queue_timeout_s: q.random_bool(0.3).then(|| q.random_range(1..=4)),
    };
    Action::Create {
        auto_start,
        behaviour,
        restart,
        timers,
    }
}

/// A created task's run timeout (`timeout_seconds`) and deadline (this long
/// after the CreateTask is sent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timers {
    pub timeout_s: Option<u32>,
    pub deadline_ms: Option<u32>,
    /// Priority, 1 (low) ..= 4 (critical).
    pub priority: u8,
    /// With auto_start: queue when no host has room.
    pub queue: bool,
    /// The task's queue timeout.
    pub queue_timeout_s: Option<u32>,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.at.as_secs_f64();
        let d = |d: &Duration| format!("{:.3}s", d.as_secs_f64());
        match &self.action {
            Action::Create {
                auto_start,
                behaviour,
                restart,
                timers,
            } => write!(
                f,
                "t={t:.3}s create auto_start={auto_start} pods={behaviour:?} restart={restart:?} timers={timers:?}"
            ),
            Action::Start { task, queue } => {
                write!(f, "t={t:.3}s start task#{task} queue={queue}")
            }
            Action::Stop { task } => write!(f, "t={t:.3}s stop task#{task}"),
            Action::Restart { task } => write!(f, "t={t:.3}s restart task#{task}"),
            Action::Complete { task } => write!(f, "t={t:.3}s complete task#{task}"),
            Action::Cancel { task } => write!(f, "t={t:.3}s cancel task#{task}"),
            Action::Partition { host, hold, lasts } => write!(
                f,
                "t={t:.3}s partition host-{host} ({}) for {}",
                if *hold { "bytes held" } else { "reset" },
                d(lasts)
            ),
            Action::Freeze {
                host,
                lasts,
                machine,
            } => write!(
                f,
                "t={t:.3}s freeze {} host-{host} for {}",
                if *machine {
                    "the machine of"
                } else {
                    "the process of"
                },
                d(lasts)
            ),
            Action::Reboot { host, down } => {
                write!(f, "t={t:.3}s reboot host-{host} (down {})", d(down))
            }
            Action::Slow {
                host,
                lasts,
                latency,
            } => write!(
                f,
                "t={t:.3}s slow network to host-{host} ({} latency) for {}",
                d(latency),
                d(lasts)
            ),
            Action::StoreOutage { lasts } => write!(f, "t={t:.3}s store outage for {}", d(lasts)),
            Action::StoreStall { lasts } => write!(f, "t={t:.3}s store stall of {}", d(lasts)),
            Action::LostReply => write!(f, "t={t:.3}s next write's reply lost after commit"),
            Action::Schedule(op) => write!(f, "t={t:.3}s {op}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_always_makes_the_same_plan() {
        let k = Knobs::default();
        let a = Plan::generate(7, &k, Duration::from_secs(2));
        let b = Plan::generate(7, &k, Duration::from_secs(2));
        assert_eq!(a, b);
        assert_ne!(a, Plan::generate(8, &k, Duration::from_secs(2)));
        assert!(a.steps.windows(2).all(|w| w[0].at <= w[1].at));
        // The first two operations create tasks, within 200 ms.
        let early_creates = a
            .steps
            .iter()
            .filter(|s| s.at <= Duration::from_millis(200))
            .filter(|s| matches!(s.action, Action::Create { .. }))
            .count();
        assert!(early_creates >= 2, "{a:?}");
    }
}
