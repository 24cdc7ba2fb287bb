//! GetStats: what is asked and what is answered, and the aggregation
//! itself (pure: rows in, groups out), so the arithmetic is tested without
//! a database. The rows come from columns kept up to date in the
//! transaction of every change (`finished_at`, the time spent per phase),
//! never from replaying events.

use std::collections::BTreeMap;

use super::{Phase, TaskStatus};

/// How tasks are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupBy {
    /// One group of every task.
    #[default]
    None,
    /// By pod template.
    Template,
    /// By creating actor.
    CreatedBy,
}

/// GetStats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsQuery {
    /// Tasks created at or after this (unix micros).
    pub created_after: Option<i64>,
    /// Tasks created before this.
    pub created_before: Option<i64>,
    /// Grouping.
    pub group_by: GroupBy,
}

/// The working phases whose time is tracked.
pub const TIMED_PHASES: [Phase; 4] = [
    Phase::SpecClarification,
    Phase::Planning,
    Phase::Development,
    Phase::Review,
];

/// One task's figures, as read for statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsRow {
    /// The group key ("" without grouping).
    pub key: String,
    pub status: TaskStatus,
    pub phase: Phase,
    pub restart_count: u32,
    /// Creation to completion, micros (completed tasks only).
    pub completed_in: Option<i64>,
    /// Time spent in each of [`TIMED_PHASES`] (phases left), micros.
    pub phase_us: [i64; 4],
}

/// p50 and p95, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
}

/// The figures of one group.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StatsGroup {
    pub key: String,
    pub total: u64,
    /// Count per status, in `TaskStatus::ALL` order.
    pub by_status: Vec<(TaskStatus, u64)>,
    /// Count per phase, in `Phase::ALL` order.
    pub by_phase: Vec<(Phase, u64)>,
    /// Completed (resp. failed) over terminal; 0 when none is terminal.
    pub completion_rate: f64,
    pub failure_rate: f64,
    /// Creation to completion, over completed tasks (0 when none).
    pub time_to_complete: Percentiles,
    /// Time in each phase, over the tasks that left it.
    pub phase_durations: Vec<(Phase, Percentiles)>,
    pub restarts_mean: f64,
    pub restarts_max: u32,
}

/// Nearest-rank percentile `q` (0..=1) of `v`, in seconds; 0 for none.
fn percentile(v: &mut [i64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    let (_, x, _) = v.select_nth_unstable(rank - 1);
    *x as f64 / 1e6
}

fn percentiles(v: &mut [i64]) -> Percentiles {
    Percentiles {
        p50: percentile(v, 0.50),
        p95: percentile(v, 0.95),
    }
}

#[derive(Default)]
struct Acc {
    total: u64,
    status: [u64; 5],
    phase: [u64; 6],
    completed: Vec<i64>,
    phases: [Vec<i64>; 4],
    restarts: u64,
    restarts_max: u32,
}

fn status_index(s: TaskStatus) -> usize {
    TaskStatus::ALL.iter().position(|x| *x == s).unwrap_or(0)
}

fn phase_index(p: Phase) -> usize {
    Phase::ALL.iter().position(|x| *x == p).unwrap_or(0)
}

/// Aggregates rows into groups, ordered by key.
pub fn aggregate(rows: impl IntoIterator<Item = StatsRow>) -> Vec<StatsGroup> {
    let mut groups: BTreeMap<String, Acc> = BTreeMap::new();
    for r in rows {
        let a = groups.entry(r.key).or_default();
        a.total += 1;
        a.status[status_index(r.status)] += 1;
        a.phase[phase_index(r.phase)] += 1;
        if let Some(d) = r.completed_in {
            a.completed.push(d.max(0));
        }
        for (i, us) in r.phase_us.iter().enumerate() {
            if *us > 0 {
                a.phases[i].push(*us);
            }
        }
        a.restarts += u64::from(r.restart_count);
        a.restarts_max = a.restarts_max.max(r.restart_count);
    }
    groups
        .into_iter()
        .map(|(key, mut a)| {
            let count = |s: TaskStatus| a.status[status_index(s)];
            let terminal = count(TaskStatus::Completed)
                + count(TaskStatus::Cancelled)
                + count(TaskStatus::Failed);
            let rate = |n: u64| {
                if terminal == 0 {
                    0.0
                } else {
                    n as f64 / terminal as f64
                }
            };
            StatsGroup {
                total: a.total,
                by_status: TaskStatus::ALL.iter().map(|s| (*s, count(*s))).collect(),
                by_phase: Phase::ALL
                    .iter()
                    .map(|p| (*p, a.phase[phase_index(*p)]))
                    .collect(),
                completion_rate: rate(count(TaskStatus::Completed)),
                failure_rate: rate(count(TaskStatus::Failed)),
                time_to_complete: percentiles(&mut a.completed),
                phase_durations: TIMED_PHASES
                    .iter()
                    .zip(a.phases.iter_mut())
                    .map(|(p, v)| (*p, percentiles(v)))
                    .collect(),
                restarts_mean: if a.total == 0 {
                    0.0
                } else {
                    a.restarts as f64 / a.total as f64
                },
                restarts_max: a.restarts_max,
                key,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    fn row(key: &str, status: TaskStatus, done_s: Option<i64>, restarts: u32) -> StatsRow {
        StatsRow {
            key: key.into(),
            status,
            phase: if status == TaskStatus::Completed {
                Phase::Completed
            } else {
                Phase::Planning
            },
            restart_count: restarts,
            completed_in: done_s.map(|s| s * S),
            phase_us: [S, 0, 0, 0],
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<i64> = (1..=100).map(|s| s * S).collect();
        assert_eq!(percentile(&mut v, 0.5), 50.0);
        assert_eq!(percentile(&mut v, 0.95), 95.0);
        let mut one = vec![7 * S];
        assert_eq!(percentiles(&mut one), Percentiles { p50: 7.0, p95: 7.0 });
        assert_eq!(percentiles(&mut []), Percentiles::default());
        let mut two = vec![2 * S, S];
        assert_eq!(percentiles(&mut two), Percentiles { p50: 1.0, p95: 2.0 });
    }

    #[test]
    fn rates_counts_and_restarts_per_group() {
        let g = aggregate([
            row("a", TaskStatus::Completed, Some(10), 0),
            row("a", TaskStatus::Completed, Some(20), 2),
            row("a", TaskStatus::Failed, None, 3),
            row("a", TaskStatus::Active, None, 1),
            row("b", TaskStatus::Inactive, None, 0),
        ]);
        assert_eq!(g.len(), 2);
        let a = &g[0];
        assert_eq!((a.key.as_str(), a.total), ("a", 4));
        assert!((a.completion_rate - 2.0 / 3.0).abs() < 1e-9);
        assert!((a.failure_rate - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(
            a.time_to_complete,
            Percentiles {
                p50: 10.0,
                p95: 20.0
            }
        );
        assert_eq!(a.restarts_max, 3);
        assert!((a.restarts_mean - 1.5).abs() < 1e-9);
        assert!(a.by_status.contains(&(TaskStatus::Completed, 2)));
        assert!(a.by_status.contains(&(TaskStatus::Cancelled, 0)));
        assert!(a.by_phase.contains(&(Phase::Planning, 2)));
        assert_eq!(
            a.phase_durations[0],
            (Phase::SpecClarification, Percentiles { p50: 1.0, p95: 1.0 })
        );
        assert_eq!(
            a.phase_durations[3],
            (Phase::Review, Percentiles::default())
        );
        // Nothing terminal: rates are 0, not NaN.
        let b = &g[1];
        assert_eq!((b.completion_rate, b.failure_rate), (0.0, 0.0));
    }
}
