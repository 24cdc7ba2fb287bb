//! The lease port and the writer's fence on both backends: the database
//! decides who leads (conditional updates on its own clock), epochs only
//! grow, and a deposed leader's writer commits nothing once a newer epoch
//! exists.

use std::time::{Duration, Instant};

use crate::error::Error;
use crate::store::tests::{AnyDb, Backend, create, new_task, on_both_backends};

const LONG: u64 = 60_000;

async fn the_database_decides_who_leads_and_epochs_only_grow(backend: Backend) {
    let db = AnyDb::open(backend).await;
    let lease = db.lease();
    assert_eq!(lease.acquire("a", LONG).await.unwrap(), Some(1));
    assert_eq!(lease.acquire("b", LONG).await.unwrap(), None, "a holds it");
    assert!(lease.renew("a", 1, LONG).await.unwrap());
    assert!(!lease.renew("b", 1, LONG).await.unwrap());
    assert!(!lease.renew("a", 2, LONG).await.unwrap());
    // A restarted `a` takes its lease back at once, at a newer epoch.
    assert_eq!(lease.acquire("a", LONG).await.unwrap(), Some(2));
    assert!(
        !lease.renew("a", 1, LONG).await.unwrap(),
        "the old epoch is gone"
    );
    // Released: b takes over at its next try.
    lease.release("a", 2).await.unwrap();
    assert_eq!(lease.acquire("b", LONG).await.unwrap(), Some(3));
    // A short lease runs out by the database's clock.
    assert!(lease.renew("b", 3, 50).await.unwrap());
    let start = Instant::now();
    let epoch = loop {
        if let Some(e) = lease.acquire("c", LONG).await.unwrap() {
            break e;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the lease never ran out"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(epoch, 4);
    assert_eq!(
        lease.take_over("d", LONG).await.unwrap(),
        5,
        "whoever holds it"
    );
    lease.heartbeat("d", "http://d:1", LONG).await.unwrap();
    lease.heartbeat("c", "http://c:1", LONG).await.unwrap();
    let rows = lease.cluster(LONG).await.unwrap();
    assert_eq!(rows.lease.replica_id, "d");
    assert_eq!(rows.lease.epoch, 5);
    assert!(rows.lease.held());
    let ids: Vec<&str> = rows
        .replicas
        .iter()
        .map(|r| r.replica_id.as_str())
        .collect();
    assert_eq!(ids, ["c", "d"]);
    assert_eq!(rows.replicas[1].address, "http://d:1");
    db.shutdown().await;
}

async fn a_deposed_leaders_writer_commits_nothing(backend: Backend) {
    let db = AnyDb::open(backend).await;
    let lease = db.lease();
    let fence = db.fence();
    let epoch = lease.acquire("a", LONG).await.unwrap().unwrap();
    fence.lead(epoch);
    create(&*db.store, new_task("while leading", "u"))
        .await
        .unwrap();
    // Another replica takes over (a paused past its lease, say).
    lease.take_over("b", LONG).await.unwrap();
    let before = db.store.count_tasks(&Default::default()).await.unwrap();
    let refused = create(&*db.store, new_task("after", "u"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            Error::Deposed {
                mine: 1,
                current: 2
            }
        ),
        "{refused:?}"
    );
    assert!(fence.deposed().is_cancelled());
    assert_eq!(
        db.store.count_tasks(&Default::default()).await.unwrap(),
        before
    );
    db.shutdown().await;
}

on_both_backends!(
    the_database_decides_who_leads_and_epochs_only_grow,
    a_deposed_leaders_writer_commits_nothing,
);
