//! One StartPod with the client's own `traceparent` must produce spans from
//! both processes in that same trace, linked parent to child, carrying the
//! request's ids, and the pod must see the trace in `TRACEPARENT`.

use std::collections::HashSet;

use ipa_tests::{DEADLINE, pb, wait_for};

use super::support::{CollectedSpan, Collector, System};

fn find(spans: &[CollectedSpan], pred: impl Fn(&CollectedSpan) -> bool) -> Option<&CollectedSpan> {
    spans.iter().find(|s| pred(s))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_pod_is_one_trace_from_the_client_into_the_pod() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start().await;
    let tp_file = dir.path().join("traceparent.txt");
    // The pod writes what it got (atomically, so a half-written file is
    // never read) and stays up.
    let template = format!(
        "command = \"/bin/sh\"\nargs = [\"-c\", \"printf '%s' \\\"$TRACEPARENT\\\" > \\\"$OUT.tmp\\\" && mv \\\"$OUT.tmp\\\" \\\"$OUT\\\"; exec sleep 60\"]\nenv = {{ OUT = {:?} }}",
        tp_file.display().to_string()
    );
    let endpoint = collector.endpoint();
    let envs = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        // Export within 100 ms instead of the default 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_TRACES_SAMPLER", "parentbased_always_on"),
    ];
    let sys = System::start(
        dir.path(),
        &[("traced", &template)],
        &envs,
        &[],
        &["--log-format", "json"],
    )
    .await;
    let mut client = sys.client.clone();

    let task = client
        .create_task(pb::CreateTaskRequest {
            title: "traced".into(),
            actor_id: "alice".into(),
            correlation_id: "obs-create".into(),
            template: "traced".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .task_id;

    // The client's own trace: a fresh trace id and a span id of ours.
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let client_span = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    let traceparent = format!("00-{trace_id}-{client_span}-01");
    let mut req = tonic::Request::new(pb::StartPodRequest {
        task_id: task.clone(),
        actor_id: "alice".into(),
        correlation_id: "obs-start".into(),
        queue: false,
    });
    req.metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    client.start_pod(req).await.unwrap();

    // The pod continues the same trace.
    let pod_tp = wait_for("the pod to write its TRACEPARENT", DEADLINE, || {
        std::fs::read_to_string(&tp_file).ok()
    })
    .await;
    let parts: Vec<&str> = pod_tp.trim().split('-').collect();
    assert_eq!(parts.len(), 4, "TRACEPARENT {pod_tp:?}");
    assert_eq!(parts[1], trace_id, "the pod is in the client's trace");
    let pod_parent = parts[2].to_owned();
    assert_ne!(pod_parent, client_span);

    // Spans of both services, in that trace, linked: client → central's
    // server span → central's StartPod span → … → pod-host's server span →
    // pod-host's StartPod span → the pod.
    let linked = |spans: Vec<CollectedSpan>| -> Option<Vec<CollectedSpan>> {
        let cm_root = find(&spans, |s| {
            s.service == "central-manager" && s.parent_span_id == client_span
        })?;
        let cm_start = find(&spans, |s| {
            s.service == "central-manager"
                && s.name == "StartPod"
                && s.parent_span_id == cm_root.span_id
        })?;
        let cm_ids: HashSet<&str> = spans
            .iter()
            .filter(|s| s.service == "central-manager")
            .map(|s| s.span_id.as_str())
            .collect();
        let ph_root = find(&spans, |s| {
            s.service == "pod-host" && cm_ids.contains(s.parent_span_id.as_str())
        })?;
        find(&spans, |s| {
            s.service == "pod-host" && s.name == "StartPod" && s.parent_span_id == ph_root.span_id
        })?;
        find(&spans, |s| {
            s.service == "pod-host" && s.span_id == pod_parent
        })?;
        // Every parent link resolves within the trace (or to the client).
        let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
        spans
            .iter()
            .all(|s| s.parent_span_id == client_span || ids.contains(s.parent_span_id.as_str()))
            .then_some(())?;
        let _ = cm_start;
        Some(spans)
    };
    let start = std::time::Instant::now();
    let spans = loop {
        let spans = collector.trace(&trace_id);
        if let Some(s) = linked(spans.clone()) {
            break s;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no linked spans of both services in the client's trace {trace_id} (client span {client_span}); got {spans:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };

    let cm_start = find(&spans, |s| {
        s.service == "central-manager" && s.name == "StartPod"
    })
    .unwrap();
    assert_eq!(
        cm_start.attributes.get("task_id"),
        Some(&task),
        "{cm_start:?}"
    );
    assert_eq!(
        cm_start.attributes.get("actor_id").map(String::as_str),
        Some("alice")
    );
    assert_eq!(
        cm_start
            .attributes
            .get("correlation_id")
            .map(String::as_str),
        Some("obs-start")
    );
    let cm_root = find(&spans, |s| s.parent_span_id == client_span).unwrap();
    assert_eq!(
        cm_root.attributes.get("rpc.method").map(String::as_str),
        Some("StartPod")
    );
    assert_eq!(
        cm_root
            .attributes
            .get("rpc.grpc.status_code")
            .map(String::as_str),
        Some("0")
    );
    let ph_start = find(&spans, |s| s.service == "pod-host" && s.name == "StartPod").unwrap();
    assert_eq!(
        ph_start.attributes.get("task_id"),
        Some(&task),
        "{ph_start:?}"
    );
    assert_eq!(
        ph_start
            .attributes
            .get("correlation_id")
            .map(String::as_str),
        Some("obs-start")
    );

    // Events keep the request's correlation id.
    let events = client
        .get_task_events(pb::GetTaskEventsRequest {
            task_id: task.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let corr = |t: &str| {
        events
            .iter()
            .find(|e| e.r#type == t)
            .map(|e| e.correlation_id.clone())
    };
    assert_eq!(corr("task_created").as_deref(), Some("obs-create"));
    assert_eq!(corr("pod_started").as_deref(), Some("obs-start"));

    // JSON logs carry the span's ids (the log file is empty with TEST_LOG).
    let log = sys.central.log();
    if std::env::var_os("TEST_LOG").is_none() {
        let line = log
            .lines()
            .find(|l| l.contains("task created"))
            .unwrap_or_else(|| panic!("no 'task created' log line: {log}"));
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
        let span = &v["span"];
        assert_eq!(span["correlation_id"], "obs-create", "{line}");
        assert_eq!(span["actor_id"], "alice", "{line}");
        assert_eq!(span["task_id"], task.as_str(), "{line}");
    }

    sys.stop().await;
    collector.stop().await;
}
