//! GetStats on SQLite and on PostgreSQL (listed in [`on_both_backends!`]
//! at the end): figures at controlled times, the split of a range into
//! whole and cut hours, the triggers' arithmetic, and the summary's
//! figures against those of every task.
use super::*;
use crate::domain::stats::Percentiles;
use crate::store::tests::{AnyDb, Backend, TestDb, create, new_task, on_both_backends};

/// Sets a task's columns as the commands would at `at` (a side
/// connection; ids and numbers only, so the text is the same on both).
async fn set(db: &AnyDb, id: crate::domain::TaskId, assignments: &str, at: i64) {
    let sql = format!("UPDATE tasks SET {assignments}, updated_at = {at} WHERE task_id = '{id}'");
    db.exec(&sql).await;
}

/// Phase changes and completion at controlled times (a side connection
/// writes `updated_at` as the commands do), then the figures.
async fn figures_follow_the_times_of_the_changes(backend: Backend) {
    let db = AnyDb::open(backend).await;
    let store = db.retention();
    let (a, _) = create(&*db.store, new_task("a", "alice")).await.unwrap();
    let (b, _) = create(&*db.store, new_task("b", "bob")).await.unwrap();
    let s = 1_000_000i64;
    // a: created at 0, planning at 10 s, review at 40 s, completed at
    // 100 s; b: created at 0, failed at 5 s after one restart.
    set(&db, a.task_id, "created_at = 0", 0).await;
    set(&db, b.task_id, "created_at = 0", 0).await;
    set(&db, a.task_id, "phase = 'planning'", 10 * s).await;
    set(&db, a.task_id, "phase = 'review'", 40 * s).await;
    let done = "status = 'completed', phase = 'completed'";
    set(&db, a.task_id, done, 100 * s).await;
    set(
        &db,
        b.task_id,
        "status = 'failed', restart_count = 1",
        5 * s,
    )
    .await;
    let all = store.stats(StatsQuery::default()).await.unwrap();
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

    let by = store
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
    let none = store
        .stats(StatsQuery {
            created_after: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
    let both = store
        .stats(StatsQuery {
            created_after: Some(0),
            created_before: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(both[0].total, 2);
    drop(store);
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

/// The PostgreSQL triggers' rounding and hours (`stats_bucket`,
/// `stats_hour`) are the Rust ones.
#[tokio::test]
async fn the_postgresql_summary_sql_rounds_and_buckets_like_rust() {
    let db = AnyDb::open(Backend::Postgres).await;
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
        if v > 0 {
            let q = db.query_i64(&format!("SELECT stats_bucket({v})")).await;
            assert_eq!(q, Some(crate::domain::stats::duration_bucket(v).0), "{v}");
        }
        let h = db.query_i64(&format!("SELECT stats_hour({v})")).await;
        assert_eq!(h, Some(crate::domain::stats::hour_of(v)), "{v}");
    }
    db.shutdown().await;
}

/// Tasks spread over hours and changed through their lives: the
/// figures from the summary rows (plus the cut hours) are exactly those
/// of every task read one by one, for whole, cut and open ranges, and
/// stay so after tasks are deleted.
/// GetStats through the store port, and the figures of every task of the
/// range read one by one.
async fn got_and_expected(db: &AnyDb, q: StatsQuery) -> (Vec<StatsGroup>, Vec<StatsGroup>) {
    let got = db.retention().stats(q).await.unwrap();
    let expected = match (db.sqlite_path(), db.pg_url()) {
        (Some(path), _) => {
            let c = Connection::open(path).unwrap();
            let key = match q.group_by {
                GroupBy::None => "''",
                GroupBy::Template => "template",
                GroupBy::CreatedBy => "created_by",
            };
            let from = q.created_after.unwrap_or(i64::MIN);
            let to = q.created_before.unwrap_or(i64::MAX);
            crate::domain::stats::aggregate(task_rows(&c, key, from, to).unwrap())
        }
        (None, Some(url)) => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            let every = crate::store::postgres::every_task_stats(&pool, &q).await;
            pool.close().await;
            every.unwrap()
        }
        (None, None) => unreachable!("a store is on one of the backends"),
    };
    (got, expected)
}

/// Tasks spread over hours and changed through their lives: the
/// figures from the summary rows (plus the cut hours) are exactly those
/// of every task read one by one, for whole, cut and open ranges, and
/// stay so after tasks are deleted.
async fn summary_figures_equal_the_figures_of_every_task(backend: Backend) {
    let db = AnyDb::open(backend).await;
    let mut ids = Vec::new();
    for i in 0..40 {
        let by = if i % 3 == 0 { "alice" } else { "bob" };
        ids.push(
            create(&*db.store, new_task(&format!("t{i}"), by))
                .await
                .unwrap()
                .0
                .task_id,
        );
    }
    let h = HOUR_US;
    let s = 1_000_000i64;
    for (i, id) in ids.iter().enumerate() {
        let i = i as i64;
        let created = i * h / 4 + i * 7 * s;
        set(&db, *id, &format!("created_at = {created}"), created).await;
        if i % 2 == 0 {
            // Many in one bucket [3.00 s, 3.01 s), in no order: the
            // percentiles need the exact value of a rank inside it.
            let at = created + 3 * s + (i * 7919) % 10_000;
            set(&db, *id, "phase = 'planning'", at).await;
        }
        if i % 4 == 0 {
            let at = created + (i + 2) * 11 * s + 12_345;
            set(&db, *id, "status = 'completed', phase = 'completed'", at).await;
        } else if i % 5 == 0 {
            let at = created + 5 * s;
            set(&db, *id, "status = 'failed', restart_count = 3", at).await;
        } else if i % 3 == 0 {
            set(
                &db,
                *id,
                "status = 'active', restart_count = 1",
                created + s,
            )
            .await;
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
    let check = || async {
        for (after, before) in ranges {
            for group_by in [GroupBy::None, GroupBy::Template, GroupBy::CreatedBy] {
                let q = StatsQuery {
                    created_after: after,
                    created_before: before,
                    group_by,
                };
                let (got, expected) = got_and_expected(&db, q).await;
                assert_eq!(got, expected, "{q:?}");
            }
        }
    };
    let whole = db.retention().stats(StatsQuery::default()).await.unwrap();
    assert_eq!(whole[0].total, 40);
    assert!(whole[0].time_to_complete.p50 > 0.0);
    check().await;
    let gone: Vec<String> = ids.iter().step_by(3).map(|id| format!("'{id}'")).collect();
    db.exec(&format!(
        "DELETE FROM tasks WHERE task_id IN ({})",
        gone.join(", ")
    ))
    .await;
    check().await;
    let rows = db
        .query_i64("SELECT COUNT(*) FROM stats_hours WHERE tasks <= 0")
        .await;
    assert_eq!(rows, Some(0));
    let rows = db
        .query_i64("SELECT COUNT(*) FROM stats_durations WHERE tasks <= 0")
        .await;
    assert_eq!(rows, Some(0));
    db.shutdown().await;
}

on_both_backends!(
    figures_follow_the_times_of_the_changes,
    summary_figures_equal_the_figures_of_every_task,
);
