//! The schedule operations of a plan: simulated clients create interval
//! schedules (short intervals, each overlap policy, small catch-up
//! windows), and pause, resume, trigger and delete them. They are drawn
//! from a random stream of their own, so adding them left every other
//! choice of a seed's plan as it was; about half the seeds have any.

use std::fmt;
use std::time::Duration;

use central_manager::domain::schedule::Overlap;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::Knobs;
use crate::plan::{Action, PodEnd, Step};

/// Mixed into the seed of the schedules' random stream.
const SCHEDULE_STREAM: u64 = 0x7363_6865_6475_6c65;

/// One schedule operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleOp {
    /// CreateSchedule with an interval timetable; each fire's task runs
    /// one pod of `life_ms` that ends with `end`.
    Create {
        interval_s: u64,
        overlap: Overlap,
        catchup_s: u32,
        life_ms: u32,
        end: PodEnd,
    },
    /// An operation on the `schedule`-th schedule created so far (modulo
    /// the number created; skipped while there is none).
    Pause {
        schedule: usize,
    },
    Resume {
        schedule: usize,
    },
    Trigger {
        schedule: usize,
    },
    Delete {
        schedule: usize,
    },
}

impl ScheduleOp {
    /// A short name for coverage.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Create { .. } => "schedule-create",
            Self::Pause { .. } => "schedule-pause",
            Self::Resume { .. } => "schedule-resume",
            Self::Trigger { .. } => "schedule-trigger",
            Self::Delete { .. } => "schedule-delete",
        }
    }
}

/// The schedule steps of `seed`'s plan (unsorted).
pub fn generate(seed: u64, knobs: &Knobs) -> Vec<Step> {
    let mut r = StdRng::seed_from_u64(seed ^ SCHEDULE_STREAM);
    if !r.random_bool(0.5) {
        return Vec::new();
    }
    let active = knobs.active.as_millis() as u64;
    let ms = |r: &mut StdRng, lo: u64, hi: u64| Duration::from_millis(r.random_range(lo..=hi));
    let mut steps = Vec::new();
    for _ in 0..r.random_range(1..=2) {
        let overlap = Overlap::ALL[r.random_range(0..Overlap::ALL.len())];
        // Mostly tasks that complete; sometimes pods that exit or crash
        // and leave their task open, so later fires meet a previous task
        // that never ends.
        let end = match r.random_range(0..10) {
            0 => PodEnd::Exit,
            1 => PodEnd::Crash,
            _ => PodEnd::Complete,
        };
        let op = ScheduleOp::Create {
            interval_s: r.random_range(1..=3),
            overlap,
            catchup_s: r.random_range(0..=15),
            life_ms: r.random_range(100..=3500),
            end,
        };
        steps.push(Step {
            at: ms(&mut r, 0, active / 2),
            action: Action::Schedule(op),
        });
    }
    for _ in 0..r.random_range(0..=4) {
        let schedule = r.random_range(0..1024);
        let op = match r.random_range(0..100) {
            0..30 => ScheduleOp::Pause { schedule },
            30..60 => ScheduleOp::Resume { schedule },
            60..85 => ScheduleOp::Trigger { schedule },
            _ => ScheduleOp::Delete { schedule },
        };
        steps.push(Step {
            at: ms(&mut r, 200, active),
            action: Action::Schedule(op),
        });
    }
    steps
}

impl fmt::Display for ScheduleOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Create {
                interval_s,
                overlap,
                catchup_s,
                life_ms,
                end,
            } => write!(
                f,
                "create schedule every {interval_s}s overlap={overlap:?} catchup={catchup_s}s pods={life_ms}ms then {end:?}"
            ),
            Self::Pause { schedule } => write!(f, "pause schedule#{schedule}"),
            Self::Resume { schedule } => write!(f, "resume schedule#{schedule}"),
            Self::Trigger { schedule } => write!(f, "trigger schedule#{schedule}"),
            Self::Delete { schedule } => write!(f, "delete schedule#{schedule}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Plan;

    #[test]
    fn schedules_leave_every_other_choice_of_a_plan_as_it_was() {
        let with = Knobs::default();
        let without = Knobs {
            schedules: false,
            ..Knobs::default()
        };
        let mut seen = 0;
        for seed in 0..50 {
            let a = Plan::generate(seed, &with, Duration::from_secs(2));
            let b = Plan::generate(seed, &without, Duration::from_secs(2));
            let others: Vec<_> = a
                .steps
                .iter()
                .filter(|s| !matches!(s.action, Action::Schedule(_)))
                .cloned()
                .collect();
            assert_eq!(others, b.steps, "seed {seed}");
            assert_eq!(a.hosts, b.hosts);
            seen += usize::from(a.has_schedules());
        }
        // About half the seeds have schedules.
        assert!((10..=40).contains(&seen), "{seen} of 50");
    }
}
