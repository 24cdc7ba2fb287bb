//! GetStats on PostgreSQL: the SQLite store's `stats` read over the same
//! summary rows (`stats_hours`, `stats_durations`), which the triggers of
//! the `stats` migration keep as task rows change in the writer's
//! transactions. Whole hours come from the summary rows, the hours the
//! range cuts into from `tasks` (the `tasks_stats` index); a percentile's
//! exact value is the k-th entry of its bucket in that duration's index.
//! All in one REPEATABLE READ read-only transaction, so the counts and the
//! lookups see one snapshot.
//!
//! The pure aggregation (`domain::stats::aggregate_tallies`) asks for the
//! exact values through a synchronous callback; the lookups here are
//! async, so it runs twice on the same tallies: once to learn which
//! lookups it needs, then with their answers.

use std::collections::HashMap;

use sqlx::{PgConnection, PgPool};

use crate::domain::stats::{
    DurationTally, GroupBy, METRICS, StatsGroup, StatsQuery, StatsRow, Tally, aggregate_tallies,
    duration_bucket,
};
use crate::domain::{Phase, TaskStatus};
use crate::error::Result;
use crate::store::stats::plan;

/// Per metric: the duration's expression and the condition for a task to
/// have it (the partial indexes of the `stats` migration, same text).
const DURATIONS: [(&str, &str); METRICS] = [
    (
        "GREATEST(finished_at - created_at, 0)",
        "status = 'completed' AND finished_at IS NOT NULL",
    ),
    ("spec_clarification_us", "spec_clarification_us > 0"),
    ("planning_us", "planning_us > 0"),
    ("development_us", "development_us > 0"),
    ("review_us", "review_us > 0"),
];

/// The group's key column (from an enum, never from the request).
fn key_column(g: GroupBy) -> &'static str {
    match g {
        GroupBy::None => "''::TEXT",
        GroupBy::Template => "template",
        GroupBy::CreatedBy => "created_by",
    }
}

/// One exact-value lookup: group key, metric, bucket [lo, hi), rank.
type Lookup = (String, usize, i64, i64, u64);

/// The statistics of the tasks created in the query's range.
pub async fn stats(pool: &PgPool, q: &StatsQuery) -> Result<Vec<StatsGroup>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let key = key_column(q.group_by);
    let plan = plan(q.created_after, q.created_before);
    let mut tallies = Vec::new();
    let mut durations = Vec::new();
    if let Some((first, end)) = plan.hours {
        summary(&mut tx, key, first, end, &mut tallies, &mut durations).await?;
    }
    for (from, to) in plan.edges {
        for row in task_rows(&mut tx, key, from, to).await? {
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
    // First pass: which exact values the aggregation needs.
    let mut wanted: Vec<Lookup> = Vec::new();
    aggregate_tallies(
        tallies.clone(),
        durations.clone(),
        &mut |k, metric, lo, hi, rank| {
            wanted.push((k.to_owned(), metric, lo, hi, rank));
            None
        },
    );
    let mut answers: HashMap<Lookup, Option<i64>> = HashMap::with_capacity(wanted.len());
    for w in wanted {
        if answers.contains_key(&w) {
            continue;
        }
        let v = exact(&mut tx, q.group_by, &w, range).await?;
        answers.insert(w, v);
    }
    tx.commit().await?;
    // Second pass: the same tallies, with the answers.
    Ok(aggregate_tallies(
        tallies,
        durations,
        &mut |k, metric, lo, hi, rank| {
            answers
                .get(&(k.to_owned(), metric, lo, hi, rank))
                .copied()
                .flatten()
        },
    ))
}

/// The `rank`-th (from 1) duration of `metric` in `[lo, hi)` among the
/// tasks of group `key` created in `range`: a walk of the bucket's part of
/// the duration's index.
async fn exact(
    c: &mut PgConnection,
    group_by: GroupBy,
    (key, metric, lo, hi, rank): &Lookup,
    (from, to): (i64, i64),
) -> Result<Option<i64>> {
    let Some((expr, has)) = DURATIONS.get(*metric) else {
        return Ok(None);
    };
    let group = match group_by {
        GroupBy::None => "$6 = ''",
        GroupBy::Template => "template = $6",
        GroupBy::CreatedBy => "created_by = $6",
    };
    let sql = format!(
        "SELECT {expr} FROM tasks WHERE {has} \
         AND {expr} >= $1 AND {expr} < $2 AND created_at >= $3 AND created_at < $4 \
         AND {group} ORDER BY {expr} LIMIT 1 OFFSET $5"
    );
    let skip = i64::try_from(rank.saturating_sub(1)).unwrap_or(i64::MAX);
    Ok(sqlx::query_scalar(&sql)
        .bind(lo)
        .bind(hi)
        .bind(from)
        .bind(to)
        .bind(skip)
        .bind(key)
        .fetch_optional(&mut *c)
        .await?)
}

/// The summary rows of hours `[first, end)`.
async fn summary(
    c: &mut PgConnection,
    key: &str,
    first: i64,
    end: i64,
    tallies: &mut Vec<Tally>,
    durations: &mut Vec<DurationTally>,
) -> Result<()> {
    let rows: Vec<(String, String, String, i64, i64)> = sqlx::query_as(&format!(
        "SELECT {key}, status, phase, restart_count, tasks FROM stats_hours \
         WHERE hour >= $1 AND hour < $2 AND tasks > 0"
    ))
    .bind(first)
    .bind(end)
    .fetch_all(&mut *c)
    .await?;
    for (key, status, phase, restarts, tasks) in rows {
        tallies.push(Tally {
            key,
            status: TaskStatus::from_db(&status)?,
            phase: Phase::from_db(&phase)?,
            restart_count: u32::try_from(restarts).unwrap_or(u32::MAX),
            tasks: u64::try_from(tasks).unwrap_or(0),
        });
    }
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(&format!(
        "SELECT {key}, metric, value, tasks FROM stats_durations \
         WHERE hour >= $1 AND hour < $2 AND tasks > 0"
    ))
    .bind(first)
    .bind(end)
    .fetch_all(&mut *c)
    .await?;
    for (key, metric, value, tasks) in rows {
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
pub(crate) async fn task_rows(
    c: &mut PgConnection,
    key: &str,
    from: i64,
    to: i64,
) -> Result<Vec<StatsRow>> {
    type Row = (String, String, String, i64, Option<i64>, i64, i64, i64, i64);
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {key}, status, phase, restart_count, \
         CASE WHEN status = 'completed' THEN finished_at - created_at END, \
         spec_clarification_us, planning_us, development_us, review_us \
         FROM tasks WHERE created_at >= $1 AND created_at < $2"
    ))
    .bind(from)
    .bind(to)
    .fetch_all(&mut *c)
    .await?;
    rows.into_iter()
        .map(|(key, status, phase, restarts, completed_in, a, b, d, r)| {
            Ok(StatsRow {
                key,
                status: TaskStatus::from_db(&status)?,
                phase: Phase::from_db(&phase)?,
                restart_count: u32::try_from(restarts).unwrap_or(u32::MAX),
                completed_in,
                phase_us: [a, b, d, r],
            })
        })
        .collect()
}

/// Every task of `[from, to)` read one by one and aggregated: what the
/// summary must equal (store tests).
#[cfg(test)]
pub(crate) async fn every_task(pool: &PgPool, q: &StatsQuery) -> Result<Vec<StatsGroup>> {
    let mut c = pool.acquire().await?;
    let from = q.created_after.unwrap_or(i64::MIN);
    let to = q.created_before.unwrap_or(i64::MAX);
    let rows = task_rows(&mut c, key_column(q.group_by), from, to).await?;
    Ok(crate::domain::stats::aggregate(rows))
}
