//! What only the PostgreSQL store has to prove: several writers (replicas)
//! on one database append events whose positions a reader sees gap-free
//! and in order while they commit, including batches in which a command
//! fails and is undone; their claims of one task decide races (one wins);
//! their fires of one schedule make one task per fire time; archiving and
//! deleting the same tasks from two writers loses and doubles nothing.
//! (The conformance tests shared with SQLite are in `store::tests` and the
//! other `*_tests` modules of the store.)

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
    let (b, replica) = a.replica(EventHub::default()).await;
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

    replica.close().await;
    a.shutdown().await;
}

/// The database goes away (the server stops): writes fail with
/// EVENT_STORE_UNAVAILABLE until the breaker opens, then fail at once
/// without waiting on the network; when the server is back the prober's
/// probe closes the breaker by itself and writes go on, on fresh
/// connections, with positions continuing where they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_while_the_server_is_down_and_closes_when_it_is_back() {
    use crate::store::breaker::{OPEN_AFTER, PROBE_MAX};

    // A private server: stopping the shared one would break other tests.
    let server = tokio::task::spawn_blocking(ipa_pg_harness::PgServer::start)
        .await
        .unwrap()
        .map(Arc::new)
        .expect("starting PostgreSQL");
    let db = PgTestDb::open_on(server.clone(), EventHub::default()).await;
    let (before, _) = create(&db.store, new_task("before", "alice"))
        .await
        .unwrap();
    let s = server.clone();
    tokio::task::spawn_blocking(move || s.stop_server())
        .await
        .unwrap()
        .unwrap();
    for _ in 0..OPEN_AFTER {
        assert!(!db.store.breaker().is_open());
        let e = create(&db.store, new_task("x", "a")).await.unwrap_err();
        assert!(matches!(e, Error::StoreUnavailable(_)), "{e:?}");
    }
    assert!(
        db.store.breaker().is_open(),
        "open after {OPEN_AFTER} failures"
    );
    let start = std::time::Instant::now();
    let e = create(&db.store, new_task("x", "a")).await.unwrap_err();
    assert!(matches!(e, Error::StoreUnavailable(_)), "{e:?}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert!(!db.store.writable());
    // Reads fail too (the server is gone), as unavailable, not as a bug.
    let e = db.store.task(before.task_id).await.unwrap_err();
    assert!(matches!(e, Error::StoreUnavailable(_)), "{e:?}");

    let s = server.clone();
    tokio::task::spawn_blocking(move || s.restart())
        .await
        .unwrap()
        .unwrap();
    let start = std::time::Instant::now();
    tokio::time::timeout(
        PROBE_MAX + Duration::from_secs(20),
        db.store.breaker().closed(),
    )
    .await
    .expect("the prober closes the breaker");
    assert!(start.elapsed() < PROBE_MAX + Duration::from_secs(20));
    let (after, _) = create(&db.store, new_task("after", "alice")).await.unwrap();
    assert!(db.store.task(before.task_id).await.unwrap().is_some());
    let events = db.store.events_after(0, None, 10).await.unwrap();
    let positions: Vec<u64> = events.iter().map(|e| e.position).collect();
    assert_eq!(positions, [1, 2], "the failed writes took no position");
    assert_eq!(events[1].task_id, after.task_id);
    db.shutdown().await;
}

/// Another session holds the lock every appender needs (the
/// `event_log_head` row): writes fail after the lock timeout as
/// EVENT_STORE_UNAVAILABLE instead of hanging, and go on once it is
/// released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_fails_writes_after_the_lock_timeout() {
    use sqlx::Connection;

    let db = PgTestDb::open().await;
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    let lock_timeout = Duration::from_millis(200);
    let store = PgStore::open_with(
        &db.url,
        lock_timeout,
        EventHub::default(),
        &tracker,
        stop.clone(),
    )
    .await
    .unwrap();
    let mut side = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut side).await.unwrap();
    sqlx::query("SELECT position FROM event_log_head FOR UPDATE")
        .execute(&mut side)
        .await
        .unwrap();
    let start = std::time::Instant::now();
    let e = create(&store, new_task("blocked", "alice"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::StoreUnavailable(_)), "{e:?}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    sqlx::query("ROLLBACK").execute(&mut side).await.unwrap();
    side.close().await.unwrap();
    let (t, created) = create(&store, new_task("after", "alice")).await.unwrap();
    assert!(created);
    let events = store.events_after(0, None, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].position, events[0].task_id), (1, t.task_id));

    stop.cancel();
    tracker.close();
    tracker.wait().await;
    store.close().await;
    db.shutdown().await;
}

/// Two stores on one database (two replicas) claim the same tasks at the
/// same time, queued or not: for each task exactly one claim wins, the
/// other is refused (ALREADY_STARTED), and the generation is bumped once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_racing_from_two_writers_start_each_task_once() {
    use crate::core::ports::queue::QueueWrite;
    use crate::core::ports::store::{PodCommand, PodOutcome};
    use crate::domain::Cause;

    let a = PgTestDb::open().await;
    let (b, replica) = a.replica(EventHub::default()).await;
    let stores: [Arc<dyn TaskStore>; 2] = [Arc::new(a.store.clone()), Arc::new(b.clone())];
    const TASKS: usize = 40;
    let mut ids = Vec::new();
    for i in 0..TASKS {
        let (t, _) = create(&*stores[i % 2], new_task(&format!("t{i}"), "alice"))
            .await
            .unwrap();
        if i % 2 == 0 {
            let w = QueueWrite::Enqueue {
                task_id: t.task_id,
                cause: Cause::system(),
                message: "no room".into(),
            };
            stores[1].write(Command::Queue(w)).await.unwrap();
        }
        ids.push(t.task_id);
    }
    let mut racers = Vec::new();
    for (n, store) in stores.iter().enumerate() {
        let store = store.clone();
        let ids = ids.clone();
        racers.push(tokio::spawn(async move {
            let claims = ids.iter().map(|&task_id| {
                let claim = PodCommand::Claim {
                    task_id,
                    pod_id: format!("pod-{n}"),
                    host_id: format!("host-{n}"),
                    cause: Cause::system(),
                    automatic: false,
                };
                let store = store.clone();
                async move { store.pod(claim).await }
            });
            futures::future::join_all(claims).await
        }));
    }
    let mut wins = vec![0; TASKS];
    for r in racers {
        for (i, outcome) in r.await.unwrap().into_iter().enumerate() {
            match outcome {
                Ok(PodOutcome::Claimed(c)) => {
                    assert_eq!(c.generation, 1);
                    wins[i] += 1;
                }
                Err(Error::AlreadyStarted(_)) => {}
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(wins, vec![1; TASKS]);
    for id in ids {
        let t = a.store.task(id).await.unwrap().unwrap();
        assert_eq!(t.pod.map(|p| p.generation), Some(1));
        assert!(t.queue.is_none(), "the claim took it out of the queue");
    }
    let stats = a.store.queue_stats().await.unwrap();
    assert!(stats.depth.iter().all(|(_, n)| *n == 0), "{stats:?}");

    replica.close().await;
    a.shutdown().await;
}

/// Two writers on one database cancelling the same tasks in opposite
/// orders, so that their batches lock task rows in crossing orders: no
/// batch may fail on a deadlock (every writer transaction takes the
/// `event_log_head` lock first, so they queue instead of crossing). Each
/// task is cancelled exactly once; the other cancel is refused by the
/// lifecycle rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_locking_rows_in_crossing_orders_never_deadlock() {
    let a = PgTestDb::open().await;
    let (b, replica) = a.replica(EventHub::default()).await;
    let stores: [Arc<dyn TaskStore>; 2] = [Arc::new(a.store.clone()), Arc::new(b.clone())];
    const TASKS: usize = 60;
    let mut ids = Vec::new();
    for i in 0..TASKS {
        let (t, _) = create(&*stores[0], new_task(&format!("t{i}"), "alice"))
            .await
            .unwrap();
        ids.push(t.task_id);
    }
    let mut racers = Vec::new();
    for (n, store) in stores.iter().enumerate() {
        let store = store.clone();
        let mut order = ids.clone();
        if n == 1 {
            order.reverse();
        }
        racers.push(tokio::spawn(async move {
            let cancels = order.into_iter().map(|task_id| {
                let store = store.clone();
                async move {
                    let cancel = Command::Finish {
                        task_id,
                        finish: Finish::Cancel,
                        actor: ActorId::parse("bob").unwrap(),
                        correlation: CorrelationId::parse_or_new("c").unwrap(),
                        reason: Some("race".into()),
                    };
                    (task_id, store.write(cancel).await)
                }
            });
            futures::future::join_all(cancels).await
        }));
    }
    let mut done = std::collections::HashMap::new();
    for r in racers {
        for (id, outcome) in r.await.unwrap() {
            match outcome {
                Ok(_) => *done.entry(id).or_insert(0) += 1,
                Err(Error::AlreadyCancelled(_)) => {}
                Err(e) => panic!("{id}: {e:?}"),
            }
        }
    }
    assert_eq!(done.len(), TASKS);
    assert!(done.values().all(|&n| n == 1), "{done:?}");
    assert!(!a.store.breaker().is_open() && !b.breaker().is_open());

    replica.close().await;
    a.shutdown().await;
}

/// Two replicas' writers firing the same schedule's fire times at once
/// (each fire time sent by both, with different task ids): each fire time
/// makes exactly one task, the other fire is stale, and the schedule's
/// counts say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fires_racing_from_two_writers_make_one_task_per_fire_time() {
    use crate::core::ports::ScheduleStore;
    use crate::core::ports::schedules::{
        Fire, FireKind, FireOutcome, ScheduleOutcome, ScheduleWrite,
    };
    use crate::domain::schedule::{
        NewSchedule, Overlap, ScheduleId, ScheduleKey, ScheduleName, ScheduleTask, Timetable,
    };
    use crate::domain::{Description, Metadata, RestartPolicySpec, TemplateName, Title};

    const S: i64 = 1_000_000;
    const T0: i64 = 1_700_000_040 * S;
    const FIRES: i64 = 20;
    let a = PgTestDb::open().await;
    let (b, replica) = a.replica(EventHub::default()).await;
    let stores: [Arc<dyn ScheduleStore>; 2] = [Arc::new(a.store.clone()), Arc::new(b.clone())];
    let id = ScheduleId::new();
    let schedule = NewSchedule {
        name: ScheduleName::parse("race").unwrap(),
        timetable: Timetable::parse("", 10, "").unwrap(),
        task: ScheduleTask::new(
            Title::parse("t").unwrap(),
            Description::parse("").unwrap(),
            Metadata::default(),
            TemplateName::parse("").unwrap(),
            RestartPolicySpec::default(),
        )
        .unwrap(),
        overlap: Overlap::AllowAll,
        catchup_window_seconds: 0,
        paused: false,
        actor: ActorId::parse("alice").unwrap(),
        correlation: CorrelationId::parse_or_new("c").unwrap(),
    };
    let create = ScheduleWrite::Create {
        schedule_id: id,
        schedule: Box::new(schedule),
        now: T0,
    };
    stores[0].schedule(create).await.unwrap();
    let mut started = 0;
    for n in 1..=FIRES {
        let at = T0 + n * 10 * S;
        let fires = stores.iter().map(|store| {
            let fire = ScheduleWrite::Fire(Box::new(Fire {
                schedule_id: id,
                kind: FireKind::Due { at },
                now: at,
                task_id: TaskId::new(),
                actor: ActorId::system(),
                correlation: CorrelationId::parse_or_new("").unwrap(),
                pod_message: String::new(),
            }));
            let store = store.clone();
            tokio::spawn(async move { store.schedule(fire).await })
        });
        let mut made = 0;
        for f in futures::future::join_all(fires).await {
            match f.unwrap().unwrap() {
                ScheduleOutcome::Fired(FireOutcome::Started { .. }) => made += 1,
                ScheduleOutcome::Fired(FireOutcome::Stale) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(made, 1, "fire time {n}");
        started += made;
    }
    let s = stores[1]
        .get_schedule(&ScheduleKey::Id(id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.fired_count, FIRES as u64);
    assert_eq!(s.next_fire_at, Some(T0 + (FIRES + 1) * 10 * S));
    let tasks = a
        .store
        .count_tasks(&crate::domain::TaskFilter::default())
        .await
        .unwrap();
    assert_eq!((started, tasks), (FIRES, FIRES as u64));

    replica.close().await;
    a.shutdown().await;
}

/// One replica archiving in small batches while another deletes half of
/// the same finished tasks: no write fails, every deleted task is gone
/// from both the live and the archive tables with its deletion logged
/// once, and every other one is archived with its events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiving_and_deleting_from_two_writers_lose_and_double_nothing() {
    use crate::core::ports::RetentionStore;
    use crate::core::ports::retention::{RetentionOutcome, RetentionWrite};
    use crate::domain::EventsQuery;

    const TASKS: usize = 30;
    let a = PgTestDb::open().await;
    let (b, replica) = a.replica(EventHub::default()).await;
    let (ra, rb): (Arc<dyn RetentionStore>, Arc<dyn RetentionStore>) =
        (Arc::new(a.store.clone()), Arc::new(b.clone()));
    let mut ids = Vec::new();
    for i in 0..TASKS {
        let (t, _) = create(&a.store, new_task(&format!("t{i}"), "alice"))
            .await
            .unwrap();
        let finish = crate::store::tests::finish_cmd(t.task_id, Finish::Complete, None);
        a.store.write(finish).await.unwrap();
        ids.push(t.task_id);
    }
    let cut = ipa_proto::time::now_micros() + 1;
    let archiver = tokio::spawn(async move {
        let start = RetentionWrite::StartArchiveRun {
            finished_before: cut,
            actor: ActorId::parse("admin").unwrap(),
            correlation: CorrelationId::parse_or_new("").unwrap(),
        };
        let RetentionOutcome::RunStarted(run_id) = ra.retention(start).await.unwrap() else {
            panic!("no run id")
        };
        let mut moved = 0;
        loop {
            let batch = RetentionWrite::ArchiveBatch {
                run_id,
                finished_before: cut,
                limit: 3,
            };
            match ra.retention(batch).await.unwrap() {
                RetentionOutcome::Archived { moved: 0, .. } => return moved,
                RetentionOutcome::Archived { moved: n, .. } => moved += n,
                other => panic!("{other:?}"),
            }
        }
    });
    let doomed: Vec<TaskId> = ids.iter().copied().step_by(2).collect();
    let deleter = {
        let doomed = doomed.clone();
        tokio::spawn(async move {
            for id in doomed {
                let delete = RetentionWrite::DeleteTask {
                    task_id: id,
                    reason: "cleanup".into(),
                    actor: ActorId::parse("root").unwrap(),
                    correlation: CorrelationId::parse_or_new("").unwrap(),
                };
                assert_eq!(
                    rb.retention(delete).await.unwrap(),
                    RetentionOutcome::Deleted
                );
            }
        })
    };
    let moved = archiver.await.unwrap();
    deleter.await.unwrap();
    assert!(moved as usize <= TASKS, "{moved}");
    for id in &ids {
        let deleted = doomed.contains(id);
        let logged = RetentionStore::deletion(&a.store, *id).await.unwrap();
        assert_eq!(logged.is_some(), deleted, "{id}");
        assert!(
            a.store.task(*id).await.unwrap().is_none(),
            "{id} still live"
        );
        let archived = a.store.task_or_archived(*id).await.unwrap();
        assert_eq!(archived.is_some(), !deleted, "{id}");
        let q = EventsQuery {
            task_id: *id,
            after_version: 0,
            limit: 10,
            include_archived: true,
        };
        let events = a.store.task_events(&q).await.unwrap();
        assert_eq!(events.len(), if deleted { 0 } else { 2 }, "{id}");
    }
    let everything = crate::domain::TaskFilter {
        include_archived: true,
        ..Default::default()
    };
    let left = a.store.count_tasks(&everything).await.unwrap();
    assert_eq!(left as usize, TASKS - doomed.len());

    replica.close().await;
    a.shutdown().await;
}
