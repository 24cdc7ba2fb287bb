//! The host's lease runs from what central knew (pod-host/src/fence.rs):
//! central echoes the newest host clock it has received in every ping and
//! StartPod, so a StartPod or a ping held up in the network cannot start a
//! pod, or keep one alive, past the point where central may have given it
//! up. Found by scripts/chaos: a StartPod held in a partition landed on the
//! host after central had declared its pod lost and started it elsewhere.

use std::time::{Duration, Instant};

use ipa_proto::ErrorReason;
use ipa_tests::{DEADLINE, pb};
use pb::host_message::Msg as HMsg;

use super::support::{Central, Host, alive, new_id, reason};

const FENCE: Duration = Duration::from_millis(1000);

/// The next heartbeat's host clock, and when it arrived here.
async fn heartbeat_clock(central: &mut Central) -> (u64, Instant) {
    loop {
        match central.next().await {
            Some(HMsg::Heartbeat(hb)) => return (hb.host_clock_ms, Instant::now()),
            Some(_) => {}
            None => panic!("Connect stream ended while waiting for a heartbeat"),
        }
    }
}

fn start_req(template: &str, echo: u64, boot: &str) -> pb::HostStartPodRequest {
    pb::HostStartPodRequest {
        task_id: new_id(),
        pod_id: new_id(),
        generation: 1,
        template: template.to_owned(),
        title: "t".into(),
        echo_host_clock_ms: echo,
        host_boot_id: boot.to_owned(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_start_issued_under_an_expired_lease_or_another_boot_is_refused() {
    let host = Host::start(&["--fence-timeout-ms", "1000"]).await;
    let mut central = host.central("", 0).await;
    let boot = central.hello.boot_id.clone();
    assert!(
        central.hello.host_clock_ms > 0,
        "the hello reports the host clock"
    );
    let (clock, seen) = heartbeat_clock(&mut central).await;
    assert!(
        clock >= central.hello.host_clock_ms,
        "the host clock never goes back"
    );

    // Fresh: it starts.
    let p = host
        .start_request(start_req("sleep", clock, &boot))
        .await
        .expect("a start under a fresh lease");
    assert!(alive(p.pid as i32));

    // Another boot's lease, and a reading from the future: refused.
    for (echo, b) in [(clock, "another-boot"), (clock + 3_600_000, boot.as_str())] {
        let e = host
            .start_request(start_req("sleep", echo, b))
            .await
            .expect_err("refused");
        assert_eq!(reason(&e), Some(ErrorReason::LeaseExpired), "{e:?}");
    }

    // The same lease, once a fence timeout has passed on the host's clock:
    // refused, and nothing runs.
    let deadline = Instant::now() + DEADLINE;
    let refused = loop {
        let req = start_req("sleep", clock, &boot);
        let pod_id = req.pod_id.clone();
        match host.start_request(req).await {
            Ok(p) => {
                assert!(
                    seen.elapsed() < FENCE + Duration::from_millis(50),
                    "started {:?} after the lease's heartbeat arrived",
                    seen.elapsed()
                );
                host.stop_pod(&p.task_id, &p.pod_id, 1).await.ok();
            }
            Err(e) => {
                assert_eq!(reason(&e), Some(ErrorReason::LeaseExpired), "{e:?}");
                assert!(
                    e.message().contains("held up in the network"),
                    "{}",
                    e.message()
                );
                assert!(host.pod(&pod_id).await.is_none(), "nothing was started");
                break seen.elapsed();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the stale start was never refused"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The host's clock ran for at least the fence timeout since it sent
    // that heartbeat, which we received later still.
    assert!(
        refused >= FENCE - Duration::from_millis(100),
        "refused after {refused:?}"
    );

    // A fresh echo starts again, and an echo-less start (a test client or
    // an older central) is still accepted.
    let (fresh, _) = heartbeat_clock(&mut central).await;
    host.start_request(start_req("sleep", fresh, &boot))
        .await
        .expect("fresh lease");
    host.start_request(start_req("sleep", 0, ""))
        .await
        .expect("no lease information");
}

#[tokio::test]
async fn pings_with_a_stale_echo_do_not_keep_pods_alive() {
    let host = Host::start(&["--fence-timeout-ms", "1000"]).await;
    let mut central = host.central("", 0).await;
    let (clock, seen) = heartbeat_clock(&mut central).await;
    let boot = central.hello.boot_id.clone();
    let pod = host
        .start_request(start_req("sleep", clock, &boot))
        .await
        .expect("start");

    // Central keeps pinging, but every ping echoes the same old heartbeat
    // (as pings held up in a partition and delivered late would), plus
    // echo-less messages, which prove nothing once a central echoes.
    let pinger = central.sender();
    let pings = tokio::spawn(async move {
        loop {
            for echo in [clock, 0] {
                let m = pb::CentralMessage {
                    msg: Some(pb::central_message::Msg::Ping(pb::Ping {
                        sent_at: None,
                        echo_host_clock_ms: echo,
                    })),
                };
                if pinger.send(m).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let (_, exit) = central.exit_of(&pod.pod_id).await;
    let after = seen.elapsed();
    pings.abort();
    assert_eq!(exit.cause, pb::ExitCause::SelfFenced as i32, "{exit:?}");
    // The lease ran out a fence timeout after the echoed heartbeat was
    // sent (before we received it), not after the last ping arrived.
    assert!(
        after < FENCE + Duration::from_millis(900),
        "fenced {after:?} after the heartbeat"
    );
    assert!(!alive(pod.pid as i32));
}

#[tokio::test]
async fn pings_with_fresh_echoes_keep_pods_alive() {
    let host = Host::start(&["--fence-timeout-ms", "1000"]).await;
    let mut central = host.central("", 0).await;
    let (clock, _) = heartbeat_clock(&mut central).await;
    let boot = central.hello.boot_id.clone();
    let pod = host
        .start_request(start_req("sleep", clock, &boot))
        .await
        .expect("start");
    // Three fence timeouts of pings echoing each heartbeat as it comes.
    let until = Instant::now() + 3 * FENCE;
    while Instant::now() < until {
        match central.next().await {
            Some(HMsg::Heartbeat(hb)) => {
                central
                    .send(pb::central_message::Msg::Ping(pb::Ping {
                        sent_at: None,
                        echo_host_clock_ms: hb.host_clock_ms,
                    }))
                    .await;
            }
            Some(HMsg::PodEvent(e)) => {
                assert!(
                    super::support::exited_kind(&e).is_none(),
                    "a pod ended while central echoed fresh clocks: {e:?}"
                );
            }
            Some(_) => {}
            None => panic!("stream ended"),
        }
    }
    assert!(alive(pod.pid as i32));
}
