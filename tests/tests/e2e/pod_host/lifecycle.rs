//! The pod-host process dying or stopping with many pods: no pod process
//! may outlive it.

use std::time::{Duration, Instant};

use ipa_tests::{DEADLINE, pb, wait_for};
use nix::sys::signal::Signal;

use super::support::{Host, alive, children_with, exited_kind, group_members, new_id};

#[tokio::test]
async fn sigkill_of_the_host_leaves_no_pod_process_alive() {
    let mut host = Host::start(&[]).await;
    let mut pods = Vec::new();
    for _ in 0..20 {
        pods.push(host.start_pod(&new_id(), 1, "family").await);
    }
    for p in &pods {
        host.wait_version(&p.pod_id, 1).await;
    }
    // Every pod is a shell with two `sleep` grandchildren in its group.
    let pids: Vec<i32> = pods
        .iter()
        .flat_map(|p| group_members(p.pid as i32))
        .collect();
    assert_eq!(pids.len(), 60, "20 pods × 3 processes");
    let reaper = children_with(host.proc.pid as i32, "--internal-reaper");
    assert_eq!(reaper.len(), 1, "one orphan reaper");

    host.proc.signal(Signal::SIGKILL);
    host.proc.kill().await;
    let left = wait_for("every pod process gone", DEADLINE, || {
        let left: Vec<i32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        left.is_empty().then_some(left)
    })
    .await;
    assert!(left.is_empty());
    wait_for("the reaper exits too", DEADLINE, || {
        (!alive(reaper[0])).then_some(())
    })
    .await;
}

#[tokio::test]
async fn sigterm_stops_50_pods_within_the_grace_and_reports_them() {
    const GRACE_MS: u64 = 500;
    let mut host = Host::start(&["--stop-grace-ms", &GRACE_MS.to_string()]).await;
    let mut central = host.central("", 0).await;
    let mut pods = Vec::new();
    for i in 0..50 {
        let template = if i % 2 == 0 { "ignore_term" } else { "family" };
        pods.push(host.start_pod(&new_id(), 1, template).await);
    }
    for p in &pods {
        host.wait_version(&p.pod_id, 1).await;
    }
    let pids: Vec<i32> = pods
        .iter()
        .flat_map(|p| group_members(p.pid as i32))
        .collect();
    assert_eq!(pids.len(), 125, "25 × 2 + 25 × 3 processes");
    let reaper = children_with(host.proc.pid as i32, "--internal-reaper");

    let t0 = Instant::now();
    host.proc.signal(Signal::SIGTERM);
    let status = host
        .proc
        .wait_exit(DEADLINE)
        .await
        .expect("pod-host exits after SIGTERM");
    let took = t0.elapsed();
    eprintln!("SIGTERM with 50 pods: exited in {took:?} (grace {GRACE_MS} ms)");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        took < Duration::from_millis(GRACE_MS + 1000),
        "took {took:?}, limit grace + 1 s"
    );
    // Every process was reaped or killed; give the kernel a moment to
    // finish tearing down the last SIGKILLed groups.
    wait_for("every pod process gone", Duration::from_secs(2), || {
        pids.iter().all(|&p| !alive(p)).then_some(())
    })
    .await;
    assert!(reaper.iter().all(|&p| !alive(p)), "reaper exited");

    // The central heard every exit, with the shutdown as cause.
    let mut exits = std::collections::HashMap::new();
    while let Some(m) = central.next().await {
        if let pb::host_message::Msg::PodEvent(e) = m
            && let Some(x) = exited_kind(&e)
        {
            exits.insert(e.pod_id.clone(), (x.cause, x.signal));
        }
    }
    assert_eq!(
        exits.len(),
        50,
        "all 50 exits reported before the stream ended"
    );
    for (i, p) in pods.iter().enumerate() {
        let (cause, sig) = exits[&p.pod_id];
        assert_eq!(cause, pb::ExitCause::HostShutdown as i32);
        let want = if i % 2 == 0 {
            libc::SIGKILL
        } else {
            libc::SIGTERM
        };
        assert_eq!(sig, Some(want), "pod {i}");
    }
}
