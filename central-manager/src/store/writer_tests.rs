//! The writer's batches: savepoints, group commit, archive batches.

use sqlx::Connection;

use super::*;
use crate::domain::{EventsQuery, TaskFilter};
use crate::domain::{Finish, TaskId};
use crate::store::tests::{TestDb, new_task};

fn job(command: Command) -> (Job, oneshot::Receiver<Result<Outcome>>) {
    let (reply, rx) = oneshot::channel();
    let job = Job {
        command,
        reply,
        span: tracing::Span::none(),
        queued: Instant::now(),
    };
    (job, rx)
}

fn create(id: TaskId, title: &str) -> Command {
    Command::CreateTask {
        task_id: id,
        task: Box::new(new_task(title, "alice")),
        pod_message: String::new(),
    }
}

/// One batch where the middle command fails after it has written: only
/// its savepoint is undone; the commands around it commit.
#[tokio::test]
async fn a_failing_command_rolls_back_only_its_savepoint() {
    let db = TestDb::open().await;
    let (a, b, clash) = (TaskId::new(), TaskId::new(), TaskId::new());
    // Plant a `tasks` row without its stream (foreign keys off on this
    // side connection), so creating `clash` inserts its stream and its
    // event and then fails on the tasks primary key.
    let url = format!("sqlite://{}", db.path().display());
    let mut side = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("PRAGMA foreign_keys = OFF")
        .execute(&mut side)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO tasks (task_id, title, status, phase, created_at, updated_at, created_by, template) \
         VALUES (?, 'planted', 'inactive', 'spec_clarification', 0, 0, 'x', 'default')",
    )
    .bind(clash.to_string())
    .execute(&mut side)
    .await
    .unwrap();

    let mut conn = crate::store::DbConfig::new(db.path())
        .open_writer()
        .unwrap();
    let (j1, _r1) = job(create(a, "a"));
    let (j2, _r2) = job(create(clash, "clash"));
    let (j3, _r3) = job(Command::Finish {
        task_id: TaskId::new(),
        finish: Finish::Complete,
        actor: crate::domain::ActorId::parse("x").unwrap(),
        correlation: crate::domain::CorrelationId::parse_or_new("").unwrap(),
        reason: None,
    });
    let (j4, _r4) = job(create(b, "b"));
    let (results, _) = transact(&mut conn, &[j1, j2, j3, j4], 1, &Fence::default()).unwrap();
    assert!(results[0].0.is_ok());
    assert!(
        matches!(results[1].0, Err(Error::Internal(_))),
        "{:?}",
        results[1].0
    );
    assert!(matches!(results[2].0, Err(Error::TaskNotFound(_))));
    assert!(results[3].0.is_ok());
    // Events of the committed commands only, with consecutive versions.
    assert_eq!(results[0].1.len(), 1);
    assert!(results[1].1.is_empty());
    assert_eq!(results[3].1.len(), 1);

    // The failed command's stream and event are gone; the others stay.
    let streams: Vec<String> =
        sqlx::query_scalar("SELECT stream_id FROM streams ORDER BY stream_id")
            .fetch_all(&mut side)
            .await
            .unwrap();
    let mut want = vec![a.to_string(), b.to_string()];
    want.sort();
    assert_eq!(streams, want);
    let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE stream_id = ?")
        .bind(clash.to_string())
        .fetch_one(&mut side)
        .await
        .unwrap();
    assert_eq!(events, 0);
    for id in [a, b] {
        let q = EventsQuery {
            task_id: id,
            after_version: 0,
            limit: 10,
            include_archived: false,
        };
        assert_eq!(db.store.task_events(&q).await.unwrap().len(), 1);
    }
    // The planted row plus a and b.
    assert_eq!(
        db.store.count_tasks(&TaskFilter::default()).await.unwrap(),
        3
    );
    conn.close().unwrap();
    side.close().await.unwrap();
    db.shutdown().await;
}

/// An archive batch commits with `synchronous=NORMAL` and leaves the
/// connection at FULL for every other command, also when it fails.
#[tokio::test]
async fn without_fsync_puts_full_back_after_the_batch() {
    let db = TestDb::open().await;
    let mut conn = crate::store::DbConfig::new(db.path())
        .open_writer()
        .unwrap();
    let level = |c: &rusqlite::Connection| -> i64 {
        c.pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap()
    };
    assert_eq!(level(&conn), 2, "FULL");
    let inside = without_fsync(&mut conn, |c| Ok(level(c))).unwrap();
    assert_eq!(inside, 1, "NORMAL inside the batch");
    assert_eq!(level(&conn), 2);
    let failed: Result<()> = without_fsync(&mut conn, |_| {
        Err(Error::Internal("the batch failed".into()))
    });
    assert!(failed.is_err());
    assert_eq!(level(&conn), 2, "FULL after a failed batch");
    drop(conn);
    db.shutdown().await;
}
