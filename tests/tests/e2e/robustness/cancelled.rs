//! Every central pod RPC runs to completion whatever its caller does
//! (issue 12 item 2): StartPod, StopPod and RestartPod fired with client
//! deadlines of 2–10 ms, round after round, leave nothing STARTING, no slot
//! reserved and no pod unsupervised: central's ListActivePods, the hosts'
//! ListPods and the processes on the machine agree.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::future::join_all;
use ipa_tests::{DEADLINE, pb, wait_for_async};
use tonic::transport::Channel;

use crate::system::support::{Spec, System, children_with};

const TASKS: usize = 8;
const ROUNDS: usize = 6;

fn with_deadline<T>(msg: T, ms: u64) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(Duration::from_millis(ms));
    r
}

/// Pod ids the hosts report running or starting.
async fn host_pods(sys: &System) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for h in sys.hosts.values() {
        let mut c = pb::pod_host_client::PodHostClient::new(h.channel());
        let pods = c
            .list_pods(pb::HostListPodsRequest {})
            .await
            .expect("ListPods")
            .into_inner()
            .pods;
        out.extend(
            pods.into_iter()
                .filter(|p| p.state() != pb::PodState::Exited)
                .map(|p| p.pod_id),
        );
    }
    out
}

/// Pod ids central lists as active.
async fn central_pods(sys: &System) -> BTreeSet<String> {
    sys.active_pods()
        .await
        .into_iter()
        .filter_map(|a| a.pod.map(|p| p.pod_id))
        .collect()
}

/// ledger-pod processes under every pod-host.
fn processes(sys: &System) -> usize {
    sys.hosts
        .values()
        .map(|h| children_with(h.pid, "ledger-pod").len())
        .sum()
}

/// Waits until nothing is STARTING and central, hosts and processes agree.
async fn settled(sys: &System, tasks: &[pb::Task]) -> usize {
    for t in tasks {
        // Nor about to restart: a pod a cut-short call had fenced may have
        // an automatic restart due, which would start it after a later stop.
        sys.wait_task(&t.task_id, "not STARTING, no restart due", |t| {
            t.pod_status() != pb::PodStatus::Starting && t.next_restart_at.is_none()
        })
        .await;
    }
    wait_for_async("central, hosts and processes agree", DEADLINE, || async {
        let central = central_pods(sys).await;
        let hosts = host_pods(sys).await;
        let procs = processes(sys);
        (central == hosts && procs == central.len()).then_some(central.len())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpcs_whose_callers_give_up_still_finish_and_leave_nothing_behind() {
    let sys = System::start(Spec {
        capacity: Some((TASKS / 2) as u32),
        ..Spec::relaxed()
    })
    .await;
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        tasks.push(sys.ledger_task(&[("ledger.alive_ms", "50")]).await);
    }
    // Each caller on its own connection, so the calls really overlap.
    let clients: Vec<_> = (0..TASKS)
        .map(|_| {
            pb::central_manager_client::CentralManagerClient::<Channel>::new(sys.central.channel())
        })
        .collect();
    let mut cancelled = 0;
    for round in 0..ROUNDS {
        let calls = tasks.iter().zip(&clients).enumerate().map(|(i, (t, c))| {
            let mut c = c.clone();
            let id = t.task_id.clone();
            let ms = 2 + ((i + round) % 9) as u64;
            async move {
                let r = match (i + round) % 3 {
                    0 => c
                        .start_pod(with_deadline(
                            pb::StartPodRequest {
                                task_id: id,
                                actor_id: "impatient".into(),
                                correlation_id: String::new(),
                                queue: false,
                            },
                            ms,
                        ))
                        .await
                        .map(drop),
                    1 => c
                        .restart_pod(with_deadline(
                            pb::RestartPodRequest {
                                task_id: id,
                                actor_id: "impatient".into(),
                                correlation_id: String::new(),
                            },
                            ms,
                        ))
                        .await
                        .map(drop),
                    _ => c
                        .stop_pod(with_deadline(
                            pb::StopPodRequest {
                                task_id: id,
                                actor_id: "impatient".into(),
                                reason: "impatient".into(),
                                correlation_id: String::new(),
                            },
                            ms,
                        ))
                        .await
                        .map(drop),
                };
                r.err().map(|s| s.code())
            }
        });
        cancelled += join_all(calls)
            .await
            .into_iter()
            .filter(|c| {
                matches!(
                    c,
                    Some(tonic::Code::DeadlineExceeded | tonic::Code::Cancelled)
                )
            })
            .count();
        settled(&sys, &tasks).await;
    }
    eprintln!("{cancelled} calls gave up mid-way");
    assert!(
        cancelled > 0,
        "no call was cut short: the test proves nothing"
    );

    // No slot is left reserved: with everything stopped, every task can be
    // started again at once, filling both hosts exactly.
    for t in &tasks {
        let _ = sys.stop_pod(&t.task_id).await;
    }
    assert_eq!(settled(&sys, &tasks).await, 0);
    for t in &tasks {
        sys.start_pod(&t.task_id)
            .await
            .unwrap_or_else(|s| panic!("start after the storm: {s:?}"));
    }
    assert_eq!(settled(&sys, &tasks).await, TASKS);
    sys.assert_no_overlap();
}
