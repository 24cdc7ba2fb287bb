use super::*;

fn create(title: &str, actor: &str) -> pb::CreateTaskRequest {
    pb::CreateTaskRequest {
        title: title.into(),
        actor_id: actor.into(),
        ..Default::default()
    }
}

#[test]
fn create_checks_fields_in_proto_order() {
    // Both title and actor bad: title (field 1) wins.
    assert!(matches!(
        NewTask::try_from(create("", "")),
        Err(Error::InvalidTitle(_))
    ));
    assert!(matches!(
        NewTask::try_from(create("t", "")),
        Err(Error::MissingActorId)
    ));
    let mut r = create("t", "");
    r.description = "d".repeat(10_001);
    assert!(matches!(
        NewTask::try_from(r),
        Err(Error::InvalidArgument {
            field: "description",
            ..
        })
    ));
    let mut r = create("t", "a");
    r.template = "bad name".into();
    r.request_id = "x".repeat(300);
    assert!(matches!(
        NewTask::try_from(r),
        Err(Error::InvalidArgument {
            field: "template",
            ..
        })
    ));
}

#[test]
fn create_defaults() {
    let t = NewTask::try_from(create("  t ", "alice")).unwrap();
    assert_eq!(t.title.as_str(), "t");
    assert_eq!(t.template.as_str(), "default");
    assert_eq!(t.restart_policy, RestartPolicySpec::default());
    assert!(t.request_id.is_none());
    assert!(!t.correlation.as_str().is_empty());
}

#[test]
fn cancel_order_and_reason() {
    let r = pb::CancelTaskRequest {
        task_id: "nope".into(),
        ..Default::default()
    };
    assert!(matches!(
        CancelTask::try_from(r),
        Err(Error::InvalidArgument {
            field: "task_id",
            ..
        })
    ));
    let id = TaskId::new().to_string();
    let r = pb::CancelTaskRequest {
        task_id: id.clone(),
        reason: "  ".into(),
        actor_id: "a".into(),
        ..Default::default()
    };
    assert!(matches!(CancelTask::try_from(r), Err(Error::MissingReason)));
    let r = pb::CancelTaskRequest {
        task_id: id,
        reason: "dup".into(),
        ..Default::default()
    };
    assert!(matches!(
        CancelTask::try_from(r),
        Err(Error::MissingActorId)
    ));
}

#[test]
fn list_rules() {
    let q = ListQuery::try_from(pb::ListTasksRequest::default()).unwrap();
    assert_eq!(q.limit, 100);
    assert_eq!(q.order_by, OrderBy::UpdatedAt);
    assert_eq!(q.order, Order::Desc);
    assert_eq!(q.filter, TaskFilter::default());
    let bad = |r: pb::ListTasksRequest| match ListQuery::try_from(r) {
        Err(Error::InvalidArgument { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        bad(pb::ListTasksRequest {
            limit: 1001,
            ..Default::default()
        }),
        "limit"
    );
    assert_eq!(
        bad(pb::ListTasksRequest {
            status: 99,
            ..Default::default()
        }),
        "status"
    );
    assert_eq!(
        bad(pb::ListTasksRequest {
            phase: -1,
            ..Default::default()
        }),
        "phase"
    );
    assert_eq!(
        bad(pb::ListTasksRequest {
            order_by: 7,
            ..Default::default()
        }),
        "order_by"
    );
    assert_eq!(
        bad(pb::ListTasksRequest {
            order: 3,
            ..Default::default()
        }),
        "order"
    );
    let ts = prost_types::Timestamp {
        seconds: 1,
        nanos: -5,
    };
    assert_eq!(
        bad(pb::ListTasksRequest {
            created_after: Some(ts),
            ..Default::default()
        }),
        "created_after"
    );
}

#[test]
fn logs_check_task_id_then_tail_lines() {
    let id = TaskId::new().to_string();
    let q = LogsQuery::try_from(pb::GetPodLogsRequest {
        task_id: id.clone(),
        follow: true,
        tail_lines: 10_000,
    })
    .unwrap();
    assert_eq!((q.follow, q.tail_lines), (true, 10_000));
    let field = |r: pb::GetPodLogsRequest| match LogsQuery::try_from(r) {
        Err(Error::InvalidArgument { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        field(pb::GetPodLogsRequest {
            task_id: id,
            follow: false,
            tail_lines: 10_001,
        }),
        "tail_lines"
    );
    assert_eq!(
        field(pb::GetPodLogsRequest {
            task_id: "x".into(),
            follow: false,
            tail_lines: u32::MAX,
        }),
        "task_id"
    );
}

#[test]
fn watch_task_id_optional_but_validated() {
    let q = WatchQuery::try_from(pb::WatchEventsRequest::default()).unwrap();
    assert_eq!(q.task_id, None);
    assert!(
        WatchQuery::try_from(pb::WatchEventsRequest {
            after_position: 0,
            task_id: "x".into()
        })
        .is_err()
    );
}

#[test]
fn queue_fields_are_checked_and_default_to_medium_without_a_queue() {
    let t = NewTask::try_from(create("t", "alice")).unwrap();
    assert_eq!(t.priority, Priority::Medium);
    assert!(!t.queue && t.queue_timeout_seconds.is_none());
    let field = |r: pb::CreateTaskRequest| match NewTask::try_from(r) {
        Err(Error::InvalidArgument { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    let mut r = create("t", "alice");
    r.priority = 7;
    assert_eq!(field(r), "priority");
    for bad in [0, crate::domain::timeout::MAX_TIMEOUT_SECONDS + 1] {
        let mut r = create("t", "alice");
        r.queue_timeout_seconds = Some(bad);
        assert_eq!(field(r), "queue_timeout_seconds");
    }
    let mut r = create("t", "alice");
    r.priority = pb::Priority::Critical as i32;
    r.queue = true;
    r.queue_timeout_seconds = Some(60);
    let t = NewTask::try_from(r).unwrap();
    assert_eq!(
        (t.priority, t.queue, t.queue_timeout_seconds),
        (Priority::Critical, true, Some(60))
    );
    // The list filters: unknown values are refused, QUEUED is a filter.
    let r = pb::ListTasksRequest {
        pod_status: 99,
        ..Default::default()
    };
    assert!(matches!(
        ListQuery::try_from(r),
        Err(Error::InvalidArgument {
            field: "pod_status",
            ..
        })
    ));
    let r = pb::CountTasksRequest {
        priority: 5,
        ..Default::default()
    };
    assert!(matches!(
        TaskFilter::try_from(r),
        Err(Error::InvalidArgument {
            field: "priority",
            ..
        })
    ));
    let r = pb::ListTasksRequest {
        pod_status: pb::PodStatus::Queued as i32,
        priority: pb::Priority::Low as i32,
        ..Default::default()
    };
    let q = ListQuery::try_from(r).unwrap();
    assert_eq!(q.filter.pod_status, Some(PodStatus::Queued));
    assert_eq!(q.filter.priority, Some(Priority::Low));
}
