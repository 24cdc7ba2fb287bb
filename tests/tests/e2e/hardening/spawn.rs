//! A pod that cannot be spawned: StartPod answers SPAWN_FAILED naming what
//! failed, and the trail has exactly one `pod_crashed` with that reason and
//! no `pod_started` (nothing ran); automatic restarts treat it as a crash.

use ipa_proto::ErrorReason;
use ipa_tests::{DEADLINE, pb, wait_for_async};
use tonic::Code;

use super::support::Cluster;

const TEMPLATES: &[(&str, &str)] = &[
    ("ghost", "command = \"/nonexistent/ipa-ghost\""),
    (
        "homeless",
        "command = \"/bin/sleep\"\nargs = [\"1000\"]\ncwd = \"/nonexistent/ipa-home\"",
    ),
];

fn types(evs: &[pb::Event]) -> Vec<&str> {
    evs.iter().map(|e| e.r#type.as_str()).collect()
}

#[tokio::test]
async fn a_missing_program_is_one_pod_crashed_with_the_reason() {
    let c = Cluster::start(TEMPLATES, &[]).await;
    let t = c.task("ghost").await;
    let err = c.start_pod(&t.task_id).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(ipa_proto::reason_of(&err), Some(ErrorReason::SpawnFailed));
    assert!(
        err.message()
            .contains("cannot execute /nonexistent/ipa-ghost: No such file or directory"),
        "{err:?}"
    );
    let evs = c.events(&t.task_id).await;
    assert_eq!(types(&evs), vec!["task_created", "pod_crashed"]);
    let data: serde_json::Value = serde_json::from_str(&evs[1].data_json).unwrap();
    assert_eq!(data["cause"], "EXIT_CAUSE_SPAWN_FAILED", "{data}");
    assert!(
        data["message"]
            .as_str()
            .is_some_and(|m| m.contains("/nonexistent/ipa-ghost")),
        "{data}"
    );
    let task = c.get(&t.task_id).await;
    assert_eq!(task.status(), pb::TaskStatus::Inactive);
    assert_eq!(task.pod_status(), pb::PodStatus::Stopped);
    assert!(task.pod_message.contains("could not start"), "{task:?}");
    // The host's slot was released: the next try fails the same way
    // (not NO_POD_HOST), and again leaves one event.
    let again = c.start_pod(&t.task_id).await.unwrap_err();
    assert_eq!(ipa_proto::reason_of(&again), Some(ErrorReason::SpawnFailed));
    assert_eq!(
        types(&c.events(&t.task_id).await),
        vec!["task_created", "pod_crashed", "pod_crashed"]
    );
}

#[tokio::test]
async fn a_missing_working_directory_is_named_as_such() {
    let c = Cluster::start(TEMPLATES, &[]).await;
    let t = c.task("homeless").await;
    let err = c.start_pod(&t.task_id).await.unwrap_err();
    assert_eq!(ipa_proto::reason_of(&err), Some(ErrorReason::SpawnFailed));
    assert!(
        err.message()
            .contains("cannot enter the working directory /nonexistent/ipa-home"),
        "{err:?}"
    );
    assert!(!err.message().contains("cannot execute"), "{err:?}");
}

/// With auto-restart, each failed spawn is a crash: the policy retries
/// `max_restarts` times and then fails the task, and no `pod_started` is
/// ever recorded.
#[tokio::test]
async fn failed_spawns_count_against_the_restart_budget() {
    let c = Cluster::start(TEMPLATES, &[]).await;
    let t = c
        .client
        .clone()
        .create_task(pb::CreateTaskRequest {
            title: "never runs".into(),
            actor_id: "tester".into(),
            template: "ghost".into(),
            restart_policy: Some(pb::RestartPolicy {
                auto_restart: Some(true),
                max_restarts: Some(2),
                window_seconds: Some(600),
                initial_backoff_ms: Some(0),
                max_backoff_ms: Some(10),
            }),
            ..Default::default()
        })
        .await
        .expect("CreateTask")
        .into_inner()
        .task
        .expect("task");
    let err = c.start_pod(&t.task_id).await.unwrap_err();
    assert_eq!(ipa_proto::reason_of(&err), Some(ErrorReason::SpawnFailed));
    let failed = wait_for_async("the task fails", DEADLINE, || async {
        Some(c.get(&t.task_id).await).filter(|t| t.status() == pb::TaskStatus::Failed)
    })
    .await;
    assert_eq!(failed.restart_count, 2);
    let evs = c.events(&t.task_id).await;
    let kinds = types(&evs);
    assert_eq!(
        kinds,
        vec![
            "task_created",
            "pod_crashed",
            "restart_scheduled",
            "pod_crashed",
            "restart_scheduled",
            "pod_crashed",
            "task_failed"
        ]
    );
}
