//! GetStats' read: one range scan of the `tasks_stats` covering index
//! (tasks created in the range, with every column the figures need), so
//! the table itself is not read. The columns are kept up to date by
//! triggers in the transaction of every change (see the migration).

use rusqlite::{Connection, params};

use super::Store;
use crate::domain::stats::{GroupBy, StatsGroup, StatsQuery, StatsRow, aggregate};
use crate::domain::{Phase, TaskStatus};
use crate::error::Result;

/// The statistics of the tasks created in the query's range.
pub fn stats(c: &Connection, q: &StatsQuery) -> Result<Vec<StatsGroup>> {
    // The key column comes from an enum, never from the request.
    let key = match q.group_by {
        GroupBy::None => "''",
        GroupBy::Template => "template",
        GroupBy::CreatedBy => "created_by",
    };
    let sql = format!(
        "SELECT {key}, status, phase, restart_count, \
         CASE WHEN status = 'completed' THEN finished_at - created_at END, \
         spec_clarification_us, planning_us, development_us, review_us \
         FROM tasks INDEXED BY tasks_stats WHERE created_at >= ? AND created_at < ?"
    );
    let mut st = c.prepare_cached(&sql)?;
    let from = q.created_after.unwrap_or(i64::MIN);
    let to = q.created_before.unwrap_or(i64::MAX);
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
    Ok(aggregate(out))
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
}
