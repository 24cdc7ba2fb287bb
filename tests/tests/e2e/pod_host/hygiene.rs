//! What the pod-host cleans up after: a dead orphan reaper (restarted, or
//! the pods fenced when it cannot be), a previous run's process groups and
//! pod dirs (swept at start), and the log descriptors of exited pods.

use ipa_tests::{DEADLINE, ServerProcess, pb, wait_for};
use nix::sys::signal::Signal;

use super::support::{Central, Host, alive, children_with, group_members, new_id, signal};

fn reapers_of(host: &ServerProcess) -> Vec<i32> {
    children_with(host.pid as i32, "--internal-reaper")
}

/// A killed reaper is replaced at once and the new one knows every pod
/// group: SIGKILL of the host afterwards still leaves no pod process.
#[tokio::test]
async fn a_killed_reaper_is_restarted_with_every_group() {
    let mut host = Host::start(&[]).await;
    let p = host.start_pod(&new_id(), 1, "family").await;
    host.wait_version(&p.pod_id, 1).await;
    let members = group_members(p.pid as i32);
    assert_eq!(members.len(), 3, "a shell and two sleeps");
    let first = reapers_of(&host.proc);
    assert_eq!(first.len(), 1);
    signal(first[0], Signal::SIGKILL);
    let second = wait_for("a new reaper", DEADLINE, || {
        reapers_of(&host.proc).into_iter().find(|&r| r != first[0])
    })
    .await;
    assert!(members.iter().all(|&m| alive(m)), "the pod was not touched");
    assert_eq!(
        host.pod(&p.pod_id).await.unwrap().state,
        pb::PodState::Running as i32
    );

    host.proc.signal(Signal::SIGKILL);
    host.proc.kill().await;
    wait_for("every pod process gone", DEADLINE, || {
        members.iter().all(|&m| !alive(m)).then_some(())
    })
    .await;
    wait_for("the reaper exits", DEADLINE, || {
        (!alive(second)).then_some(())
    })
    .await;
}

/// When no reaper can be started again (its program is gone), the pods
/// could outlive a crash of the host: they are killed (self-fenced) and
/// new ones refused.
#[tokio::test]
async fn pods_are_fenced_when_the_reaper_cannot_be_restarted() {
    // Run the host from a second name of its binary, then remove that
    // name: the host keeps running, but cannot start another reaper.
    let real = ipa_tests::bin_path("pod-host");
    let name = format!("pod-host-hygiene-{}", uuid::Uuid::new_v4().simple());
    let link = real.with_file_name(&name);
    std::fs::hard_link(&real, &link)
        .or_else(|_| std::fs::copy(&real, &link).map(|_| ()))
        .expect("second name of the binary");
    let dir = tempfile::tempdir().unwrap();
    let proc = ServerProcess::start(
        &name,
        &[
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            dir.path().join("data").into(),
        ],
        &[],
        Some(dir.path()),
    )
    .await;
    // The host starts its reaper right after announcing its address.
    wait_for("the first reaper", DEADLINE, || {
        (reapers_of(&proc).len() == 1).then_some(())
    })
    .await;
    std::fs::remove_file(&link).expect("remove the second name");
    let mut client = pb::pod_host_client::PodHostClient::new(proc.channel());
    let mut central = Central::connect(&client, "", 0, 100).await;
    let start = || pb::HostStartPodRequest {
        task_id: new_id(),
        pod_id: new_id(),
        generation: 1,
        template: "default".into(),
        metadata: [("demo.step_ms".to_owned(), "100000".to_owned())].into(),
        ..Default::default()
    };
    let pod = client
        .start_pod(start())
        .await
        .expect("StartPod")
        .into_inner()
        .pod
        .expect("pod");
    let reaper = reapers_of(&proc);
    assert_eq!(reaper.len(), 1);
    signal(reaper[0], Signal::SIGKILL);

    let (_, exit) = central.exit_of(&pod.pod_id).await;
    assert_eq!(exit.cause, pb::ExitCause::SelfFenced as i32, "{exit:?}");
    assert!(!alive(pod.pid as i32));
    let err = client.start_pod(start()).await.unwrap_err();
    assert_eq!(
        ipa_proto::reason_of(&err),
        Some(ipa_proto::ErrorReason::NoCapacity),
        "{err:?}"
    );
    assert!(err.message().contains("orphan reaper"), "{err:?}");
    // Heartbeats tell central to place nothing here meanwhile.
    let draining = tokio::time::timeout(DEADLINE, async {
        loop {
            match central.next().await {
                Some(pb::host_message::Msg::Heartbeat(h)) if h.draining => return,
                Some(_) => {}
                None => panic!("Connect stream ended"),
            }
        }
    })
    .await;
    assert!(draining.is_ok(), "no draining heartbeat");
    assert!(
        proc.log().contains("the orphan reaper cannot be restarted"),
        "{}",
        proc.log()
    );
}

/// A previous run that died together with its reaper leaves its pods' children running; the next
/// run on the same data dir kills them before it serves, and removes the
/// old pod dirs.
#[tokio::test]
async fn a_new_run_sweeps_what_a_dead_run_left() {
    let mut host = Host::start(&[]).await;
    let p = host.start_pod(&new_id(), 1, "family").await;
    host.wait_version(&p.pod_id, 1).await;
    let leader = p.pid as i32;
    let members = group_members(leader);
    assert_eq!(members.len(), 3);
    let pod_dir = host.data_dir.join("pods").join(&p.pod_id);
    assert!(pod_dir.is_dir());
    let reaper = reapers_of(&host.proc);
    assert_eq!(reaper.len(), 1);
    // Freeze the host (so it cannot replace its reaper), kill the reaper,
    // then the host. (Freezing the reaper instead does not work: when its
    // parent dies the kernel sends SIGCONT to a stopped, orphaned group.)
    host.proc.signal(Signal::SIGSTOP);
    wait_for("the host stopped", DEADLINE, || {
        (state_of(host.proc.pid as i32) == Some('T')).then_some(())
    })
    .await;
    signal(reaper[0], Signal::SIGKILL);
    wait_for("the reaper gone", DEADLINE, || {
        (state_of(reaper[0]).is_none_or(|s| s == 'Z')).then_some(())
    })
    .await;
    host.proc.signal(Signal::SIGKILL);
    host.proc.kill().await;
    // PDEATHSIG took the pod's main process; its children live on.
    wait_for("the pod's main process gone", DEADLINE, || {
        (!alive(leader)).then_some(())
    })
    .await;
    let orphans: Vec<i32> = members.iter().copied().filter(|&m| m != leader).collect();
    assert_eq!(orphans.len(), 2);
    assert!(orphans.iter().all(|&o| alive(o)), "left behind");

    let host = host.start_again(&[]).await;
    wait_for("the orphans killed", DEADLINE, || {
        orphans.iter().all(|&o| !alive(o)).then_some(())
    })
    .await;
    wait_for("the sweep logged", DEADLINE, || {
        host.proc
            .log()
            .contains("killed process groups a previous run")
            .then_some(())
    })
    .await;
    wait_for("the old pod dir removed", DEADLINE, || {
        (!pod_dir.exists()).then_some(())
    })
    .await;
    // The new run works as usual.
    let q = host.start_pod(&new_id(), 1, "family").await;
    host.wait_version(&q.pod_id, 1).await;
}

/// The state letter of a process (`R`, `S`, `T`, `Z`, …).
fn state_of(pid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.get(s.rfind(')')? + 2..)?.chars().next()
}

/// Descriptors of `pid` that point at a pod's `output.log`.
fn log_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|t| t.to_string_lossy().contains("output.log"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// An exited pod keeps no log descriptor open, and its log stays readable.
#[tokio::test]
async fn exited_pods_hold_no_log_descriptor() {
    let host = Host::start(&["--stop-grace-ms", "500"]).await;
    let mut pods = Vec::new();
    for _ in 0..5 {
        let task = new_id();
        let p = host.start_pod(&task, 1, "sleep").await;
        pods.push((task, p));
    }
    for (task, p) in &pods {
        ipa_tests::wait_for_async("output captured", DEADLINE, || async {
            let logs = host.logs(task, &p.pod_id, 0).await;
            logs.iter()
                .any(|(_, t)| t.contains("started"))
                .then_some(())
        })
        .await;
    }
    assert_eq!(log_fds(host.proc.pid), 5, "one open log per running pod");
    for (task, p) in &pods {
        let stopped = host.stop_pod(task, &p.pod_id, 1).await.expect("StopPod");
        assert!(stopped.exit.is_some(), "{stopped:?}");
    }
    wait_for("no log descriptor left", DEADLINE, || {
        (log_fds(host.proc.pid) == 0).then_some(())
    })
    .await;
    for (task, p) in &pods {
        let logs = host.logs(task, &p.pod_id, 0).await;
        assert!(logs.iter().any(|(_, t)| t.contains("started")), "{logs:?}");
    }
}
