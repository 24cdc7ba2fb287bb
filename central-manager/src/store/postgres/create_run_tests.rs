//! CreateTask runs (`create_run`): one batch of CreateTasks written with
//! multi-row statements keeps every semantic of the one-task path: two
//! identical request ids in the batch make one task, a key known before
//! the batch returns its first task, a failing command is undone alone,
//! every returned record is what is stored, and the events take
//! consecutive positions in the batch's order.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::Connection;

use super::PgWriterStats;
use super::testing::PgTestDb;
use crate::core::ports::TaskStore;
use crate::core::ports::store::{Command, Outcome};
use crate::domain::{Metadata, NewTask, RequestId, TaskId, TaskRecord};
use crate::error::{Error, Result};
use crate::store::tests::{create, new_task};

fn keyed(title: &str, actor: &str, key: Option<&str>, meta: usize) -> NewTask {
    let mut t = new_task(title, actor);
    t.request_id = key.and_then(|k| RequestId::parse(k).unwrap());
    let entries: HashMap<String, String> = (0..meta)
        .map(|i| (format!("k{i}"), format!("{title}-{i}")))
        .collect();
    t.metadata = Metadata::parse(entries).unwrap();
    t
}

fn cmd(id: TaskId, t: NewTask) -> Command {
    Command::CreateTask {
        task_id: id,
        task: Box::new(t),
        pod_message: format!("msg {id}"),
    }
}

fn task_of(r: &Result<Outcome>) -> (&TaskRecord, bool) {
    match r {
        Ok(Outcome::Task { task, created }) => (task, *created),
        other => panic!("not a task: {other:?}"),
    }
}

/// Runs `commands` as one batch: a blocker batch waits for the head held
/// by a side session while they queue, then they run together. Returns
/// their answers and the writer's counters' change.
async fn one_batch(db: &PgTestDb, commands: Vec<Command>) -> (Vec<Result<Outcome>>, PgWriterStats) {
    let store = db.store.clone();
    let mut side = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut side).await.unwrap();
    sqlx::query("SELECT position FROM event_log_head FOR UPDATE")
        .execute(&mut side)
        .await
        .unwrap();
    let blocker = tokio::spawn({
        let store = store.clone();
        async move { create(&store, keyed("blocker", "alice", None, 0)).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut side)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the writer never waited"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = store.writer_stats();
    let mut writes = Box::pin(futures::future::join_all(
        commands.into_iter().map(|c| store.write(c)),
    ));
    // One poll queues every write (the writer's queue has room), none
    // answered: the head is held.
    assert!(futures::poll!(&mut writes).is_pending());
    sqlx::query("ROLLBACK").execute(&mut side).await.unwrap();
    side.close().await.unwrap();
    blocker.await.unwrap().unwrap();
    let results = writes.await;
    let after = store.writer_stats();
    let change = PgWriterStats {
        batches: after.batches - before.batches,
        commands: after.commands - before.commands,
        in_runs: after.in_runs - before.in_runs,
    };
    (results, change)
}

fn id_of(c: &Command) -> TaskId {
    match c {
        Command::CreateTask { task_id, .. } => *task_id,
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_creates_is_one_run_with_the_same_answers_rows_and_events() {
    let db = PgTestDb::open().await;
    let store = db.store.clone();
    let (known, _) = create(&store, keyed("known", "alice", Some("k-known"), 0))
        .await
        .unwrap();

    // 0..4 plain with metadata, 4 keyed, 5..9 plain (carol), 9 bob with
    // alice's key text (another actor: a new task), 10 alice's key again,
    // 11 the key known before the batch.
    let mut commands = Vec::new();
    for i in 0..4 {
        commands.push(cmd(
            TaskId::new(),
            keyed(&format!("p{i}"), "alice", None, i),
        ));
    }
    commands.push(cmd(TaskId::new(), keyed("dup", "alice", Some("k-dup"), 1)));
    for i in 5..9 {
        commands.push(cmd(
            TaskId::new(),
            keyed(&format!("p{i}"), "carol", None, 2),
        ));
    }
    commands.push(cmd(TaskId::new(), keyed("bob's", "bob", Some("k-dup"), 0)));
    commands.push(cmd(
        TaskId::new(),
        keyed("dup again", "alice", Some("k-dup"), 0),
    ));
    commands.push(cmd(
        TaskId::new(),
        keyed("known again", "alice", Some("k-known"), 0),
    ));
    let ids: Vec<TaskId> = commands.iter().map(id_of).collect();
    let (results, change) = one_batch(&db, commands).await;
    // The blocker's batch, then all of these in one; the first ten as one
    // multi-row run (the repeat of a key ends it).
    assert_eq!(
        (change.batches, change.commands, change.in_runs),
        (2, 13, 10)
    );

    let (dup, created) = task_of(&results[4]);
    assert!(created);
    let (again, created) = task_of(&results[10]);
    assert!(!created);
    assert_eq!(again.task_id, dup.task_id);
    let (k, created) = task_of(&results[11]);
    assert!(!created);
    assert_eq!(k.task_id, known.task_id);
    let (bobs, created) = task_of(&results[9]);
    assert!(created);
    assert_ne!(bobs.task_id, dup.task_id);
    // What was returned is what is stored, for every new task.
    for (i, r) in results.iter().enumerate().take(10) {
        let (t, created) = task_of(r);
        assert!(created, "{i}");
        assert_eq!(t.task_id, ids[i]);
        let stored = store.task(t.task_id).await.unwrap().unwrap();
        assert_eq!(&stored, t, "command {i}");
    }
    assert!(store.task(ids[10]).await.unwrap().is_none());
    assert!(store.task(ids[11]).await.unwrap().is_none());
    // One task_created per new task, at consecutive positions in the
    // commands' order, right after the blocker's; the events returned are
    // the events stored.
    let events = store.events_after(0, None, 100).await.unwrap();
    let positions: Vec<u64> = events.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=12).collect::<Vec<_>>());
    let created_ids: Vec<TaskId> = events[2..].iter().map(|e| e.task_id).collect();
    assert_eq!(created_ids, ids[..10]);
    let meta: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM task_metadata")
        .fetch_one(&store.reads)
        .await
        .unwrap();
    // 0+1+2+3 (p0..p3) + 1 (dup) + 4×2 (p5..p8); the others have none.
    assert_eq!(meta, 15);
    let keys: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM idempotency_keys")
        .fetch_one(&store.reads)
        .await
        .unwrap();
    assert_eq!(keys, 3, "k-known, alice's k-dup, bob's k-dup");
    // GetStats' summary rows (kept once per statement) count every task of
    // the multi-row INSERT: known, blocker and 5 of the run by alice, 4 by
    // carol, 1 by bob.
    let per_creator: Vec<(String, i64)> = sqlx::query_as(
        "SELECT created_by, SUM(tasks)::BIGINT FROM stats_hours GROUP BY created_by ORDER BY created_by",
    )
    .fetch_all(&store.reads)
    .await
    .unwrap();
    assert_eq!(
        per_creator,
        [("alice".into(), 7), ("bob".into(), 1), ("carol".into(), 4)]
    );
    db.shutdown().await;
}

/// A CreateTask that fails inside a run (its id is taken) is undone alone:
/// the batch runs again one command at a time with savepoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_failing_in_a_run_is_undone_alone() {
    let db = PgTestDb::open().await;
    let store = db.store.clone();
    let (taken, _) = create(&store, keyed("taken", "alice", None, 0))
        .await
        .unwrap();
    let mut commands = Vec::new();
    for i in 0..5 {
        let id = if i == 2 { taken.task_id } else { TaskId::new() };
        commands.push(cmd(
            id,
            keyed(&format!("c{i}"), "alice", Some(&format!("r{i}")), 1),
        ));
    }
    let ids: Vec<TaskId> = commands.iter().map(id_of).collect();
    let (results, change) = one_batch(&db, commands).await;
    assert_eq!((change.batches, change.commands, change.in_runs), (2, 6, 0));
    assert!(
        matches!(results[2], Err(Error::Internal(_))),
        "{:?}",
        results[2]
    );
    for i in [0, 1, 3, 4] {
        let (t, created) = task_of(&results[i]);
        assert!(created);
        assert_eq!(store.task(ids[i]).await.unwrap().as_ref(), Some(t));
    }
    assert_eq!(
        store
            .task(taken.task_id)
            .await
            .unwrap()
            .unwrap()
            .title
            .as_str(),
        "taken"
    );
    let events = store.events_after(0, None, 100).await.unwrap();
    let positions: Vec<u64> = events.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=6).collect::<Vec<_>>());
    let keys: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM idempotency_keys")
        .fetch_one(&store.reads)
        .await
        .unwrap();
    assert_eq!(keys, 4, "r2's key went with its command");
    db.shutdown().await;
}
