//! Argument errors: INVALID_TITLE, MISSING_ACTOR_ID, MISSING_REASON and
//! INVALID_ARGUMENT (with the field named in the message), each checked for
//! code, `REASON: ` message prefix and ErrorInfo detail. State-dependent
//! refusals are in `refusals.rs`.

use std::collections::HashMap;

use ipa_tests::pb;
use tonic::{Code, Status};

use super::support::{Central, Client, assert_error, create, new_task};

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
                ..Default::default()
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
        .get_task(pb::GetTaskRequest {
            task_id: id,
            ..Default::default()
        })
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
    let bad_ts = prost_types::Timestamp {
        seconds: 0,
        nanos: 2_000_000_000,
    };
    let d = pb::ListTasksRequest::default;
    let bad_lists = [
        ("limit", pb::ListTasksRequest { limit: 1001, ..d() }),
        ("status", pb::ListTasksRequest { status: 99, ..d() }),
        ("phase", pb::ListTasksRequest { phase: 99, ..d() }),
        ("order_by", pb::ListTasksRequest { order_by: 9, ..d() }),
        ("order", pb::ListTasksRequest { order: -1, ..d() }),
        (
            "created_after",
            pb::ListTasksRequest {
                created_after: Some(bad_ts),
                ..d()
            },
        ),
    ];
    for (field, r) in bad_lists {
        invalid(&cl.list_tasks(r).await.unwrap_err(), field);
    }
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
            ..Default::default()
        })
        .await
        .unwrap_err();
    invalid(&e, "limit");
}
