//! Two central-manager processes on one PostgreSQL database (two
//! replicas), clients creating and completing tasks on both at once, and a
//! WatchEvents stream from position 0 on each: both streams carry exactly
//! positions 1..=N, in order, N being the number of events in the
//! database, and they are equal event for event, whichever replica wrote
//! the event (issue 15, part 4). Then the leader is SIGKILLed and writes go
//! on at the survivor: its stream goes on without a gap, and a new watch
//! from 0 there sees the same events.

use std::time::Duration;

use ipa_tests::cluster::start_central_url;
use ipa_tests::{DEADLINE, pb};
use sqlx::Connection;
use tokio_stream::StreamExt;
use tonic::Streaming;

type Client =
    ipa_tests::pb::central_manager_client::CentralManagerClient<tonic::transport::Channel>;

/// Clients per replica.
const CLIENTS: usize = 4;
/// Tasks each client creates.
const PER_CLIENT: usize = 40;

async fn watch_from_zero(c: &mut Client) -> Streaming<pb::Event> {
    c.watch_events(pb::WatchEventsRequest {
        after_position: 0,
        task_id: String::new(),
    })
    .await
    .expect("WatchEvents")
    .into_inner()
}

/// Events of `s` up to position `n`, which must come as 1..=n.
async fn read_to(s: &mut Streaming<pb::Event>, n: u64, who: &str) -> Vec<pb::Event> {
    read_to_from(s, 0, n, who).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_events_on_either_replica_sees_both_replicas_writes_in_order() {
    let (server, url) = tokio::task::spawn_blocking(|| {
        let server = ipa_tests::postgres::shared().expect("starting PostgreSQL");
        let url = server.database().expect("creating a database");
        (server, url)
    })
    .await
    .unwrap();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut a = start_central_url(dirs[0].path(), &url, &[], &["--replica-id", "a"]).await;
    let b = start_central_url(dirs[1].path(), &url, &[], &["--replica-id", "b"]).await;
    let replicas = [Client::new(a.channel()), Client::new(b.channel())];
    let mut streams = Vec::new();
    for r in &replicas {
        streams.push(watch_from_zero(&mut r.clone()).await);
    }

    let mut clients = Vec::new();
    for c in 0..2 * CLIENTS {
        let mut cl = replicas[c % 2].clone();
        clients.push(tokio::spawn(async move {
            for i in 0..PER_CLIENT {
                let t = cl
                    .create_task(pb::CreateTaskRequest {
                        title: format!("c{c}-{i}"),
                        actor_id: format!("client-{c}"),
                        ..Default::default()
                    })
                    .await
                    .expect("CreateTask")
                    .into_inner();
                if i.is_multiple_of(4) {
                    cl.complete_task(pb::CompleteTaskRequest {
                        task_id: t.task_id,
                        actor_id: format!("client-{c}"),
                        correlation_id: String::new(),
                    })
                    .await
                    .expect("CompleteTask");
                }
            }
        }));
    }
    for c in clients {
        tokio::time::timeout(Duration::from_secs(120), c)
            .await
            .expect("clients finish")
            .unwrap();
    }

    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(&mut db)
        .await
        .unwrap();
    db.close().await.unwrap();
    let n = u64::try_from(n).unwrap();
    let tasks = (2 * CLIENTS * PER_CLIENT) as u64;
    assert!(n >= tasks, "{n} events for {tasks} tasks");

    let on_a = read_to(&mut streams[0], n, "WatchEvents on replica A").await;
    let on_b = read_to(&mut streams[1], n, "WatchEvents on replica B").await;
    assert_eq!(on_a, on_b, "the two replicas' streams differ");
    let created = on_a.iter().filter(|e| e.r#type == "task_created").count();
    assert_eq!(created as u64, tasks);
    // Both replicas wrote: clients of each created their tasks there.
    for c in 0..2 * CLIENTS {
        let actor = format!("client-{c}");
        assert!(
            on_a.iter().any(|e| e.actor_id == actor),
            "nothing from {actor}"
        );
    }

    // Failover: the leader dies; writes go on at b (CreateTask needs no
    // leader), and b's stream continues without a gap.
    a.kill().await;
    let mut cl = replicas[1].clone();
    for i in 0..20 {
        cl.create_task(pb::CreateTaskRequest {
            title: format!("after the failover {i}"),
            actor_id: "client-b".into(),
            ..Default::default()
        })
        .await
        .expect("CreateTask on the survivor");
    }
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    let n2: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(&mut db)
        .await
        .unwrap();
    db.close().await.unwrap();
    let n2 = u64::try_from(n2).unwrap();
    assert!(n2 >= n + 20);
    let rest = read_to_from(
        &mut streams[1],
        n,
        n2,
        "WatchEvents on b across the failover",
    )
    .await;
    assert_eq!(rest.len() as u64, n2 - n);
    let fresh = read_to(&mut watch_from_zero(&mut cl).await, n2, "a new watch on b").await;
    assert_eq!(&fresh[..n as usize], &on_b[..]);
    assert_eq!(&fresh[n as usize..], &rest[..]);
    drop(streams);
    drop(b);
    drop(server);
}

/// Events of `s` after position `from` up to `n`, which must come as
/// from+1..=n.
async fn read_to_from(
    s: &mut Streaming<pb::Event>,
    from: u64,
    n: u64,
    who: &str,
) -> Vec<pb::Event> {
    let mut out: Vec<pb::Event> = Vec::new();
    while out.last().map_or(from, |e| e.position) < n {
        let e = tokio::time::timeout(DEADLINE, s.next())
            .await
            .unwrap_or_else(|_| panic!("{who}: no event after {} of {n}", from + out.len() as u64))
            .unwrap_or_else(|| panic!("{who}: the stream ended"))
            .unwrap_or_else(|e| panic!("{who}: {e}"));
        let want = from + out.len() as u64 + 1;
        assert_eq!(
            e.position,
            want,
            "{who}: position {} after {}",
            e.position,
            want - 1
        );
        out.push(e);
    }
    out
}
