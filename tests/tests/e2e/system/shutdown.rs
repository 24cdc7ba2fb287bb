//! SIGTERM of the whole system leaves no process behind: every server
//! exits 0, every pod got its SIGTERM (ledger `stop` line) and no pod,
//! reaper or child pod-host survives. Also the single-machine mode
//! (`--local-pod-host`, what the README runs): central starts its own
//! pod-host running the demo template and takes it down with it.

use std::ffi::OsString;
use std::time::Duration;

use ipa_tests::{DEADLINE, ServerProcess, pb, wait_for_async};
use nix::sys::signal::Signal;

use super::support::{Client, Spec, System, alive, children_with, wait_all_dead};

/// Every live descendant of `pid` (walking /proc's ppid links).
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for c in children_with(p, "") {
            out.push(c);
            frontier.push(c);
        }
    }
    out
}

#[tokio::test]
async fn sigterm_of_the_whole_system_leaves_no_process_behind() {
    let mut sys = System::start(Spec::relaxed()).await;
    for _ in 0..4 {
        sys.running_ledger_task(&[("ledger.alive_ms", "20")], None)
            .await;
    }
    for _ in 0..2 {
        let t = sys
            .create(pb::CreateTaskRequest {
                title: "long demo".into(),
                auto_start: true,
                metadata: [("demo.step_ms".to_string(), "600000".to_string())].into(),
                ..Default::default()
            })
            .await;
        assert_eq!(t.status(), pb::TaskStatus::Active, "{:?}", t.pod_message);
    }
    let pods: Vec<u32> = sys
        .active_pods()
        .await
        .iter()
        .map(|a| a.pod.as_ref().unwrap().pid)
        .collect();
    assert_eq!(pods.len(), 6);
    let mut everything: Vec<u32> = pods.clone();
    for h in sys.hosts.values() {
        everything.extend(descendants(h.pid));
    }
    everything.extend(descendants(sys.central.pid));
    everything.sort();
    everything.dedup();
    assert!(pods.iter().all(|&p| alive(p)));

    sys.central.signal(Signal::SIGTERM);
    for h in sys.hosts.values() {
        h.signal(Signal::SIGTERM);
    }
    let st = sys
        .central
        .wait_exit(DEADLINE)
        .await
        .expect("central exits on SIGTERM");
    assert!(st.success(), "central: {st:?}");
    for (id, h) in sys.hosts.iter_mut() {
        let st = h
            .wait_exit(DEADLINE)
            .await
            .unwrap_or_else(|| panic!("{id} exits on SIGTERM"));
        assert!(st.success(), "{id}: {st:?}");
    }
    wait_all_dead(
        "every process of the system",
        &everything,
        Duration::from_secs(5),
    )
    .await;
    let runs = sys.runs();
    assert_eq!(runs.len(), 4);
    assert!(
        runs.iter().all(|r| r.stopped_cleanly),
        "pods got SIGTERM: {runs:?}"
    );
}

async fn start_local(dir: &std::path::Path) -> ServerProcess {
    let db = format!("sqlite://{}", dir.join("central.db").display());
    let args: Vec<OsString> = [
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &db,
        "--local-pod-host",
        "--heartbeat-interval-ms",
        "100",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    ServerProcess::start("central-manager", &args, &[], Some(dir)).await
}

/// Starts a single-machine central, runs a demo pod to completion and one
/// that keeps running; returns the server, the client and every process it
/// owns (child pod-host, its helpers, the running pod).
async fn local_system(dir: &std::path::Path) -> (ServerProcess, Client, Vec<u32>) {
    let central = start_local(dir).await;
    let mut c = Client::new(central.channel());
    let host = wait_for_async("the local pod-host READY", DEADLINE, || {
        let mut c = c.clone();
        async move {
            let hs = c
                .list_pod_hosts(pb::ListPodHostsRequest {})
                .await
                .ok()?
                .into_inner()
                .hosts;
            hs.into_iter()
                .find(|h| h.state() == pb::PodHostState::Ready)
        }
    })
    .await;
    assert!(host.templates.iter().any(|t| t == "default"), "{host:?}");
    assert_eq!(
        children_with(central.pid, "pod-host").len(),
        1,
        "one child pod-host"
    );

    let create = |step: &str| pb::CreateTaskRequest {
        title: "demo".into(),
        actor_id: "tester".into(),
        auto_start: true,
        metadata: [("demo.step_ms".to_string(), step.to_string())].into(),
        ..Default::default()
    };
    let quick = c
        .create_task(create("50"))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(
        quick.status(),
        pb::TaskStatus::Active,
        "{:?}",
        quick.pod_message
    );
    let long = c
        .create_task(create("600000"))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(
        long.status(),
        pb::TaskStatus::Active,
        "{:?}",
        long.pod_message
    );
    let pid = long.pod.unwrap().pid;
    assert!(alive(pid));
    wait_for_async("the quick demo pod completes its task", DEADLINE, || {
        let mut c = c.clone();
        let id = quick.task_id.clone();
        async move {
            let t = c
                .get_task(pb::GetTaskRequest {
                    task_id: id,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner();
            (t.status() == pb::TaskStatus::Completed).then_some(())
        }
    })
    .await;
    let mut owned = descendants(central.pid);
    owned.push(pid);
    (central, c, owned)
}

#[tokio::test]
async fn local_pod_host_runs_demo_pods_and_sigterm_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (mut central, _c, owned) = local_system(dir.path()).await;
    central.signal(Signal::SIGTERM);
    let st = central
        .wait_exit(DEADLINE)
        .await
        .expect("central exits on SIGTERM");
    assert!(st.success(), "{st:?}");
    wait_all_dead(
        "the local pod-host and its pods",
        &owned,
        Duration::from_secs(5),
    )
    .await;
}

#[tokio::test]
async fn local_pod_host_dies_with_a_sigkilled_central() {
    let dir = tempfile::tempdir().unwrap();
    let (mut central, _c, owned) = local_system(dir.path()).await;
    central.signal(Signal::SIGKILL);
    central.kill().await;
    wait_all_dead(
        "the local pod-host and its pods",
        &owned,
        Duration::from_secs(5),
    )
    .await;
}
