//! A frozen pod-host (SIGSTOP), the one case no lease covers: it turns
//! UNREACHABLE, its pods UNKNOWN and StartPod on them POD_STATE_UNKNOWN;
//! central declares the pods lost at its deadline even though the frozen
//! host could not kill them (docs/architecture.md says so); on SIGCONT the host sees
//! that it missed its fence deadline, kills its stale pods at once and
//! rejoins READY.

use std::time::{Duration, Instant};

use ipa_proto::ErrorReason;
use ipa_tests::{DEADLINE, pb};
use nix::sys::signal::Signal;

use super::support::{Spec, System, alive, ms_between, now_ns, wait_all_dead};

/// Sends SIGCONT to a pid when dropped: a test never leaves a stopped
/// process behind, whatever fails.
struct Cont(u32);

impl Drop for Cont {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0 as i32), Signal::SIGCONT);
    }
}

#[tokio::test]
async fn sigstop_then_sigcont_of_a_pod_host() {
    let spec = Spec {
        central_fence_ms: 2000,
        host_fence_ms: 2000,
        ..Spec::default()
    };
    let sys = System::start(spec.clone()).await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        tasks.push(sys.running_ledger_task(&[], None).await);
    }
    for t in &tasks {
        sys.wait_run(&t.pod.as_ref().unwrap().pod_id).await;
    }
    let (frozen, other): (Vec<_>, Vec<_>) = tasks
        .iter()
        .cloned()
        .partition(|t| t.pod.as_ref().unwrap().pod_host == "host-b");
    assert_eq!((frozen.len(), other.len()), (2, 2));
    let frozen_pids: Vec<u32> = frozen.iter().map(|t| t.pod.as_ref().unwrap().pid).collect();

    let host_b = sys.host("host-b");
    let stopped_at = Instant::now();
    host_b.signal(Signal::SIGSTOP);
    // Whatever happens below, never leave a stopped process behind.
    let cont = Cont(host_b.pid);

    sys.wait_host_cut_off("host-b", &frozen, "SIGSTOP", stopped_at)
        .await;
    for t in &frozen {
        let e = sys.start_pod(&t.task_id).await.unwrap_err();
        assert_eq!(
            ipa_proto::reason_of(&e),
            Some(ErrorReason::PodStateUnknown),
            "{e:?}"
        );
    }
    assert!(
        stopped_at.elapsed() < Duration::from_millis(spec.central_fence_ms),
        "checks while UNREACHABLE overran the fence window; the test proves nothing"
    );

    // Central's deadline passes: the pods are declared lost, although the
    // frozen host cannot have killed them (documented limit).
    for t in &frozen {
        sys.wait_event(&t.task_id, "pod_lost").await;
        let now = sys.task(&t.task_id).await;
        assert_eq!(now.status(), pb::TaskStatus::Inactive);
    }
    let still = frozen_pids.iter().filter(|&&p| alive(p)).count();
    eprintln!("{still} of host-b's pods still ran while it was frozen");

    // Wake it: it kills its stale pods at once, then rejoins.
    let woke_at = now_ns();
    drop(cont);
    wait_all_dead("stale pods killed on waking", &frozen_pids, DEADLINE).await;
    for t in &frozen {
        let run = sys
            .runs()
            .into_iter()
            .find(|r| r.pod_id == t.pod.as_ref().unwrap().pod_id)
            .unwrap();
        let after = ms_between(woke_at, run.end_ns);
        eprintln!("stale pod's last sign of life {after:.0} ms after SIGCONT");
        assert!(
            after <= 1000.0,
            "stale pod lived {after:.0} ms after waking"
        );
    }
    // Back on the same stream (same boot): it must rejoin READY.
    sys.wait_host_state("host-b", pb::PodHostState::Ready).await;
    ipa_tests::wait_for_async("host-b runs nothing", DEADLINE, || async {
        sys.pod_hosts()
            .await
            .into_iter()
            .find(|h| h.host_id == "host-b" && h.running_pods == 0)
    })
    .await;
    for t in &frozen {
        let now = sys.task(&t.task_id).await;
        assert_eq!(now.status(), pb::TaskStatus::Inactive, "{now:?}");
        let evs = sys.events(&t.task_id).await;
        assert!(!evs.iter().any(|e| e.r#type == "pod_recovered"), "{evs:?}");
        // Startable again.
        let p = sys
            .start_pod(&t.task_id)
            .await
            .expect("StartPod after rejoin");
        assert_eq!(p.generation, 2);
        sys.wait_run(&p.pod_id).await;
    }
    for t in &other {
        let now = sys.task(&t.task_id).await;
        assert_eq!(now.pod.unwrap().pod_id, t.pod.as_ref().unwrap().pod_id);
        assert!(alive(t.pod.as_ref().unwrap().pid));
    }
}

/// A pod-host with no pods sends only heartbeats. Frozen past the fence
/// deadline it is declared LOST; once it wakes, those heartbeats alone must
/// bring it back to READY (through a fresh hello).
#[tokio::test]
async fn an_idle_pod_host_declared_lost_rejoins_after_sigcont() {
    let spec = Spec {
        central_fence_ms: 1000,
        host_fence_ms: 1000,
        ..Spec::default()
    };
    let sys = System::start(spec).await;
    sys.wait_host_state("host-b", pb::PodHostState::Ready).await;
    let host_b = sys.host("host-b");
    host_b.signal(Signal::SIGSTOP);
    let cont = Cont(host_b.pid);
    sys.wait_host_state("host-b", pb::PodHostState::Lost).await;
    drop(cont); // SIGCONT
    sys.wait_host_state("host-b", pb::PodHostState::Ready).await;
}
