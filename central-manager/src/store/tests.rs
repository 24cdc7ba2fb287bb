//! Store tests: the writer, the command rules, the read queries and
//! idempotency. The conformance tests (listed in [`on_both_backends!`] at
//! the end) run on a temp SQLite file and on a fresh database of a private
//! PostgreSQL server, through the store port only; the rest test what only
//! SQLite has (a locked file, reopening a file).

use std::time::{Duration, Instant};

use sqlx::Connection;

use super::*;
use crate::domain::{Finish, Order, OrderBy, Phase, RequestId, TaskStatus};
use crate::error::Error;

mod support;
pub(crate) use support::{AnyDb, Backend, TestDb, create, finish_cmd, new_task, on_both_backends};

#[tokio::test]
async fn the_sqlite_file_and_its_directories_are_created() {
    let db = TestDb::open().await;
    assert!(db.path().exists(), "file and parent dirs created");
    db.shutdown().await;
}

async fn create_writes_stream_event_and_row_and_reads_back(backend: Backend) {
    let db = AnyDb::open(backend).await;
    let (t, created) = create(&*db.store, new_task("  first ", "alice"))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(t.title.as_str(), "first");
    let read = db.store.task(t.task_id).await.unwrap().unwrap();
    assert_eq!(read, t, "the returned record is what is stored");
    assert_eq!(read.status, TaskStatus::Inactive);
    assert_eq!(read.phase, Phase::SpecClarification);
    assert_eq!(read.restart_policy.max_restarts, Some(0));
    assert_eq!(read.restart_policy.auto_restart, None);
    let events = db
        .store
        .task_events(&EventsQuery {
            task_id: t.task_id,
            after_version: 0,
            limit: 100,
            include_archived: false,
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!((e.version, e.event_type.as_str()), (1, "task_created"));
    assert_eq!(e.actor_id, "alice");
    assert_eq!(e.correlation_id, "corr-1");
    let data: serde_json::Value = serde_json::from_str(&e.data_json).unwrap();
    assert_eq!(data["title"], "first");
    assert_eq!(data["metadata"]["k"], "v");
    assert_eq!(data["restart_policy"]["max_restarts"], 0);
    assert!(data["restart_policy"].get("auto_restart").is_none());
    assert!(db.store.task(TaskId::new()).await.unwrap().is_none());
    db.shutdown().await;
}

async fn complete_and_cancel_follow_the_lifecycle(backend: Backend) {
    let db = AnyDb::open(backend).await;
    let (a, _) = create(&*db.store, new_task("a", "alice")).await.unwrap();
    let (b, _) = create(&*db.store, new_task("b", "alice")).await.unwrap();

    let done = db
        .store
        .write(finish_cmd(a.task_id, Finish::Complete, None))
        .await
        .unwrap();
    assert_eq!(done, Outcome::Finished { stop_pod: None });
    let a2 = db.store.task(a.task_id).await.unwrap().unwrap();
    assert_eq!(
        (a2.status, a2.phase),
        (TaskStatus::Completed, Phase::Completed)
    );
    assert!(a2.updated_at >= a.updated_at);

    db.store
        .write(finish_cmd(b.task_id, Finish::Cancel, Some("dup")))
        .await
        .unwrap();
    let b2 = db.store.task(b.task_id).await.unwrap().unwrap();
    assert_eq!(
        (b2.status, b2.phase),
        (TaskStatus::Cancelled, Phase::Cancelled)
    );

    // Terminal tasks refuse both, with their own reason, and write nothing.
    for cmd in [Finish::Complete, Finish::Cancel] {
        let e = db
            .store
            .write(finish_cmd(a.task_id, cmd, None))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::AlreadyCompleted(_)), "{e:?}");
        let e = db
            .store
            .write(finish_cmd(b.task_id, cmd, Some("x")))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::AlreadyCancelled(_)), "{e:?}");
    }
    let e = db
        .store
        .write(finish_cmd(TaskId::new(), Finish::Complete, None))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::TaskNotFound(_)));

    let q = |id| EventsQuery {
        task_id: id,
        after_version: 0,
        limit: 100,
        include_archived: false,
    };
    let ev_b = db.store.task_events(&q(b.task_id)).await.unwrap();
    let kinds: Vec<_> = ev_b
        .iter()
        .map(|e| (e.version, e.event_type.as_str()))
        .collect();
    assert_eq!(kinds, [(1, "task_created"), (2, "task_cancelled")]);
    assert_eq!(ev_b[1].data_json, r#"{"reason":"dup"}"#);
    assert_eq!(ev_b[1].actor_id, "bob");
    assert_eq!(db.store.task_events(&q(a.task_id)).await.unwrap().len(), 2);
    db.shutdown().await;
}

async fn concurrent_commands_are_group_committed(backend: Backend) {
    let db = AnyDb::open(backend).await;
    // The start-up probe is one committed command already.
    let before = db.committed();
    let store = db.store.clone();
    const N: usize = 400;
    let mut joins = Vec::new();
    for i in 0..N {
        let store = store.clone();
        joins.push(tokio::spawn(async move {
            create(&*store, new_task(&format!("t{i}"), "alice"))
                .await
                .unwrap()
                .0
        }));
    }
    let mut ids = Vec::new();
    for j in joins {
        ids.push(j.await.unwrap().task_id);
    }
    let after = db.committed();
    let stats = WriterStats {
        batches: after.0 - before.0,
        commands: after.1 - before.1,
    };
    assert_eq!(stats.commands, N as u64);
    assert!(
        stats.batches < N as u64 / 2,
        "expected batching, got {} batches for {N} commands",
        stats.batches
    );
    // Positions are exactly 1..=N, each task's only event at version 1.
    let events = db.store.events_after(0, None, 1000).await.unwrap();
    let positions: Vec<u64> = events.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=N as u64).collect::<Vec<_>>());
    assert!(events.iter().all(|e| e.version == 1));
    let f = TaskFilter::default();
    assert_eq!(db.store.count_tasks(&f).await.unwrap(), N as u64);
    db.shutdown().await;
}

async fn idempotent_create_returns_the_first_task(backend: Backend) {
    let db = AnyDb::open(backend).await;
    let with_key = |actor: &str, key: &str| {
        let mut t = new_task("t", actor);
        t.request_id = RequestId::parse(key).unwrap();
        t
    };
    let (first, created) = create(&*db.store, with_key("alice", "r1")).await.unwrap();
    assert!(created);
    let (again, created) = create(&*db.store, with_key("alice", "r1")).await.unwrap();
    assert!(!created);
    assert_eq!(again.task_id, first.task_id);
    // Another actor's key is its own.
    let (other, created) = create(&*db.store, with_key("bob", "r1")).await.unwrap();
    assert!(created);
    assert_ne!(other.task_id, first.task_id);
    assert_eq!(
        db.store.count_tasks(&TaskFilter::default()).await.unwrap(),
        2
    );
    assert_eq!(db.store.events_after(0, None, 100).await.unwrap().len(), 2);
    db.shutdown().await;
}

async fn concurrent_duplicates_create_one_task(backend: Backend) {
    let db = AnyDb::open(backend).await;
    let mut joins = Vec::new();
    for _ in 0..32 {
        let store = db.store.clone();
        joins.push(tokio::spawn(async move {
            let mut t = new_task("dup", "alice");
            t.request_id = RequestId::parse("same").unwrap();
            create(&*store, t).await.unwrap()
        }));
    }
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for j in joins {
        let (t, c) = j.await.unwrap();
        ids.insert(t.task_id);
        created += usize::from(c);
    }
    assert_eq!((ids.len(), created), (1, 1));
    assert_eq!(
        db.store.count_tasks(&TaskFilter::default()).await.unwrap(),
        1
    );
    db.shutdown().await;
}

async fn age_keys(db: &AnyDb, by_micros: i64) {
    db.exec(&format!(
        "UPDATE idempotency_keys SET created_at = created_at - {by_micros}"
    ))
    .await;
}

async fn expired_keys_are_ignored_and_pruned(backend: Backend) {
    let db = AnyDb::open(backend).await;
    let keyed = || {
        let mut t = new_task("t", "alice");
        t.request_id = RequestId::parse("k").unwrap();
        t
    };
    let (first, _) = create(&*db.store, keyed()).await.unwrap();
    // Just inside the window: still the same task.
    age_keys(&db, IDEMPOTENCY_WINDOW_MICROS - 60_000_000).await;
    let (same, created) = create(&*db.store, keyed()).await.unwrap();
    assert!(!created);
    assert_eq!(same.task_id, first.task_id);
    // Past 24 h: a new task, and the key now points to it.
    age_keys(&db, 120_000_000).await;
    let (second, created) = create(&*db.store, keyed()).await.unwrap();
    assert!(created);
    assert_ne!(second.task_id, first.task_id);
    let (third, created) = create(&*db.store, keyed()).await.unwrap();
    assert!(!created);
    assert_eq!(third.task_id, second.task_id);

    // Pruning removes only expired keys.
    let pruner =
        crate::core::pruner::IdempotencyPruner::new(db.store.clone(), Duration::from_secs(3600));
    let now = ipa_proto::time::now_micros();
    assert_eq!(pruner.tick(now).await.unwrap(), 0);
    assert_eq!(
        pruner
            .tick(now + IDEMPOTENCY_WINDOW_MICROS + 1_000_000)
            .await
            .unwrap(),
        1
    );
    db.shutdown().await;
}

async fn list_and_count_filter_order_and_page(backend: Backend) {
    let db = AnyDb::open(backend).await;
    let mut made = Vec::new();
    for i in 0..30 {
        let actor = if i % 3 == 0 { "carol" } else { "dave" };
        made.push(
            create(&*db.store, new_task(&format!("t{i}"), actor))
                .await
                .unwrap()
                .0,
        );
    }
    // Cancel a few so statuses, phases and updated_at differ.
    for t in made.iter().take(5) {
        db.store
            .write(finish_cmd(t.task_id, Finish::Cancel, Some("r")))
            .await
            .unwrap();
    }
    let all = |order_by, order| ListQuery {
        limit: 1000,
        order_by,
        order,
        ..Default::default()
    };
    let by_created_asc = db
        .store
        .list_tasks(&all(OrderBy::CreatedAt, Order::Asc))
        .await
        .unwrap();
    let ids: Vec<_> = by_created_asc.iter().map(|t| t.task_id).collect();
    assert_eq!(ids, made.iter().map(|t| t.task_id).collect::<Vec<_>>());
    let by_updated_desc = db
        .store
        .list_tasks(&all(OrderBy::UpdatedAt, Order::Desc))
        .await
        .unwrap();
    // The cancelled ones were updated last.
    assert!(
        by_updated_desc[..5]
            .iter()
            .all(|t| t.status == TaskStatus::Cancelled)
    );
    assert!(
        by_updated_desc
            .windows(2)
            .all(|w| (w[0].updated_at, w[0].task_id) > (w[1].updated_at, w[1].task_id))
    );

    // Pages of 7 with offset reproduce the full order without overlap.
    let mut paged = Vec::new();
    for page in 0..5 {
        let q = ListQuery {
            limit: 7,
            offset: page * 7,
            order_by: OrderBy::CreatedAt,
            order: Order::Asc,
            ..Default::default()
        };
        paged.extend(
            db.store
                .list_tasks(&q)
                .await
                .unwrap()
                .into_iter()
                .map(|t| t.task_id),
        );
    }
    assert_eq!(paged, ids);

    let count = |f: TaskFilter| {
        let store = db.store.clone();
        async move { store.count_tasks(&f).await.unwrap() }
    };
    assert_eq!(
        count(TaskFilter {
            status: Some(TaskStatus::Cancelled),
            ..Default::default()
        })
        .await,
        5
    );
    assert_eq!(
        count(TaskFilter {
            phase: Some(Phase::SpecClarification),
            ..Default::default()
        })
        .await,
        25
    );
    assert_eq!(
        count(TaskFilter {
            created_by: Some("carol".into()),
            ..Default::default()
        })
        .await,
        10
    );
    let cut = made[19].created_at;
    let after = count(TaskFilter {
        created_after: Some(cut),
        ..Default::default()
    })
    .await;
    assert_eq!(
        after,
        made.iter().filter(|t| t.created_at > cut).count() as u64
    );
    let combined = TaskFilter {
        status: Some(TaskStatus::Inactive),
        created_by: Some("carol".into()),
        ..Default::default()
    };
    let listed = db
        .store
        .list_tasks(&ListQuery {
            filter: combined.clone(),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        listed
            .iter()
            .all(|t| t.status == TaskStatus::Inactive && t.created_by == "carol")
    );
    assert_eq!(listed.len() as u64, count(combined).await);
    db.shutdown().await;
}

#[tokio::test]
async fn a_locked_database_fails_fast_with_store_unavailable_and_recovers() {
    let db = TestDb::open_with(EventHub::default(), Duration::from_millis(200)).await;
    let (t, _) = create(&db.store, new_task("before", "alice"))
        .await
        .unwrap();

    // Another process holds the write lock.
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.path().display()))
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut other)
        .await
        .unwrap();
    let start = Instant::now();
    let e = create(&db.store, new_task("blocked", "alice"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::StoreUnavailable(_)), "{e:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    // Reads still work in WAL mode.
    assert!(db.store.task(t.task_id).await.unwrap().is_some());

    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    other.close().await.unwrap();
    let (after, created) = create(&db.store, new_task("after", "alice")).await.unwrap();
    assert!(created);
    assert!(db.store.task(after.task_id).await.unwrap().is_some());
    assert_eq!(
        db.store.count_tasks(&TaskFilter::default()).await.unwrap(),
        2
    );
    db.shutdown().await;
}

async fn data_survives_reopening(backend: Backend) {
    let db = AnyDb::open(backend).await;
    let (t, _) = create(&*db.store, new_task("durable", "alice"))
        .await
        .unwrap();
    db.store
        .write(finish_cmd(t.task_id, Finish::Complete, None))
        .await
        .unwrap();
    let db = db.shutdown_and_reopen().await;
    let read = db.store.task(t.task_id).await.unwrap().unwrap();
    assert_eq!(read.status, TaskStatus::Completed);
    // Positions continue after the last one.
    let (u, _) = create(&*db.store, new_task("next", "alice")).await.unwrap();
    let ev = db.store.events_after(0, None, 10).await.unwrap();
    assert_eq!(ev.iter().map(|e| e.position).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(ev[2].task_id, u.task_id);
    db.shutdown().await;
}

async fn shutdown_drains_queued_commands(backend: Backend) {
    let db = AnyDb::open(backend).await;
    let mut joins = Vec::new();
    for i in 0..50 {
        let store = db.store.clone();
        joins.push(tokio::spawn(async move {
            create(&*store, new_task(&format!("q{i}"), "a")).await
        }));
    }
    // Let them enqueue, then stop the writer while work is queued.
    tokio::task::yield_now().await;
    db.stop_writer();
    let mut ok = 0;
    for j in joins {
        match j.await.unwrap() {
            Ok(_) => ok += 1,
            Err(Error::ShuttingDown) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    // Every acknowledged create is in the database.
    let db = db.shutdown_and_reopen().await;
    assert_eq!(
        db.store.count_tasks(&TaskFilter::default()).await.unwrap(),
        ok
    );
    db.shutdown().await;
}

/// The deadline command and the timer reads, for a task without a pod
/// (the pod cases are in `store::timeouts`, SQLite only until the
/// PostgreSQL store has the pod commands).
async fn a_deadline_fails_a_live_task_once(backend: Backend) {
    let db = AnyDb::open(backend).await;
    let at = 5_000_000;
    let mut t = new_task("due", "alice");
    t.deadline = Some(at);
    let (t, _) = create(&*db.store, t).await.unwrap();
    let (other, _) = create(&*db.store, new_task("no deadline", "alice"))
        .await
        .unwrap();
    assert_eq!(db.store.earliest_timer().await.unwrap(), Some(at));
    let due = db.store.due_timers(at, 10).await.unwrap();
    assert_eq!(
        due,
        [crate::domain::timeout::Timer::Deadline {
            task_id: t.task_id,
            at
        }]
    );
    assert!(db.store.due_timers(at - 1, 10).await.unwrap().is_empty());
    // Another deadline than the task's, or a task without one: no change.
    for (task_id, when) in [(t.task_id, at + 1), (other.task_id, at)] {
        let o = db
            .store
            .write(Command::Deadline { task_id, at: when })
            .await
            .unwrap();
        assert!(
            matches!(o, Outcome::DeadlineExceeded { failed: false, .. }),
            "{o:?}"
        );
    }
    let deadline = Command::Deadline {
        task_id: t.task_id,
        at,
    };
    let o = db.store.write(deadline.clone()).await.unwrap();
    assert_eq!(
        o,
        Outcome::DeadlineExceeded {
            failed: true,
            stop_pod: None
        }
    );
    let read = db.store.task(t.task_id).await.unwrap().unwrap();
    assert_eq!(
        (read.status, read.pod_message.as_str()),
        (TaskStatus::Failed, "deadline exceeded")
    );
    // Terminal: no timer any more, and a second fire does nothing.
    assert_eq!(db.store.earliest_timer().await.unwrap(), None);
    let o = db.store.write(deadline).await.unwrap();
    assert!(
        matches!(o, Outcome::DeadlineExceeded { failed: false, .. }),
        "{o:?}"
    );
    let q = EventsQuery {
        task_id: t.task_id,
        after_version: 0,
        limit: 10,
        include_archived: false,
    };
    let events = db.store.task_events(&q).await.unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(kinds, ["task_created", "task_failed"]);
    let data: serde_json::Value = serde_json::from_str(&events[1].data_json).unwrap();
    assert_eq!(data["reason"], "deadline_exceeded");
    assert_eq!(events[1].actor_id, "system");
    db.shutdown().await;
}

on_both_backends!(
    a_deadline_fails_a_live_task_once,
    create_writes_stream_event_and_row_and_reads_back,
    complete_and_cancel_follow_the_lifecycle,
    concurrent_commands_are_group_committed,
    idempotent_create_returns_the_first_task,
    concurrent_duplicates_create_one_task,
    expired_keys_are_ignored_and_pruned,
    list_and_count_filter_order_and_page,
    data_survives_reopening,
    shutdown_drains_queued_commands,
);
