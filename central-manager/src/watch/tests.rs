use std::time::Duration;

use super::*;
use crate::store::tests::{AnyDb, Backend, create, new_task, on_both_backends};

const T: Duration = Duration::from_secs(20);

async fn next(rx: &mut WatchStream) -> EventRecord {
    tokio::time::timeout(T, rx.recv())
        .await
        .expect("event in time")
        .expect("stream open")
        .expect("no error")
}

async fn create_n(db: &AnyDb, n: usize) -> Vec<TaskId> {
    let mut joins = Vec::new();
    for i in 0..n {
        let store = db.store.clone();
        joins.push(tokio::spawn(async move {
            create(&*store, new_task(&format!("w{i}"), "alice"))
                .await
                .unwrap()
                .0
                .task_id
        }));
    }
    let mut ids = Vec::new();
    for j in joins {
        ids.push(j.await.unwrap());
    }
    ids
}

async fn replay_then_live_without_gap_or_repeat(backend: Backend) {
    let db = AnyDb::open(backend).await;
    create_n(&db, 20).await;
    let stop = CancellationToken::new();
    let q = WatchQuery {
        after_position: 5,
        task_id: None,
    };
    let mut rx = start_watch(db.store.clone(), db.hub(), q, T, db.tracker(), stop.clone());
    // Writers race with the replay.
    let writer = {
        let store = db.store.clone();
        tokio::spawn(async move {
            for i in 0..40 {
                create(&*store, new_task(&format!("live{i}"), "bob"))
                    .await
                    .unwrap();
            }
        })
    };
    let mut got = Vec::new();
    for _ in 0..55 {
        got.push(next(&mut rx).await.position);
    }
    writer.await.unwrap();
    assert_eq!(got, (6..=60).collect::<Vec<u64>>());
    stop.cancel();
    assert!(
        tokio::time::timeout(T, rx.recv()).await.unwrap().is_none(),
        "ends on shutdown"
    );
    db.shutdown().await;
}

async fn a_lagging_watcher_catches_up_from_the_database(backend: Backend) {
    // A hub of 4 and a client that reads nothing until 700 events are
    // committed: the watcher must lag and recover.
    let db = AnyDb::open_with(backend, EventHub::new(4)).await;
    let stop = CancellationToken::new();
    let q = WatchQuery {
        after_position: 0,
        task_id: None,
    };
    let mut rx = start_watch(db.store.clone(), db.hub(), q, T, db.tracker(), stop.clone());
    for chunk in 0..7 {
        let _ = chunk;
        create_n(&db, 100).await;
    }
    let mut got = Vec::new();
    for _ in 0..700 {
        got.push(next(&mut rx).await.position);
    }
    assert_eq!(got, (1..=700).collect::<Vec<u64>>());
    // And live again afterwards.
    create_n(&db, 1).await;
    assert_eq!(next(&mut rx).await.position, 701);
    stop.cancel();
    db.shutdown().await;
}

async fn task_filter_and_many_watchers(backend: Backend) {
    let db = AnyDb::open(backend).await;
    let ids = create_n(&db, 3).await;
    let target = ids[1];
    let stop = CancellationToken::new();
    let mut filtered = start_watch(
        db.store.clone(),
        db.hub(),
        WatchQuery {
            after_position: 0,
            task_id: Some(target),
        },
        T,
        db.tracker(),
        stop.clone(),
    );
    let mut all: Vec<_> = (0..8)
        .map(|_| {
            start_watch(
                db.store.clone(),
                db.hub(),
                WatchQuery {
                    after_position: 0,
                    task_id: None,
                },
                T,
                db.tracker(),
                stop.clone(),
            )
        })
        .collect();
    create_n(&db, 10).await;
    let cancel = crate::store::Command::Finish {
        task_id: target,
        finish: crate::domain::Finish::Cancel,
        actor: crate::domain::ActorId::parse("a").unwrap(),
        correlation: crate::domain::CorrelationId::parse_or_new("").unwrap(),
        reason: Some("r".into()),
    };
    db.store.write(cancel).await.unwrap();
    let e1 = next(&mut filtered).await;
    let e2 = next(&mut filtered).await;
    assert_eq!((e1.task_id, e1.version), (target, 1));
    assert_eq!((e2.task_id, e2.version, e2.position), (target, 2, 14));
    for rx in &mut all {
        let mut got = Vec::new();
        for _ in 0..14 {
            got.push(next(rx).await.position);
        }
        assert_eq!(got, (1..=14).collect::<Vec<u64>>());
    }
    stop.cancel();
    assert!(
        tokio::time::timeout(T, filtered.recv())
            .await
            .unwrap()
            .is_none()
    );
    db.shutdown().await;
}

/// A task whose description (4-byte characters, at most 39 KiB) makes
/// its `task_created` event about `kib` KiB: too big for the hub, and
/// heavy for a client buffer.
async fn create_big(db: &AnyDb, kib: usize) -> TaskId {
    let mut t = new_task("big", "alice");
    t.description = crate::domain::Description::parse(&"😀".repeat(kib * 256)).unwrap();
    create(&*db.store, t).await.unwrap().0.task_id
}

async fn big_events_reach_live_watchers_through_the_database(backend: Backend) {
    let db = AnyDb::open(backend).await;
    let stop = CancellationToken::new();
    let q = WatchQuery {
        after_position: 0,
        task_id: None,
    };
    let mut rx = start_watch(db.store.clone(), db.hub(), q, T, db.tracker(), stop.clone());
    create_n(&db, 1).await;
    assert_eq!(next(&mut rx).await.position, 1);
    // Live now: a 9 KiB event travels the hub as a marker only.
    let id = create_big(&db, 9).await;
    let e = next(&mut rx).await;
    assert_eq!((e.position, e.task_id), (2, id));
    assert!(e.data_json.len() > HUB_EVENT_BYTES);
    create_n(&db, 1).await;
    assert_eq!(next(&mut rx).await.position, 3);
    stop.cancel();
    db.shutdown().await;
}

async fn a_client_that_stops_reading_is_bounded_then_dropped_with_its_resume_position(
    backend: Backend,
) {
    let db = AnyDb::open(backend).await;
    // 40 events of ~39 KiB: 1.5 MiB, more than the client buffer.
    for _ in 0..40 {
        create_big(&db, 39).await;
    }
    let stop = CancellationToken::new();
    let q = WatchQuery {
        after_position: 0,
        task_id: None,
    };
    let lag = Duration::from_millis(300);
    let mut rx = start_watch(
        db.store.clone(),
        db.hub(),
        q,
        lag,
        db.tracker(),
        stop.clone(),
    );
    // The client reads nothing for longer than the lag limit.
    tokio::time::sleep(lag * 3).await;
    // Bounded: the watcher stopped filling at the byte budget.
    let buffered = CLIENT_BYTES - rx.bytes.available_permits();
    assert!(buffered <= CLIENT_BYTES, "{buffered}");
    // Everything it buffered arrives in order, then the error names the
    // last delivered position.
    let mut got = Vec::new();
    let err = loop {
        match tokio::time::timeout(T, rx.recv()).await.expect("in time") {
            Some(Ok(e)) => got.push(e.position),
            Some(Err(e)) => break e,
            None => panic!("stream ended without WATCH_TOO_SLOW"),
        }
    };
    assert!(!got.is_empty() && got.len() < 40, "{}", got.len());
    assert_eq!(got, (1..=got.len() as u64).collect::<Vec<_>>());
    match err {
        Error::WatchTooSlow { position, .. } => assert_eq!(position, got.len() as u64),
        other => panic!("{other:?}"),
    }
    let status = tonic::Status::from(err);
    assert!(status.message().starts_with("WATCH_TOO_SLOW: "));
    assert!(
        status
            .message()
            .ends_with(&format!("resume after position {}", got.len())),
        "{}",
        status.message()
    );
    assert!(rx.recv().await.is_none());
    // Resuming from there delivers the rest, no gap, no repeat.
    let q = WatchQuery {
        after_position: got.len() as u64,
        task_id: None,
    };
    let mut again = start_watch(db.store.clone(), db.hub(), q, T, db.tracker(), stop.clone());
    for p in got.len() as u64 + 1..=40 {
        assert_eq!(next(&mut again).await.position, p);
    }
    stop.cancel();
    db.shutdown().await;
}

on_both_backends!(
    replay_then_live_without_gap_or_repeat,
    a_lagging_watcher_catches_up_from_the_database,
    task_filter_and_many_watchers,
    big_events_reach_live_watchers_through_the_database,
    a_client_that_stops_reading_is_bounded_then_dropped_with_its_resume_position,
);
