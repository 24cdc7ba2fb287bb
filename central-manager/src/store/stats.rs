//! GetStats' read: the summary rows the triggers keep per hour of
//! creation, group and status (see the `stats_summary` migration), so a
//! call reads a few rows per hour and group instead of every task. An
//! hour the requested range only partly covers is read from `tasks`
//! itself (one range scan of the `tasks_stats` covering index), and its
//! tasks are counted the way the summary counts them. Durations are
//! counted per bucket (3 significant digits); a percentile's exact value
//! is the k-th entry of its bucket in that duration's index. All of it in
//! one read transaction, so the counts and the lookups agree.

use rusqlite::{Connection, OptionalExtension, params};

use super::Store;
use crate::domain::stats::{
    DurationTally, GroupBy, HOUR_US, METRICS, StatsGroup, StatsQuery, StatsRow, Tally,
    aggregate_tallies, duration_bucket,
};
use crate::domain::{Phase, TaskStatus};
use crate::error::{Error, Result};

/// Per metric (see `stats_durations`): the duration's expression, the
/// condition for a task to have it, and the index that holds it in order.
const DURATIONS: [(&str, &str, &str); METRICS] = [
    (
        "MAX(finished_at - created_at, 0)",
        "status = 'completed' AND finished_at IS NOT NULL",
        "stats_time_to_complete",
    ),
    (
        "spec_clarification_us",
        "spec_clarification_us > 0",
        "stats_spec_clarification",
    ),
    ("planning_us", "planning_us > 0", "stats_planning"),
    ("development_us", "development_us > 0", "stats_development"),
    ("review_us", "review_us > 0", "stats_review"),
];

/// Where a range's figures come from: summary rows for the whole hours
/// `hours` (start inclusive, end exclusive), and `tasks` for the
/// creation-time ranges `edges` (start inclusive, end exclusive).
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    hours: Option<(i64, i64)>,
    edges: Vec<(i64, i64)>,
}

/// Splits `[after, before)` into whole hours and the partial hours at its
/// ends.
fn plan(after: Option<i64>, before: Option<i64>) -> Plan {
    let (from, to) = (after.unwrap_or(i64::MIN), before.unwrap_or(i64::MAX));
    if from >= to {
        return Plan {
            hours: None,
            edges: Vec::new(),
        };
    }
    // The first hour starting at or after `from`, and the hour holding
    // `to` (those before it end at or before `to`); unbounded sides take
    // every hour.
    let first = after.map_or(i64::MIN, |a| {
        a.div_euclid(HOUR_US) + i64::from(a.rem_euclid(HOUR_US) != 0)
    });
    let end = before.map_or(i64::MAX, |b| b.div_euclid(HOUR_US));
    let start_of = |h: i64| (i128::from(h) * i128::from(HOUR_US)).clamp(from.into(), to.into());
    if first >= end {
        // The range lies within at most two hours: read it all.
        return Plan {
            hours: None,
            edges: vec![(from, to)],
        };
    }
    let mut edges = Vec::new();
    // i128 → i64 cannot fail: clamped to two i64s.
    let first_start = i64::try_from(start_of(first)).unwrap_or(from);
    if after.is_some() && from < first_start {
        edges.push((from, first_start));
    }
    let end_start = i64::try_from(start_of(end)).unwrap_or(to);
    if before.is_some() && end_start < to {
        edges.push((end_start, to));
    }
    Plan {
        hours: Some((first, end)),
        edges,
    }
}

/// The statistics of the tasks created in the query's range.
pub fn stats(c: &Connection, q: &StatsQuery) -> Result<Vec<StatsGroup>> {
    // The key column comes from an enum, never from the request.
    let key = match q.group_by {
        GroupBy::None => "''",
        GroupBy::Template => "template",
        GroupBy::CreatedBy => "created_by",
    };
    let tx = c.unchecked_transaction()?;
    let plan = plan(q.created_after, q.created_before);
    let mut tallies = Vec::new();
    let mut durations = Vec::new();
    if let Some((first, end)) = plan.hours {
        summary(&tx, key, first, end, &mut tallies, &mut durations)?;
    }
    for (from, to) in plan.edges {
        for row in task_rows(&tx, key, from, to)? {
            let (t, d) = row.into_tallies();
            tallies.push(t);
            durations.extend(d.into_iter().map(|mut d| {
                (d.value, d.width) = duration_bucket(d.value);
                d
            }));
        }
    }
    let range = (
        q.created_after.unwrap_or(i64::MIN),
        q.created_before.unwrap_or(i64::MAX),
    );
    let mut failed: Option<Error> = None;
    let groups = aggregate_tallies(
        tallies,
        durations,
        &mut |k, metric, lo, hi, rank| match exact(
            &tx,
            q.group_by,
            k,
            metric,
            (lo, hi),
            range,
            rank,
        ) {
            Ok(v) => v,
            Err(e) => {
                failed.get_or_insert(e);
                None
            }
        },
    );
    match failed {
        Some(e) => Err(e),
        None => Ok(groups),
    }
}

/// The `rank`-th (from 1) duration of `metric` in `[lo, hi)` among the
/// tasks of group `key` created in `range`: a walk of the bucket's part
/// of the duration's index.
fn exact(
    c: &Connection,
    group_by: GroupBy,
    key: &str,
    metric: usize,
    (lo, hi): (i64, i64),
    (from, to): (i64, i64),
    rank: u64,
) -> Result<Option<i64>> {
    let Some((expr, has, index)) = DURATIONS.get(metric) else {
        return Ok(None);
    };
    // The key column comes from an enum, never from the request.
    let group = match group_by {
        GroupBy::None => "?6 = ''",
        GroupBy::Template => "template = ?6",
        GroupBy::CreatedBy => "created_by = ?6",
    };
    let sql = format!(
        "SELECT {expr} FROM tasks INDEXED BY {index} WHERE {has} \
         AND {expr} >= ?1 AND {expr} < ?2 AND created_at >= ?3 AND created_at < ?4 \
         AND {group} ORDER BY {expr} LIMIT 1 OFFSET ?5"
    );
    let skip = i64::try_from(rank.saturating_sub(1)).unwrap_or(i64::MAX);
    Ok(c.prepare_cached(&sql)?
        .query_row(params![lo, hi, from, to, skip, key], |r| r.get(0))
        .optional()?)
}

/// The summary rows of hours `[first, end)`.
fn summary(
    c: &Connection,
    key: &str,
    first: i64,
    end: i64,
    tallies: &mut Vec<Tally>,
    durations: &mut Vec<DurationTally>,
) -> Result<()> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {key}, status, phase, restart_count, tasks FROM stats_hours \
         WHERE hour >= ? AND hour < ? AND tasks > 0"
    ))?;
    let rows = st.query_map(params![first, end], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    for r in rows {
        let (key, status, phase, restarts, tasks) = r?;
        tallies.push(Tally {
            key,
            status: TaskStatus::from_db(&status)?,
            phase: Phase::from_db(&phase)?,
            restart_count: u32::try_from(restarts).unwrap_or(u32::MAX),
            tasks: u64::try_from(tasks).unwrap_or(0),
        });
    }
    let mut st = c.prepare_cached(&format!(
        "SELECT {key}, metric, value, tasks FROM stats_durations \
         WHERE hour >= ? AND hour < ? AND tasks > 0"
    ))?;
    let rows = st.query_map(params![first, end], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    for r in rows {
        let (key, metric, value, tasks) = r?;
        let Some(metric) = usize::try_from(metric).ok().filter(|m| *m < METRICS) else {
            continue;
        };
        durations.push(DurationTally {
            key,
            metric,
            value,
            width: duration_bucket(value).1,
            tasks: u64::try_from(tasks).unwrap_or(0),
        });
    }
    Ok(())
}

/// The tasks created in `[from, to)`, one row each.
fn task_rows(c: &Connection, key: &str, from: i64, to: i64) -> Result<Vec<StatsRow>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {key}, status, phase, restart_count, \
         CASE WHEN status = 'completed' THEN finished_at - created_at END, \
         spec_clarification_us, planning_us, development_us, review_us \
         FROM tasks INDEXED BY tasks_stats WHERE created_at >= ? AND created_at < ?"
    ))?;
    let rows = st.query_map(params![from, to], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, Option<i64>>(4)?,
            [
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, i64>(8)?,
            ],
        ))
    })?;
    let mut out = Vec::new();
    for r in rows {
        let (key, status, phase, restarts, completed_in, phase_us) = r?;
        out.push(StatsRow {
            key,
            status: TaskStatus::from_db(&status)?,
            phase: Phase::from_db(&phase)?,
            restart_count: u32::try_from(restarts).unwrap_or(u32::MAX),
            completed_in,
            phase_us,
        });
    }
    Ok(out)
}

impl Store {
    /// GetStats' groups.
    pub async fn stats(&self, q: StatsQuery) -> Result<Vec<StatsGroup>> {
        self.readers.run(move |c| stats(c, &q)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::stats::Percentiles;
    use crate::store::tests::{TestDb, create, new_task};

    /// Phase changes and completion at controlled times (a side connection
    /// writes `updated_at` as the commands do), then the figures.
    #[tokio::test]
    async fn figures_follow_the_times_of_the_changes() {
        let db = TestDb::open().await;
        let (a, _) = create(&db.store, new_task("a", "alice")).await.unwrap();
        let (b, _) = create(&db.store, new_task("b", "bob")).await.unwrap();
        let url = format!("sqlite://{}", db.path().display());
        let mut side = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
            .await
            .unwrap();
        let s = 1_000_000i64;
        // a: created at 0, planning at 10 s, review at 40 s, completed at
        // 100 s; b: created at 0, failed at 5 s after one restart.
        for (id, sql, at) in [
            (
                a.task_id,
                "UPDATE tasks SET created_at = 0, updated_at = 0 WHERE task_id = ?",
                0,
            ),
            (
                b.task_id,
                "UPDATE tasks SET created_at = 0, updated_at = 0 WHERE task_id = ?",
                0,
            ),
            (
                a.task_id,
                "UPDATE tasks SET phase = 'planning', updated_at = ?2 WHERE task_id = ?1",
                10,
            ),
            (
                a.task_id,
                "UPDATE tasks SET phase = 'review', updated_at = ?2 WHERE task_id = ?1",
                40,
            ),
            (
                a.task_id,
                "UPDATE tasks SET status = 'completed', phase = 'completed', updated_at = ?2 WHERE task_id = ?1",
                100,
            ),
            (
                b.task_id,
                "UPDATE tasks SET status = 'failed', restart_count = 1, updated_at = ?2 WHERE task_id = ?1",
                5,
            ),
        ] {
            sqlx::query(sql)
                .bind(id.to_string())
                .bind(at * s)
                .execute(&mut side)
                .await
                .unwrap();
        }
        drop(side);
        let all = db.store.stats(StatsQuery::default()).await.unwrap();
        assert_eq!(all.len(), 1);
        let g = &all[0];
        assert_eq!(g.total, 2);
        assert_eq!((g.completion_rate, g.failure_rate), (0.5, 0.5));
        assert_eq!(
            g.time_to_complete,
            Percentiles {
                p50: 100.0,
                p95: 100.0
            }
        );
        let phase = |p: Phase| g.phase_durations.iter().find(|(x, _)| *x == p).unwrap().1;
        assert_eq!(
            phase(Phase::SpecClarification),
            Percentiles {
                p50: 10.0,
                p95: 10.0
            }
        );
        assert_eq!(
            phase(Phase::Planning),
            Percentiles {
                p50: 30.0,
                p95: 30.0
            }
        );
        assert_eq!(
            phase(Phase::Review),
            Percentiles {
                p50: 60.0,
                p95: 60.0
            }
        );
        assert_eq!(phase(Phase::Development), Percentiles::default());
        assert_eq!((g.restarts_max, g.restarts_mean), (1, 0.5));

        let by = db
            .store
            .stats(StatsQuery {
                group_by: GroupBy::CreatedBy,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            by.iter().map(|g| g.key.as_str()).collect::<Vec<_>>(),
            ["alice", "bob"]
        );
        // The range is [after, before).
        let none = db
            .store
            .stats(StatsQuery {
                created_after: Some(1),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(none.is_empty());
        let both = db
            .store
            .stats(StatsQuery {
                created_after: Some(0),
                created_before: Some(1),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(both[0].total, 2);
        db.shutdown().await;
    }

    #[test]
    fn ranges_split_into_whole_hours_and_edges() {
        let h = HOUR_US;
        let all = plan(None, None);
        assert_eq!(all.hours, Some((i64::MIN, i64::MAX)));
        assert!(all.edges.is_empty());
        // Whole hours need no edge.
        let whole = plan(Some(2 * h), Some(5 * h));
        assert_eq!((whole.hours, whole.edges), (Some((2, 5)), vec![]));
        // Cut hours at both ends are read from the tasks.
        let cut = plan(Some(2 * h + 7), Some(5 * h + 9));
        assert_eq!(cut.hours, Some((3, 5)));
        assert_eq!(cut.edges, vec![(2 * h + 7, 3 * h), (5 * h, 5 * h + 9)]);
        // Within two hours: all from the tasks.
        let short = plan(Some(2 * h + 7), Some(3 * h + 9));
        assert_eq!(
            (short.hours, short.edges),
            (None, vec![(2 * h + 7, 3 * h + 9)])
        );
        let open_end = plan(Some(-h - 1), None);
        assert_eq!(open_end.hours, Some((-1, i64::MAX)));
        assert_eq!(open_end.edges, vec![(-h - 1, -h)]);
        let open_start = plan(None, Some(h / 2));
        assert_eq!(open_start.hours, Some((i64::MIN, 0)));
        assert_eq!(open_start.edges, vec![(0, h / 2)]);
        assert_eq!(plan(Some(5), Some(5)).edges, vec![]);
        assert_eq!(plan(Some(i64::MAX - 1), Some(i64::MAX)).hours, None);
        assert_eq!(plan(Some(i64::MIN), Some(i64::MIN + 1)).hours, None);
    }

    /// The triggers' rounding and hours are the Rust ones.
    #[tokio::test]
    async fn the_summary_sql_rounds_and_buckets_like_rust() {
        let db = TestDb::open().await;
        let c = Connection::open(db.path()).unwrap();
        for v in [
            0i64,
            1,
            999,
            1000,
            1234,
            1235,
            99_950,
            10_000_000,
            123_456_789,
            -1,
            -3_600_000_000,
            -3_600_000_001,
            i64::MAX / 2,
        ] {
            let (q, h): (i64, i64) = c
                .query_row(
                    "SELECT CASE WHEN ?1 > 0 THEN ?1 / s * s ELSE ?1 END, \
                     (?1 - ((?1 % 3600000000) + 3600000000) % 3600000000) / 3600000000 \
                     FROM (SELECT CAST(substr('100000000000000000000', 1, \
                     MAX(length(?1) - 2, 1)) AS INTEGER) AS s)",
                    [v],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap();
            if v > 0 {
                assert_eq!(q, crate::domain::stats::duration_bucket(v).0, "{v}");
            }
            assert_eq!(h, crate::domain::stats::hour_of(v), "{v}");
        }
        drop(c);
        db.shutdown().await;
    }

    /// Tasks spread over hours and changed through their lives: the
    /// figures from the summary rows (plus the cut hours) are exactly those
    /// of every task read one by one, for whole, cut and open ranges, and
    /// stay so after tasks are deleted.
    #[tokio::test]
    async fn summary_figures_equal_the_figures_of_every_task() {
        let db = TestDb::open().await;
        let mut ids = Vec::new();
        for i in 0..40 {
            let by = if i % 3 == 0 { "alice" } else { "bob" };
            ids.push(
                create(&db.store, new_task(&format!("t{i}"), by))
                    .await
                    .unwrap()
                    .0
                    .task_id,
            );
        }
        let url = format!("sqlite://{}", db.path().display());
        let mut side = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
            .await
            .unwrap();
        let h = HOUR_US;
        let s = 1_000_000i64;
        for (i, id) in ids.iter().enumerate() {
            let i = i as i64;
            let created = i * h / 4 + i * 7 * s;
            let mut steps: Vec<(&str, i64)> = vec![(
                "UPDATE tasks SET created_at = ?2, updated_at = ?2 WHERE task_id = ?1",
                created,
            )];
            if i % 2 == 0 {
                // Many in one bucket [3.00 s, 3.01 s), in no order: the
                // percentiles need the exact value of a rank inside it.
                steps.push((
                    "UPDATE tasks SET phase = 'planning', updated_at = ?2 WHERE task_id = ?1",
                    created + 3 * s + (i * 7919) % 10_000,
                ));
            }
            if i % 4 == 0 {
                steps.push((
                    "UPDATE tasks SET status = 'completed', phase = 'completed', updated_at = ?2 WHERE task_id = ?1",
                    created + (i + 2) * 11 * s + 12_345,
                ));
            } else if i % 5 == 0 {
                steps.push((
                    "UPDATE tasks SET status = 'failed', restart_count = 3, updated_at = ?2 WHERE task_id = ?1",
                    created + 5 * s,
                ));
            } else if i % 3 == 0 {
                steps.push((
                    "UPDATE tasks SET status = 'active', restart_count = 1, updated_at = ?2 WHERE task_id = ?1",
                    created + s,
                ));
            }
            for (sql, at) in steps {
                sqlx::query(sql)
                    .bind(id.to_string())
                    .bind(at)
                    .execute(&mut side)
                    .await
                    .unwrap();
            }
        }
        let ranges = [
            (None, None),
            (Some(h), Some(5 * h)),
            (Some(h + 17), Some(6 * h + 3)),
            (Some(2 * h + 5), Some(3 * h - 5)),
            (Some(3 * h + 1), None),
            (None, Some(7 * h + 1)),
            (Some(100 * h), None),
        ];
        let check = |c: &Connection| {
            for (after, before) in ranges {
                for group_by in [GroupBy::None, GroupBy::Template, GroupBy::CreatedBy] {
                    let q = StatsQuery {
                        created_after: after,
                        created_before: before,
                        group_by,
                    };
                    let key = match group_by {
                        GroupBy::None => "''",
                        GroupBy::Template => "template",
                        GroupBy::CreatedBy => "created_by",
                    };
                    let every = task_rows(
                        c,
                        key,
                        after.unwrap_or(i64::MIN),
                        before.unwrap_or(i64::MAX),
                    )
                    .unwrap();
                    let expected = crate::domain::stats::aggregate(every);
                    assert_eq!(stats(c, &q).unwrap(), expected, "{q:?}");
                }
            }
        };
        let c = Connection::open(db.path()).unwrap();
        let whole = stats(&c, &StatsQuery::default()).unwrap();
        assert_eq!(whole[0].total, 40);
        assert!(whole[0].time_to_complete.p50 > 0.0);
        check(&c);
        sqlx::query("DELETE FROM tasks WHERE rowid % 3 = 0")
            .execute(&mut side)
            .await
            .unwrap();
        check(&c);
        let rows: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM stats_hours WHERE tasks <= 0",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(rows, 0);
        drop((c, side));
        db.shutdown().await;
    }
}
