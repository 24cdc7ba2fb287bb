//! Durability: data intact after a graceful restart, and after SIGKILL in
//! the middle of 16 concurrent creating clients every acknowledged task is
//! present with its `task_created` event and no task row lacks its event.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use ipa_tests::{DEADLINE, pb, wait_for};
use nix::sys::signal::Signal;
use tokio::sync::Mutex;
use tokio_stream::StreamExt;

use super::support::{Central, create, open_db};

#[tokio::test]
async fn data_is_intact_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Central::start_in(dir.path()).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        tasks.push(create(&mut c.client, &format!("t{i}")).await.task_id);
    }
    c.client
        .complete_task(pb::CompleteTaskRequest {
            task_id: tasks[0].clone(),
            actor_id: "a".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    c.client
        .cancel_task(pb::CancelTaskRequest {
            task_id: tasks[1].clone(),
            reason: "r".into(),
            actor_id: "a".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let before = c
        .client
        .list_tasks(pb::ListTasksRequest {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tasks;
    let events_before = c
        .client
        .get_task_events(pb::GetTaskEventsRequest {
            task_id: tasks[1].clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;

    c.server.signal(Signal::SIGTERM);
    let status = c
        .server
        .wait_exit(DEADLINE)
        .await
        .expect("exit after SIGTERM");
    assert!(status.success(), "{status:?}");
    drop(c);

    let mut c = Central::start_in(dir.path()).await;
    let after = c
        .client
        .list_tasks(pb::ListTasksRequest {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert_eq!(after, before);
    let events_after = c
        .client
        .get_task_events(pb::GetTaskEventsRequest {
            task_id: tasks[1].clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(events_after, events_before);
    // Idempotency keys and positions continue across the restart.
    let t = create(&mut c.client, "after restart").await;
    let mut w = c
        .client
        .watch_events(pb::WatchEventsRequest {
            after_position: 22,
            task_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let e = w.next().await.unwrap().unwrap();
    assert_eq!((e.position, e.task_id), (23, t.task_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_concurrent_creates_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Central::start_in(dir.path()).await;
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let acked_n = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for w in 0..16 {
        let mut cl = c.client();
        let (acked, acked_n, stop) = (acked.clone(), acked_n.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let title = format!("c{w}-{i}");
                i += 1;
                match cl
                    .create_task(pb::CreateTaskRequest {
                        title: title.clone(),
                        actor_id: format!("client{w}"),
                        ..Default::default()
                    })
                    .await
                {
                    Ok(r) => {
                        acked.lock().await.push((r.into_inner().task_id, title));
                        acked_n.fetch_add(1, Ordering::Relaxed);
                    }
                    // The server is gone: this client is done.
                    Err(_) => break,
                }
            }
        }));
    }
    // Kill in the middle of the load (no fixed sleep: once enough are in).
    wait_for("300 acknowledged creates", DEADLINE, || {
        (acked_n.load(Ordering::Relaxed) >= 300).then_some(())
    })
    .await;
    c.server.kill().await;
    stop.store(true, Ordering::Relaxed);
    for j in clients {
        j.await.unwrap();
    }
    let acked = acked.lock().await.clone();
    drop(c);

    let mut c = Central::start_in(dir.path()).await;
    for (id, title) in &acked {
        let t = c
            .client
            .get_task(pb::GetTaskRequest {
                task_id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("acknowledged task {id} lost: {e}"))
            .into_inner();
        assert_eq!(&t.title, title);
    }
    // Check the files directly: every acknowledged task has its event, and
    // no tasks row exists without its task_created event (nor the reverse).
    let mut db = open_db(&c.db_path()).await;
    let ok: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(ok, "ok");
    let orphans: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM tasks t WHERE NOT EXISTS \
         (SELECT 1 FROM events e WHERE e.stream_id = t.task_id AND e.version = 1 AND e.type = 'task_created')",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(orphans, 0, "tasks rows without their task_created event");
    let eventless: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM events e WHERE e.type = 'task_created' AND NOT EXISTS \
         (SELECT 1 FROM tasks t WHERE t.task_id = e.stream_id)",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(eventless, 0, "task_created events without their task");
    for (id, _) in &acked {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE stream_id = ? AND version = 1 AND type = 'task_created'")
            .bind(id)
            .fetch_one(&mut db)
            .await
            .unwrap();
        assert_eq!(n, 1, "task {id}");
    }
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tasks")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert!(
        rows as usize >= acked.len(),
        "{rows} rows < {} acknowledged",
        acked.len()
    );
    // And the server still takes writes.
    create(&mut c.client, "after crash").await;
}
