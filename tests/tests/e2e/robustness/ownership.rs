//! Host identity and ownership (issue 11 item 3, central side): two real
//! pod-hosts started with the same `--host-id` never run a task twice (the
//! second is refused and shown as `conflict_endpoint`, and takes over only
//! once the first is LOST), and a rogue pod-host reporting another host's
//! pod changes nothing and is counted.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use ipa_tests::cluster::{start_central, start_pod_host, write_host_config};
use ipa_tests::{DEADLINE, ServerProcess, pb, wait_for, wait_for_async};
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;

use crate::observability::support::{free_addr, parse_metrics, scrape, value};
use crate::system::support::{Client, Spec, System, auto_restart, children_with, ledger_req};

const TASKS: usize = 6;

fn ledger_pods(host: &ServerProcess) -> usize {
    children_with(host.pid, "ledger-pod").len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pod_hosts_with_one_host_id_never_run_a_task_twice() {
    let dir = tempfile::tempdir().unwrap();
    let ledger_path = dir.path().join("ledger.txt");
    let config = write_host_config(dir.path(), &ledger_path, &[]);
    let host_flags = ["--fence-timeout-ms", "2000", "--stop-grace-ms", "300"];
    let mut procs = [
        start_pod_host(&dir.path().join("one"), "dup", &config, &host_flags).await,
        start_pod_host(&dir.path().join("two"), "dup", &config, &host_flags).await,
    ];
    let urls = [procs[0].url(), procs[1].url()];
    let central = start_central(
        dir.path(),
        &urls,
        &[
            "--heartbeat-interval-ms",
            "100",
            "--host-unreachable-ms",
            "1000",
            "--fence-timeout-ms",
            "2000",
        ],
    )
    .await;
    let client = Client::new(central.channel());
    let hosts = |c: &Client| {
        let mut c = c.clone();
        async move {
            c.list_pod_hosts(pb::ListPodHostsRequest {})
                .await
                .ok()
                .map(|r| r.into_inner().hosts)
        }
    };
    // One host "dup", held by one endpoint, the other shown as a conflict.
    let dup = wait_for_async("host dup READY with a conflict", DEADLINE, || async {
        let hs = hosts(&client).await?;
        let [h] = hs.as_slice() else { return None };
        (h.host_id == "dup"
            && h.state() == pb::PodHostState::Ready
            && urls.contains(&h.address)
            && urls.contains(&h.conflict_endpoint)
            && h.address != h.conflict_endpoint)
            .then(|| h.clone())
    })
    .await;
    let (h, o) = if dup.address == urls[0] {
        (0, 1)
    } else {
        (1, 0)
    };

    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let req = ledger_req(
            &[("ledger.alive_ms", "50")],
            Some(auto_restart(10, 0, 100)),
            true,
        );
        let t = client
            .clone()
            .create_task(req)
            .await
            .expect("CreateTask")
            .into_inner()
            .task
            .expect("task");
        assert_eq!(
            t.pod_status(),
            pb::PodStatus::Running,
            "{:?}",
            t.pod_message
        );
        tasks.push(t.task_id);
    }
    wait_for("every pod running on the holder", DEADLINE, || {
        (ledger_pods(&procs[h]) == TASKS).then_some(())
    })
    .await;
    // Stable: the refused endpoint keeps trying and keeps being refused,
    // nothing moves, nothing runs twice.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(6) {
        let hs = hosts(&client).await.expect("ListPodHosts");
        assert_eq!(hs.len(), 1, "{hs:?}");
        assert_eq!(hs[0].boot_id, dup.boot_id, "the holder was replaced");
        assert_eq!(hs[0].state(), pb::PodHostState::Ready);
        assert_eq!(ledger_pods(&procs[h]), TASKS);
        assert_eq!(ledger_pods(&procs[o]), 0, "a task runs on the refused host");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The holder dies: only once it is LOST does the other take the id,
    // and the tasks move there, each still running once.
    procs[h].signal(Signal::SIGKILL);
    procs[h].kill().await;
    wait_for(
        "every task running again on the other host",
        DEADLINE,
        || (ledger_pods(&procs[o]) == TASKS).then_some(()),
    )
    .await;
    let runs = ipa_tests::ledger::read(&ledger_path);
    let o = ipa_tests::ledger::overlaps(&runs);
    assert!(o.is_empty(), "a task ran twice at once: {o:#?}");
    let ran: BTreeSet<String> = runs.iter().map(|r| r.task_id.clone()).collect();
    assert_eq!(ran, tasks.iter().cloned().collect::<BTreeSet<_>>());
}

/// A pod-host that says hello as `rogue` (no capacity, no templates) and
/// then sends whatever pod events the test feeds it, recording acks.
#[derive(Clone)]
struct Rogue {
    events: watch::Receiver<Vec<pb::PodEvent>>,
    acked: Arc<watch::Sender<u64>>,
}

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::pod_host_server::PodHost for Rogue {
    async fn start_pod(
        &self,
        _: tonic::Request<pb::HostStartPodRequest>,
    ) -> Result<tonic::Response<pb::HostStartPodResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("rogue"))
    }
    async fn stop_pod(
        &self,
        _: tonic::Request<pb::HostStopPodRequest>,
    ) -> Result<tonic::Response<pb::HostStopPodResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("rogue"))
    }
    async fn list_pods(
        &self,
        _: tonic::Request<pb::HostListPodsRequest>,
    ) -> Result<tonic::Response<pb::HostListPodsResponse>, tonic::Status> {
        Ok(tonic::Response::new(pb::HostListPodsResponse::default()))
    }
    async fn connect(
        &self,
        req: tonic::Request<tonic::Streaming<pb::CentralMessage>>,
    ) -> Result<tonic::Response<Boxed<pb::HostMessage>>, tonic::Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let mut events = self.events.clone();
        let acked = self.acked.clone();
        tokio::spawn(async move {
            let hello = pb::HostHello {
                host_id: "rogue".into(),
                boot_id: "rogue-boot".into(),
                capacity: 0,
                fence_timeout_ms: 1000,
                ..Default::default()
            };
            let msg = |m| pb::HostMessage { msg: Some(m) };
            if tx
                .send(Ok(msg(pb::host_message::Msg::Hello(hello))))
                .await
                .is_err()
            {
                return;
            }
            let mut beat = tokio::time::interval(Duration::from_millis(100));
            events.mark_changed();
            loop {
                tokio::select! {
                    m = inbound.message() => match m {
                        Ok(Some(pb::CentralMessage { msg: Some(pb::central_message::Msg::Ack(a)) })) => {
                            acked.send_replace(a.seq);
                        }
                        Ok(Some(_)) => {}
                        _ => return,
                    },
                    _ = beat.tick() => {
                        let hb = pb::Heartbeat { running_pods: 0, ..Default::default() };
                        if tx.send(Ok(msg(pb::host_message::Msg::Heartbeat(hb)))).await.is_err() {
                            return;
                        }
                    }
                    c = events.changed() => {
                        if c.is_err() { return }
                        let batch = events.borrow_and_update().clone();
                        for e in batch {
                            if tx.send(Ok(msg(pb::host_message::Msg::PodEvent(e)))).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }
    async fn get_pod_logs(
        &self,
        _: tonic::Request<pb::HostGetPodLogsRequest>,
    ) -> Result<tonic::Response<Boxed<pb::PodLogChunk>>, tonic::Status> {
        Err(tonic::Status::unimplemented("rogue"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_host_reporting_another_hosts_pod_changes_nothing_and_is_counted() {
    let (feed, events) = watch::channel(Vec::new());
    let acked = Arc::new(watch::channel(0u64).0);
    let rogue = Rogue {
        events,
        acked: acked.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rogue_url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let server = tokio::spawn({
        let stop = stop.clone();
        tonic::transport::Server::builder()
            .add_service(pb::pod_host_server::PodHostServer::new(rogue))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop.cancelled_owned())
    });
    let metrics = free_addr();
    let sys = System::start(Spec {
        hosts: vec!["host-a"],
        central_extra: vec![
            "--pod-host".into(),
            rogue_url,
            "--metrics-listen".into(),
            metrics.to_string(),
        ],
        ..Spec::relaxed()
    })
    .await;
    sys.wait_host_state("rogue", pb::PodHostState::Ready).await;
    let t = sys
        .running_ledger_task(&[("ledger.alive_ms", "50")], None)
        .await;
    let pod = t.pod.clone().expect("pod");
    assert_eq!(pod.pod_host, "host-a");
    sys.wait_run(&pod.pod_id).await;
    let rejected = |text: &str| {
        value(&parse_metrics(text), "ipa_rejected_host_events_total", &[]).unwrap_or(0.0)
    };
    let before = rejected(&scrape(metrics).await.1);

    // The rogue claims the pod reported a phase and completed.
    let event = |seq, kind| pb::PodEvent {
        seq,
        task_id: t.task_id.clone(),
        pod_id: pod.pod_id.clone(),
        generation: pod.generation,
        at: None,
        kind: Some(kind),
    };
    feed.send_replace(vec![
        event(
            1,
            pb::pod_event::Kind::StateChanged(pb::PodStateChanged {
                phase: pb::Phase::Review as i32,
                message: "forged".into(),
                version: 99,
            }),
        ),
        event(
            2,
            pb::pod_event::Kind::Exited(pb::PodExit {
                exit_code: Some(0),
                cause: pb::ExitCause::Exited as i32,
                reported_completed: true,
                ..Default::default()
            }),
        ),
    ]);
    // Central handled both (it acknowledges what it has dealt with).
    let mut acks = acked.subscribe();
    tokio::time::timeout(DEADLINE, acks.wait_for(|s| *s >= 2))
        .await
        .expect("central acknowledged the rogue's events")
        .unwrap();

    let now = sys.task(&t.task_id).await;
    assert_eq!(now.status(), pb::TaskStatus::Active);
    assert_eq!(now.pod_status(), pb::PodStatus::Running);
    assert_eq!(now.pod.as_ref().map(|p| &p.pod_id), Some(&pod.pod_id));
    assert_ne!(now.phase(), pb::Phase::Review);
    assert_ne!(now.version, 99);
    // The trail has only what the real host and central did: nothing
    // forged, no end.
    for e in sys.events(&t.task_id).await {
        assert!(!e.data_json.contains("forged"), "{e:?}");
        assert!(
            !matches!(
                e.r#type.as_str(),
                "task_completed" | "pod_exited" | "pod_crashed" | "pod_stopped" | "pod_lost"
            ),
            "{e:?}"
        );
    }
    let after = rejected(&scrape(metrics).await.1);
    assert!(after >= before + 2.0, "rejected {before} → {after}");
    sys.assert_no_overlap();
    // Central first: the rogue's server waits for its Connect stream.
    drop(sys);
    stop.cancel();
    tokio::time::timeout(DEADLINE, server)
        .await
        .expect("the rogue server stops")
        .unwrap()
        .unwrap();
}
