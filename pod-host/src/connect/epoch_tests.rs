//! Leader-epoch fencing through the real Connect sessions and handlers
//! (`crate::epoch`), on a supervisor without pods, in paused time: a stale
//! Connect is refused and the current session carries on, a newer epoch
//! ends the older session and whatever that one still sends does not feed
//! the fence timer, and a stale StartPod or StopPod is refused before it
//! counts as contact or changes anything.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ipa_proto::v1 as pb;
use pb::central_message::Msg as CentralMsg;
use pb::host_message::Msg as HostMsg;
use pb::pod_host_server::PodHost;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Code, Request, Status};

use super::{HostStream, Sessions};
use crate::pods::Supervisor;

const FENCE: Duration = Duration::from_millis(1000);
/// Bounds every wait (paused time jumps ahead only when all is idle).
const WAIT: Duration = Duration::from_secs(30);

struct Harness {
    sup: Arc<Supervisor>,
    sessions: Arc<Sessions>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let args = crate::Args::try_parse_from([
            "pod-host".as_ref(),
            "--host-id".as_ref(),
            "epoch-test".as_ref(),
            "--fence-timeout-ms".as_ref(),
            "1000".as_ref(),
            "--data-dir".as_ref(),
            data.as_os_str(),
        ])
        .expect("args");
        let cfg = crate::HostConfig::from_args(&args).expect("config");
        let journal = crate::sweep::GroupJournal::create(&cfg.data_dir).expect("journal");
        let tracker = TaskTracker::new();
        let sup = Arc::new(Supervisor::new(
            cfg,
            crate::spawn::Spawner::start().expect("spawner"),
            None,
            journal,
            tracker.clone(),
        ));
        let shutdown = CancellationToken::new();
        let sessions = Arc::new(Sessions::new(
            sup.clone(),
            shutdown.clone(),
            tracker.clone(),
        ));
        Self {
            sup,
            sessions,
            shutdown,
            tracker,
            _dir: dir,
        }
    }

    /// A Connect whose first message is a hello with `epoch`; the sender
    /// plays the central's side of the stream.
    async fn connect(
        &self,
        epoch: u64,
    ) -> (
        mpsc::Sender<Result<pb::CentralMessage, Status>>,
        Result<HostStream, Status>,
    ) {
        let (tx, rx) = mpsc::channel(16);
        tx.send(Ok(pb::CentralMessage {
            msg: Some(CentralMsg::Hello(pb::CentralHello {
                heartbeat_interval_ms: 100,
                central_id: format!("central-{epoch}"),
                epoch,
                ..Default::default()
            })),
        }))
        .await
        .expect("queue hello");
        let opened = self.sessions.open(ReceiverStream::new(rx), None).await;
        (tx, opened)
    }

    fn api(&self) -> crate::api::Api {
        crate::api::Api::new(
            self.sup.clone(),
            self.sessions.clone(),
            self.shutdown.clone(),
            self.tracker.clone(),
        )
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        tokio::time::timeout(WAIT, self.tracker.wait())
            .await
            .expect("sessions end");
    }
}

/// The next message on a host stream; `None` when it ended.
async fn next(s: &mut HostStream) -> Option<HostMsg> {
    match tokio::time::timeout(WAIT, s.next()).await {
        Ok(Some(Ok(m))) => m.msg,
        Ok(Some(Err(e))) => panic!("stream failed: {e}"),
        Ok(None) => None,
        Err(_) => panic!("no message within {WAIT:?}"),
    }
}

/// Waits for a host stream to end: only heartbeats may come first.
async fn ends(s: &mut HostStream) {
    tokio::time::timeout(WAIT, async {
        while let Some(m) = next(s).await {
            assert!(matches!(m, HostMsg::Heartbeat(_)), "{m:?}");
        }
    })
    .await
    .expect("the session was not ended");
}

fn ping() -> Result<pb::CentralMessage, Status> {
    Ok(pb::CentralMessage {
        msg: Some(CentralMsg::Ping(pb::Ping::default())),
    })
}

fn assert_stale(r: Result<impl std::fmt::Debug, Status>, epoch: u64, newest: u64) {
    let e = r.expect_err("refused");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(
        e.message().starts_with(&format!(
            "STALE_EPOCH: epoch {epoch} is older than epoch {newest}"
        )),
        "{}",
        e.message()
    );
}

#[tokio::test(start_paused = true)]
async fn an_older_connect_is_refused_and_the_current_session_carries_on() {
    let h = Harness::new();
    let (_tx2, two) = h.connect(2).await;
    let mut two = two.expect("epoch 2 accepted");
    assert!(matches!(next(&mut two).await, Some(HostMsg::Hello(_))));

    let (_tx1, one) = h.connect(1).await;
    assert_stale(one.map(|_| ()), 1, 2);

    // The epoch-2 session still serves: heartbeats keep coming.
    assert!(matches!(next(&mut two).await, Some(HostMsg::Heartbeat(_))));
    assert!(matches!(next(&mut two).await, Some(HostMsg::Heartbeat(_))));
    assert!(h.sessions.active());
    // An equal epoch replaces it, as a reconnect does.
    let (_tx2b, again) = h.connect(2).await;
    let mut again = again.expect("same epoch accepted");
    assert!(matches!(next(&mut again).await, Some(HostMsg::Hello(_))));
    ends(&mut two).await;
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_newer_epoch_ends_the_old_session_and_its_pings_do_not_feed_the_fence_timer() {
    let h = Harness::new();
    let (tx1, one) = h.connect(1).await;
    let mut one = one.expect("epoch 1 accepted");
    assert!(matches!(next(&mut one).await, Some(HostMsg::Hello(_))));

    let (tx2, two) = h.connect(2).await;
    let mut two = two.expect("epoch 2 accepted");
    assert!(matches!(next(&mut two).await, Some(HostMsg::Hello(_))));
    // The epoch-1 stream ends at once (at most heartbeats already queued).
    ends(&mut one).await;

    // The deposed central keeps pinging for three fence timeouts while the
    // new one stays silent after its hello: the lease must run out.
    for _ in 0..30 {
        let _ = tx1.send(ping()).await;
        tokio::time::sleep(FENCE / 10).await;
    }
    assert!(
        h.sup.lease_over(),
        "a deposed leader's pings kept the fence timer fresh"
    );
    // The current leader's ping renews it.
    let _ = tx2.send(ping()).await;
    tokio::time::timeout(WAIT, async {
        while h.sup.lease_over() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the epoch-2 ping counts as contact");
    h.stop().await;
}

fn start_req(epoch: u64) -> pb::HostStartPodRequest {
    pb::HostStartPodRequest {
        task_id: uuid::Uuid::new_v4().to_string(),
        pod_id: uuid::Uuid::new_v4().to_string(),
        generation: 1,
        epoch,
        ..Default::default()
    }
}

fn stop_req(epoch: u64) -> pb::HostStopPodRequest {
    pb::HostStopPodRequest {
        task_id: uuid::Uuid::new_v4().to_string(),
        generation: 1,
        epoch,
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn stale_start_and_stop_are_refused_without_counting_as_contact() {
    let h = Harness::new();
    let api = h.api();
    // A newer leader's command raised the highest (commands race Connects).
    h.sessions
        .leadership()
        .admit_command(crate::epoch::Call::StopPod, 3)
        .expect("epoch 3");

    assert_stale(api.start_pod(Request::new(start_req(2))).await, 2, 3);
    assert_stale(api.stop_pod(Request::new(stop_req(0))).await, 0, 3);
    assert!(h.sup.list().is_empty(), "nothing started");
    // Had either counted as contact, the lease would be over by now.
    tokio::time::sleep(3 * FENCE).await;
    assert!(!h.sup.lease_over(), "a refused command counted as contact");

    // The current epoch passes the check (and the next one on the list:
    // no such pod), and counts as contact.
    let e = api
        .stop_pod(Request::new(stop_req(3)))
        .await
        .expect_err("no pod");
    assert_eq!(
        ipa_proto::reason_of(&e),
        Some(ipa_proto::ErrorReason::PodNotFound),
        "{e}"
    );
    tokio::time::sleep(3 * FENCE).await;
    assert!(h.sup.lease_over(), "an accepted command counts as contact");

    // A Connect of the old epoch is refused too; a newer command raises it.
    let (_tx, old) = h.connect(2).await;
    assert_stale(old.map(|_| ()), 2, 3);
    let e = api
        .stop_pod(Request::new(stop_req(4)))
        .await
        .expect_err("no pod");
    assert_eq!(
        ipa_proto::reason_of(&e),
        Some(ipa_proto::ErrorReason::PodNotFound)
    );
    assert_eq!(h.sessions.leadership().highest(), 4);
    h.stop().await;
}
