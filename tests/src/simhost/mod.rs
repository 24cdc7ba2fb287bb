//! A simulated pod-host: the real `ipa.v1.PodHost` protocol over real gRPC
//! on 127.0.0.1, without processes. Many of them fit in one process, so
//! the scale benchmark can put 100 pod-hosts and 10,000 pods in front of
//! one real central-manager on a 2-CPU machine.
//!
//! What is real: the gRPC server and its HTTP/2 connection, the `Connect`
//! stream (hello with a snapshot of every pod, heartbeats at the interval
//! central asks for, pod events with per-boot sequence numbers replayed
//! from a buffer until acknowledged), StartPod/StopPod/ListPods/GetPodLogs
//! with the real pod-host's answers and refusals (generations, capacity,
//! idempotency), and self-fencing when central goes silent for the fence
//! timeout. What is simulated: the pods. A pod is a table entry that
//! reports one status line when it starts and ends when told to
//! ([`SimHost::crash`]), when central stops or fences it, or when the host
//! fences itself. See [`table`] for the rules.
//!
//! [`SimHost::start`] serves until [`SimHost::stop`] (or drop), which
//! closes the listener and every connection and forgets the pods: to
//! central that is a host that died with its pods.

pub mod table;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ipa_proto::time::timestamp;
use ipa_proto::v1 as pb;
use pb::central_message::Msg as CentralMsg;
use pb::host_message::Msg as HostMsg;
use pb::pod_host_server::{PodHost, PodHostServer};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::MissedTickBehavior;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::codegen::BoxStream;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

pub use table::{SimStats, Table};

/// The largest message either side sends (the real servers' 4 MiB).
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Heartbeat interval when central asks for 0 (the real pod-host's).
const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(500);
/// Outbound messages buffered per session (the real pod-host's).
const OUTBOUND_BUFFER: usize = 256;

/// What one simulated pod-host is.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub host_id: String,
    pub capacity: u32,
    pub templates: Vec<String>,
    /// Its own `--fence-timeout-ms`, reported in the hello.
    pub fence_timeout: Duration,
}

struct Shared {
    host_id: String,
    table: Mutex<Table>,
    /// The last sequence issued: wakes the session to send new events.
    seq: watch::Sender<u64>,
    /// The fence deadline may have appeared (first contact, first pod).
    rearm: Notify,
    /// The current Connect session; a new one replaces it.
    session: Mutex<Option<CancellationToken>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the table, then wakes the session and the fence timer.
    fn with<T>(&self, f: impl FnOnce(&mut Table) -> T) -> T {
        let (out, seq) = {
            let mut t = self.lock();
            let out = f(&mut t);
            (out, t.last_seq())
        };
        self.seq
            .send_if_modified(|s| std::mem::replace(s, seq) != seq);
        self.rearm.notify_one();
        out
    }
}

/// A running simulated pod-host.
pub struct SimHost {
    pub host_id: String,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl SimHost {
    /// Serves a new simulated pod-host on 127.0.0.1 port 0.
    pub async fn start(cfg: SimConfig) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            host_id: cfg.host_id.clone(),
            table: Mutex::new(Table::new(cfg.capacity, &cfg.templates, cfg.fence_timeout)),
            seq: watch::channel(0).0,
            rearm: Notify::new(),
            session: Mutex::new(None),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        });
        let svc = PodHostServer::new(Api(shared.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let stop = shared.shutdown.clone();
        shared.tracker.spawn(async move {
            let served = Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                eprintln!("simulated pod-host server failed: {e}");
            }
        });
        shared.tracker.spawn(fence_timer(shared.clone()));
        Ok(Self {
            host_id: cfg.host_id,
            addr,
            shared,
        })
    }

    /// `http://ADDR`, as central's `--pod-host` takes it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `n` live pods exit with code 1 at once; returns their task ids.
    pub fn crash(&self, n: usize) -> Vec<String> {
        self.shared.with(|t| t.crash(n))
    }

    pub fn stats(&self) -> SimStats {
        self.shared.lock().stats()
    }

    /// The host dies: the listener and every connection close (the
    /// session ends first, so the server's drain does not wait for it) and
    /// its pods are gone with it.
    pub async fn stop(self) {
        self.shared.shutdown.cancel();
        self.shared.tracker.close();
        // The server drains its connections; a peer that keeps one open
        // must not hold the caller for long.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.shared.tracker.wait()).await;
    }
}

impl Drop for SimHost {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

/// Sleeps until the fence deadline and fences if it really passed (the
/// real pod-host's `FenceTimer`).
async fn fence_timer(s: Arc<Shared>) {
    loop {
        let deadline = s.lock().fence_deadline();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = s.shutdown.cancelled() => return,
            _ = s.rearm.notified() => {}
            _ = sleep => s.with(|t| t.fence_if_due(std::time::Instant::now())),
        }
    }
}

struct Api(Arc<Shared>);

#[tonic::async_trait]
impl PodHost for Api {
    async fn start_pod(
        &self,
        request: Request<pb::HostStartPodRequest>,
    ) -> Result<Response<pb::HostStartPodResponse>, Status> {
        let r = request.into_inner();
        let pod = self.0.with(|t| t.start(r, std::time::Instant::now()))?;
        Ok(Response::new(pb::HostStartPodResponse { pod: Some(pod) }))
    }

    async fn stop_pod(
        &self,
        request: Request<pb::HostStopPodRequest>,
    ) -> Result<Response<pb::HostStopPodResponse>, Status> {
        let r = request.into_inner();
        let pod = self.0.with(|t| t.stop(&r, std::time::Instant::now()))?;
        Ok(Response::new(pb::HostStopPodResponse { pod: Some(pod) }))
    }

    async fn list_pods(
        &self,
        _request: Request<pb::HostListPodsRequest>,
    ) -> Result<Response<pb::HostListPodsResponse>, Status> {
        let pods = self.0.with(|t| {
            t.contact(std::time::Instant::now());
            t.list()
        });
        Ok(Response::new(pb::HostListPodsResponse { pods }))
    }

    async fn connect(
        &self,
        request: Request<Streaming<pb::CentralMessage>>,
    ) -> Result<Response<BoxStream<pb::HostMessage>>, Status> {
        let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
        let s = self.0.clone();
        let cancel = s.shutdown.child_token();
        if let Some(old) = s
            .session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(cancel.clone())
        {
            old.cancel();
        }
        let inbound = request.into_inner();
        self.0
            .tracker
            .spawn(async move { session(s, inbound, tx, cancel).await });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_pod_logs(
        &self,
        request: Request<pb::HostGetPodLogsRequest>,
    ) -> Result<Response<BoxStream<pb::PodLogChunk>>, Status> {
        let r = request.into_inner();
        let text = self.0.with(|t| {
            t.contact(std::time::Instant::now());
            t.logs(&r.task_id, &r.pod_id)
        });
        let text = text.ok_or_else(|| {
            ipa_proto::status(
                ipa_proto::ErrorReason::PodNotFound,
                format!("no pod of task {} on this host", r.task_id),
            )
        })?;
        let chunk = pb::PodLogChunk {
            data: text.into_bytes(),
            stream: "stdout".into(),
        };
        Ok(Response::new(Box::pin(tokio_stream::once(Ok(chunk)))))
    }
}

/// One Connect session, as the real pod-host runs it: hello first, the
/// central's hello decides replay and the heartbeat interval, then
/// heartbeats and every new event in sequence order from the buffer.
async fn session(
    s: Arc<Shared>,
    mut inbound: Streaming<pb::CentralMessage>,
    tx: mpsc::Sender<Result<pb::HostMessage, Status>>,
    cancel: CancellationToken,
) {
    let send = |msg: HostMsg| {
        let tx = tx.clone();
        let cancel = cancel.clone();
        async move {
            tokio::select! {
                _ = cancel.cancelled() => false,
                r = tx.send(Ok(pb::HostMessage { msg: Some(msg) })) => r.is_ok(),
            }
        }
    };
    let hello = s.lock().hello(&s.host_id);
    if !send(HostMsg::Hello(hello)).await {
        return;
    }
    let first = tokio::select! {
        _ = cancel.cancelled() => return,
        m = inbound.message() => m,
    };
    let Ok(Some(first)) = first else { return };
    let now = std::time::Instant::now();
    let (mut cursor, interval) = match first.msg {
        Some(CentralMsg::Hello(h)) => {
            let interval = match h.heartbeat_interval_ms {
                0 => DEFAULT_HEARTBEAT,
                ms => Duration::from_millis(ms.into())
                    .clamp(Duration::from_millis(10), Duration::from_secs(60)),
            };
            let cursor = s.with(|t| {
                t.contact(now);
                t.replay_from(&h.known_boot_id, h.acked_seq)
            });
            (cursor, interval)
        }
        other => {
            s.with(|t| {
                t.contact(now);
                if let Some(CentralMsg::Ack(a)) = other {
                    t.ack(a.seq);
                }
            });
            (0, DEFAULT_HEARTBEAT)
        }
    };
    let mut events = s.seq.subscribe();
    events.mark_changed();
    let mut heartbeat = tokio::time::interval(interval);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            m = inbound.message() => match m {
                Ok(Some(m)) => s.with(|t| {
                    t.contact(std::time::Instant::now());
                    if let Some(CentralMsg::Ack(a)) = m.msg {
                        t.ack(a.seq);
                    }
                }),
                Ok(None) | Err(_) => return,
            },
            changed = events.changed() => {
                if changed.is_err() {
                    return;
                }
                let batch = s.lock().events_after(cursor);
                for e in batch {
                    let seq = e.seq;
                    if !send(HostMsg::PodEvent(e)).await {
                        return;
                    }
                    cursor = seq;
                }
            }
            _ = heartbeat.tick() => {
                let (last_seq, running, host_clock_ms) = {
                    let t = s.lock();
                    (t.last_seq(), t.live_pods(), t.clock_ms())
                };
                let hb = pb::Heartbeat {
                    sent_at: Some(timestamp(std::time::SystemTime::now())),
                    last_seq,
                    running_pods: u32::try_from(running).unwrap_or(u32::MAX),
                    draining: false,
                    host_clock_ms,
                };
                if !send(HostMsg::Heartbeat(hb)).await {
                    return;
                }
            }
        }
    }
}
