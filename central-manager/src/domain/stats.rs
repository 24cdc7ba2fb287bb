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

/// Summary rows cover one hour of creation each (unix micros).
pub const HOUR_US: i64 = 3_600_000_000;

/// The hour (of [`HOUR_US`]) a task created at `created_at` counts in:
/// floored, as the summary triggers compute it.
pub fn hour_of(created_at: i64) -> i64 {
    created_at.div_euclid(HOUR_US)
}

/// The bucket of a duration (micros) in the summary rows: cut to 3
/// significant digits, as the summary triggers do. Returns the bucket's
/// lower end and width; durations below 1 ms are their own bucket.
pub fn duration_bucket(v: i64) -> (i64, i64) {
    if v < 1000 {
        return (v, 1);
    }
    let step = 10i64.pow(v.ilog10() + 1 - 3);
    (v / step * step, step)
}

/// Which duration: 0 is creation → completion, 1.. the
/// [`TIMED_PHASES`] in order.
pub const METRICS: usize = 1 + TIMED_PHASES.len();

/// Tasks of one group in one status, phase and restart count (a summary
/// row, or one task).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    pub key: String,
    pub status: TaskStatus,
    pub phase: Phase,
    pub restart_count: u32,
    pub tasks: u64,
}

/// Tasks of one group whose duration of one metric lies in
/// `[value, value + width)` (width 1: exactly `value`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationTally {
    pub key: String,
    /// Below [`METRICS`].
    pub metric: usize,
    /// Micros.
    pub value: i64,
    pub width: i64,
    pub tasks: u64,
}

/// Finds the exact value of a percentile inside a bucket: the `k`-th
/// (from 1, in order) duration of `metric` in `[lo, hi)` among the group
/// `key`'s tasks. `None` when there is none (the bucket's lower end is
/// used then).
pub type Resolve<'a> = dyn FnMut(&str, usize, i64, i64, u64) -> Option<i64> + 'a;

impl StatsRow {
    /// The row as tallies: its own and its exact durations.
    pub fn into_tallies(self) -> (Tally, Vec<DurationTally>) {
        let mut durations = Vec::new();
        let mut push = |metric, value| {
            durations.push(DurationTally {
                key: self.key.clone(),
                metric,
                value,
                width: 1,
                tasks: 1,
            })
        };
        if let Some(d) = self.completed_in {
            push(0, d.max(0));
        }
        for (i, us) in self.phase_us.iter().enumerate() {
            if *us > 0 {
                push(i + 1, *us);
            }
        }
        let tally = Tally {
            key: self.key,
            status: self.status,
            phase: self.phase,
            restart_count: self.restart_count,
            tasks: 1,
        };
        (tally, durations)
    }
}

/// Nearest-rank percentile `q` (0..=1) of the counted values
/// `(lower end, width, tasks)`, in seconds; 0 for none. Sorts `v`. A
/// bucket wider than one value asks `exact` for the value of that rank
/// within it.
fn percentile(
    v: &mut [(i64, i64, u64)],
    q: f64,
    exact: &mut dyn FnMut(i64, i64, u64) -> Option<i64>,
) -> f64 {
    let n: u64 = v.iter().map(|(_, _, c)| c).sum();
    if n == 0 {
        return 0.0;
    }
    v.sort_unstable();
    let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
    let mut seen = 0;
    for (lo, width, c) in merged(v) {
        if seen + c >= rank {
            let x = if width <= 1 {
                lo
            } else {
                exact(lo, lo.saturating_add(width), rank - seen).unwrap_or(lo)
            };
            return x as f64 / 1e6;
        }
        seen += c;
    }
    0.0
}

/// Sorted values with the counts of equal buckets added up (the summary
/// has a row per hour; a rank inside a bucket counts from its start).
fn merged(v: &[(i64, i64, u64)]) -> impl Iterator<Item = (i64, i64, u64)> + '_ {
    v.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1))
        .map(|same| (same[0].0, same[0].1, same.iter().map(|x| x.2).sum()))
}

fn percentiles(
    v: &mut [(i64, i64, u64)],
    exact: &mut dyn FnMut(i64, i64, u64) -> Option<i64>,
) -> Percentiles {
    Percentiles {
        p50: percentile(v, 0.50, exact),
        p95: percentile(v, 0.95, exact),
    }
}

#[derive(Default)]
struct Acc {
    total: u64,
    status: [u64; 5],
    phase: [u64; 6],
    durations: [Vec<(i64, i64, u64)>; METRICS],
    restarts: u64,
    restarts_max: u32,
}

fn status_index(s: TaskStatus) -> usize {
    TaskStatus::ALL.iter().position(|x| *x == s).unwrap_or(0)
}

fn phase_index(p: Phase) -> usize {
    Phase::ALL.iter().position(|x| *x == p).unwrap_or(0)
}

/// Aggregates single tasks into groups, ordered by key.
pub fn aggregate(rows: impl IntoIterator<Item = StatsRow>) -> Vec<StatsGroup> {
    let mut tallies = Vec::new();
    let mut durations = Vec::new();
    for r in rows {
        let (t, d) = r.into_tallies();
        tallies.push(t);
        durations.extend(d);
    }
    // Every duration is exact: nothing to look up.
    aggregate_tallies(tallies, durations, &mut |_, _, _, _, _| None)
}

/// Aggregates tallies into groups, ordered by key. A group is one with
/// tasks. A percentile that falls in a bucket is looked up with `exact`.
pub fn aggregate_tallies(
    tallies: impl IntoIterator<Item = Tally>,
    durations: impl IntoIterator<Item = DurationTally>,
    exact: &mut Resolve<'_>,
) -> Vec<StatsGroup> {
    let mut groups: BTreeMap<String, Acc> = BTreeMap::new();
    for t in tallies {
        let a = groups.entry(t.key).or_default();
        a.total += t.tasks;
        a.status[status_index(t.status)] += t.tasks;
        a.phase[phase_index(t.phase)] += t.tasks;
        a.restarts += u64::from(t.restart_count) * t.tasks;
        if t.tasks > 0 {
            a.restarts_max = a.restarts_max.max(t.restart_count);
        }
    }
    for d in durations {
        if let Some(a) = groups.get_mut(&d.key)
            && let Some(v) = a.durations.get_mut(d.metric)
        {
            v.push((d.value, d.width, d.tasks));
        }
    }
    groups
        .into_iter()
        .filter(|(_, a)| a.total > 0)
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
            let [completed, phases @ ..] = &mut a.durations;
            let mut time_to_complete =
                percentiles(completed, &mut |lo, hi, k| exact(&key, 0, lo, hi, k));
            let phase_durations = TIMED_PHASES
                .iter()
                .zip(phases.iter_mut())
                .enumerate()
                .map(|(i, (p, v))| {
                    (
                        *p,
                        percentiles(v, &mut |lo, hi, k| exact(&key, i + 1, lo, hi, k)),
                    )
                })
                .collect();
            StatsGroup {
                total: a.total,
                by_status: TaskStatus::ALL.iter().map(|s| (*s, count(*s))).collect(),
                by_phase: Phase::ALL
                    .iter()
                    .map(|p| (*p, a.phase[phase_index(*p)]))
                    .collect(),
                completion_rate: rate(count(TaskStatus::Completed)),
                failure_rate: rate(count(TaskStatus::Failed)),
                time_to_complete: std::mem::take(&mut time_to_complete),
                phase_durations,
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

    fn none(_: i64, _: i64, _: u64) -> Option<i64> {
        None
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<(i64, i64, u64)> = (1..=100).rev().map(|s| (s * S, 1, 1)).collect();
        assert_eq!(percentile(&mut v, 0.5, &mut none), 50.0);
        assert_eq!(percentile(&mut v, 0.95, &mut none), 95.0);
        let mut one = vec![(7 * S, 1, 1)];
        assert_eq!(
            percentiles(&mut one, &mut none),
            Percentiles { p50: 7.0, p95: 7.0 }
        );
        assert_eq!(percentiles(&mut [], &mut none), Percentiles::default());
        let mut two = vec![(2 * S, 1, 1), (S, 1, 1)];
        assert_eq!(
            percentiles(&mut two, &mut none),
            Percentiles { p50: 1.0, p95: 2.0 }
        );
        // Counted values: 1 s × 94, 2 s × 5, 3 s × 1 (100 tasks).
        let mut counted = vec![(3 * S, 1, 1), (S, 1, 94), (2 * S, 1, 5)];
        assert_eq!(percentile(&mut counted, 0.5, &mut none), 1.0);
        assert_eq!(percentile(&mut counted, 0.95, &mut none), 2.0);
        assert_eq!(percentile(&mut counted, 1.0, &mut none), 3.0);
        assert_eq!(percentile(&mut [(S, 1, 0)], 0.5, &mut none), 0.0);
    }

    /// A percentile in a bucket asks for the exact value of its rank
    /// inside the bucket.
    #[test]
    fn a_bucket_is_resolved_to_the_exact_value_of_the_rank() {
        // 10 tasks in [1.00 s, 1.01 s), 10 in [2.00 s, 2.01 s).
        let mut v = vec![(2 * S, 10_000, 10), (S, 10_000, 10)];
        let mut asked = Vec::new();
        let mut exact = |lo: i64, hi: i64, k: u64| {
            asked.push((lo, hi, k));
            Some(lo + k as i64)
        };
        // p50: rank 10, the 10th of the first bucket.
        assert_eq!(percentile(&mut v, 0.5, &mut exact), (S + 10) as f64 / 1e6);
        // p95: rank 19, the 9th of the second.
        assert_eq!(
            percentile(&mut v, 0.95, &mut exact),
            (2 * S + 9) as f64 / 1e6
        );
        assert_eq!(asked, [(S, S + 10_000, 10), (2 * S, 2 * S + 10_000, 9)]);
        // Nothing found: the bucket's lower end.
        assert_eq!(percentile(&mut v, 0.5, &mut none), 1.0);
    }

    #[test]
    fn buckets_cut_durations_to_three_significant_digits() {
        assert_eq!(duration_bucket(0), (0, 1));
        assert_eq!(duration_bucket(999), (999, 1));
        assert_eq!(duration_bucket(1000), (1000, 10));
        assert_eq!(duration_bucket(1239), (1230, 10));
        assert_eq!(duration_bucket(99_999), (99_900, 100));
        assert_eq!(duration_bucket(10 * S), (10 * S, 100_000));
        assert_eq!(duration_bucket(123_456_789), (123_000_000, 1_000_000));
        assert_eq!(
            duration_bucket(i64::MAX),
            (9_220_000_000_000_000_000, 10_000_000_000_000_000)
        );
    }

    #[test]
    fn hours_are_floored() {
        assert_eq!(hour_of(0), 0);
        assert_eq!(hour_of(HOUR_US - 1), 0);
        assert_eq!(hour_of(HOUR_US), 1);
        assert_eq!(hour_of(-1), -1);
        assert_eq!(hour_of(-HOUR_US), -1);
        assert_eq!(hour_of(-HOUR_US - 1), -2);
    }

    #[test]
    fn counted_tallies_weigh_like_single_tasks() {
        let tally = |status, restart_count, tasks| Tally {
            key: "k".into(),
            status,
            phase: Phase::Planning,
            restart_count,
            tasks,
        };
        let g = aggregate_tallies(
            [
                tally(TaskStatus::Completed, 1, 3),
                tally(TaskStatus::Failed, 4, 1),
                // A row that reached 0 adds nothing, not even its maximum.
                tally(TaskStatus::Failed, 9, 0),
            ],
            [DurationTally {
                key: "k".into(),
                metric: 0,
                value: 5 * S,
                width: 1,
                tasks: 3,
            }],
            &mut |_, _, _, _, _| None,
        );
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].total, 4);
        assert_eq!((g[0].restarts_max, g[0].restarts_mean), (4, 7.0 / 4.0));
        assert_eq!(g[0].completion_rate, 0.75);
        assert_eq!(g[0].time_to_complete, Percentiles { p50: 5.0, p95: 5.0 });
        // Nothing but a zero row: no group.
        assert!(
            aggregate_tallies(
                [tally(TaskStatus::Active, 0, 0)],
                [],
                &mut |_, _, _, _, _| None
            )
            .is_empty()
        );
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
