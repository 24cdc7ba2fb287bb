//! Every RPC of CentralManager on its success path (errors: `errors.rs`).

use std::collections::HashMap;

use ipa_tests::pb;
use tokio_stream::StreamExt;
use tonic::Code;

use super::support::{Central, assert_error, create, new_task};

fn is_v7_lowercase(id: &str) -> bool {
    uuid::Uuid::try_parse(id).is_ok_and(|u| u.get_version_num() == 7) && id == id.to_lowercase()
}

#[tokio::test]
async fn create_then_get_returns_every_field() {
    let mut c = Central::start().await;
    let req = pb::CreateTaskRequest {
        title: "  Implement login  ".into(),
        description: "OAuth2 ✓".into(),
        actor_id: "alice".into(),
        correlation_id: "req-42".into(),
        metadata: HashMap::from([("team".into(), "web".into()), ("x".into(), String::new())]),
        template: "py-3.12".into(),
        restart_policy: Some(pb::RestartPolicy {
            auto_restart: Some(true),
            initial_backoff_ms: Some(0),
            ..Default::default()
        }),
        ..Default::default()
    };
    let resp = c.client.create_task(req).await.unwrap().into_inner();
    let t = resp.task.clone().unwrap();
    assert_eq!(resp.task_id, t.task_id);
    assert!(is_v7_lowercase(&t.task_id), "{}", t.task_id);
    assert_eq!(t.title, "Implement login");
    assert_eq!(t.description, "OAuth2 ✓");
    assert_eq!(t.status, pb::TaskStatus::Inactive as i32);
    assert_eq!(t.phase, pb::Phase::SpecClarification as i32);
    assert_eq!(t.pod_status, pb::PodStatus::Stopped as i32);
    assert_eq!(t.created_by, "alice");
    assert_eq!(t.template, "py-3.12");
    assert_eq!(t.metadata.get("team").map(String::as_str), Some("web"));
    assert_eq!(t.metadata.len(), 2);
    assert!(t.pod.is_none());
    assert_eq!((t.version, t.restart_count), (0, 0));
    assert!(t.pod_message.is_empty());
    assert!(t.created_at.is_some() && t.created_at == t.updated_at);
    // Effective policy: given fields kept (0 stays 0), the rest defaulted.
    let p = t.restart_policy.unwrap();
    assert_eq!(p.auto_restart, Some(true));
    assert_eq!(p.initial_backoff_ms, Some(0));
    assert_eq!(p.max_restarts, Some(3));
    assert_eq!(p.window_seconds, Some(60));
    assert!(p.max_backoff_ms.is_some());

    let got = c
        .client
        .get_task(pb::GetTaskRequest {
            task_id: t.task_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, t);
    // Upper-case ids are accepted.
    let got = c
        .client
        .get_task(pb::GetTaskRequest {
            task_id: t.task_id.to_uppercase(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.task_id, t.task_id);

    let events = c
        .client
        .get_task_events(pb::GetTaskEventsRequest {
            task_id: t.task_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!((e.version, e.r#type.as_str()), (1, "task_created"));
    assert_eq!(
        (e.actor_id.as_str(), e.correlation_id.as_str()),
        ("alice", "req-42")
    );
    assert_eq!(e.occurred_at, t.created_at);
    let data: serde_json::Value = serde_json::from_str(&e.data_json).unwrap();
    assert_eq!(data["title"], "Implement login");
    assert_eq!(data["metadata"]["team"], "web");
    assert_eq!(data["template"], "py-3.12");
    assert_eq!(data["restart_policy"]["initial_backoff_ms"], 0);
}

#[tokio::test]
async fn empty_template_means_default_and_correlation_id_is_generated() {
    let mut c = Central::start().await;
    let t = create(&mut c.client, "t").await;
    assert_eq!(t.template, "default");
    let e = &c
        .client
        .get_task_events(pb::GetTaskEventsRequest {
            task_id: t.task_id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events[0];
    assert!(
        uuid::Uuid::try_parse(&e.correlation_id).is_ok(),
        "{}",
        e.correlation_id
    );
}

#[tokio::test]
async fn complete_and_cancel_are_recorded() {
    let mut c = Central::start().await;
    let a = create(&mut c.client, "a").await;
    let b = create(&mut c.client, "b").await;
    c.client
        .complete_task(pb::CompleteTaskRequest {
            task_id: a.task_id.clone(),
            actor_id: "bob".into(),
            correlation_id: "done-1".into(),
        })
        .await
        .unwrap();
    c.client
        .cancel_task(pb::CancelTaskRequest {
            task_id: b.task_id.clone(),
            reason: "duplicate".into(),
            actor_id: "carol".into(),
            correlation_id: String::new(),
        })
        .await
        .unwrap();
    let a2 = c
        .client
        .get_task(pb::GetTaskRequest {
            task_id: a.task_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a2.status, pb::TaskStatus::Completed as i32);
    assert_eq!(a2.phase, pb::Phase::Completed as i32);
    assert_eq!(a2.pod_status, pb::PodStatus::Stopped as i32);
    assert!(a2.updated_at.unwrap().seconds >= a.updated_at.unwrap().seconds);
    assert_ne!(a2.updated_at, a.updated_at);
    let b2 = c
        .client
        .get_task(pb::GetTaskRequest {
            task_id: b.task_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b2.status, pb::TaskStatus::Cancelled as i32);
    assert_eq!(b2.phase, pb::Phase::Cancelled as i32);

    let ev = |id: &str| pb::GetTaskEventsRequest {
        task_id: id.into(),
        ..Default::default()
    };
    let ea = c
        .client
        .get_task_events(ev(&a.task_id))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(ea.len(), 2);
    assert_eq!(
        (
            ea[1].version,
            ea[1].r#type.as_str(),
            ea[1].actor_id.as_str()
        ),
        (2, "task_completed", "bob")
    );
    assert_eq!(ea[1].correlation_id, "done-1");
    let eb = c
        .client
        .get_task_events(ev(&b.task_id))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(eb[1].r#type, "task_cancelled");
    let data: serde_json::Value = serde_json::from_str(&eb[1].data_json).unwrap();
    assert_eq!(data["reason"], "duplicate");
    assert!(!eb[1].correlation_id.is_empty());
    assert!(eb[1].position > ea[1].position, "global positions grow");

    // after_version and limit.
    let only_second = c
        .client
        .get_task_events(pb::GetTaskEventsRequest {
            task_id: a.task_id.clone(),
            after_version: 1,
            limit: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(
        only_second.iter().map(|e| e.version).collect::<Vec<_>>(),
        [2]
    );
    let first_only = c
        .client
        .get_task_events(pb::GetTaskEventsRequest {
            task_id: a.task_id.clone(),
            after_version: 0,
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(
        first_only.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1]
    );
    let none = c
        .client
        .get_task_events(pb::GetTaskEventsRequest {
            task_id: a.task_id.clone(),
            after_version: 2,
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(none.is_empty());
}

#[tokio::test]
async fn request_id_makes_create_idempotent_even_concurrently() {
    let mut c = Central::start().await;
    let keyed = |actor: &str, key: &str, title: &str| pb::CreateTaskRequest {
        actor_id: actor.into(),
        request_id: key.into(),
        ..new_task(title)
    };
    let first = c
        .client
        .create_task(keyed("alice", "k1", "first"))
        .await
        .unwrap()
        .into_inner();
    let again = c
        .client
        .create_task(keyed("alice", "k1", "second"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.task_id, first.task_id);
    assert_eq!(again.task.unwrap().title, "first");
    let other_actor = c
        .client
        .create_task(keyed("bob", "k1", "x"))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(other_actor.task_id, first.task_id);

    let mut joins = Vec::new();
    for i in 0..16 {
        let mut client = c.client();
        joins.push(tokio::spawn(async move {
            client
                .create_task(keyed("dave", "same", &format!("dup{i}")))
                .await
                .unwrap()
                .into_inner()
                .task_id
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for j in joins {
        ids.insert(j.await.unwrap());
    }
    assert_eq!(ids.len(), 1, "concurrent duplicates created {ids:?}");
    let count = c
        .client
        .count_tasks(pb::CountTasksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(count, 3);
}

#[tokio::test]
async fn auto_start_without_pod_host_creates_the_task_and_reports_why() {
    let mut c = Central::start().await;
    let resp = c
        .client
        .create_task(pb::CreateTaskRequest {
            auto_start: true,
            ..new_task("auto")
        })
        .await
        .unwrap()
        .into_inner();
    let t = resp.task.unwrap();
    assert_eq!(t.pod_status, pb::PodStatus::Stopped as i32);
    assert!(
        t.pod_message.starts_with("NO_POD_HOST: "),
        "{:?}",
        t.pod_message
    );
    assert!(t.pod.is_none());
    let got = c
        .client
        .get_task(pb::GetTaskRequest {
            task_id: t.task_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.pod_message, t.pod_message);
    assert_eq!(got.status, pb::TaskStatus::Inactive as i32);
}

#[tokio::test]
async fn pod_rpcs_without_pod_host() {
    let mut c = Central::start().await;
    let t = create(&mut c.client, "p").await;
    let id = t.task_id.clone();
    let e = c
        .client
        .start_pod(pb::StartPodRequest {
            task_id: id.clone(),
            actor_id: "a".into(),
            correlation_id: String::new(),
            queue: false,
        })
        .await
        .unwrap_err();
    assert_error(&e, Code::Unavailable, "NO_POD_HOST");
    let e = c
        .client
        .restart_pod(pb::RestartPodRequest {
            task_id: id.clone(),
            actor_id: "a".into(),
            correlation_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_error(&e, Code::Unavailable, "NO_POD_HOST");
    let e = c
        .client
        .stop_pod(pb::StopPodRequest {
            task_id: id.clone(),
            actor_id: "a".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_error(&e, Code::FailedPrecondition, "NOT_RUNNING");
    // Nothing was written by the refused calls.
    let events = c
        .client
        .get_task_events(pb::GetTaskEventsRequest {
            task_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(events.len(), 1);

    let pods = c
        .client
        .list_active_pods(pb::ListActivePodsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(pods.pods.is_empty());
    let hosts = c
        .client
        .list_pod_hosts(pb::ListPodHostsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(hosts.hosts.is_empty());

    // A task that never had a pod has no output.
    let mut logs = c
        .client
        .get_pod_logs(pb::GetPodLogsRequest {
            task_id: id,
            follow: false,
            tail_lines: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(logs.next().await.is_none());
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully_with_exit_0() {
    let mut c = Central::start().await;
    // A watcher is connected: its stream must end, not hang the shutdown.
    let mut watch = c
        .client
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    create(&mut c.client, "t").await;
    assert_eq!(watch.next().await.unwrap().unwrap().position, 1);
    c.server.signal(nix::sys::signal::Signal::SIGTERM);
    let status = c
        .server
        .wait_exit(ipa_tests::DEADLINE)
        .await
        .expect("exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    // The stream ended (cleanly or with the connection gone), not hung.
    let end = tokio::time::timeout(ipa_tests::DEADLINE, watch.next())
        .await
        .expect("stream ends");
    assert!(end.is_none() || end.is_some_and(|r| r.is_err()));
}
