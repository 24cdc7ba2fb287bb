//! Task dependencies (issue 13, Scheduling: `depends_on`): a start waits
//! (POD_STATUS_QUEUED, `waiting_for` "dependencies") until every
//! dependency is COMPLETED, or fails with DEPENDENCIES_NOT_MET without
//! `queue`; a cancelled or failed dependency fails its dependents,
//! transitively, each naming its own dependency; the wait survives a
//! central-manager SIGKILL; bad input is refused.

use ipa_proto::ErrorReason;
use ipa_tests::pb;

use super::support::{Spec, System, ledger_req};

/// A `ledger` task depending on `deps`, auto-started (which waits for the
/// dependencies).
async fn dependent(sys: &System, deps: &[&str], auto_start: bool) -> pb::Task {
    let req = pb::CreateTaskRequest {
        depends_on: deps.iter().map(|s| s.to_string()).collect(),
        ..ledger_req(&[], None, auto_start)
    };
    sys.create(req).await
}

async fn complete(sys: &System, task_id: &str) {
    sys.client()
        .complete_task(pb::CompleteTaskRequest {
            task_id: task_id.into(),
            actor_id: "tester".into(),
            correlation_id: String::new(),
        })
        .await
        .expect("CompleteTask");
}

/// Asserts `task_id` waits for its dependencies, as GetTask shows it.
async fn assert_waits(sys: &System, task_id: &str) {
    let t = sys.task(task_id).await;
    assert_eq!(t.pod_status(), pb::PodStatus::Queued, "{t:?}");
    assert_eq!(t.status(), pb::TaskStatus::Active, "{t:?}");
    assert_eq!(t.waiting_for, "dependencies", "{t:?}");
    assert_eq!(t.queue_position, 0, "{t:?}");
    assert!(t.pod.is_none(), "{t:?}");
}

fn data(e: &pb::Event) -> serde_json::Value {
    serde_json::from_str(&e.data_json).expect("event data is JSON")
}

#[tokio::test]
async fn a_chain_starts_in_order_and_its_wait_survives_a_central_sigkill() {
    let mut sys = System::start(Spec::relaxed()).await;
    let a = sys.running_ledger_task(&[], None).await;
    let b = dependent(&sys, &[&a.task_id], true).await;
    let c = dependent(&sys, &[&b.task_id], true).await;
    assert_eq!(c.depends_on, vec![b.task_id.clone()]);
    for t in [&b, &c] {
        assert_waits(&sys, &t.task_id).await;
        let q = sys.wait_event(&t.task_id, "pod_queued").await;
        assert_eq!(data(&q)["waiting_for"], "dependencies", "{q:?}");
    }
    sys.kill_and_restart_central().await;
    sys.wait_host_state("host-a", pb::PodHostState::Ready).await;
    assert_waits(&sys, &b.task_id).await;
    assert_waits(&sys, &c.task_id).await;

    complete(&sys, &a.task_id).await;
    let done_a = sys.wait_event(&a.task_id, "task_completed").await;
    let started_b = sys.wait_event(&b.task_id, "pod_started").await;
    assert!(started_b.position > done_a.position);
    assert_eq!(started_b.actor_id, "system", "{started_b:?}");
    // C still waits for B.
    assert_waits(&sys, &c.task_id).await;
    complete(&sys, &b.task_id).await;
    let done_b = sys.wait_event(&b.task_id, "task_completed").await;
    let started_c = sys.wait_event(&c.task_id, "pod_started").await;
    assert!(started_c.position > done_b.position);
    // C's pod ran, and started only after B's task ended.
    let c_runs = sys.runs_of(&c.task_id);
    assert!(c_runs.len() <= 1, "{c_runs:?}");
    sys.assert_no_overlap();
}

#[tokio::test]
async fn a_task_waiting_on_five_starts_only_after_the_fifth_completes() {
    let sys = System::start(Spec::relaxed()).await;
    let mut deps = Vec::new();
    for _ in 0..5 {
        deps.push(sys.ledger_task(&[]).await.task_id);
    }
    let refs: Vec<&str> = deps.iter().map(String::as_str).collect();
    let t = dependent(&sys, &refs, false).await;
    // StartPod with queue waits.
    let r = sys
        .client()
        .start_pod(pb::StartPodRequest {
            task_id: t.task_id.clone(),
            actor_id: "tester".into(),
            correlation_id: String::new(),
            queue: true,
        })
        .await
        .expect("StartPod queue")
        .into_inner();
    assert!(r.queued && r.pod.is_none(), "{r:?}");
    for d in &deps[..4] {
        complete(&sys, d).await;
        assert_waits(&sys, &t.task_id).await;
    }
    complete(&sys, &deps[4]).await;
    let last = sys.wait_event(&deps[4], "task_completed").await;
    let started = sys.wait_event(&t.task_id, "pod_started").await;
    assert!(started.position > last.position);
    let queued: Vec<String> = sys
        .events(&t.task_id)
        .await
        .iter()
        .filter(|e| e.r#type == "pod_queued")
        .map(|e| data(e)["waiting_for"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(queued, ["dependencies", "capacity"]);
}

#[tokio::test]
async fn a_cancelled_dependency_fails_a_chain_of_three_each_naming_its_own() {
    let sys = System::start(Spec::relaxed()).await;
    let a = sys.ledger_task(&[]).await;
    let b = dependent(&sys, &[&a.task_id], true).await;
    let c = dependent(&sys, &[&b.task_id], false).await;
    let d = dependent(&sys, &[&c.task_id], true).await;
    sys.client()
        .cancel_task(pb::CancelTaskRequest {
            task_id: a.task_id.clone(),
            reason: "not needed".into(),
            actor_id: "tester".into(),
            correlation_id: String::new(),
        })
        .await
        .expect("CancelTask");
    for (t, dep) in [(&b, &a), (&c, &b), (&d, &c)] {
        let e = sys.wait_event(&t.task_id, "task_failed").await;
        let d = data(&e);
        assert_eq!(d["reason"], "dependency_failed", "{e:?}");
        assert_eq!(d["dependency"], dep.task_id.as_str(), "{e:?}");
        assert_eq!(e.actor_id, "system");
        let now = sys.task(&t.task_id).await;
        assert_eq!(now.status(), pb::TaskStatus::Failed, "{now:?}");
        assert_eq!(now.pod_status(), pb::PodStatus::Stopped, "{now:?}");
        let failed = sys
            .events(&t.task_id)
            .await
            .iter()
            .filter(|e| e.r#type == "task_failed")
            .count();
        assert_eq!(failed, 1);
        assert!(
            sys.runs_of(&t.task_id).is_empty(),
            "a pod of {} ran",
            t.task_id
        );
    }
}

#[tokio::test]
async fn start_without_queue_is_refused_with_dependencies_not_met() {
    let sys = System::start(Spec::relaxed()).await;
    let a = sys.ledger_task(&[]).await;
    let b = dependent(&sys, &[&a.task_id], false).await;
    let e = sys.start_pod(&b.task_id).await.expect_err("StartPod");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert_eq!(
        ipa_proto::reason_of(&e),
        Some(ErrorReason::DependenciesNotMet)
    );
    assert!(e.message().contains(&a.task_id), "{e:?}");
    let t = sys.task(&b.task_id).await;
    assert_eq!(t.status(), pb::TaskStatus::Inactive, "{t:?}");
    assert_eq!(t.pod_status(), pb::PodStatus::Stopped, "{t:?}");
    // Once it is completed, the same call starts it.
    complete(&sys, &a.task_id).await;
    sys.start_pod(&b.task_id).await.expect("StartPod");
}

#[tokio::test]
async fn bad_dependencies_are_refused_naming_the_field_or_the_id() {
    let sys = System::start(Spec::relaxed()).await;
    let a = sys.ledger_task(&[]).await;
    let create = |deps: Vec<String>| {
        let mut c = sys.client();
        async move {
            c.create_task(pb::CreateTaskRequest {
                depends_on: deps,
                ..ledger_req(&[], None, false)
            })
            .await
        }
    };
    let mut many = vec![a.task_id.clone(); 1];
    many.extend((0..32).map(|i| format!("00000000-0000-7000-8000-{i:012}")));
    for bad in [
        many,
        vec!["not-a-task-id".into()],
        vec![a.task_id.clone(), a.task_id.clone()],
    ] {
        let e = create(bad.clone()).await.expect_err("refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}: {e:?}");
        assert_eq!(ipa_proto::reason_of(&e), Some(ErrorReason::InvalidArgument));
        assert!(e.message().contains("depends_on"), "{e:?}");
    }
    let unknown = "00000000-0000-7000-8000-000000000001".to_owned();
    let e = create(vec![a.task_id.clone(), unknown.clone()])
        .await
        .expect_err("refused");
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert_eq!(ipa_proto::reason_of(&e), Some(ErrorReason::TaskNotFound));
    assert!(e.message().contains(&unknown), "{e:?}");
    // Nothing was created by the refused calls.
    let count = sys
        .client()
        .count_tasks(pb::CountTasksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(count, 1);
}
