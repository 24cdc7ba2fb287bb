//! Store tests for what issue 12 hardened that only SQLite has: the
//! circuit breaker against a database file that cannot be written (a lock
//! held by another connection) and the crash-history window's query plan.
//! (Ownership of host reports and the automatic restart's conditions run
//! on both backends in `pod_tests`.)

use std::time::{Duration, Instant};

use sqlx::Connection;

use super::breaker::{OPEN_AFTER, PROBE_MAX};
use super::pod_tests::running_on;
use super::tests::{TestDb, create, new_task};
use super::*;
use crate::domain::RestartDefaults;
use crate::error::Error;

const DEFAULTS: RestartDefaults = crate::domain::RestartPolicy {
    auto_restart: true,
    max_restarts: 3,
    window_seconds: 60,
    initial_backoff_ms: 1000,
    max_backoff_ms: 30_000,
};

/// Another connection holding the write lock until dropped.
struct Lock(sqlx::SqliteConnection);

impl Lock {
    async fn take(db: &TestDb) -> Self {
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.path().display()))
            .await
            .unwrap();
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut c)
            .await
            .unwrap();
        Self(c)
    }

    async fn release(mut self) {
        sqlx::query("ROLLBACK").execute(&mut self.0).await.unwrap();
        self.0.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_fails_fast_and_closes_by_itself() {
    let busy = Duration::from_millis(300);
    let db = TestDb::open_with(EventHub::default(), busy).await;
    let (before, _) = create(&db.store, new_task("before", "alice"))
        .await
        .unwrap();
    let lock = Lock::take(&db).await;
    for _ in 0..OPEN_AFTER {
        assert!(!db.store.breaker().is_open());
        let e = create(&db.store, new_task("x", "a")).await.unwrap_err();
        assert!(matches!(e, Error::StoreUnavailable(_)), "{e:?}");
    }
    assert!(
        db.store.breaker().is_open(),
        "open after {OPEN_AFTER} failures"
    );
    // Open: refused without waiting for the busy timeout.
    let start = Instant::now();
    let e = create(&db.store, new_task("x", "a")).await.unwrap_err();
    assert!(matches!(e, Error::StoreUnavailable(_)), "{e:?}");
    assert!(start.elapsed() < busy / 2, "took {:?}", start.elapsed());
    assert!(db.store.ensure_writable().is_err());
    // Reads go on.
    assert!(db.store.task(before.task_id).await.unwrap().is_some());

    lock.release().await;
    let start = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), db.store.breaker().closed())
        .await
        .expect("the prober closes the breaker");
    // The probe delay is capped: back within about PROBE_MAX (+ slack for a
    // loaded machine).
    assert!(
        start.elapsed() < PROBE_MAX + Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    create(&db.store, new_task("after", "alice")).await.unwrap();
    db.shutdown().await;
}

/// Schedule and retention writes go through the same writer: refused at
/// once while the breaker is open, like every other command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_and_retention_writes_fail_fast_while_the_breaker_is_open() {
    use crate::domain::schedule::{ScheduleCommand, ScheduleId};
    use crate::domain::{ActorId, CorrelationId};
    use retention::RetentionWrite;
    use schedules::ScheduleWrite;

    let busy = Duration::from_millis(300);
    let db = TestDb::open_with(EventHub::default(), busy).await;
    let lock = Lock::take(&db).await;
    for _ in 0..OPEN_AFTER {
        let _ = create(&db.store, new_task("x", "a")).await;
    }
    assert!(db.store.breaker().is_open());
    let actor = ActorId::parse("alice").unwrap();
    let correlation = CorrelationId::parse_or_new("").unwrap();
    let start = Instant::now();
    let e = db
        .store
        .schedule(ScheduleWrite::Pause(ScheduleCommand {
            schedule_id: ScheduleId::new(),
            actor: actor.clone(),
            correlation: correlation.clone(),
        }))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::StoreUnavailable(_)), "{e:?}");
    let e = db
        .store
        .retention(RetentionWrite::StartArchiveRun {
            finished_before: 0,
            actor,
            correlation,
        })
        .await
        .unwrap_err();
    assert!(matches!(e, Error::StoreUnavailable(_)), "{e:?}");
    assert!(start.elapsed() < busy / 2, "took {:?}", start.elapsed());
    lock.release().await;
    db.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_be_written_at_start_opens_the_breaker_at_once() {
    let db = TestDb::open().await;
    let path = db.path();
    let dir = db.shutdown().await;
    // Reopen while another connection holds the lock: the start-up probe
    // fails, so health shows it before any command does.
    let side = {
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut c)
            .await
            .unwrap();
        Lock(c)
    };
    let db = TestDb::open_in(dir, EventHub::default(), Duration::from_millis(100)).await;
    assert!(db.store.breaker().is_open());
    side.release().await;
    tokio::time::timeout(Duration::from_secs(10), db.store.breaker().closed())
        .await
        .expect("closes once writable");
    db.shutdown().await;
}

#[tokio::test]
async fn crash_history_is_read_by_its_key_and_only_for_the_window() {
    let db = TestDb::open().await;
    let pod = running_on(&db.store, "host-a").await;
    let conn = DbConfig::new(db.path()).open_writer().unwrap();
    let plan: Vec<String> = conn
        .prepare(&format!(
            "EXPLAIN QUERY PLAN {}",
            pod_end::CRASHES_IN_WINDOW
        ))
        .unwrap()
        .query_map(rusqlite::params![pod.task_id.to_string(), 0, 0, 0], |r| {
            r.get::<_, String>(3)
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let plan = plan.join(" | ");
    assert!(
        plan.contains("USING PRIMARY KEY") && plan.contains("crashed_at>"),
        "{plan}"
    );
    // 2000 old crashes and 5 recent ones: only the window's are read, and
    // at most max_restarts + 1 of them.
    let id = pod.task_id.to_string();
    let now = 10_000_000_000_000i64;
    for i in 0..2000 {
        conn.execute(
            "INSERT INTO crash_history (task_id, crashed_at) VALUES (?, ?)",
            rusqlite::params![id, i],
        )
        .unwrap();
    }
    for i in 1..=5 {
        conn.execute(
            "INSERT INTO crash_history (task_id, crashed_at) VALUES (?, ?)",
            rusqlite::params![id, now - i * 1_000_000],
        )
        .unwrap();
    }
    let policy = crate::domain::RestartPolicy {
        max_restarts: 3,
        window_seconds: 60,
        ..DEFAULTS
    };
    let got = pod_end::crashes_in_window(&conn, &id, &policy, now).unwrap();
    assert_eq!(
        got,
        vec![
            now - 1_000_000,
            now - 2_000_000,
            now - 3_000_000,
            now - 4_000_000
        ]
    );
    drop(conn);
    db.shutdown().await;
}
