//! The event tailer across replicas: two stores on one database (two
//! replicas, each with its own hub), concurrent writers on both; every
//! replica's hub followers and WatchEvents watchers see exactly positions
//! 1..=N once, in order, N being the number of events in the table. And
//! the latency of another replica's commit to this replica's hub.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::testing::PgTestDb;
use crate::core::ports::TaskStore;
use crate::domain::{Finish, TaskId, WatchQuery};
use crate::store::tests::{create, finish_cmd, new_task};
use crate::watch::{EventHub, Follower, WatchStream, start_watch};

/// Writers per replica.
const WRITERS: usize = 8;
/// How long they write.
const WRITE_FOR: Duration = Duration::from_secs(3);
/// Deadline for every wait.
const DEADLINE: Duration = Duration::from_secs(60);

/// Receives from a hub follower until position `n`, asserting 1..=n in order.
async fn follow_to(mut f: Follower, n: u64, who: &str) {
    let mut last = 0u64;
    while last < n {
        let e = tokio::time::timeout(DEADLINE, f.recv())
            .await
            .unwrap_or_else(|_| panic!("{who}: stuck after position {last} of {n}"))
            .unwrap_or_else(|e| panic!("{who}: {e} after position {last}"));
        assert_eq!(e.position, last + 1, "{who}: {} after {last}", e.position);
        last = e.position;
    }
}

/// Receives from a WatchEvents stream until position `n`, asserting 1..=n.
async fn watch_to(mut w: WatchStream, n: u64, who: &str) {
    let mut last = 0u64;
    while last < n {
        let e = tokio::time::timeout(DEADLINE, w.recv())
            .await
            .unwrap_or_else(|_| panic!("{who}: stuck after position {last} of {n}"))
            .unwrap_or_else(|| panic!("{who}: ended after position {last}"))
            .unwrap_or_else(|e| panic!("{who}: {e} after position {last}"));
        assert_eq!(e.position, last + 1, "{who}: {} after {last}", e.position);
        last = e.position;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_publishes_every_replicas_events_once_in_order() {
    let a = PgTestDb::open().await;
    let hub_b = EventHub::default();
    let (b, replica) = a.replica(hub_b.clone()).await;
    let stores: [Arc<dyn TaskStore>; 2] = [Arc::new(a.store.clone()), Arc::new(b.clone())];
    let hubs = [a.hub.clone(), hub_b.clone()];
    // Subscribed before the first write: they must see everything.
    let followers = [a.hub.follow(), hub_b.follow()];
    let watchers: Vec<WatchStream> = (0..2)
        .map(|i| {
            let q = WatchQuery {
                after_position: 0,
                task_id: None,
            };
            start_watch(
                stores[i].clone(),
                &hubs[i],
                q,
                DEADLINE,
                &replica.tracker,
                replica.stop.clone(),
            )
        })
        .collect();

    let until = Instant::now() + WRITE_FOR;
    let mut writers = Vec::new();
    for w in 0..2 * WRITERS {
        let store = stores[w % 2].clone();
        writers.push(tokio::spawn(async move {
            let mut i = 0usize;
            while Instant::now() < until {
                let (t, _) = create(&*store, new_task(&format!("w{w}-{i}"), "alice"))
                    .await
                    .unwrap();
                // Two events in one command now and then, and a command
                // failing in the batch (undone alone, it takes no position).
                if i.is_multiple_of(3) {
                    store
                        .write(finish_cmd(t.task_id, Finish::Cancel, Some("r")))
                        .await
                        .unwrap();
                    let missing = finish_cmd(TaskId::new(), Finish::Complete, None);
                    store.write(missing).await.unwrap_err();
                }
                i += 1;
            }
            i
        }));
    }
    let mut created = 0;
    for w in writers {
        created += w.await.unwrap();
    }
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(&a.store.reads)
        .await
        .unwrap();
    let n = u64::try_from(n).unwrap();
    assert!(n as usize > created, "{n} events for {created} tasks");
    let head: i64 = sqlx::query_scalar("SELECT position FROM event_log_head")
        .fetch_one(&a.store.reads)
        .await
        .unwrap();
    assert_eq!(u64::try_from(head).unwrap(), n, "positions 1..=N, no gap");
    eprintln!("{created} tasks, {n} events from {} writers", 2 * WRITERS);

    let [fa, fb] = followers;
    let mut ws = watchers.into_iter();
    let (wa, wb) = (ws.next().unwrap(), ws.next().unwrap());
    tokio::join!(
        follow_to(fa, n, "replica A's hub"),
        follow_to(fb, n, "replica B's hub"),
        watch_to(wa, n, "a watcher on replica A"),
        watch_to(wb, n, "a watcher on replica B"),
    );
    // Nothing beyond N either: the next event anywhere is N + 1.
    let mut fa = a.hub.follow();
    let mut fb = hub_b.follow();
    create(&*stores[1], new_task("last", "alice"))
        .await
        .unwrap();
    for (f, who) in [(&mut fa, "A"), (&mut fb, "B")] {
        let e = tokio::time::timeout(DEADLINE, f.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(e.position, n + 1, "replica {who}");
    }

    replica.close().await;
    a.shutdown().await;
}

/// Commit → hub latency: a write answered on replica A reaches replica B's
/// hub through the notification, well within the fallback poll; on A
/// itself it is in the hub before the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replicas_commit_reaches_the_hub_without_waiting_for_the_poll() {
    const WRITES: usize = 100;
    let a = PgTestDb::open().await;
    let hub_b = EventHub::default();
    let (_b, replica) = a.replica(hub_b.clone()).await;
    let mut on_a = a.hub.follow();
    let mut on_b = hub_b.follow();
    let mut lat = Vec::with_capacity(WRITES);
    for i in 0..WRITES {
        let (t, _) = create(&a.store, new_task(&format!("t{i}"), "alice"))
            .await
            .unwrap();
        let answered = Instant::now();
        // Already in A's hub when A answered.
        let e = on_a.try_next();
        assert_eq!(e.map(|e| e.task_id), Some(t.task_id), "A's hub, write {i}");
        let e = tokio::time::timeout(DEADLINE, on_b.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(e.task_id, t.task_id);
        lat.push(answered.elapsed());
    }
    lat.sort();
    let (p50, p99) = (lat[WRITES / 2], lat[WRITES * 99 / 100]);
    eprintln!(
        "replica A answered → replica B's hub: p50 {p50:?}, p99 {p99:?}, max {:?}",
        lat[WRITES - 1]
    );
    // The poll alone would put the median near half its interval.
    assert!(
        p50 < super::tailer::POLL / 5,
        "p50 {p50:?}: notifications do not arrive"
    );

    replica.close().await;
    a.shutdown().await;
}

/// The writer's own commits reach the hub from its hand-over, not by
/// reading them back: concurrent writers on one replica, every event
/// published in order, and the tailer reads the database only when its
/// listener (re)connects, not once per batch whose notification it heard
/// before the writer had its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_commits_are_published_without_reading_them_back() {
    let db = PgTestDb::open().await;
    let follower = db.hub.follow();
    let before = db.store.tailer_reads();
    let batches = db.store.writer_stats().batches;
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let store = db.store.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    create(&store, new_task(&format!("w{w} t{i}"), "alice"))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let events = db.store.events_after(0, None, 1000).await.unwrap();
    let n = events.last().map_or(0, |e| e.position);
    assert!(n >= 400, "{n} events");
    follow_to(follower, n, "the hub").await;
    let batches = db.store.writer_stats().batches - batches;
    let reads = db.store.tailer_reads() - before;
    assert!(
        batches > 10,
        "{batches} batches: the writers did not overlap"
    );
    assert!(
        reads <= 2,
        "{reads} reads of events for {batches} batches of this replica's own commits"
    );
    db.shutdown().await;
}
