//! The simulated network between central-manager's sessions and the
//! simulated pod-hosts, with TCP's guarantees and nothing more.
//!
//! A connection (one per session, as tonic's one HTTP/2 connection per
//! channel) carries, in each direction, one FIFO of packets: the `Connect`
//! stream's messages and the unary calls (StartPod, StopPod) and their
//! replies share it, as HTTP/2 streams share one TCP connection. So nothing
//! is reordered within a direction; reordering the core can see comes from
//! processing (a StartPod racing a host's events, a reply arriving after a
//! reconnect) and from connections: a call in flight when its connection
//! breaks fails with "outcome unknown" whether or not the host acted, and
//! events are replayed on the next connection when their acks were lost.
//!
//! Faults, per host link:
//! - a *held* partition: packets wait (TCP retransmits) and are delivered
//!   late, all at once, on heal; new connections cannot be made meanwhile;
//! - a *reset* partition: every connection breaks at once (both ends see
//!   it, calls in flight fail), and new ones cannot be made until it ends;
//! - a slow link: every packet takes the given latency.
//!
//! Each direction of a connection has a pump task that sleeps until each
//! packet's delivery time, in order, so delivery is deterministic on the
//! paused runtime.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use central_manager::core::ports::{Dialer, HostCommands, HostLogStream, Link};
use central_manager::domain::host::{
    CentralMessage, HostCallError, HostMessage, LogsRequest, PodExit, PodSnapshot, StartRequest,
    StartedPod, StopRequest,
};
use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

/// How long a dial to an unreachable host takes to fail (tonic's connect
/// timeout in `hosts::grpc`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection's id.
pub type ConnId = u64;

/// A unary call to a host.
#[derive(Debug, Clone)]
pub enum HostCall {
    Start(StartRequest),
    Stop(StopRequest),
    List,
}

/// A host's answer to a call.
#[derive(Debug, Clone)]
pub enum Reply {
    Start(Result<StartedPod, HostCallError>),
    Stop(Result<Option<PodExit>, HostCallError>),
    List(Vec<PodSnapshot>),
}

/// What a simulated pod-host receives.
#[derive(Debug)]
pub enum HostInput {
    /// A new `Connect` stream (its first message follows).
    Open {
        conn: ConnId,
    },
    Msg {
        conn: ConnId,
        msg: CentralMessage,
    },
    Call {
        conn: ConnId,
        id: u64,
        call: HostCall,
    },
    /// The connection is gone (central closed it or it broke).
    Closed {
        conn: ConnId,
    },
}

enum ToHost {
    Open,
    Msg(CentralMessage),
    Call(u64, HostCall),
    Close,
}

enum ToCentral {
    Msg(HostMessage),
    Reply(u64, Reply),
    End,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Packets wait for the heal.
    Held,
    /// Connections break; dials fail.
    Reset,
}

struct LinkState {
    cut: Option<Cut>,
    /// Extra latency while the link is slow.
    slow: Option<Duration>,
    /// The host is down (rebooting): dials are refused.
    down: bool,
    /// Bumped on every heal, so held packets go.
    healed: watch::Sender<u64>,
}

struct ConnState {
    host: usize,
    to_central: mpsc::UnboundedSender<Result<HostMessage, String>>,
    to_host_pipe: mpsc::UnboundedSender<(Instant, ToHost)>,
    to_central_pipe: mpsc::UnboundedSender<(Instant, ToCentral)>,
    calls: BTreeMap<u64, oneshot::Sender<Reply>>,
}

struct Inner {
    links: Vec<LinkState>,
    conns: BTreeMap<ConnId, ConnState>,
    inboxes: Vec<mpsc::UnboundedSender<HostInput>>,
    next_conn: ConnId,
    next_call: u64,
    rng: StdRng,
    /// Per host, when central last received a message from it.
    last_heard: Vec<Option<Instant>>,
}

/// The network. Cheap to clone.
#[derive(Clone)]
pub struct Net {
    inner: Arc<Mutex<Inner>>,
    tracker: TaskTracker,
}

impl Net {
    /// A network to hosts whose inboxes are `inboxes` (host `i` is at
    /// endpoint `sim://host-i`).
    pub fn new(
        seed: u64,
        inboxes: Vec<mpsc::UnboundedSender<HostInput>>,
        tracker: &TaskTracker,
    ) -> Self {
        let links = inboxes
            .iter()
            .map(|_| LinkState {
                cut: None,
                slow: None,
                down: false,
                healed: watch::channel(0).0,
            })
            .collect();
        let n = inboxes.len();
        Self {
            inner: Arc::new(Mutex::new(Inner {
                links,
                conns: BTreeMap::new(),
                inboxes,
                next_conn: 1,
                next_call: 1,
                rng: StdRng::seed_from_u64(seed ^ 0x6e65_7477_6f72_6b00),
                last_heard: vec![None; n],
            })),
            tracker: tracker.clone(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The endpoint of host `i`.
    pub fn endpoint(i: usize) -> String {
        format!("sim://host-{i}")
    }

    /// When central last received a message from host `i`.
    pub fn last_heard(&self, host: usize) -> Option<Instant> {
        self.lock().last_heard[host]
    }

    /// Delivery time of a packet sent now to or from `host`.
    fn due(g: &mut Inner, host: usize) -> Instant {
        let base = Duration::from_micros(g.rng.random_range(200..=3000));
        Instant::now() + base + g.links[host].slow.unwrap_or_default()
    }

    // ---- faults ----

    /// Starts a partition of `host`'s link.
    pub fn partition(&self, host: usize, hold: bool) {
        let victims = {
            let mut g = self.lock();
            g.links[host].cut = Some(if hold { Cut::Held } else { Cut::Reset });
            if hold { Vec::new() } else { conns_of(&g, host) }
        };
        for c in victims {
            self.break_conn(c, "connection reset by peer");
        }
    }

    /// Ends `host`'s partition: held packets go now.
    pub fn heal(&self, host: usize) {
        let g = &mut *self.lock();
        let l = &mut g.links[host];
        l.cut = None;
        l.healed.send_modify(|v| *v += 1);
    }

    /// Makes `host`'s link slow (`None`: normal again).
    pub fn slow(&self, host: usize, latency: Option<Duration>) {
        self.lock().links[host].slow = latency;
    }

    /// `host`'s process died: its connections break; dials are refused
    /// until [`Net::host_up`].
    pub fn host_down(&self, host: usize) {
        let victims = {
            let mut g = self.lock();
            g.links[host].down = true;
            conns_of(&g, host)
        };
        for c in victims {
            self.break_conn(c, "connection reset by peer (pod-host died)");
        }
    }

    /// `host` accepts connections again.
    pub fn host_up(&self, host: usize) {
        self.lock().links[host].down = false;
    }

    /// Breaks a connection: central's stream fails, its calls in flight
    /// fail (outcome unknown), the host is told.
    fn break_conn(&self, conn: ConnId, why: &str) {
        let Some(c) = self.lock().conns.remove(&conn) else {
            return;
        };
        let _ = c.to_central.send(Err(why.to_owned()));
        for (_, reply) in c.calls {
            // Dropping the sender fails the call.
            drop(reply);
        }
        let inbox = self.lock().inboxes[c.host].clone();
        let _ = inbox.send(HostInput::Closed { conn });
    }

    // ---- the host's side ----

    /// A host sends a message on `conn` (dropped if the connection is gone).
    pub fn send_to_central(&self, conn: ConnId, msg: HostMessage) {
        self.to_central(conn, ToCentral::Msg(msg));
    }

    /// A host answers call `id` on `conn`.
    pub fn reply(&self, conn: ConnId, id: u64, reply: Reply) {
        self.to_central(conn, ToCentral::Reply(id, reply));
    }

    /// A host ends its side of `conn` (a newer Connect replaced it).
    pub fn close_from_host(&self, conn: ConnId) {
        self.to_central(conn, ToCentral::End);
    }

    fn to_central(&self, conn: ConnId, p: ToCentral) {
        let mut g = self.lock();
        let Some(host) = g.conns.get(&conn).map(|c| c.host) else {
            return;
        };
        let at = Self::due(&mut g, host);
        if let Some(c) = g.conns.get(&conn) {
            let _ = c.to_central_pipe.send((at, p));
        }
    }

    // ---- central's side ----

    fn to_host(&self, conn: ConnId, p: ToHost) -> bool {
        let mut g = self.lock();
        let Some(host) = g.conns.get(&conn).map(|c| c.host) else {
            return false;
        };
        let at = Self::due(&mut g, host);
        g.conns
            .get(&conn)
            .is_some_and(|c| c.to_host_pipe.send((at, p)).is_ok())
    }

    async fn call(&self, conn: ConnId, call: HostCall) -> Option<Reply> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut g = self.lock();
            let id = g.next_call;
            g.next_call += 1;
            match g.conns.get_mut(&conn) {
                Some(c) => c.calls.insert(id, tx),
                None => return None,
            };
            id
        };
        if !self.to_host(conn, ToHost::Call(id, call)) {
            return None;
        }
        rx.await.ok()
    }

    /// Opens a connection to `host` (see [`Dialer`]).
    async fn open(&self, host: usize, first: CentralMessage) -> Result<Link, String> {
        let refused = {
            let g = self.lock();
            let l = &g.links[host];
            if l.down {
                Some((Duration::from_millis(1), "connection refused"))
            } else if l.cut.is_some() {
                Some((CONNECT_TIMEOUT, "connect timed out"))
            } else {
                None
            }
        };
        if let Some((after, why)) = refused {
            tokio::time::sleep(after).await;
            return Err(why.to_owned());
        }
        let (inbound_tx, inbound_rx) = mpsc::unbounded_channel();
        let (out_tx, mut out_rx) = mpsc::channel::<CentralMessage>(1024);
        let (th_tx, th_rx) = mpsc::unbounded_channel();
        let (tc_tx, tc_rx) = mpsc::unbounded_channel();
        let (conn, healed) = {
            let mut g = self.lock();
            let conn = g.next_conn;
            g.next_conn += 1;
            g.conns.insert(
                conn,
                ConnState {
                    host,
                    to_central: inbound_tx,
                    to_host_pipe: th_tx,
                    to_central_pipe: tc_tx,
                    calls: BTreeMap::new(),
                },
            );
            (conn, g.links[host].healed.subscribe())
        };
        self.tracker
            .spawn(self.clone().pump_to_host(conn, host, th_rx, healed.clone()));
        self.tracker
            .spawn(self.clone().pump_to_central(conn, host, tc_rx, healed));
        self.to_host(conn, ToHost::Open);
        self.to_host(conn, ToHost::Msg(first));
        // Central's outbound messages, then the close once central drops
        // its side.
        let net = self.clone();
        self.tracker.spawn(async move {
            while let Some(m) = out_rx.recv().await {
                net.to_host(conn, ToHost::Msg(m));
            }
            net.to_host(conn, ToHost::Close);
        });
        let inbound = futures::stream::unfold(inbound_rx, |mut rx| async move {
            rx.recv().await.map(|m| (m, rx))
        });
        Ok(Link {
            inbound: Box::pin(inbound),
            outbound: out_tx,
            commands: Arc::new(SimHostCommands {
                net: self.clone(),
                conn,
            }),
        })
    }

    /// Waits while `host`'s link holds packets.
    async fn wait_unheld(&self, host: usize, healed: &mut watch::Receiver<u64>) {
        loop {
            let held = self.lock().links[host].cut == Some(Cut::Held);
            if !held {
                return;
            }
            if healed.changed().await.is_err() {
                return;
            }
        }
    }

    async fn pump_to_host(
        self,
        conn: ConnId,
        host: usize,
        mut rx: mpsc::UnboundedReceiver<(Instant, ToHost)>,
        mut healed: watch::Receiver<u64>,
    ) {
        while let Some((at, p)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            self.wait_unheld(host, &mut healed).await;
            let mut g = self.lock();
            if !g.conns.contains_key(&conn) {
                continue;
            }
            let input = match p {
                ToHost::Open => HostInput::Open { conn },
                ToHost::Msg(msg) => HostInput::Msg { conn, msg },
                ToHost::Call(id, call) => HostInput::Call { conn, id, call },
                ToHost::Close => {
                    g.conns.remove(&conn);
                    HostInput::Closed { conn }
                }
            };
            let _ = g.inboxes[host].send(input);
        }
    }

    async fn pump_to_central(
        self,
        conn: ConnId,
        host: usize,
        mut rx: mpsc::UnboundedReceiver<(Instant, ToCentral)>,
        mut healed: watch::Receiver<u64>,
    ) {
        while let Some((at, p)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            self.wait_unheld(host, &mut healed).await;
            let mut g = self.lock();
            match p {
                ToCentral::Msg(m) => {
                    if let Some(c) = g.conns.get(&conn) {
                        let _ = c.to_central.send(Ok(m));
                        g.last_heard[host] = Some(Instant::now());
                    }
                }
                ToCentral::Reply(id, reply) => {
                    if let Some(tx) = g.conns.get_mut(&conn).and_then(|c| c.calls.remove(&id)) {
                        let _ = tx.send(reply);
                    }
                }
                ToCentral::End => {
                    if let Some(c) = g.conns.remove(&conn) {
                        drop(c);
                    }
                }
            }
        }
    }
}

fn conns_of(g: &Inner, host: usize) -> Vec<ConnId> {
    g.conns
        .iter()
        .filter(|(_, c)| c.host == host)
        .map(|(id, _)| *id)
        .collect()
}

/// The dialer the simulated core's sessions use.
pub struct SimDialer(pub Net);

impl Dialer for SimDialer {
    fn open(
        &self,
        endpoint: &str,
        first: CentralMessage,
    ) -> BoxFuture<'static, Result<Link, String>> {
        let net = self.0.clone();
        let host = endpoint
            .strip_prefix("sim://host-")
            .and_then(|i| i.parse::<usize>().ok());
        Box::pin(async move {
            let host = host.ok_or_else(|| "no such host".to_owned())?;
            net.open(host, first).await
        })
    }
}

/// A host's commands over one simulated connection.
struct SimHostCommands {
    net: Net,
    conn: ConnId,
}

fn reset() -> HostCallError {
    HostCallError::Unknown("connection reset".into())
}

impl HostCommands for SimHostCommands {
    fn start_pod(
        &self,
        req: StartRequest,
    ) -> BoxFuture<'static, Result<StartedPod, HostCallError>> {
        let (net, conn) = (self.net.clone(), self.conn);
        Box::pin(async move {
            match net.call(conn, HostCall::Start(req)).await {
                Some(Reply::Start(r)) => r,
                _ => Err(reset()),
            }
        })
    }

    fn stop_pod(
        &self,
        req: StopRequest,
    ) -> BoxFuture<'static, Result<Option<PodExit>, HostCallError>> {
        let (net, conn) = (self.net.clone(), self.conn);
        Box::pin(async move {
            match net.call(conn, HostCall::Stop(req)).await {
                Some(Reply::Stop(r)) => r,
                _ => Err(reset()),
            }
        })
    }

    fn list_pods(&self) -> BoxFuture<'static, Result<Vec<PodSnapshot>, HostCallError>> {
        let (net, conn) = (self.net.clone(), self.conn);
        Box::pin(async move {
            match net.call(conn, HostCall::List).await {
                Some(Reply::List(pods)) => Ok(pods),
                _ => Err(reset()),
            }
        })
    }

    fn pod_logs(
        &self,
        _req: LogsRequest,
    ) -> BoxFuture<'static, Result<HostLogStream, HostCallError>> {
        // Simulated pods write no output.
        Box::pin(async { Ok(Box::pin(futures::stream::empty()) as Pin<Box<_>>) })
    }
}
