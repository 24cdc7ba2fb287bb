//! Every error reason central-manager can give without a pod-host: code,
//! `REASON: ` message prefix and ErrorInfo detail, and for
//! INVALID_ARGUMENT the field named in the message.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ipa_tests::pb;
use tokio_stream::StreamExt;
use tonic::{Code, Status};

use super::support::{Central, Client, assert_error, create, new_task, open_db};

#[track_caller]
fn invalid(s: &Status, field: &str) {
    assert_error(s, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert!(
        s.message().contains(field),
        "{:?} should name {field}",
        s.message()
    );
}

async fn create_err(c: &mut Client, req: pb::CreateTaskRequest) -> Status {
    c.create_task(req)
        .await
        .expect_err("CreateTask should fail")
}

#[tokio::test]
async fn create_task_validation() {
    let mut c = Central::start().await;
    let cl = &mut c.client;
    for title in ["", "   ", "\t\n"] {
        let e = create_err(cl, new_task(title)).await;
        assert_error(&e, Code::InvalidArgument, "INVALID_TITLE");
    }
    let e = create_err(cl, new_task(&"é".repeat(256))).await;
    assert_error(&e, Code::InvalidArgument, "INVALID_TITLE");
    // Limits are characters, not bytes: 255 two-byte characters are fine.
    cl.create_task(new_task(&"é".repeat(255))).await.unwrap();

    let e = create_err(
        cl,
        pb::CreateTaskRequest {
            actor_id: String::new(),
            ..new_task("t")
        },
    )
    .await;
    assert_error(&e, Code::InvalidArgument, "MISSING_ACTOR_ID");
    let e = create_err(
        cl,
        pb::CreateTaskRequest {
            actor_id: "  ".into(),
            ..new_task("t")
        },
    )
    .await;
    assert_error(&e, Code::InvalidArgument, "MISSING_ACTOR_ID");

    let e = create_err(
        cl,
        pb::CreateTaskRequest {
            description: "d".repeat(10_001),
            ..new_task("t")
        },
    )
    .await;
    invalid(&e, "description");
    cl.create_task(pb::CreateTaskRequest {
        description: "d".repeat(10_000),
        ..new_task("t")
    })
    .await
    .unwrap();

    let meta = |n: usize| {
        (0..n)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect::<HashMap<_, _>>()
    };
    let e = create_err(
        cl,
        pb::CreateTaskRequest {
            metadata: meta(65),
            ..new_task("t")
        },
    )
    .await;
    invalid(&e, "metadata");
    cl.create_task(pb::CreateTaskRequest {
        metadata: meta(64),
        ..new_task("t")
    })
    .await
    .unwrap();
    for (k, v) in [
        ("k".repeat(129), "v".to_string()),
        (String::new(), "v".into()),
        ("k".into(), "v".repeat(4097)),
    ] {
        let e = create_err(
            cl,
            pb::CreateTaskRequest {
                metadata: HashMap::from([(k, v)]),
                ..new_task("t")
            },
        )
        .await;
        invalid(&e, "metadata");
    }
    let ok = HashMap::from([("k".repeat(128), "v".repeat(4096))]);
    cl.create_task(pb::CreateTaskRequest {
        metadata: ok,
        ..new_task("t")
    })
    .await
    .unwrap();

    for bad in ["has space", "../x", "ü", &"t".repeat(65)] {
        let e = create_err(
            cl,
            pb::CreateTaskRequest {
                template: bad.into(),
                ..new_task("t")
            },
        )
        .await;
        invalid(&e, "template");
    }
    let e = create_err(
        cl,
        pb::CreateTaskRequest {
            request_id: "r".repeat(256),
            ..new_task("t")
        },
    )
    .await;
    invalid(&e, "request_id");
    let e = create_err(
        cl,
        pb::CreateTaskRequest {
            correlation_id: "c".repeat(256),
            ..new_task("t")
        },
    )
    .await;
    invalid(&e, "correlation_id");

    // Check order: fields in proto order, so title beats actor_id.
    let e = create_err(
        cl,
        pb::CreateTaskRequest {
            title: String::new(),
            actor_id: String::new(),
            ..Default::default()
        },
    )
    .await;
    assert_error(&e, Code::InvalidArgument, "INVALID_TITLE");

    // Nothing invalid was stored: only the four valid creates above.
    let n = cl
        .count_tasks(pb::CountTasksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(n, 4);
}

#[tokio::test]
async fn malformed_ids_and_missing_actor_or_reason() {
    let mut c = Central::start().await;
    let cl = &mut c.client;
    let t = create(cl, "t").await;
    for bad in [
        "",
        "nope",
        "0b6f",
        "01234567-89ab-cdef-0123-456789abcdeg",
        "{01234567-89ab-cdef-0123-456789abcdef}",
    ] {
        let id = bad.to_string();
        invalid(
            &cl.get_task(pb::GetTaskRequest {
                task_id: id.clone(),
            })
            .await
            .unwrap_err(),
            "task_id",
        );
        invalid(
            &cl.complete_task(pb::CompleteTaskRequest {
                task_id: id.clone(),
                actor_id: "a".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
            "task_id",
        );
        invalid(
            &cl.cancel_task(pb::CancelTaskRequest {
                task_id: id.clone(),
                reason: "r".into(),
                actor_id: "a".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
            "task_id",
        );
        invalid(
            &cl.start_pod(pb::StartPodRequest {
                task_id: id.clone(),
                actor_id: "a".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
            "task_id",
        );
        invalid(
            &cl.stop_pod(pb::StopPodRequest {
                task_id: id.clone(),
                actor_id: "a".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
            "task_id",
        );
        invalid(
            &cl.restart_pod(pb::RestartPodRequest {
                task_id: id.clone(),
                actor_id: "a".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
            "task_id",
        );
        invalid(
            &cl.get_task_events(pb::GetTaskEventsRequest {
                task_id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
            "task_id",
        );
        invalid(
            &cl.get_pod_logs(pb::GetPodLogsRequest {
                task_id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
            "task_id",
        );
        if !bad.is_empty() {
            // Empty means "all tasks" for WatchEvents.
            invalid(
                &cl.watch_events(pb::WatchEventsRequest {
                    after_position: 0,
                    task_id: id,
                })
                .await
                .unwrap_err(),
                "task_id",
            );
        }
    }
    let id = t.task_id.clone();
    let missing = |s: Status| assert_error(&s, Code::InvalidArgument, "MISSING_ACTOR_ID");
    missing(
        cl.complete_task(pb::CompleteTaskRequest {
            task_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err(),
    );
    missing(
        cl.cancel_task(pb::CancelTaskRequest {
            task_id: id.clone(),
            reason: "r".into(),
            ..Default::default()
        })
        .await
        .unwrap_err(),
    );
    missing(
        cl.start_pod(pb::StartPodRequest {
            task_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err(),
    );
    missing(
        cl.stop_pod(pb::StopPodRequest {
            task_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err(),
    );
    missing(
        cl.restart_pod(pb::RestartPodRequest {
            task_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err(),
    );
    for reason in ["", "   "] {
        let e = cl
            .cancel_task(pb::CancelTaskRequest {
                task_id: id.clone(),
                reason: reason.into(),
                actor_id: "a".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_error(&e, Code::InvalidArgument, "MISSING_REASON");
    }
    // The task is untouched by all of that.
    let got = cl
        .get_task(pb::GetTaskRequest { task_id: id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, t);
}

#[tokio::test]
async fn list_count_and_events_argument_errors() {
    let mut c = Central::start().await;
    let cl = &mut c.client;
    let t = create(cl, "t").await;
    let list = |r: pb::ListTasksRequest| {
        let mut cl = cl.clone();
        async move { cl.list_tasks(r).await.unwrap_err() }
    };
    invalid(
        &list(pb::ListTasksRequest {
            limit: 1001,
            ..Default::default()
        })
        .await,
        "limit",
    );
    invalid(
        &list(pb::ListTasksRequest {
            status: 99,
            ..Default::default()
        })
        .await,
        "status",
    );
    invalid(
        &list(pb::ListTasksRequest {
            phase: 99,
            ..Default::default()
        })
        .await,
        "phase",
    );
    invalid(
        &list(pb::ListTasksRequest {
            order_by: 9,
            ..Default::default()
        })
        .await,
        "order_by",
    );
    invalid(
        &list(pb::ListTasksRequest {
            order: -1,
            ..Default::default()
        })
        .await,
        "order",
    );
    let bad_ts = prost_types::Timestamp {
        seconds: 0,
        nanos: 2_000_000_000,
    };
    invalid(
        &list(pb::ListTasksRequest {
            created_after: Some(bad_ts),
            ..Default::default()
        })
        .await,
        "created_after",
    );
    assert_eq!(
        cl.list_tasks(pb::ListTasksRequest {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tasks
        .len(),
        1
    );

    invalid(
        &cl.count_tasks(pb::CountTasksRequest {
            status: 99,
            ..Default::default()
        })
        .await
        .unwrap_err(),
        "status",
    );
    invalid(
        &cl.count_tasks(pb::CountTasksRequest {
            phase: 42,
            ..Default::default()
        })
        .await
        .unwrap_err(),
        "phase",
    );

    let e = cl
        .get_task_events(pb::GetTaskEventsRequest {
            task_id: t.task_id.clone(),
            after_version: 0,
            limit: 1001,
        })
        .await
        .unwrap_err();
    invalid(&e, "limit");
}

#[tokio::test]
async fn unknown_task_is_task_not_found_everywhere() {
    let mut c = Central::start().await;
    let cl = &mut c.client;
    let id = uuid::Uuid::now_v7().to_string();
    let nf = |s: Status| assert_error(&s, Code::NotFound, "TASK_NOT_FOUND");
    nf(cl
        .get_task(pb::GetTaskRequest {
            task_id: id.clone(),
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
