//! The Connect stream: exits and phases pushed at once, replay after a
//! dropped stream, one session at a time, and self-fencing.

use std::time::{Duration, Instant};

use ipa_tests::{DEADLINE, pb};
use nix::sys::signal::Signal;
use pb::host_message::Msg as HMsg;
use pb::pod_event::Kind;

use super::support::{Host, alive, exited_kind, new_id, rss_kib, signal};

/// A generous bound for "at once" on a loaded 2-core CI box; the benchmark
/// measures the real latency.
const AT_ONCE: Duration = Duration::from_secs(1);

#[tokio::test]
async fn exit_codes_and_signals_are_pushed_within_milliseconds() {
    let host = Host::start(&["--stop-grace-ms", "500"]).await;
    let mut central = host.central("", 0).await;
    assert_eq!(central.hello.host_id, "test-host");
    assert!(uuid::Uuid::parse_str(&central.hello.boot_id).is_ok());
    assert_eq!(central.hello.capacity, 100);
    assert!(central.hello.templates.contains(&"trapper".to_owned()));
    assert_eq!(central.hello.fence_timeout_ms, 5000);
    assert!(central.hello.pods.is_empty());

    // Exit code: the pod exits 7 when we send it SIGUSR1.
    let task = new_id();
    let pod = host.start_pod(&task, 1, "trapper").await;
    let started = central
        .event_of(&pod.pod_id, |e| matches!(e.kind, Some(Kind::Started(_))))
        .await;
    assert_eq!(started.generation, 1);
    assert_eq!(started.task_id, task);
    central
        .event_of(
            &pod.pod_id,
            |e| matches!(&e.kind, Some(Kind::StateChanged(s)) if s.message == "ready"),
        )
        .await;
    let t0 = Instant::now();
    signal(pod.pid as i32, Signal::SIGUSR1);
    let (_, exit) = central.exit_of(&pod.pod_id).await;
    let code_latency = t0.elapsed();
    assert_eq!(exit.exit_code, Some(7));
    assert_eq!(exit.signal, None);
    assert_eq!(exit.cause, pb::ExitCause::Exited as i32);
    assert!(!exit.reported_completed);

    // Signal: SIGKILL from outside.
    let pod = host.start_pod(&new_id(), 1, "sleep").await;
    central
        .event_of(&pod.pod_id, |e| matches!(e.kind, Some(Kind::Started(_))))
        .await;
    let t0 = Instant::now();
    signal(pod.pid as i32, Signal::SIGKILL);
    let (_, exit) = central.exit_of(&pod.pod_id).await;
    let kill_latency = t0.elapsed();
    assert_eq!(exit.signal, Some(libc::SIGKILL));
    assert_eq!(exit.exit_code, None);
    assert_eq!(exit.cause, pb::ExitCause::Exited as i32);

    eprintln!("exit→event latency: exit code {code_latency:?}, SIGKILL {kill_latency:?}");
    assert!(code_latency < AT_ONCE, "exit code took {code_latency:?}");
    assert!(kill_latency < AT_ONCE, "signal took {kill_latency:?}");

    // Sequence numbers strictly increase; heartbeats carry last_seq.
    let mut last = 0;
    let pod = host.start_pod(&new_id(), 1, "sleep").await;
    host.stop_pod(&pod.task_id, &pod.pod_id, 1)
        .await
        .expect("stop");
    loop {
        match central.next().await.expect("stream open") {
            HMsg::PodEvent(e) => {
                assert!(e.seq > last, "seq {} after {last}", e.seq);
                last = e.seq;
                if e.pod_id == pod.pod_id && exited_kind(&e).is_some() {
                    assert_eq!(
                        exited_kind(&e).map(|x| x.cause),
                        Some(pb::ExitCause::Stopped as i32)
                    );
                }
            }
            HMsg::Heartbeat(h) if last > 0 && h.last_seq == last => {
                assert_eq!(h.running_pods, 0);
                break;
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn phase_reports_bump_the_version_and_bad_lines_are_ignored() {
    let host = Host::start(&[]).await;
    let mut central = host.central("", 0).await;
    let pod = host.start_pod(&new_id(), 1, "reporter").await;
    let mut states = Vec::new();
    let exit = loop {
        let e = central.event_of(&pod.pod_id, |_| true).await;
        match e.kind {
            Some(Kind::StateChanged(s)) => states.push((s.version, s.phase, s.message)),
            Some(Kind::Exited(x)) => break x,
            _ => {}
        }
    };
    use pb::Phase::*;
    assert_eq!(
        states,
        vec![
            (1, SpecClarification as i32, "m0".to_owned()),
            (2, Planning as i32, "m1".to_owned()),
            (3, Planning as i32, "only message".to_owned()),
            (4, Review as i32, String::new()),
            (5, Completed as i32, "done".to_owned()),
        ]
    );
    // COMPLETED was written just before exit 0 and still counted.
    assert_eq!(exit.exit_code, Some(0));
    assert!(exit.reported_completed);
    let listed = host.pod(&pod.pod_id).await.expect("listed");
    assert_eq!((listed.version, listed.phase), (5, Completed as i32));
    assert!(
        host.proc.log().contains("ignored a status line"),
        "bad lines are logged"
    );

    // 20 MB of garbage without newlines: ignored with bounded memory, and
    // the next valid line still counts.
    let before = rss_kib(host.proc.pid as i32);
    let pod = host.start_pod(&new_id(), 1, "garbage").await;
    let e = central
        .event_of(&pod.pod_id, |e| {
            matches!(e.kind, Some(Kind::StateChanged(_)))
        })
        .await;
    let Some(Kind::StateChanged(s)) = e.kind else {
        unreachable!()
    };
    assert_eq!((s.version, s.message.as_str()), (1, "still alive"));
    let after = rss_kib(host.proc.pid as i32);
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

#[tokio::test]
async fn an_exit_while_disconnected_is_replayed_exactly_once() {
    let host = Host::start(&[]).await;
    let mut a = host.central("", 0).await;
    let boot = a.hello.boot_id.clone();
    let pod = host.start_pod(&new_id(), 1, "sleep").await;
    let started = a
        .event_of(&pod.pod_id, |e| matches!(e.kind, Some(Kind::Started(_))))
        .await;
    a.ack(started.seq).await;
    // The stream drops; the next central states what it acknowledged.
    drop(a);

    // The pod dies while no central is connected.
    signal(pod.pid as i32, Signal::SIGKILL);
    host.wait_exited(&pod.pod_id).await;

    let mut b = host.central(&boot, started.seq).await;
    assert_eq!(b.hello.boot_id, boot);
    let snap = b
        .hello
        .pods
        .iter()
        .find(|p| p.pod_id == pod.pod_id)
        .expect("exited pod in the snapshot");
    assert_eq!(snap.state, pb::PodState::Exited as i32);
    assert_eq!(
        snap.exit.as_ref().and_then(|x| x.signal),
        Some(libc::SIGKILL)
    );
    let last_seq = b.hello.last_seq;
    // Everything up to last_seq is replayed, then two heartbeats show that
    // nothing else follows.
    let mut exits = Vec::new();
    let mut heartbeats = 0;
    let mut max_seq = 0;
    while heartbeats < 2 || max_seq < last_seq {
        match b.next().await.expect("stream open") {
            HMsg::PodEvent(e) => {
                assert!(e.seq > started.seq, "acked seq {} replayed", e.seq);
                max_seq = max_seq.max(e.seq);
                if exited_kind(&e).is_some() {
                    exits.push(e.seq);
                }
            }
            HMsg::Heartbeat(_) if max_seq >= last_seq => heartbeats += 1,
            _ => {}
        }
    }
    assert_eq!(exits.len(), 1, "exactly one exit replayed: {exits:?}");
    b.ack(exits[0]).await;

    // Once acknowledged the pod leaves ListPods and the snapshot, and
    // nothing is replayed any more.
    ipa_tests::wait_for_async("ack processed", DEADLINE, || async {
        host.pod(&pod.pod_id).await.is_none().then_some(())
    })
    .await;
    let mut c = host.central(&boot, exits[0]).await;
    assert!(c.hello.pods.iter().all(|p| p.pod_id != pod.pod_id));
    let mut heartbeats = 0;
    while heartbeats < 2 {
        match c.next().await.expect("stream open") {
            HMsg::PodEvent(e) => panic!("unexpected replay after the ack: {e:?}"),
            HMsg::Heartbeat(_) => heartbeats += 1,
            _ => {}
        }
    }

    // One session at a time: a new Connect ends the previous stream.
    let _d = host.central(&boot, exits[0]).await;
    let ended = tokio::time::timeout(DEADLINE, async { while c.next().await.is_some() {} }).await;
    assert!(ended.is_ok(), "the replaced stream must end");
    drop(b);
}

#[tokio::test]
async fn self_fencing_after_the_timeout_and_not_before() {
    let host = Host::start(&["--fence-timeout-ms", "1000"]).await;
    // Before any central: pods are not fenced however long it takes.
    let mut central = host.central("", 0).await;
    let pinger = central.sender();
    let last_ping = std::sync::Arc::new(std::sync::Mutex::new(Instant::now()));
    let ping_task = tokio::spawn({
        let last_ping = last_ping.clone();
        async move {
            loop {
                let ping = pb::CentralMessage {
                    msg: Some(pb::central_message::Msg::Ping(pb::Ping {
                        sent_at: None,
                        ..Default::default()
                    })),
                };
                if pinger.send(ping).await.is_err() {
                    return;
                }
                *last_ping.lock().unwrap() = Instant::now();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    let pods = [
        host.start_pod(&new_id(), 1, "family").await,
        host.start_pod(&new_id(), 1, "sleep").await,
    ];
    // 2.5 fence timeouts of regular pings: the pods live.
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        central.next().await.expect("stream open");
        assert!(
            pods.iter().all(|p| alive(p.pid as i32)),
            "fenced while central was pinging"
        );
    }
    ping_task.abort();
    let _ = ping_task.await;
    // The host receives the last ping after we queued it, so its deadline
    // is at least a full timeout after this instant.
    let silent_since = *last_ping.lock().unwrap();

    // Silence (the stream stays open): the host kills its pods.
    let mut fenced = std::collections::HashSet::new();
    tokio::time::timeout(DEADLINE, async {
        while fenced.len() < pods.len() {
            let e = central.event().await;
            if let Some(exit) = exited_kind(&e) {
                assert_eq!(exit.cause, pb::ExitCause::SelfFenced as i32);
                assert_eq!(exit.signal, Some(libc::SIGKILL));
                fenced.insert(e.pod_id.clone());
            }
        }
    })
    .await
    .expect("both pods self-fenced");
    let after = silent_since.elapsed();
    eprintln!("self-fenced {after:?} after the last ping (timeout 1 s)");
    assert!(
        after >= Duration::from_millis(1000),
        "fenced too early: {after:?}"
    );
    assert!(
        after < Duration::from_millis(1000) + AT_ONCE,
        "fenced too late: {after:?}"
    );
    assert!(pods.iter().all(|p| !alive(p.pid as i32)));

    // The next hello says so, once; the host keeps serving.
    let c2 = host.central(&central.hello.boot_id, 0).await;
    assert!(c2.hello.self_fenced);
    drop(c2);
    let c3 = host.central(&central.hello.boot_id, 0).await;
    assert!(!c3.hello.self_fenced);
    let p = host.start_pod(&new_id(), 1, "sleep").await;
    assert!(alive(p.pid as i32));
    assert!(
        host.proc.log().contains("self-fencing"),
        "the reason is logged"
    );
}

#[tokio::test]
async fn a_frozen_host_fences_on_waking_even_with_pings_queued() {
    let mut host = Host::start(&["--fence-timeout-ms", "1000"]).await;
    let mut central = host.central("", 0).await;
    let pod = host.start_pod(&new_id(), 1, "sleep").await;
    central
        .event_of(&pod.pod_id, |e| matches!(e.kind, Some(Kind::Started(_))))
        .await;

    // Freeze the host (not its pods) for twice the fence timeout while the
    // central keeps pinging: the pings wait in the socket buffers.
    host.proc.signal(Signal::SIGSTOP);
    let frozen = Instant::now();
    let mut half_way_alive = None;
    while frozen.elapsed() < Duration::from_millis(2000) {
        let ping = pb::Ping {
            sent_at: None,
            ..Default::default()
        };
        central.send(pb::central_message::Msg::Ping(ping)).await;
        if half_way_alive.is_none() && frozen.elapsed() >= Duration::from_millis(500) {
            half_way_alive = Some(alive(pod.pid as i32));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The frozen host cannot kill, but its reaper (a process of its own,
    // holding the host's lease) does once the lease is over: not before.
    assert_eq!(
        half_way_alive,
        Some(true),
        "killed before the fence timeout"
    );
    ipa_tests::wait_for(
        "the reaper's backstop to kill the frozen host's pod",
        DEADLINE,
        || (!alive(pod.pid as i32)).then_some(()),
    )
    .await;
    let woke = Instant::now();
    host.proc.signal(Signal::SIGCONT);
    let (_, exit) = central.exit_of(&pod.pod_id).await;
    // The stale pings must not count as fresh contact.
    assert_eq!(exit.cause, pb::ExitCause::SelfFenced as i32);
    assert!(
        woke.elapsed() < AT_ONCE,
        "fenced {:?} after waking",
        woke.elapsed()
    );
    host.proc.kill().await;
}
