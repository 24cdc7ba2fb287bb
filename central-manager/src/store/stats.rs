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
pub(crate) struct Plan {
    pub hours: Option<(i64, i64)>,
    pub edges: Vec<(i64, i64)>,
}

/// Splits `[after, before)` into whole hours and the partial hours at its
/// ends.
pub(crate) fn plan(after: Option<i64>, before: Option<i64>) -> Plan {
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
mod tests;
