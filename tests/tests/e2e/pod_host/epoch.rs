//! Leader-epoch fencing on the real pod-host (pod-host/src/epoch.rs): two
//! test clients play two central-manager replicas, the leaders of epochs 1
//! and 2. The epoch-2 Connect ends the epoch-1 session; from then on the
//! deposed leader's Connect, StartPod and StopPod are refused with
//! STALE_EPOCH and change nothing, while the pods (the one the old leader
//! started included) run on with the same pids under the new leader.

use ipa_proto::ErrorReason;
use ipa_tests::pb;
use pb::central_message::Msg as CMsg;
use pb::host_message::Msg as HMsg;
use tonic::Code;

use super::support::{Central, Host, alive, new_id, reason};

/// Long enough that a loaded machine's scheduling cannot fence the pods
/// while the new leader pings every heartbeat; the test outlives it.
const FENCE_MS: u64 = 2000;
const HEARTBEAT_MS: u32 = 100;

fn start_req(epoch: u64) -> pb::HostStartPodRequest {
    pb::HostStartPodRequest {
        task_id: new_id(),
        pod_id: new_id(),
        generation: 1,
        template: "sleep".to_owned(),
        title: format!("started by the epoch-{epoch} leader"),
        epoch,
        ..Default::default()
    }
}

fn assert_stale(e: &tonic::Status) {
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(reason(e), Some(ErrorReason::StaleEpoch), "{e:?}");
    assert!(
        e.message()
            .starts_with("STALE_EPOCH: epoch 1 is older than epoch 2"),
        "{}",
        e.message()
    );
}

/// The running pod `pod_id` as ListPods shows it.
async fn running(host: &Host, pod_id: &str) -> pb::PodInfo {
    let p = host.pod(pod_id).await.expect("pod listed");
    assert_eq!(p.state, pb::PodState::Running as i32, "{p:?}");
    p
}

#[tokio::test]
async fn a_deposed_leader_is_fenced_off_and_the_pods_run_on() {
    let host = Host::start(&["--fence-timeout-ms", &FENCE_MS.to_string()]).await;
    let mut old = Central::try_connect(&host.client, "", 0, HEARTBEAT_MS, 1)
        .await
        .expect("the epoch-1 leader connects");
    let by_old = host
        .start_request(start_req(1))
        .await
        .expect("the epoch-1 leader starts a pod");

    // Failover: the epoch-2 leader connects and starts its own pod.
    let mut new = Central::try_connect(&host.client, &old.hello.boot_id, 0, HEARTBEAT_MS, 2)
        .await
        .expect("the epoch-2 leader connects");
    assert!(
        new.hello.pods.iter().any(|p| p.pod_id == by_old.pod_id),
        "the new leader sees the old leader's pod"
    );
    let by_new = host
        .start_request(start_req(2))
        .await
        .expect("the epoch-2 leader starts a pod");

    // The epoch-1 session was ended (what it sent before that: heartbeats
    // and its own pod's start).
    while let Some(m) = old.next().await {
        assert!(matches!(m, HMsg::Heartbeat(_) | HMsg::PodEvent(_)), "{m:?}");
    }

    // The deposed leader: its pings go nowhere, and everything else is
    // refused without effect.
    old.send(CMsg::Ping(pb::Ping::default())).await;
    let e = host.start_request(start_req(1)).await.expect_err("refused");
    assert_stale(&e);
    let e = host
        .client
        .clone()
        .stop_pod(pb::HostStopPodRequest {
            task_id: by_new.task_id.clone(),
            pod_id: by_new.pod_id.clone(),
            generation: 1,
            reason: "a deposed leader's stop".to_owned(),
            epoch: 1,
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_stale(&e);
    let refused = Central::try_connect(&host.client, &old.hello.boot_id, 0, HEARTBEAT_MS, 1)
        .await
        .err()
        .expect("the epoch-1 leader cannot connect again");
    assert_stale(&refused);
    assert_eq!(host.list().await.len(), 2, "nothing else was started");

    // The new leader's session carries on; over more than a fence timeout
    // of its pings both pods keep running, with the same pids.
    let beats = 3 * FENCE_MS / u64::from(HEARTBEAT_MS);
    let mut seen = 0;
    while seen < beats {
        match new.next().await {
            Some(HMsg::Heartbeat(_)) => {
                seen += 1;
                new.send(CMsg::Ping(pb::Ping::default())).await;
            }
            Some(HMsg::PodEvent(e)) => {
                assert!(
                    super::support::exited_kind(&e).is_none(),
                    "a pod ended: {e:?}"
                );
                new.ack(e.seq).await;
            }
            Some(m) => panic!("unexpected {m:?}"),
            None => panic!("the epoch-2 session ended"),
        }
    }
    for p in [&by_old, &by_new] {
        let now = running(&host, &p.pod_id).await;
        assert_eq!(now.pid, p.pid, "{} was restarted", p.pod_id);
        assert!(alive(p.pid as i32));
    }

    // The new leader may stop them.
    for p in [&by_old, &by_new] {
        let stopped = host
            .client
            .clone()
            .stop_pod(pb::HostStopPodRequest {
                task_id: p.task_id.clone(),
                pod_id: p.pod_id.clone(),
                generation: 1,
                reason: "test done".to_owned(),
                epoch: 2,
                ..Default::default()
            })
            .await
            .expect("the epoch-2 leader stops a pod")
            .into_inner()
            .pod
            .expect("pod");
        assert_eq!(stopped.state, pb::PodState::Exited as i32);
        assert!(!alive(p.pid as i32));
    }
}
