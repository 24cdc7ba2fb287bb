//! The simulated pod-host of the scale benchmark (`ipa_tests::simhost`)
//! in front of the real central-manager: central must supervise it exactly
//! as a real pod-host (placement, live state from the stream, crash →
//! automatic restart, StopPod, logs, a dead host's pods lost at the fence
//! deadline and restarted elsewhere, a central restart re-adopting every
//! pod without killing one). If the simulation drifted from the protocol,
//! the benchmark's figures would mean nothing; these tests catch it.

use std::time::Duration;

use futures::StreamExt;
use ipa_tests::cluster::start_central;
use ipa_tests::simhost::{SimConfig, SimHost};
use ipa_tests::{DEADLINE, ServerProcess, pb, wait_for_async};
use nix::sys::signal::Signal;

use super::support::{Client, auto_restart};

/// Central's flags: short liveness timeouts (heartbeat < unreachable <
/// fence) so the host-loss test stays fast.
const CENTRAL_FLAGS: &[&str] = &[
    "--heartbeat-interval-ms",
    "100",
    "--host-unreachable-ms",
    "1000",
    "--fence-timeout-ms",
    "2000",
];

async fn sim(host_id: &str) -> SimHost {
    SimHost::start(SimConfig {
        host_id: host_id.into(),
        capacity: 8,
        templates: vec!["default".into(), "sleeper".into()],
        fence_timeout: Duration::from_millis(2000),
    })
    .await
    .expect("simulated pod-host")
}

struct Setup {
    dir: tempfile::TempDir,
    hosts: Vec<SimHost>,
    central: ServerProcess,
    client: Client,
}

async fn setup(n: usize) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut hosts = Vec::new();
    for i in 0..n {
        hosts.push(sim(&format!("sim-{i}")).await);
    }
    let urls: Vec<String> = hosts.iter().map(SimHost::url).collect();
    let central = start_central(dir.path(), &urls, CENTRAL_FLAGS).await;
    let client = Client::new(central.channel());
    let s = Setup {
        dir,
        hosts,
        central,
        client,
    };
    wait_ready(&s.client, n).await;
    s
}

async fn wait_ready(client: &Client, n: usize) {
    wait_for_async("every simulated host READY", DEADLINE, || {
        let mut c = client.clone();
        async move {
            let hosts = c.list_pod_hosts(pb::ListPodHostsRequest {}).await.ok()?;
            let ready = hosts
                .into_inner()
                .hosts
                .iter()
                .filter(|h| h.state() == pb::PodHostState::Ready && h.templates.len() == 2)
                .count();
            (ready == n).then_some(())
        }
    })
    .await;
}

async fn create_running(client: &Client) -> pb::Task {
    let mut c = client.clone();
    let t = c
        .create_task(pb::CreateTaskRequest {
            title: "simulated".into(),
            actor_id: "test".into(),
            template: "sleeper".into(),
            auto_start: true,
            restart_policy: Some(auto_restart(100, 0, 0)),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
        .task
        .expect("task");
    assert_eq!(t.pod_status(), pb::PodStatus::Running, "{t:?}");
    t
}

async fn task(client: &Client, id: &str) -> pb::Task {
    client
        .clone()
        .get_task(pb::GetTaskRequest {
            task_id: id.into(),
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner()
}

/// Waits for the task's live state (from the host's stream) to show the
/// simulated pod's status line.
async fn wait_live(client: &Client, id: &str) -> pb::Task {
    wait_for_async("the pod's live state", DEADLINE, || async {
        let t = task(client, id).await;
        (t.version == 1 && t.phase() == pb::Phase::Planning).then_some(t)
    })
    .await
}

/// Waits for an event of `kind` on the task's trail, the `n`th one (1-based).
async fn wait_event(client: &Client, id: &str, kind: &str, n: usize) -> pb::Event {
    wait_for_async(&format!("{n}× {kind}"), DEADLINE, || async {
        let events = client
            .clone()
            .get_task_events(pb::GetTaskEventsRequest {
                task_id: id.into(),
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner()
            .events;
        events.into_iter().filter(|e| e.r#type == kind).nth(n - 1)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_host_runs_crashes_restarts_and_stops_pods_like_a_real_one() {
    let s = setup(1).await;
    let t = create_running(&s.client).await;
    let pod = t.pod.clone().expect("pod");
    assert_eq!(pod.pod_host, "sim-0");
    assert!(
        pod.pid >= 10_000_000,
        "simulated pids never name a real process"
    );
    wait_live(&s.client, &t.task_id).await;

    // GetPodLogs is proxied to the host.
    let mut logs = s
        .client
        .clone()
        .get_pod_logs(pb::GetPodLogsRequest {
            task_id: t.task_id.clone(),
            ..Default::default()
        })
        .await
        .expect("logs")
        .into_inner();
    let chunk = logs.next().await.expect("a chunk").expect("chunk");
    assert!(String::from_utf8_lossy(&chunk.data).contains(&pod.pod_id));

    // A crash is reported on the stream and restarted by the policy.
    assert_eq!(s.hosts[0].crash(1), vec![t.task_id.clone()]);
    let crashed = wait_event(&s.client, &t.task_id, "pod_crashed", 1).await;
    assert!(crashed.data_json.contains("\"exit_code\":1"), "{crashed:?}");
    wait_event(&s.client, &t.task_id, "pod_started", 2).await;
    let t = wait_live(&s.client, &t.task_id).await;
    assert_eq!(
        t.pod.as_ref().map(|p| p.generation),
        Some(pod.generation + 1)
    );

    // StopPod reaches the host; the exit is attributed to the caller.
    s.client
        .clone()
        .stop_pod(pb::StopPodRequest {
            task_id: t.task_id.clone(),
            actor_id: "test".into(),
            reason: "done".into(),
            ..Default::default()
        })
        .await
        .expect("stop");
    let stopped = wait_event(&s.client, &t.task_id, "pod_stopped", 1).await;
    assert_eq!(stopped.actor_id, "test");
    let st = s.hosts[0].stats();
    assert_eq!((st.live, st.started, st.crashed), (0, 2, 1));
    assert_eq!(st.killed_by_central, 1);
    drop(s.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_simulated_host_loses_its_pods_which_restart_elsewhere() {
    let mut s = setup(2).await;
    let t = create_running(&s.client).await;
    let first = t.pod.clone().expect("pod");
    let i = s
        .hosts
        .iter()
        .position(|h| h.host_id == first.pod_host)
        .expect("its host");
    s.hosts.remove(i).stop().await;
    let lost = wait_event(&s.client, &t.task_id, "pod_lost", 1).await;
    assert!(lost.data_json.contains("fence deadline"), "{lost:?}");
    wait_event(&s.client, &t.task_id, "pod_started", 2).await;
    let t = wait_live(&s.client, &t.task_id).await;
    let pod = t.pod.expect("pod");
    assert_eq!(pod.pod_host, s.hosts[0].host_id);
    assert_eq!(s.hosts[0].stats().live, 1);
    drop(s.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn central_restart_readopts_simulated_pods_without_killing_one() {
    let mut s = setup(2).await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(create_running(&s.client).await.task_id);
    }
    for id in &ids {
        wait_live(&s.client, id).await;
    }
    s.central.signal(Signal::SIGKILL);
    s.central.kill().await;
    let urls: Vec<String> = s.hosts.iter().map(SimHost::url).collect();
    s.central = start_central(s.dir.path(), &urls, CENTRAL_FLAGS).await;
    s.client = Client::new(s.central.channel());
    wait_ready(&s.client, 2).await;
    // Re-adopted: the live state is back from the hosts' snapshots, with
    // the same pods.
    for id in &ids {
        let t = wait_live(&s.client, id).await;
        assert_eq!(t.pod.map(|p| p.generation), Some(1));
    }
    let live: usize = s.hosts.iter().map(|h| h.stats().live).sum();
    assert_eq!(live, 6);
    for h in &s.hosts {
        let st = h.stats();
        assert_eq!((st.killed_by_central, st.self_fenced), (0, 0), "{st:?}");
    }
}
