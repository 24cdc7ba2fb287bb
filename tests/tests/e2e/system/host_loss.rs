//! Losing a pod-host process: its pods die with it (PDEATHSIG), central
//! declares them `pod_lost` no earlier than the fence deadline (it cannot
//! tell a dead host from a partitioned one) and auto-restart runs them on
//! the other host; a host that comes back with a new `boot_id` has all its
//! old pods `pod_lost` at once, long before any fence deadline.

use ipa_tests::pb;
use nix::sys::signal::Signal;

use super::support::{Spec, System, alive, auto_restart, ms_between, now_ns, ts_ns, wait_all_dead};

#[tokio::test]
async fn sigkill_of_a_pod_host_kills_its_pods_and_they_run_again_elsewhere() {
    let sys = System::start(Spec {
        central_fence_ms: 2000,
        host_fence_ms: 2000,
        ..Spec::default()
    })
    .await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        tasks.push(
            sys.running_ledger_task(&[], Some(auto_restart(3, 0, 100)))
                .await,
        );
    }
    for t in &tasks {
        sys.wait_run(&t.pod.as_ref().unwrap().pod_id).await;
    }
    let on = |h: &str| -> Vec<pb::Task> {
        tasks
            .iter()
            .filter(|t| t.pod.as_ref().unwrap().pod_host == h)
            .cloned()
            .collect()
    };
    let (lost, kept) = (on("host-a"), on("host-b"));
    assert_eq!((lost.len(), kept.len()), (2, 2), "least-loaded placement");
    let lost_pids: Vec<u32> = lost.iter().map(|t| t.pod.as_ref().unwrap().pid).collect();

    let killed_at = now_ns();
    sys.host("host-a").signal(Signal::SIGKILL);
    // No pod process of the dead host survives it.
    wait_all_dead("host-a's pods die with it", &lost_pids, ipa_tests::DEADLINE).await;

    for t in &lost {
        let ev = sys.wait_event(&t.task_id, "pod_lost").await;
        let after = ms_between(killed_at, ts_ns(&ev.occurred_at));
        // Last contact was at most a heartbeat before the kill; the pods
        // may only be declared lost at the fence deadline after it.
        let earliest = (sys.spec.central_fence_ms.max(sys.spec.host_fence_ms)
            - 2 * sys.spec.heartbeat_ms) as f64;
        assert!(
            after >= earliest,
            "pod_lost {after:.0} ms after the kill, before the fence deadline"
        );
        eprintln!("host SIGKILL → pod_lost after {after:.0} ms");
        let t2 = sys
            .wait_task(&t.task_id, "running again on host-b", |t| {
                t.pod_status() == pb::PodStatus::Running
                    && t.pod
                        .as_ref()
                        .is_some_and(|p| p.generation == 2 && p.pod_host == "host-b")
            })
            .await;
        let p = t2.pod.unwrap();
        let run = sys.wait_run(&p.pod_id).await;
        assert!(alive(p.pid), "new pod {p:?} not alive; ledger: {run:?}");
    }
    sys.wait_host_state("host-a", pb::PodHostState::Lost).await;
    // host-b's own pods were never touched.
    for t in &kept {
        let now = sys.task(&t.task_id).await;
        assert_eq!(now.pod.unwrap().pod_id, t.pod.as_ref().unwrap().pod_id);
        assert!(alive(t.pod.as_ref().unwrap().pid));
    }
    assert_eq!(sys.active_pods().await.len(), 4);
    sys.assert_no_overlap();
}

#[tokio::test]
async fn a_pod_host_back_with_a_new_boot_id_loses_its_old_pods_at_once() {
    // Fence deadlines far beyond the test: only the new boot_id can
    // explain `pod_lost`.
    let mut sys = System::start(Spec {
        central_fence_ms: 60_000,
        host_fence_ms: 60_000,
        ..Spec::default()
    })
    .await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        tasks.push(sys.running_ledger_task(&[], None).await);
    }
    let (on_a, on_b): (Vec<_>, Vec<_>) = tasks
        .into_iter()
        .partition(|t| t.pod.as_ref().unwrap().pod_host == "host-a");
    assert_eq!((on_a.len(), on_b.len()), (2, 2), "least-loaded placement");
    let a_pids: Vec<u32> = on_a.iter().map(|t| t.pod.as_ref().unwrap().pid).collect();
    let old_boot = sys
        .pod_hosts()
        .await
        .into_iter()
        .find(|h| h.host_id == "host-a")
        .unwrap()
        .boot_id;

    sys.host("host-a").signal(Signal::SIGKILL);
    wait_all_dead("host-a's pods die with it", &a_pids, ipa_tests::DEADLINE).await;
    sys.restart_host("host-a").await;
    let back_at = now_ns();
    let h = ipa_tests::wait_for_async(
        "host-a READY with a new boot_id",
        ipa_tests::DEADLINE,
        || async {
            sys.pod_hosts().await.into_iter().find(|h| {
                h.host_id == "host-a"
                    && h.state() == pb::PodHostState::Ready
                    && h.boot_id != old_boot
            })
        },
    )
    .await;
    assert_eq!(h.running_pods, 0);
    let mut lost_at = Vec::new();
    for t in &on_a {
        let ev = sys.wait_event(&t.task_id, "pod_lost").await;
        let after = ms_between(back_at, ts_ns(&ev.occurred_at));
        eprintln!("new boot_id → pod_lost {after:.0} ms after the host came back");
        assert!(after < 10_000.0, "pod_lost {after:.0} ms after the restart");
        lost_at.push(ts_ns(&ev.occurred_at));
        let now = sys.task(&t.task_id).await;
        assert_eq!(now.status(), pb::TaskStatus::Inactive);
        assert!(now.pod.is_none());
    }
    // All at once: on the one hello with the new boot_id.
    let spread = ms_between(lost_at[0].min(lost_at[1]), lost_at[0].max(lost_at[1]));
    assert!(spread < 500.0, "pod_lost events {spread:.0} ms apart");
    // The other host's pods are untouched, and the lost tasks start again.
    for t in &on_b {
        let now = sys.task(&t.task_id).await;
        assert_eq!(now.pod.unwrap().pod_id, t.pod.as_ref().unwrap().pod_id);
    }
    for t in &on_a {
        let p = sys
            .start_pod(&t.task_id)
            .await
            .expect("StartPod after pod_lost");
        assert_eq!(p.generation, 2);
        sys.wait_run(&p.pod_id).await;
    }
    sys.assert_no_overlap();
}
