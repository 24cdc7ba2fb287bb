//! Both processes serve Prometheus metrics on `--metrics-listen`; after a
//! known amount of work the counters and gauges say exactly that.

use ipa_tests::{DEADLINE, pb, wait_for_async};

use super::support::{System, free_addr, parse_metrics, scrape, value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_of_both_processes_follow_the_work() {
    let dir = tempfile::tempdir().unwrap();
    let cm_addr = free_addr();
    let ph_addr = free_addr();
    // The crasher exits 3 once the test lets it (after its StartPod has
    // answered), so the start and the crash do not race.
    let go = dir.path().join("go");
    let crasher = format!(
        "command = \"/bin/sh\"\nargs = [\"-c\", \"while [ ! -e \\\"$GO\\\" ]; do sleep 0.02; done; exit 3\"]\nenv = {{ GO = {:?} }}",
        go.display().to_string()
    );
    let templates = [
        (
            "sleeper",
            "command = \"/bin/sh\"\nargs = [\"-c\", \"exec sleep 60\"]",
        ),
        ("crasher", crasher.as_str()),
    ];
    let sys = System::start(
        dir.path(),
        &templates,
        &[],
        &["--metrics-listen", &ph_addr.to_string()],
        &["--metrics-listen", &cm_addr.to_string()],
    )
    .await;
    let mut client = sys.client.clone();

    // Before any task work.
    let (content_type, before) = scrape(cm_addr).await;
    assert!(content_type.contains("openmetrics-text"), "{content_type}");
    let before = parse_metrics(&before);
    assert_eq!(value(&before, "ipa_pod_starts_total", &[]), Some(0.0));
    assert_eq!(
        value(&before, "ipa_tasks", &[("status", "inactive")]),
        Some(0.0)
    );

    let create = |template: &'static str| {
        let mut client = client.clone();
        async move {
            client
                .create_task(pb::CreateTaskRequest {
                    title: template.into(),
                    actor_id: "alice".into(),
                    template: template.into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .task_id
        }
    };
    let sleeper = create("sleeper").await;
    let crasher = create("crasher").await;
    client
        .get_task(pb::GetTaskRequest {
            task_id: sleeper.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let missing = client
        .get_task(pb::GetTaskRequest {
            task_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    for task_id in [&sleeper, &crasher] {
        client
            .start_pod(pb::StartPodRequest {
                task_id: task_id.clone(),
                actor_id: "alice".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    std::fs::write(&go, "").unwrap();

    // The crash is committed asynchronously: wait for it to be counted.
    let cm = wait_for_async(
        "central to count the crash and settle the task",
        DEADLINE,
        || async {
            let text = scrape(cm_addr).await.1;
            let m = parse_metrics(&text);
            // The crash event and the task's return to inactive may be
            // separate commits: wait for both.
            let settled = value(&m, "ipa_pod_crashes_total", &[]) == Some(1.0)
                && value(&m, "ipa_tasks", &[("status", "inactive")]) == Some(1.0);
            settled.then_some((m, text))
        },
    )
    .await;
    let (cm, cm_text) = (cm.0, cm.1);
    let rpc = |m: &[super::support::Sample], method: &str, code: &str| {
        value(
            m,
            "grpc_server_handled_total",
            &[
                ("service", "ipa.v1.CentralManager"),
                ("method", method),
                ("code", code),
            ],
        )
    };
    assert_eq!(rpc(&cm, "CreateTask", "OK"), Some(2.0));
    assert_eq!(rpc(&cm, "GetTask", "OK"), Some(1.0));
    assert_eq!(rpc(&cm, "GetTask", "NOT_FOUND"), Some(1.0));
    assert_eq!(rpc(&cm, "StartPod", "OK"), Some(2.0));
    assert_eq!(
        value(
            &cm,
            "grpc_server_handling_seconds_count",
            &[("method", "CreateTask")]
        ),
        Some(2.0)
    );
    assert_eq!(value(&cm, "ipa_pod_starts_total", &[]), Some(2.0));
    assert_eq!(value(&cm, "ipa_pod_restarts_total", &[]), Some(0.0));
    assert_eq!(
        value(&cm, "ipa_pod_exits_total", &[("outcome", "crashed")]),
        Some(1.0)
    );
    assert_eq!(
        value(&cm, "ipa_events_total", &[("type", "task_created")]),
        Some(2.0)
    );
    assert_eq!(
        value(&cm, "ipa_tasks", &[("status", "active")]),
        Some(1.0),
        "{cm_text}"
    );
    assert_eq!(
        value(&cm, "ipa_tasks", &[("status", "inactive")]),
        Some(1.0)
    );
    assert_eq!(value(&cm, "ipa_running_pods", &[]), Some(1.0));
    assert_eq!(
        value(&cm, "ipa_pod_hosts", &[("state", "ready")]),
        Some(1.0)
    );
    assert_eq!(
        value(&cm, "ipa_pod_hosts", &[("state", "unreachable")]),
        Some(0.0)
    );
    let age = value(
        &cm,
        "ipa_pod_host_heartbeat_age_seconds",
        &[("host_id", "host-a")],
    )
    .expect("heartbeat age of host-a");
    assert!((0.0..10.0).contains(&age), "heartbeat age {age}");
    let commits = value(&cm, "ipa_store_commit_seconds_count", &[]).unwrap();
    assert!(commits >= 1.0, "{commits}");
    let batched = value(&cm, "ipa_store_commit_batch_size_sum", &[]).unwrap();
    // At least: 2 creates, 2 claims, 2 pod_started, 1 crash.
    assert!(batched >= 7.0, "{batched}");
    assert_eq!(
        value(&cm, "ipa_store_commit_batch_size_count", &[]),
        Some(commits)
    );

    // The pod-host saw the same.
    let (_, text) = scrape(ph_addr).await;
    let ph = parse_metrics(&text);
    assert_eq!(
        value(
            &ph,
            "grpc_server_handled_total",
            &[
                ("service", "ipa.v1.PodHost"),
                ("method", "StartPod"),
                ("code", "OK")
            ]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(value(&ph, "ipa_pod_starts_total", &[]), Some(2.0));
    assert_eq!(value(&ph, "ipa_pod_crashes_total", &[]), Some(1.0));
    assert_eq!(
        value(&ph, "ipa_pod_exits_total", &[("outcome", "crashed")]),
        Some(1.0)
    );
    assert_eq!(value(&ph, "ipa_running_pods", &[]), Some(1.0));
    assert_eq!(value(&ph, "ipa_pod_capacity", &[]), Some(100.0));

    sys.stop().await;
}

/// The queue's gauges and GetStats' `queue_depth` follow the queue.
#[tokio::test]
async fn queue_gauges_and_stats_follow_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let cm_addr = free_addr();
    let templates = [(
        "sleeper",
        "command = \"/bin/sh\"\nargs = [\"-c\", \"exec sleep 60\"]",
    )];
    let sys = System::start(
        dir.path(),
        &templates,
        &[],
        &["--capacity", "1"],
        &["--metrics-listen", &cm_addr.to_string()],
    )
    .await;
    let mut client = sys.client.clone();
    let create = |priority: pb::Priority| {
        let mut client = client.clone();
        async move {
            client
                .create_task(pb::CreateTaskRequest {
                    title: "queued".into(),
                    actor_id: "alice".into(),
                    template: "sleeper".into(),
                    auto_start: true,
                    queue: true,
                    priority: priority as i32,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .task
                .unwrap()
        }
    };
    // The first takes the only slot, the next three wait.
    let running = create(pb::Priority::Low).await;
    assert_eq!(running.pod_status(), pb::PodStatus::Running, "{running:?}");
    for p in [pb::Priority::High, pb::Priority::Low, pb::Priority::Low] {
        let t = create(p).await;
        assert_eq!(t.pod_status(), pb::PodStatus::Queued, "{t:?}");
    }
    let samples = wait_for_async("queue gauges", DEADLINE, || async {
        let m = parse_metrics(&scrape(cm_addr).await.1);
        (value(&m, "ipa_queue_depth", &[("priority", "low")]) == Some(2.0)
            && value(&m, "ipa_queue_oldest_age_seconds", &[]).is_some_and(|a| a > 0.0))
        .then_some(m)
    })
    .await;
    assert_eq!(
        value(&samples, "ipa_queue_depth", &[("priority", "high")]),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "ipa_queue_depth", &[("priority", "critical")]),
        Some(0.0)
    );
    let stats = client
        .get_stats(pb::GetStatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let depth = |p: pb::Priority| {
        stats
            .queue_depth
            .iter()
            .find(|d| d.priority == p as i32)
            .map(|d| d.count)
    };
    assert_eq!(depth(pb::Priority::High), Some(1), "{stats:?}");
    assert_eq!(depth(pb::Priority::Low), Some(2), "{stats:?}");
    assert_eq!(depth(pb::Priority::Medium), Some(0), "{stats:?}");
    assert_eq!(stats.running_pods, 1);
    sys.stop().await;
}
