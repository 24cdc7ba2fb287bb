//! Every RPC of docs/api.md against live pods on two pod-hosts: lifecycle calls
//! really start and stop processes (checked in /proc and the ledger), live
//! state comes from the host stream, placement is least-loaded, logs are
//! proxied (tail and follow), and the audit trail and watch feed match.

use std::time::{Duration, Instant};

use ipa_proto::ErrorReason;
use ipa_tests::{DEADLINE, pb};
use tokio_stream::StreamExt;

use super::support::{Spec, System, alive, ledger_req, wait_all_dead};

fn types(evs: &[pb::Event]) -> Vec<&str> {
    evs.iter().map(|e| e.r#type.as_str()).collect()
}

#[tokio::test]
async fn every_rpc_against_live_pods() {
    let sys = System::start(Spec::relaxed()).await;

    // ListPodHosts: both hosts READY with what they told central.
    let hosts = sys.pod_hosts().await;
    assert_eq!(hosts.len(), 2, "{hosts:?}");
    for h in &hosts {
        assert_eq!(h.state(), pb::PodHostState::Ready, "{h:?}");
        assert!(h.templates.iter().any(|t| t == "ledger"), "{h:?}");
        assert!(h.templates.iter().any(|t| t == "default"), "{h:?}");
        assert!(h.capacity > 0 && !h.boot_id.is_empty() && !h.address.is_empty());
        assert!(h.last_heartbeat_at.is_some(), "{h:?}");
        assert_eq!(h.running_pods, 0);
    }

    // The watch feed from the start, collected in the background.
    let mut watch = sys
        .client()
        .watch_events(pb::WatchEventsRequest {
            after_position: 0,
            task_id: String::new(),
        })
        .await
        .expect("WatchEvents")
        .into_inner();

    // CreateTask with auto_start: a live pod with generation 1.
    let t1 = sys.running_ledger_task(&[], None).await;
    let p1 = t1.pod.clone().unwrap();
    assert_eq!(p1.generation, 1);
    assert!(p1.pid > 0 && !p1.pod_id.is_empty() && p1.started_at.is_some());
    let run = sys.wait_run(&p1.pod_id).await;
    assert_eq!((run.pid, run.generation), (p1.pid, 1), "ledger vs Pod");
    assert!(alive(p1.pid));
    // Live phase and version from the host stream.
    let live = sys
        .wait_task(&t1.task_id, "live phase DEVELOPMENT", |t| {
            t.phase() == pb::Phase::Development && t.version >= 1
        })
        .await;
    assert_eq!(live.status(), pb::TaskStatus::Active);
    assert_eq!(live.pod_status(), pb::PodStatus::Running);
    assert_eq!(live.pod.as_ref().unwrap().pod_id, p1.pod_id);

    // StartPod on a second task: least-loaded placement puts it on the
    // other host.
    let t2 = sys.ledger_task(&[]).await;
    assert_eq!(t2.status(), pb::TaskStatus::Inactive);
    assert_eq!(t2.pod_status(), pb::PodStatus::Stopped);
    let p2 = sys.start_pod(&t2.task_id).await.expect("StartPod");
    assert_eq!(p2.generation, 1);
    assert_ne!(p2.pod_host, p1.pod_host, "least loaded host first");
    let r = sys.start_pod(&t2.task_id).await.unwrap_err();
    assert_eq!(
        ipa_proto::reason_of(&r),
        Some(ErrorReason::AlreadyStarted),
        "{r:?}"
    );
    sys.wait_run(&p2.pod_id).await;

    // ListActivePods, ListTasks and CountTasks see both.
    let active = sys.active_pods().await;
    assert_eq!(active.len(), 2, "{active:?}");
    for (t, p) in [(&t1, &p1), (&t2, &p2)] {
        let a = active
            .iter()
            .find(|a| a.task_id == t.task_id)
            .expect("listed");
        let ap = a.pod.as_ref().unwrap();
        assert_eq!((&ap.pod_id, ap.pid, ap.generation), (&p.pod_id, p.pid, 1));
    }
    let mut c = sys.client();
    let listed = c
        .list_tasks(pb::ListTasksRequest {
            status: pb::TaskStatus::Active as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|t| t.pod.is_some()), "{listed:?}");
    let n = c
        .count_tasks(pb::CountTasksRequest {
            status: pb::TaskStatus::Active as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(n, 2);
    let hosts = sys.pod_hosts().await;
    assert!(hosts.iter().all(|h| h.running_pods == 1), "{hosts:?}");

    // RestartPod: the old pod stopped gracefully, a new generation runs.
    let p2b = sys.restart_pod(&t2.task_id).await.expect("RestartPod");
    assert_eq!(p2b.generation, 2);
    assert_ne!(p2b.pod_id, p2.pod_id);
    wait_all_dead("old pod after RestartPod", &[p2.pid], DEADLINE).await;
    sys.wait_run(&p2b.pod_id).await;
    let old = sys
        .runs()
        .into_iter()
        .find(|r| r.pod_id == p2.pod_id)
        .unwrap();
    assert!(old.stopped_cleanly, "RestartPod stops with SIGTERM first");

    // StopPod: no crash, inactive, nothing running; again → NOT_RUNNING.
    sys.stop_pod(&t2.task_id).await.expect("StopPod");
    wait_all_dead("pod after StopPod", &[p2b.pid], DEADLINE).await;
    let t = sys
        .wait_task(&t2.task_id, "inactive after StopPod", |t| {
            t.status() == pb::TaskStatus::Inactive
        })
        .await;
    assert_eq!(t.pod_status(), pb::PodStatus::Stopped);
    assert!(t.pod.is_none() && t.version == 0, "{t:?}");
    assert_eq!(
        t.phase(),
        pb::Phase::Development,
        "inactive keeps last phase"
    );
    let r = sys.stop_pod(&t2.task_id).await.unwrap_err();
    assert_eq!(
        ipa_proto::reason_of(&r),
        Some(ErrorReason::NotRunning),
        "{r:?}"
    );

    // GetPodLogs (no follow) proxies the pod's stdout.
    let mut logs = c
        .get_pod_logs(pb::GetPodLogsRequest {
            task_id: t1.task_id.clone(),
            follow: false,
            tail_lines: 0,
        })
        .await
        .expect("GetPodLogs")
        .into_inner();
    let mut out = String::new();
    while let Some(chunk) = tokio::time::timeout(DEADLINE, logs.next())
        .await
        .expect("log stream ends")
    {
        let chunk = chunk.expect("log chunk");
        if chunk.stream == "stdout" {
            out.push_str(&String::from_utf8_lossy(&chunk.data));
        }
    }
    assert!(
        out.contains(&format!("ledger pod {} of task", p1.pod_id)),
        "{out:?}"
    );

    // CompleteTask stops the pod through its host.
    c.complete_task(pb::CompleteTaskRequest {
        task_id: t1.task_id.clone(),
        actor_id: "tester".into(),
        correlation_id: "corr-1".into(),
    })
    .await
    .expect("CompleteTask");
    wait_all_dead("pod after CompleteTask", &[p1.pid], DEADLINE).await;
    let t = sys.task(&t1.task_id).await;
    assert_eq!(
        (t.status(), t.phase()),
        (pb::TaskStatus::Completed, pb::Phase::Completed)
    );
    assert!(t.pod.is_none(), "{t:?}");

    // CancelTask stops the pod through its host.
    let t3 = sys.running_ledger_task(&[], None).await;
    let p3 = t3.pod.clone().unwrap();
    sys.wait_run(&p3.pod_id).await;
    c.cancel_task(pb::CancelTaskRequest {
        task_id: t3.task_id.clone(),
        reason: "no longer needed".into(),
        actor_id: "tester".into(),
        correlation_id: String::new(),
    })
    .await
    .expect("CancelTask");
    wait_all_dead("pod after CancelTask", &[p3.pid], DEADLINE).await;
    let t = sys.task(&t3.task_id).await;
    assert_eq!(
        (t.status(), t.phase()),
        (pb::TaskStatus::Cancelled, pb::Phase::Cancelled)
    );
    assert!(sys.active_pods().await.is_empty());
    let c2 = sys.client();
    ipa_tests::wait_for_async("hosts report no pods", DEADLINE, || {
        let mut c2 = c2.clone();
        async move {
            let hosts = c2
                .list_pod_hosts(pb::ListPodHostsRequest {})
                .await
                .ok()?
                .into_inner()
                .hosts;
            hosts.iter().all(|h| h.running_pods == 0).then_some(())
        }
    })
    .await;

    // GetTaskEvents: the audit trail of each task.
    let e1 = sys.events(&t1.task_id).await;
    let ty1 = types(&e1);
    assert_eq!(ty1.first(), Some(&"task_created"));
    assert!(
        ty1.contains(&"pod_started") && ty1.contains(&"phase_changed"),
        "{ty1:?}"
    );
    assert_eq!(ty1.last(), Some(&"task_completed"), "{ty1:?}");
    let done = e1.last().unwrap();
    assert_eq!(
        (done.actor_id.as_str(), done.correlation_id.as_str()),
        ("tester", "corr-1")
    );
    let e2 = sys.events(&t2.task_id).await;
    let ty2 = types(&e2);
    assert_eq!(
        ty2.iter().filter(|t| **t == "pod_started").count(),
        2,
        "{ty2:?}"
    );
    assert!(ty2.contains(&"pod_stopped"), "{ty2:?}");
    assert!(!ty2.contains(&"pod_crashed"), "a stop is no crash: {ty2:?}");
    for evs in [&e1, &e2] {
        let versions: Vec<u64> = evs.iter().map(|e| e.version).collect();
        let expect: Vec<u64> = (1..=evs.len() as u64).collect();
        assert_eq!(versions, expect);
    }
    // Complete and Cancel name the pod they ended, so every pod's end is
    // in the trail exactly once.
    let cancelled = sys.events(&t3.task_id).await;
    let cancel = cancelled
        .iter()
        .find(|e| e.r#type == "task_cancelled")
        .expect("task_cancelled");
    let data: serde_json::Value = serde_json::from_str(&cancel.data_json).unwrap();
    assert_eq!(data["pod_id"], p3.pod_id.as_str(), "{data}");
    assert_eq!(data["reason"], "no longer needed", "{data}");
    let data: serde_json::Value = serde_json::from_str(&done.data_json).unwrap();
    assert_eq!(data["pod_id"], p1.pod_id.as_str(), "{data}");

    // WatchEvents delivered the same events, in position order.
    let all: Vec<pb::Event> = [e1, e2, sys.events(&t3.task_id).await].concat();
    let last = all.iter().map(|e| e.position).max().unwrap();
    let mut seen = Vec::new();
    while seen.last().map(|e: &pb::Event| e.position) != Some(last) {
        let e = tokio::time::timeout(DEADLINE, watch.next())
            .await
            .expect("watch delivers")
            .expect("watch open")
            .expect("event");
        seen.push(e);
    }
    assert!(seen.windows(2).all(|w| w[0].position < w[1].position));
    for e in &all {
        assert!(
            seen.iter()
                .any(|s| s.position == e.position && s.r#type == e.r#type),
            "watch missed {e:?}"
        );
    }
    sys.assert_no_overlap();
}

/// GetPodLogs with follow streams output while the pod writes it; the demo
/// pod's exit 0 after PHASE_COMPLETED completes the task as `system`.
#[tokio::test]
async fn logs_follow_and_demo_pod_completion() {
    let sys = System::start(Spec::relaxed()).await;
    const STEP_MS: u64 = 300;
    let t = sys
        .create(pb::CreateTaskRequest {
            title: "demo".into(),
            auto_start: true,
            metadata: [("demo.step_ms".to_string(), STEP_MS.to_string())].into(),
            ..Default::default()
        })
        .await;
    assert_eq!(t.template, "default");
    assert_eq!(t.status(), pb::TaskStatus::Active, "{:?}", t.pod_message);
    let mut logs = sys
        .client()
        .get_pod_logs(pb::GetPodLogsRequest {
            task_id: t.task_id.clone(),
            follow: true,
            tail_lines: 0,
        })
        .await
        .expect("GetPodLogs follow")
        .into_inner();
    let mut out = String::new();
    let mut planning_at = None;
    let mut completed_at = None;
    while completed_at.is_none() {
        let chunk = tokio::time::timeout(DEADLINE, logs.next())
            .await
            .expect("follow delivers output")
            .unwrap_or_else(|| panic!("follow stream ended early; got {out:?}"))
            .expect("chunk");
        out.push_str(&String::from_utf8_lossy(&chunk.data));
        if planning_at.is_none() && out.contains("entering PHASE_PLANNING") {
            planning_at = Some(Instant::now());
        }
        if out.contains("entering PHASE_COMPLETED") {
            completed_at = Some(Instant::now());
        }
    }
    // Three steps (900 ms) lie between the two lines: streamed as written,
    // not dumped at exit. (A follower that polls may deliver a line up to
    // one poll late, hence the bound of one step.)
    let gap = completed_at.unwrap() - planning_at.expect("planning line first");
    eprintln!(
        "follow: PLANNING and COMPLETED lines delivered {gap:?} apart (written 900 ms apart)"
    );
    assert!(
        gap >= Duration::from_millis(STEP_MS),
        "follow delivered the lines {gap:?} apart"
    );

    let done = sys
        .wait_task(&t.task_id, "completed by its pod", |t| {
            t.status() == pb::TaskStatus::Completed
        })
        .await;
    assert_eq!(done.phase(), pb::Phase::Completed);
    assert!(done.pod.is_none());
    let evs = sys.events(&t.task_id).await;
    let completed = evs
        .iter()
        .find(|e| e.r#type == "task_completed")
        .expect("task_completed");
    assert_eq!(completed.actor_id, "system");
    let phases = evs.iter().filter(|e| e.r#type == "phase_changed").count();
    assert!(phases >= 3, "phase changes committed: {:?}", types(&evs));

    // After the pod is gone, tail_lines returns the end of its last output.
    let mut tail = sys
        .client()
        .get_pod_logs(pb::GetPodLogsRequest {
            task_id: t.task_id.clone(),
            follow: false,
            tail_lines: 1,
        })
        .await
        .expect("GetPodLogs of the last pod")
        .into_inner();
    let mut last = String::new();
    while let Some(c) = tokio::time::timeout(DEADLINE, tail.next()).await.unwrap() {
        let c = c.unwrap();
        if c.stream == "stdout" {
            last.push_str(&String::from_utf8_lossy(&c.data));
        }
    }
    assert_eq!(last.lines().count(), 1, "{last:?}");
    assert!(out.contains(last.trim()), "{last:?}");
}

/// A plain exit 0 is `pod_exited`: inactive, last phase kept, not a crash.
#[tokio::test]
async fn plain_exit_is_pod_exited_and_keeps_the_last_phase() {
    let sys = System::start(Spec::relaxed()).await;
    let t = sys
        .running_ledger_task(&[("ledger.exit_after_ms", "300")], None)
        .await;
    let exited = sys.wait_event(&t.task_id, "pod_exited").await;
    assert_eq!(exited.actor_id, "system");
    let t = sys.task(&t.task_id).await;
    assert_eq!(t.status(), pb::TaskStatus::Inactive);
    assert_eq!(t.phase(), pb::Phase::Development);
    assert_eq!(t.pod_status(), pb::PodStatus::Stopped);
    let ty = types(&sys.events(&t.task_id).await)
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert!(!ty.iter().any(|t| t == "pod_crashed"), "{ty:?}");
}

/// Least-loaded placement fills both hosts evenly; when every host is full
/// StartPod is NO_POD_HOST and auto_start reports it in the task; freed
/// capacity is used again.
#[tokio::test]
async fn placement_is_least_loaded_and_full_hosts_give_no_pod_host() {
    let sys = System::start(Spec {
        capacity: Some(2),
        ..Spec::relaxed()
    })
    .await;
    let slow = [("ledger.alive_ms", "50")];
    let mut tasks = Vec::new();
    for _ in 0..4 {
        tasks.push(sys.running_ledger_task(&slow, None).await);
    }
    let on = |h: &str| {
        tasks
            .iter()
            .filter(|t| t.pod.as_ref().unwrap().pod_host == h)
            .count()
    };
    assert_eq!((on("host-a"), on("host-b")), (2, 2));
    // running_pods comes from the hosts' heartbeats: eventually 2 and 2.
    ipa_tests::wait_for_async(
        "both hosts report 2 of 2 pods",
        ipa_tests::DEADLINE,
        || async {
            let hosts = sys.pod_hosts().await;
            hosts
                .iter()
                .all(|h| h.running_pods == 2 && h.capacity == 2)
                .then_some(())
        },
    )
    .await;

    let extra = sys.ledger_task(&slow).await;
    let r = sys.start_pod(&extra.task_id).await.unwrap_err();
    assert_eq!(
        ipa_proto::reason_of(&r),
        Some(ErrorReason::NoPodHost),
        "{r:?}"
    );
    assert_eq!(r.code(), tonic::Code::Unavailable);
    let auto = sys.create(ledger_req(&slow, None, true)).await;
    assert_eq!(auto.status(), pb::TaskStatus::Inactive);
    assert!(auto.pod_message.starts_with("NO_POD_HOST"), "{auto:?}");

    // Free one slot on host-b: the next start must land there.
    let on_b = tasks
        .iter()
        .find(|t| t.pod.as_ref().unwrap().pod_host == "host-b")
        .unwrap();
    sys.stop_pod(&on_b.task_id).await.expect("StopPod");
    let p = sys
        .start_pod(&extra.task_id)
        .await
        .expect("StartPod after a stop");
    assert_eq!(p.pod_host, "host-b");
    assert_eq!(sys.active_pods().await.len(), 4);
    sys.assert_no_overlap();
}
