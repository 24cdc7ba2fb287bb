//! What only the PostgreSQL store has to prove: several writers (replicas)
//! on one database append events whose positions a reader sees gap-free
//! and in order while they commit, including batches in which a command
//! fails and is undone. (The conformance tests shared with SQLite are in
//! `store::tests`.)

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::PgStore;
use super::testing::PgTestDb;
use crate::core::ports::TaskStore;
use crate::core::ports::store::Command;
use crate::domain::{ActorId, CorrelationId, Finish, TaskId};
use crate::error::Error;
use crate::store::tests::{create, new_task};
use crate::watch::EventHub;

/// Two stores on one database (two replicas' writers), 16 clients
/// creating tasks through them, some commands failing inside the batches:
/// a reader polling `events_after` the whole time never sees a position
/// before every smaller one is visible, and ends with exactly 1..=N.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_commit_positions_gap_free_and_in_order() {
    let a = PgTestDb::open().await;
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    let b = PgStore::open(&a.url, EventHub::default(), &tracker, stop.clone())
        .await
        .unwrap();
    let stores: [Arc<dyn TaskStore>; 2] = [Arc::new(a.store.clone()), Arc::new(b.clone())];

    const CLIENTS: usize = 16;
    const PER_CLIENT: usize = 25;
    let total = (CLIENTS * PER_CLIENT) as u64;
    let reader_store = a.store.clone();
    let reader = tokio::spawn(async move {
        let mut last = 0u64;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while last < total {
            assert!(tokio::time::Instant::now() < deadline, "stuck at {last}");
            let events = reader_store.events_after(last, None, 1000).await.unwrap();
            for e in events {
                assert_eq!(
                    e.position,
                    last + 1,
                    "a gap: saw {} after {last}",
                    e.position
                );
                last = e.position;
            }
            tokio::task::yield_now().await;
        }
        last
    });
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let store = stores[c % 2].clone();
        clients.push(tokio::spawn(async move {
            for i in 0..PER_CLIENT {
                create(&*store, new_task(&format!("c{c}-{i}"), "alice"))
                    .await
                    .unwrap();
                // A command that fails in the same batches: undone alone,
                // it takes no position.
                let e = store
                    .write(Command::Finish {
                        task_id: TaskId::new(),
                        finish: Finish::Complete,
                        actor: ActorId::parse("bob").unwrap(),
                        correlation: CorrelationId::parse_or_new("c").unwrap(),
                        reason: None,
                    })
                    .await
                    .unwrap_err();
                assert!(matches!(e, Error::TaskNotFound(_)), "{e:?}");
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(reader.await.unwrap(), total);
    let all = a.store.events_after(0, None, 10_000).await.unwrap();
    let positions: Vec<u64> = all.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=total).collect::<Vec<_>>());
    // Both writers committed some of them.
    assert!(a.store.writer_stats().commands > 1 && b.writer_stats().commands > 1);

    stop.cancel();
    tracker.close();
    tracker.wait().await;
    b.close().await;
    a.shutdown().await;
}

/// A command the PostgreSQL store has no SQL for yet fails, naming itself,
/// and writes nothing.
#[tokio::test]
async fn commands_without_postgresql_sql_fail_naming_themselves() {
    let db = PgTestDb::open().await;
    let e = db
        .store
        .write(Command::Pod(
            crate::core::ports::store::PodCommand::PruneCrashes { up_to: 0 },
        ))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("pod supervision commands are not implemented"),
        "{e}"
    );
    assert!(super::startup_refusal().is_some_and(|m| m.contains("schedules")));
    assert!(db.store.events_after(0, None, 10).await.unwrap().is_empty());
    db.shutdown().await;
}
