//! Priorities and the queue (issue 13, Scheduling): with no room, StartPod
//! and CreateTask with `queue` queue the task (`pod_queued`,
//! POD_STATUS_QUEUED) and the dispatcher starts queued tasks as room
//! appears, highest priority first, first queued first within a priority,
//! never above a host's capacity; the order survives a SIGKILL of
//! central-manager; a queue timeout expires a task (`queue_expired`);
//! StopPod unqueues; a StartPod racing the dispatcher starts one pod.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use ipa_proto::ErrorReason;
use ipa_tests::{DEADLINE, pb, wait_for_async};

use super::support::{Spec, System, children_with, ledger_req};

/// One host of capacity 1: a single pod at a time.
fn one_slot() -> Spec {
    Spec {
        hosts: vec!["host-a"],
        capacity: Some(1),
        ..Spec::relaxed()
    }
}

fn priority_name(p: pb::Priority) -> &'static str {
    match p {
        pb::Priority::Low => "low",
        pb::Priority::High => "high",
        pb::Priority::Critical => "critical",
        _ => "medium",
    }
}

/// A `ledger` task of `priority` whose pod exits 0 after `exit_ms`.
async fn short_task(sys: &System, priority: pb::Priority, exit_ms: u32) -> pb::Task {
    let exit = exit_ms.to_string();
    let req = pb::CreateTaskRequest {
        priority: priority as i32,
        ..ledger_req(&[("ledger.exit_after_ms", &exit)], None, false)
    };
    sys.create(req).await
}

async fn start_queued(sys: &System, task_id: &str) -> Result<pb::StartPodResponse, tonic::Status> {
    sys.client()
        .start_pod(pb::StartPodRequest {
            task_id: task_id.into(),
            actor_id: "tester".into(),
            correlation_id: String::new(),
            queue: true,
        })
        .await
        .map(|r| r.into_inner())
}

/// Queues `task_id` (no room): asserts the reply says so.
async fn queue(sys: &System, task_id: &str) {
    let r = start_queued(sys, task_id).await.expect("StartPod queue");
    assert!(r.queued && r.pod.is_none(), "not queued: {r:?}");
}

/// The `pod_started` events of `ids`, in commit order (global position).
async fn started_order(sys: &System, ids: &[String]) -> Vec<String> {
    let mut started = Vec::new();
    for id in ids {
        let e = sys.wait_event(id, "pod_started").await;
        started.push((e.position, id.clone()));
    }
    started.sort();
    started.into_iter().map(|(_, id)| id).collect()
}

/// The dispatch order the contract promises: priority descending, then
/// the order they were queued.
fn expected_order(queued: &[(String, pb::Priority)]) -> Vec<String> {
    let mut v: Vec<(usize, &(String, pb::Priority))> = queued.iter().enumerate().collect();
    v.sort_by_key(|(i, (_, p))| (std::cmp::Reverse(*p as i32), *i));
    v.into_iter().map(|(_, (id, _))| id.clone()).collect()
}

const MIX: [pb::Priority; 4] = [
    pb::Priority::Low,
    pb::Priority::High,
    pb::Priority::Medium,
    pb::Priority::Critical,
];

/// A blocker holding the only slot, then `n` short tasks queued behind it
/// with mixed priorities.
async fn blocked_queue(sys: &System, n: usize) -> (pb::Task, Vec<(String, pb::Priority)>) {
    let blocker = sys.running_ledger_task(&[], None).await;
    let mut queued = Vec::new();
    for i in 0..n {
        // A pattern that interleaves priorities and repeats each one.
        let p = MIX[(i * 7 + i / 3) % MIX.len()];
        let t = short_task(sys, p, 30).await;
        queue(sys, &t.task_id).await;
        queued.push((t.task_id, p));
    }
    (blocker, queued)
}

#[tokio::test]
async fn queued_tasks_start_by_priority_then_first_queued_first() {
    let sys = System::start(one_slot()).await;
    let (blocker, queued) = blocked_queue(&sys, 20).await;
    // GetTask shows the dispatcher's order: 1-based, per template.
    let want = expected_order(&queued);
    for (place, id) in want.iter().enumerate() {
        let t = sys.task(id).await;
        assert_eq!(t.pod_status(), pb::PodStatus::Queued, "{t:?}");
        assert_eq!(t.status(), pb::TaskStatus::Active, "{t:?}");
        assert_eq!(t.waiting_for, "capacity", "{t:?}");
        assert_eq!(t.queue_position as usize, place + 1, "{t:?}");
        assert!(t.queued_at.is_some() && t.pod.is_none(), "{t:?}");
    }
    let e = sys.wait_event(&want[0], "pod_queued").await;
    let d: serde_json::Value = serde_json::from_str(&e.data_json).unwrap();
    assert_eq!(d["priority"], "critical", "{d}");
    // Filters: by pod status and by priority.
    let mut c = sys.client();
    let count = c
        .count_tasks(pb::CountTasksRequest {
            pod_status: pb::PodStatus::Queued as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(count, 20);
    let highs = c
        .list_tasks(pb::ListTasksRequest {
            pod_status: pb::PodStatus::Queued as i32,
            priority: pb::Priority::High as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tasks;
    let want_highs = queued
        .iter()
        .filter(|(_, p)| *p == pb::Priority::High)
        .count();
    assert_eq!(highs.len(), want_highs);
    assert!(highs.iter().all(|t| t.priority() == pb::Priority::High));
    // Room appears: the queue drains one at a time, in order.
    sys.stop_pod(&blocker.task_id).await.expect("StopPod");
    let ids: Vec<String> = queued.iter().map(|(id, _)| id.clone()).collect();
    let got = started_order(&sys, &ids).await;
    let names = |v: &[String]| {
        v.iter()
            .map(|id| {
                let p = queued.iter().find(|(q, _)| q == id).unwrap().1;
                format!("{}:{}", priority_name(p), &id[id.len() - 4..])
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&got), names(&want));
    for id in &ids {
        let e = sys.wait_event(id, "pod_started").await;
        assert_eq!(e.actor_id, "system", "{e:?}");
    }
    // Capacity 1: no two pods ever ran at once on the host.
    wait_for_async("every queued pod ran", DEADLINE, || async {
        let runs = sys.runs();
        (runs.iter().filter(|r| r.end_ns > 0).count() > ids.len()).then_some(())
    })
    .await;
    let mut runs = sys.runs();
    runs.sort_by_key(|r| r.start_ns);
    for w in runs.windows(2) {
        assert!(
            w[0].end_ns <= w[1].start_ns,
            "two pods ran at once on a host of capacity 1: {w:?}"
        );
    }
}

#[tokio::test]
async fn the_queue_order_survives_a_central_sigkill() {
    let mut sys = System::start(one_slot()).await;
    let (blocker, queued) = blocked_queue(&sys, 8).await;
    let want = expected_order(&queued);
    sys.kill_and_restart_central().await;
    sys.wait_host_state("host-a", pb::PodHostState::Ready).await;
    for (place, id) in want.iter().enumerate() {
        let t = sys.task(id).await;
        assert_eq!(t.pod_status(), pb::PodStatus::Queued, "{t:?}");
        assert_eq!(t.queue_position as usize, place + 1, "{t:?}");
    }
    sys.stop_pod(&blocker.task_id).await.expect("StopPod");
    let ids: Vec<String> = queued.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(started_order(&sys, &ids).await, want);
    sys.assert_no_overlap();
}

#[tokio::test]
async fn a_task_queued_past_its_queue_timeout_expires() {
    let sys = System::start(one_slot()).await;
    let _blocker = sys.running_ledger_task(&[], None).await;
    let req = pb::CreateTaskRequest {
        queue: true,
        queue_timeout_seconds: Some(1),
        priority: pb::Priority::High as i32,
        ..ledger_req(&[], None, true)
    };
    let t = sys.create(req).await;
    assert_eq!(t.pod_status(), pb::PodStatus::Queued, "{t:?}");
    assert_eq!(t.queue_timeout_seconds, Some(1));
    assert_eq!(t.queue_position, 1);
    let e = sys.wait_event(&t.task_id, "queue_expired").await;
    assert_eq!(e.actor_id, "system");
    let after = sys.task(&t.task_id).await;
    assert_eq!(after.status(), pb::TaskStatus::Inactive, "{after:?}");
    assert_eq!(after.pod_status(), pb::PodStatus::Stopped, "{after:?}");
    assert_eq!(after.queue_position, 0);
    assert!(after.waiting_for.is_empty());
    let evs = sys.events(&t.task_id).await;
    assert!(evs.iter().all(|e| e.r#type != "pod_started"), "{evs:?}");
}

#[tokio::test]
async fn stop_pod_unqueues_and_cancel_takes_a_task_out_of_the_queue() {
    let sys = System::start(one_slot()).await;
    let blocker = sys.running_ledger_task(&[], None).await;
    let a = short_task(&sys, pb::Priority::Critical, 30).await;
    let b = short_task(&sys, pb::Priority::Critical, 30).await;
    let c = short_task(&sys, pb::Priority::Low, 30).await;
    for t in [&a, &b, &c] {
        queue(&sys, &t.task_id).await;
    }
    // Queued again: stays where it is.
    queue(&sys, &a.task_id).await;
    assert_eq!(sys.task(&a.task_id).await.queue_position, 1);
    // Without `queue`, a queued task is ALREADY_STARTED (it starts by itself).
    let e = sys.start_pod(&a.task_id).await.unwrap_err();
    assert_eq!(
        ipa_proto::reason_of(&e),
        Some(ErrorReason::AlreadyStarted),
        "{e:?}"
    );
    sys.stop_pod(&a.task_id).await.expect("StopPod unqueues");
    let stopped = sys.wait_event(&a.task_id, "pod_stopped").await;
    let d: serde_json::Value = serde_json::from_str(&stopped.data_json).unwrap();
    assert_eq!(d["queued"], true, "{d}");
    let ta = sys.task(&a.task_id).await;
    assert_eq!(ta.status(), pb::TaskStatus::Inactive, "{ta:?}");
    assert_eq!(ta.pod_status(), pb::PodStatus::Stopped, "{ta:?}");
    assert_eq!(sys.task(&b.task_id).await.queue_position, 1);
    assert_eq!(sys.task(&c.task_id).await.queue_position, 2);
    sys.client()
        .cancel_task(pb::CancelTaskRequest {
            task_id: b.task_id.clone(),
            reason: "not needed".into(),
            actor_id: "tester".into(),
            ..Default::default()
        })
        .await
        .expect("CancelTask");
    assert_eq!(sys.task(&c.task_id).await.queue_position, 1);
    sys.stop_pod(&blocker.task_id).await.expect("StopPod");
    sys.wait_event(&c.task_id, "pod_started").await;
    for t in [&a, &b] {
        let evs = sys.events(&t.task_id).await;
        assert!(evs.iter().all(|e| e.r#type != "pod_started"), "{evs:?}");
    }
    // Queued again after its pod ran: GetTask shows no pod (the row still
    // names its last one).
    sys.wait_event(&c.task_id, "pod_exited").await;
    let _blocker = sys.running_ledger_task(&[], None).await;
    queue(&sys, &c.task_id).await;
    let tc = sys.task(&c.task_id).await;
    assert_eq!(tc.pod_status(), pb::PodStatus::Queued, "{tc:?}");
    assert!(tc.pod.is_none() && tc.version == 0, "{tc:?}");
}

#[tokio::test]
async fn start_pod_racing_the_dispatcher_starts_one_pod() {
    let sys = System::start(one_slot()).await;
    for round in 0..5 {
        let blocker = sys.running_ledger_task(&[], None).await;
        let t = sys.ledger_task(&[]).await;
        queue(&sys, &t.task_id).await;
        let racers: Vec<_> = (0..8)
            .map(|i| {
                let c = sys.client();
                let id = t.task_id.clone();
                tokio::spawn(async move {
                    let mut c = c;
                    c.start_pod(pb::StartPodRequest {
                        task_id: id,
                        actor_id: "racer".into(),
                        correlation_id: String::new(),
                        queue: i % 2 == 0,
                    })
                    .await
                })
            })
            .collect();
        sys.stop_pod(&blocker.task_id).await.expect("StopPod");
        for r in racers {
            match r.await.expect("racer") {
                Ok(_) => {}
                Err(e) => assert_eq!(
                    ipa_proto::reason_of(&e),
                    Some(ErrorReason::AlreadyStarted),
                    "round {round}: {e:?}"
                ),
            }
        }
        sys.wait_event(&t.task_id, "pod_started").await;
        let evs = sys.events(&t.task_id).await;
        let starts = evs.iter().filter(|e| e.r#type == "pod_started").count();
        assert_eq!(starts, 1, "round {round}: {evs:?}");
        sys.stop_pod(&t.task_id).await.expect("StopPod");
    }
    sys.assert_no_overlap();
}

#[tokio::test]
async fn capacity_is_never_exceeded_under_start_queue_and_stop_storms() {
    let spec = Spec {
        capacity: Some(2),
        ..Spec::relaxed()
    };
    let sys = Arc::new(System::start(spec).await);
    let mut ids = Vec::new();
    for i in 0..24 {
        let t = short_task(&sys, MIX[i % MIX.len()], 80).await;
        ids.push(t.task_id);
    }
    // Count the pod processes of each host while the storm runs.
    let done = Arc::new(AtomicBool::new(false));
    let worst = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (done, worst) = (done.clone(), worst.clone());
        let pids: Vec<u32> = sys.hosts.values().map(|h| h.pid).collect();
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                for &p in &pids {
                    worst.fetch_max(children_with(p, "ledger-pod").len(), Ordering::SeqCst);
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        })
    };
    let storm: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let sys = sys.clone();
            let id = id.clone();
            tokio::spawn(async move {
                for k in 0..3 {
                    let _ = start_queued(&sys, &id).await;
                    if (i + k) % 3 == 0 {
                        let _ = sys.stop_pod(&id).await;
                    }
                    let _ = sys.start_pod(&id).await;
                }
                // Last word: queued, so every task eventually runs.
                let _ = start_queued(&sys, &id).await;
            })
        })
        .collect();
    for s in storm {
        s.await.expect("storm task");
    }
    // Every task ran after the storm: the queue drained by itself.
    for id in &ids {
        sys.wait_task(id, "ran and its pod ended", |t| {
            t.pod_status() == pb::PodStatus::Stopped && t.status() == pb::TaskStatus::Inactive
        })
        .await;
    }
    done.store(true, Ordering::SeqCst);
    sampler.await.expect("sampler");
    let seen = worst.load(Ordering::SeqCst);
    assert!(seen <= 2, "a host of capacity 2 ran {seen} pods at once");
    assert!(seen >= 1, "the sampler never saw a pod");
    sys.assert_no_overlap();
    let hosts = sys.pod_hosts().await;
    assert!(hosts.iter().all(|h| h.running_pods == 0), "{hosts:?}");
}
