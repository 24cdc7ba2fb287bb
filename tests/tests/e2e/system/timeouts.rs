//! Run timeouts and task deadlines (issue 13, Scheduling): a pod running
//! longer than its task's `timeout_seconds` is stopped (grace, then kill)
//! and recorded as `pod_timed_out`, which the restart policy counts as a
//! crash; a task not terminal at its `deadline` is FAILED with
//! `{"reason":"deadline_exceeded"}` and its pod stopped; both timers survive
//! a SIGKILL of central-manager (they are computed from stored times).

use std::time::{Duration, SystemTime};

use ipa_proto::ErrorReason;
use ipa_tests::{DEADLINE, pb};

use super::support::{Spec, System, auto_restart, ledger_req, ms_between, ts_ns, wait_all_dead};

/// A `ledger` task (runs until stopped) with a run timeout.
fn timed(timeout_seconds: u32, policy: Option<pb::RestartPolicy>) -> pb::CreateTaskRequest {
    pb::CreateTaskRequest {
        timeout_seconds: Some(timeout_seconds),
        ..ledger_req(&[], policy, true)
    }
}

/// A deadline `after` from now.
fn deadline_in(after: Duration) -> Option<prost_types::Timestamp> {
    Some(ipa_proto::time::timestamp(SystemTime::now() + after))
}

fn data(e: &pb::Event) -> serde_json::Value {
    serde_json::from_str(&e.data_json).expect("event data is JSON")
}

fn count(events: &[pb::Event], kind: &str) -> usize {
    events.iter().filter(|e| e.r#type == kind).count()
}

#[tokio::test]
async fn a_pod_past_its_timeout_is_stopped_as_pod_timed_out_without_a_restart() {
    let sys = System::start(Spec::relaxed()).await;
    let t = sys.create(timed(1, None)).await;
    assert_eq!(t.timeout_seconds, Some(1), "{t:?}");
    let pod = t.pod.clone().expect("auto_start started a pod");
    let started = sys.wait_event(&t.task_id, "pod_started").await;
    let timed_out = sys.wait_event(&t.task_id, "pod_timed_out").await;
    assert_eq!(timed_out.actor_id, "system");
    let d = data(&timed_out);
    assert_eq!(d["pod_id"], pod.pod_id.as_str(), "{d}");
    assert!(
        d["reason"].as_str().unwrap_or("").contains("timed out"),
        "{d}"
    );
    // Not before the timeout (the start time is the host's; allow for the
    // commit of pod_started trailing the spawn).
    let ran = ms_between(ts_ns(&started.occurred_at), ts_ns(&timed_out.occurred_at));
    assert!(ran >= 800.0, "stopped after {ran:.0} ms, timeout 1 s");
    wait_all_dead("timed-out pod", &[pod.pid], DEADLINE).await;
    let after = sys.task(&t.task_id).await;
    assert_eq!(after.status(), pb::TaskStatus::Inactive, "{after:?}");
    assert_eq!(after.pod_status(), pb::PodStatus::Stopped);
    assert!(after.pod_message.contains("timed out"), "{after:?}");
    // Auto-restart off: nothing more happens.
    let evs = sys.events(&t.task_id).await;
    assert_eq!(count(&evs, "restart_scheduled"), 0, "{evs:?}");
    assert_eq!(count(&evs, "pod_stopped"), 0, "{evs:?}");
    assert_eq!(count(&evs, "pod_timed_out"), 1, "{evs:?}");
    assert_eq!(after.restart_count, 0);
    sys.assert_no_overlap();
}

#[tokio::test]
async fn a_timeout_counts_as_a_crash_for_the_restart_policy() {
    let sys = System::start(Spec::relaxed()).await;
    // One restart allowed: the first timeout restarts the pod, the second
    // is the second crash in the window and fails the task.
    let t = sys.create(timed(1, Some(auto_restart(1, 200, 500)))).await;
    let failed = sys
        .wait_task(&t.task_id, "FAILED after two timeouts", |t| {
            t.status() == pb::TaskStatus::Failed
        })
        .await;
    assert_eq!(failed.restart_count, 1, "{failed:?}");
    let evs = sys.events(&t.task_id).await;
    let kinds: Vec<&str> = evs.iter().map(|e| e.r#type.as_str()).collect();
    assert_eq!(count(&evs, "pod_timed_out"), 2, "{kinds:?}");
    assert_eq!(count(&evs, "restart_scheduled"), 1, "{kinds:?}");
    assert_eq!(count(&evs, "pod_started"), 2, "{kinds:?}");
    let scheduled = evs
        .iter()
        .find(|e| e.r#type == "restart_scheduled")
        .unwrap();
    assert_eq!(data(scheduled)["crashes_in_window"], 1, "{scheduled:?}");
    let last = evs.last().unwrap();
    assert_eq!(last.r#type, "task_failed", "{kinds:?}");
    assert_eq!(data(last)["crashes_in_window"], 2, "{last:?}");
    // Each generation ran about its timeout, never both at once.
    let runs = sys.runs_of(&t.task_id);
    assert_eq!(runs.len(), 2, "{runs:?}");
    sys.assert_no_overlap();
    assert!(sys.active_pods().await.is_empty());
}

#[tokio::test]
async fn a_running_task_past_its_deadline_fails_and_its_pod_is_stopped() {
    let sys = System::start(Spec::relaxed()).await;
    let req = pb::CreateTaskRequest {
        // Room for a slow CreateTask with its start on a loaded machine.
        deadline: deadline_in(Duration::from_secs(4)),
        ..ledger_req(&[], Some(auto_restart(5, 100, 200)), true)
    };
    let t = sys.create(req).await;
    assert!(t.deadline.is_some(), "{t:?}");
    let pod = t.pod.clone().expect("auto_start started a pod");
    let failed = sys
        .wait_task(&t.task_id, "FAILED at its deadline", |t| {
            t.status() == pb::TaskStatus::Failed
        })
        .await;
    assert_eq!(failed.pod_status(), pb::PodStatus::Stopped, "{failed:?}");
    let e = sys.wait_event(&t.task_id, "task_failed").await;
    assert_eq!(e.actor_id, "system");
    let d = data(&e);
    assert_eq!(d["reason"], "deadline_exceeded", "{d}");
    assert_eq!(d["pod_id"], pod.pod_id.as_str(), "{d}");
    assert!(
        ts_ns(&e.occurred_at) >= ts_ns(&t.deadline),
        "failed before its deadline: {e:?}"
    );
    wait_all_dead("the pod of the failed task", &[pod.pid], DEADLINE).await;
    // The pod's end is in task_failed; no restart follows a terminal task.
    let evs = sys.events(&t.task_id).await;
    assert_eq!(count(&evs, "restart_scheduled"), 0, "{evs:?}");
    assert_eq!(count(&evs, "task_failed"), 1, "{evs:?}");
    assert!(sys.active_pods().await.is_empty());
}

#[tokio::test]
async fn a_never_started_task_past_its_deadline_fails() {
    let sys = System::start(Spec::relaxed()).await;
    let req = pb::CreateTaskRequest {
        deadline: deadline_in(Duration::from_secs(2)),
        ..ledger_req(&[], None, false)
    };
    let t = sys.create(req).await;
    assert_eq!(t.status(), pb::TaskStatus::Inactive);
    sys.wait_task(&t.task_id, "FAILED at its deadline", |t| {
        t.status() == pb::TaskStatus::Failed
    })
    .await;
    let evs = sys.events(&t.task_id).await;
    let kinds: Vec<&str> = evs.iter().map(|e| e.r#type.as_str()).collect();
    assert_eq!(kinds, ["task_created", "task_failed"]);
    assert_eq!(data(&evs[1])["reason"], "deadline_exceeded");
    // A failed task cannot be started any more.
    let e = sys.start_pod(&t.task_id).await.unwrap_err();
    assert_eq!(
        ipa_proto::reason_of(&e),
        Some(ErrorReason::AlreadyFailed),
        "{e:?}"
    );
}

#[tokio::test]
async fn bad_timeouts_and_deadlines_are_invalid_argument_naming_the_field() {
    let sys = System::start(Spec::relaxed()).await;
    let mut c = sys.client();
    let cases = [
        ("timeout_seconds", timed(0, None)),
        ("timeout_seconds", timed(604_801, None)),
        (
            "deadline",
            pb::CreateTaskRequest {
                deadline: Some(ipa_proto::time::timestamp(
                    SystemTime::now() - Duration::from_secs(5),
                )),
                ..ledger_req(&[], None, false)
            },
        ),
    ];
    for (field, req) in cases {
        let e = c.create_task(req).await.unwrap_err();
        assert_eq!(
            ipa_proto::reason_of(&e),
            Some(ErrorReason::InvalidArgument),
            "{e:?}"
        );
        assert!(e.message().contains(field), "{field}: {e:?}");
    }
    // Nothing was created.
    let n = c
        .count_tasks(pb::CountTasksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(n, 0);
}

#[tokio::test]
async fn a_pending_timeout_fires_once_after_a_central_manager_sigkill() {
    let mut sys = System::start(Spec::relaxed()).await;
    let t = sys.create(timed(3, None)).await;
    let pod = t.pod.clone().expect("auto_start started a pod");
    sys.wait_run(&pod.pod_id).await;
    // Central dies with the timer armed only in its memory; the restarted
    // one re-arms it from the stored start time.
    sys.kill_and_restart_central().await;
    for id in sys.spec.hosts.clone() {
        sys.wait_host_state(id, pb::PodHostState::Ready).await;
    }
    let timed_out = sys.wait_event(&t.task_id, "pod_timed_out").await;
    assert_eq!(data(&timed_out)["pod_id"], pod.pod_id.as_str());
    wait_all_dead("timed-out pod", &[pod.pid], DEADLINE).await;
    let after = sys
        .wait_task(&t.task_id, "INACTIVE", |t| {
            t.status() == pb::TaskStatus::Inactive && t.pod_status() == pb::PodStatus::Stopped
        })
        .await;
    assert_eq!(after.restart_count, 0);
    // Once: a second central-manager restart finds nothing due.
    sys.kill_and_restart_central().await;
    for id in sys.spec.hosts.clone() {
        sys.wait_host_state(id, pb::PodHostState::Ready).await;
    }
    let evs = sys.events(&t.task_id).await;
    assert_eq!(count(&evs, "pod_timed_out"), 1, "{evs:?}");
    let ends = ["pod_stopped", "pod_exited", "pod_crashed", "pod_lost"];
    assert!(
        ends.iter().all(|k| count(&evs, k) == 0),
        "the pod's end is recorded once: {evs:?}"
    );
    sys.assert_no_overlap();
}

#[tokio::test]
async fn ipactl_creates_tasks_with_a_timeout_and_a_deadline() {
    let sys = System::start(Spec::relaxed()).await;
    let ctl = ipa_tests::ipactl::Ipactl::new(sys.central.addr);
    let run = ctl
        .run(&[
            "tasks",
            "create",
            "timed",
            "-t",
            "ledger",
            "--start",
            "--timeout",
            "1s",
            "-q",
        ])
        .await;
    let timed = run.ok().trim().to_owned();
    let run = ctl
        .run(&["tasks", "create", "due", "--deadline", "3s", "-q"])
        .await;
    let due = run.ok().trim().to_owned();
    let t = sys.task(&timed).await;
    assert_eq!(t.timeout_seconds, Some(1), "{t:?}");
    sys.wait_event(&timed, "pod_timed_out").await;
    sys.wait_task(&due, "FAILED at its deadline", |t| {
        t.status() == pb::TaskStatus::Failed
    })
    .await;
    let shown = ctl.run(&["tasks", "get", &timed]).await;
    assert!(shown.ok().contains("Run timeout"), "{shown:?}");
    ctl.run(&["tasks", "create", "x", "--timeout", "0s"])
        .await
        .fails_with("INVALID_ARGUMENT");
}
