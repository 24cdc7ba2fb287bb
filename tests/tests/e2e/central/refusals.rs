//! Refusals that depend on state rather than on the request's shape:
//! TASK_NOT_FOUND, ALREADY_*, EVENT_STORE_UNAVAILABLE, and odd input that
//! must never crash the server. (Argument errors: `errors.rs`.)

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ipa_tests::pb;
use tokio_stream::StreamExt;
use tonic::{Code, Status};

use super::support::{Central, assert_error, create, new_task, open_db};

#[tokio::test]
async fn unknown_task_is_task_not_found_everywhere() {
    let mut c = Central::start().await;
    let cl = &mut c.client;
    let id = uuid::Uuid::now_v7().to_string();
    let nf = |s: Status| assert_error(&s, Code::NotFound, "TASK_NOT_FOUND");
    nf(cl
        .get_task(pb::GetTaskRequest {
            task_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err());
    nf(cl
        .complete_task(pb::CompleteTaskRequest {
            task_id: id.clone(),
            actor_id: "a".into(),
            ..Default::default()
        })
        .await
        .unwrap_err());
    nf(cl
        .cancel_task(pb::CancelTaskRequest {
            task_id: id.clone(),
            reason: "r".into(),
            actor_id: "a".into(),
            ..Default::default()
        })
        .await
        .unwrap_err());
    nf(cl
        .start_pod(pb::StartPodRequest {
            task_id: id.clone(),
            actor_id: "a".into(),
            ..Default::default()
        })
        .await
        .unwrap_err());
    nf(cl
        .stop_pod(pb::StopPodRequest {
            task_id: id.clone(),
            actor_id: "a".into(),
            ..Default::default()
        })
        .await
        .unwrap_err());
    nf(cl
        .restart_pod(pb::RestartPodRequest {
            task_id: id.clone(),
            actor_id: "a".into(),
            ..Default::default()
        })
        .await
        .unwrap_err());
    nf(cl
        .get_task_events(pb::GetTaskEventsRequest {
            task_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err());
    nf(cl
        .watch_events(pb::WatchEventsRequest {
            after_position: 0,
            task_id: id.clone(),
        })
        .await
        .unwrap_err());
    nf(cl
        .get_pod_logs(pb::GetPodLogsRequest {
            task_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err());
    let e = cl
        .get_task(pb::GetTaskRequest {
            task_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.message().contains(&id), "{}", e.message());
}

/// Lifecycle calls on terminal tasks: ALREADY_COMPLETED / ALREADY_CANCELLED
/// / ALREADY_FAILED, checked before NO_POD_HOST and NOT_RUNNING.
#[tokio::test]
async fn terminal_tasks_refuse_lifecycle_calls() {
    let c = Central::start().await;
    let cl = &mut c.client();
    let done = create(cl, "done").await.task_id;
    let gone = create(cl, "gone").await.task_id;
    let failed = create(cl, "failed").await.task_id;
    cl.complete_task(pb::CompleteTaskRequest {
        task_id: done.clone(),
        actor_id: "a".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    cl.cancel_task(pb::CancelTaskRequest {
        task_id: gone.clone(),
        reason: "r".into(),
        actor_id: "a".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    // No pod-host means no task can fail by itself yet: mark one failed in
    // the database, as the restart policy will.
    let mut db = open_db(&c.db_path()).await;
    sqlx::query("UPDATE tasks SET status = 'failed' WHERE task_id = ?")
        .bind(&failed)
        .execute(&mut db)
        .await
        .unwrap();

    for (id, reason) in [
        (&done, "ALREADY_COMPLETED"),
        (&gone, "ALREADY_CANCELLED"),
        (&failed, "ALREADY_FAILED"),
    ] {
        let check = |s: Status| assert_error(&s, Code::FailedPrecondition, reason);
        check(
            cl.complete_task(pb::CompleteTaskRequest {
                task_id: id.clone(),
                actor_id: "a".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        );
        check(
            cl.cancel_task(pb::CancelTaskRequest {
                task_id: id.clone(),
                reason: "r".into(),
                actor_id: "a".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        );
        check(
            cl.start_pod(pb::StartPodRequest {
                task_id: id.clone(),
                actor_id: "a".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        );
        check(
            cl.stop_pod(pb::StopPodRequest {
                task_id: id.clone(),
                actor_id: "a".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        );
        check(
            cl.restart_pod(pb::RestartPodRequest {
                task_id: id.clone(),
                actor_id: "a".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        );
    }
    // The refusals wrote nothing.
    let n = |id: &String| {
        let mut cl = cl.clone();
        let id = id.clone();
        async move {
            cl.get_task_events(pb::GetTaskEventsRequest {
                task_id: id,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events
            .len()
        }
    };
    assert_eq!(
        (n(&done).await, n(&gone).await, n(&failed).await),
        (2, 2, 1)
    );
}

/// The database locked by someone else: writes fail fast with
/// EVENT_STORE_UNAVAILABLE (no hanging call), reads still work, and writes
/// work again once the lock is gone.
#[tokio::test]
async fn locked_database_gives_event_store_unavailable() {
    let mut c = Central::start().await;
    let t = create(&mut c.client, "before").await;
    let mut db = open_db(&c.db_path()).await;
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut db)
        .await
        .unwrap();
    let start = Instant::now();
    let e = c.client.create_task(new_task("blocked")).await.unwrap_err();
    assert_error(&e, Code::Unavailable, "EVENT_STORE_UNAVAILABLE");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    assert!(
        !e.message().contains("database is locked"),
        "internals leaked: {}",
        e.message()
    );
    let e = c
        .client
        .complete_task(pb::CompleteTaskRequest {
            task_id: t.task_id.clone(),
            actor_id: "a".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_error(&e, Code::Unavailable, "EVENT_STORE_UNAVAILABLE");
    c.client
        .get_task(pb::GetTaskRequest {
            task_id: t.task_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();

    sqlx::query("ROLLBACK").execute(&mut db).await.unwrap();
    create(&mut c.client, "after").await;
    let n = c
        .client
        .count_tasks(pb::CountTasksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(n, 2, "the refused create left nothing behind");
}

/// Odd but well-formed input never crashes the server.
#[tokio::test]
async fn odd_input_does_not_crash() {
    let mut c = Central::start().await;
    let cl = &mut c.client;
    let weird = [
        "\0",
        "\u{feff}",
        "'; DROP TABLE tasks; --",
        "😀",
        "\u{202e}rtl",
        "a\0b",
    ];
    for w in weird {
        let r = pb::CreateTaskRequest {
            title: format!("t{w}"),
            description: w.into(),
            actor_id: format!("actor{w}"),
            correlation_id: w.into(),
            metadata: HashMap::from([(format!("k{w}"), w.to_string())]),
            request_id: w.into(),
            ..Default::default()
        };
        let t = cl.create_task(r).await.unwrap().into_inner().task.unwrap();
        let got = cl
            .get_task(pb::GetTaskRequest {
                task_id: t.task_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.title, format!("t{w}"));
        let listed = cl
            .list_tasks(pb::ListTasksRequest {
                created_by: format!("actor{w}"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .tasks;
        assert_eq!(listed.len(), 1);
    }
    for v in [i32::MIN, -1, 6, i32::MAX] {
        let _ = cl
            .list_tasks(pb::ListTasksRequest {
                status: v,
                phase: v,
                order: v,
                order_by: v,
                ..Default::default()
            })
            .await
            .unwrap_err();
    }
    let _ = cl
        .list_tasks(pb::ListTasksRequest {
            offset: u32::MAX,
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let far = prost_types::Timestamp {
        seconds: i64::MAX,
        nanos: 0,
    };
    let _ = cl
        .list_tasks(pb::ListTasksRequest {
            created_after: Some(far),
            ..Default::default()
        })
        .await;
    let past = prost_types::Timestamp {
        seconds: i64::MIN / 1_000_000,
        nanos: 0,
    };
    let _ = cl
        .count_tasks(pb::CountTasksRequest {
            created_after: Some(past),
            ..Default::default()
        })
        .await
        .unwrap();
    let _ = cl
        .get_task_events(pb::GetTaskEventsRequest {
            task_id: uuid::Uuid::now_v7().to_string(),
            after_version: u64::MAX,
            limit: 1,
            ..Default::default()
        })
        .await;
    let mut w = cl
        .watch_events(pb::WatchEventsRequest {
            after_position: u64::MAX,
            task_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    // Nothing after the maximum position; the server is still fine.
    create(cl, "still alive").await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), w.next())
            .await
            .is_err()
    );
}
