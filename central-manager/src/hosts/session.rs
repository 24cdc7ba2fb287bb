//! One supervision session per pod-host endpoint: dial, open the `Connect`
//! stream, say hello, then keep reading everything the host sends, pinging
//! at the heartbeat interval so the host's fence timer stays fresh. When
//! the stream ends the session redials with backoff and jitter, until
//! cancelled.
//!
//! Liveness never waits for the database (or anything else slow): the
//! session itself records every message as contact with the host
//! ([`HostDirectory::contact`]), registers the hello (refusing a host id
//! held by another endpoint), and hands pod events and the hello's
//! snapshot to the supervisor over an unbounded channel it never waits on.
//! Pod events the supervisor has not committed yet are bounded per session
//! ([`MAX_IN_FLIGHT`]): beyond it the session stops forwarding (the host
//! keeps them, unacknowledged) and, once the supervisor has caught up,
//! reconnects so the host replays them in order.
//!
//! Every update carries the monotonic instant the message *arrived*.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use ipa_proto::v1::{
    CentralHello, CentralMessage, HostHello, HostMessage, Ping, PodEvent, central_message,
    host_message, pod_host_client::PodHostClient,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use super::TracedChannel as Channel;
use super::backoff;
use super::directory::{HostDirectory, HostState};
use super::hello::{accept_hello, clamp_count};
use super::registry::HelloOutcome;

/// Reconnect backoff: first retry after ~100 ms, at most ~5 s apart. Short
/// enough that a host back from a blip rejoins well inside the
/// unreachable timeout's order of magnitude.
const RECONNECT_INITIAL: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// Dial timeout: a black-holed host must not hold a session for long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a host has to send its hello after the stream opens.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Outbound buffer (acks, pings). Acks are cumulative, so if it is ever
/// full dropping one loses nothing but a little replay work.
const OUTBOUND_CAPACITY: usize = 1024;
/// Pod events of one session handed to the supervisor and not yet
/// committed. Beyond it (a long database outage with busy pods) the session
/// stops forwarding; the host keeps the events until acknowledged.
pub const MAX_IN_FLIGHT: usize = 10_000;
/// How long a session refused for its host id waits before trying again:
/// the conflict lasts until the holder is LOST.
const REFUSED_RETRY: Duration = RECONNECT_MAX;

/// What a session tells the supervisor.
#[derive(Debug)]
pub enum HostUpdate {
    /// The stream is open and the host's hello was accepted and registered:
    /// reconcile its snapshot with the database.
    Connected {
        hello: HostHello,
        /// The host restarted since central last saw it: its old pods died.
        new_boot: bool,
        handle: SessionHandle,
    },
    /// A pod event arrived; ack `event.seq` once its effects are committed,
    /// then release its slot in `in_flight`.
    PodEvent {
        host_id: String,
        boot_id: String,
        event: PodEvent,
        in_flight: InFlight,
    },
}

/// A session's count of pod events handed to the supervisor and not yet
/// done with. Decremented on drop, so a dropped event frees its slot.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Self(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The supervisor's handle on a live session.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    pub endpoint: String,
    pub host_id: String,
    pub boot_id: String,
    /// Client for unary commands, over the same HTTP/2 connection.
    pub client: PodHostClient<Channel>,
    out: mpsc::Sender<CentralMessage>,
    /// Ends this connection (the session then redials and the host says
    /// hello again).
    reset: CancellationToken,
}

impl SessionHandle {
    /// Acknowledges every event up to `seq`. Never blocks: if the outbound
    /// buffer is full the ack is dropped, and the next one covers it.
    pub fn ack(&self, seq: u64) {
        let msg = CentralMessage {
            msg: Some(central_message::Msg::Ack(ipa_proto::v1::Ack { seq })),
        };
        let _ = self.out.try_send(msg);
    }

    /// Drops this connection so the host reconnects with a fresh hello,
    /// e.g. after it was declared LOST while its stream stayed open.
    pub fn reset(&self) {
        self.reset.cancel();
    }
}

/// Settings of all sessions.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub heartbeat_interval: Duration,
    pub central_id: String,
    /// How to dial `https://` endpoints (`--pod-host-ca`); `None`: they
    /// are refused.
    pub tls: Option<ipa_common::tls::ClientTls>,
}

/// Why a connection ended.
enum End {
    /// The host's hello was accepted: redial soon.
    Served,
    /// Dial or hello failed: back off.
    Failed(String),
    /// The hello was refused: wait [`REFUSED_RETRY`].
    Refused,
}

/// Runs the session for `endpoint` until `cancel`.
pub async fn run(
    endpoint: String,
    config: SessionConfig,
    hosts: HostDirectory,
    updates: mpsc::UnboundedSender<HostUpdate>,
    cancel: CancellationToken,
) {
    let mut attempt: u32 = 0;
    loop {
        if cancel.is_cancelled() {
            return;
        }
        let wait = match connect_once(&endpoint, &config, &hosts, &updates, &cancel).await {
            End::Served => {
                attempt = 0;
                backoff::delay(RECONNECT_INITIAL, RECONNECT_MAX, 0, rand::random::<f64>())
            }
            End::Failed(e) => {
                // The first failure in a row is worth an operator's eye (a
                // refused certificate looks exactly like this); the retries
                // that follow are not.
                if attempt == 0 {
                    tracing::warn!(%endpoint, error = %e, "pod-host session failed; retrying with backoff");
                } else {
                    tracing::debug!(%endpoint, error = %e, attempt, "pod-host session failed");
                }
                attempt = attempt.saturating_add(1);
                backoff::delay(
                    RECONNECT_INITIAL,
                    RECONNECT_MAX,
                    attempt,
                    rand::random::<f64>(),
                )
            }
            End::Refused => REFUSED_RETRY,
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Opens the HTTP/2 connection to a pod-host: TLS for `https://`
/// endpoints (through a connector that uses the certificates in force at
/// each dial), plaintext otherwise.
async fn dial(
    endpoint: &str,
    tls: Option<&ipa_common::tls::ClientTls>,
) -> Result<tonic::transport::Channel, String> {
    let secure = endpoint.starts_with("https://");
    let base = if secure {
        ipa_common::tls::client::tls_endpoint(endpoint)?
    } else {
        Endpoint::from_shared(endpoint.to_owned()).map_err(|e| e.to_string())?
    };
    let base = base
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        // Detect a dead TCP peer even when the host is silent for other
        // reasons; silence rules still decide host state.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    match (secure, tls) {
        (false, _) => base.connect().await.map_err(|e| e.to_string()),
        (true, Some(tls)) => base
            .connect_with_connector(tls.connector())
            .await
            .map_err(|e| format!("{e}: {}", error_chain(&e))),
        (true, None) => Err(format!(
            "{endpoint} is https but central-manager has no --pod-host-ca"
        )),
    }
}

/// The causes of an error, for a log line that says why a dial failed
/// (e.g. which certificate check refused the pod-host).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push(c.to_string());
        cur = c.source();
    }
    out.join(": ")
}

/// One connection, from dial to the end of the stream.
async fn connect_once(
    endpoint: &str,
    config: &SessionConfig,
    hosts: &HostDirectory,
    updates: &mpsc::UnboundedSender<HostUpdate>,
    cancel: &CancellationToken,
) -> End {
    let (hello, mut inbound, client, out_tx) = match open(endpoint, config, hosts).await {
        Ok(v) => v,
        Err(e) => return End::Failed(e),
    };
    let (at, wall) = (Instant::now(), SystemTime::now());
    let entry = match accept_hello(&hello, endpoint) {
        Ok(e) => e,
        Err(why) => {
            tracing::warn!(%endpoint, %why, "pod-host hello refused");
            return End::Refused;
        }
    };
    let host_id = entry.host_id.clone();
    let boot_id = entry.boot_id.clone();
    let reset = cancel.child_token();
    let handle = SessionHandle {
        endpoint: endpoint.to_owned(),
        host_id: host_id.clone(),
        boot_id: boot_id.clone(),
        client,
        out: out_tx.clone(),
        reset: reset.clone(),
    };
    let outcome = match hosts.register_hello(entry, handle.clone(), at, wall) {
        Ok(o) => o,
        Err(holder) => {
            tracing::warn!(%endpoint, %host_id, held_by = %holder,
                "pod-host hello refused: another endpoint holds this host id (shown as conflict_endpoint)");
            return End::Refused;
        }
    };
    let new_boot =
        matches!(&outcome, HelloOutcome::NewBoot { previous_boot } if !previous_boot.is_empty());
    tracing::info!(%endpoint, %host_id, %boot_id, ?outcome, self_fenced = hello.self_fenced, "pod-host connected");
    let connected = HostUpdate::Connected {
        hello,
        new_boot,
        handle,
    };
    if updates.send(connected).is_err() {
        hosts.remove_session(&host_id, &boot_id, endpoint);
        return End::Served;
    }

    let in_flight = Arc::new(AtomicUsize::new(0));
    // Set once events were dropped for backlog: from then on none is
    // forwarded (order!) until the supervisor caught up and a reconnect
    // makes the host replay them.
    let mut overflowed = false;
    let mut ping = tokio::time::interval(config.heartbeat_interval);
    // Pings exist to keep the host's fence timer fresh: after a stall send
    // one now, not a burst.
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = reset.cancelled() => {
                tracing::info!(%host_id, "resetting the Connect stream for a fresh hello");
                break;
            }
            _ = ping.tick() => {
                let p = Ping { sent_at: Some(ipa_proto::time::timestamp(SystemTime::now())) };
                let _ = out_tx.try_send(CentralMessage { msg: Some(central_message::Msg::Ping(p)) });
            }
            msg = inbound.message() => {
                let (at, wall) = (Instant::now(), SystemTime::now());
                let event = match msg {
                    Ok(Some(HostMessage { msg: Some(host_message::Msg::Heartbeat(hb)) })) => {
                        let running = clamp_count(hb.running_pods);
                        if contact(hosts, &host_id, at, wall, Some(hb.draining), Some(running)) {
                            break;
                        }
                        None
                    }
                    Ok(Some(HostMessage { msg: Some(host_message::Msg::PodEvent(event)) })) => {
                        if contact(hosts, &host_id, at, wall, None, None) {
                            break;
                        }
                        Some(event)
                    }
                    Ok(Some(other)) => {
                        tracing::warn!(%host_id, ?other, "unexpected message on Connect stream; ignored");
                        None
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::info!(%host_id, error = %e, "Connect stream failed");
                        break;
                    }
                };
                if let Some(event) = event {
                    if !overflowed && in_flight.load(Ordering::Acquire) >= MAX_IN_FLIGHT {
                        tracing::warn!(%host_id, MAX_IN_FLIGHT,
                            "supervisor backlog full; holding this host's events until it catches up");
                        overflowed = true;
                    }
                    if !overflowed {
                        let update = HostUpdate::PodEvent {
                            host_id: host_id.clone(),
                            boot_id: boot_id.clone(),
                            event,
                            in_flight: InFlight::new(&in_flight),
                        };
                        if updates.send(update).is_err() {
                            break;
                        }
                    }
                }
                if overflowed && in_flight.load(Ordering::Acquire) == 0 {
                    tracing::info!(%host_id, "supervisor caught up; reconnecting so the host replays held events");
                    break;
                }
            }
        }
    }
    hosts.remove_session(&host_id, &boot_id, endpoint);
    tracing::info!(%endpoint, %host_id, "pod-host session ended");
    End::Served
}

/// Records a message from the host. True when the stream must be reset for
/// a fresh hello: the host was UNREACHABLE (its pods' state is not assumed,
/// the hello's snapshot is reconciled) or LOST (its pods were given up).
fn contact(
    hosts: &HostDirectory,
    host_id: &str,
    at: Instant,
    wall: SystemTime,
    draining: Option<bool>,
    running: Option<u32>,
) -> bool {
    if let Some(t) = hosts.contact(host_id, at, wall, draining, running) {
        tracing::info!(%host_id, from = ?t.from, to = ?t.to, "pod-host state");
        if t.from == HostState::Unreachable {
            return true;
        }
    }
    hosts.state(host_id) == Some(HostState::Lost)
}

type Opened = (
    HostHello,
    tonic::Streaming<HostMessage>,
    PodHostClient<Channel>,
    mpsc::Sender<CentralMessage>,
);

/// Dials, sends the CentralHello (with the resume point) and waits for the
/// host's hello.
async fn open(
    endpoint: &str,
    config: &SessionConfig,
    hosts: &HostDirectory,
) -> Result<Opened, String> {
    let channel = dial(endpoint, config.tls.as_ref()).await?;
    let mut client =
        PodHostClient::with_interceptor(channel, ipa_common::trace_context::InjectTraceContext);
    let (out_tx, out_rx) = mpsc::channel(OUTBOUND_CAPACITY);
    let (known_boot_id, acked_seq) = hosts.resume_point(endpoint).unwrap_or_default();
    let hello = CentralHello {
        heartbeat_interval_ms: u32::try_from(config.heartbeat_interval.as_millis())
            .unwrap_or(u32::MAX),
        known_boot_id,
        acked_seq,
        central_id: config.central_id.clone(),
    };
    out_tx
        .send(CentralMessage {
            msg: Some(central_message::Msg::Hello(hello)),
        })
        .await
        .map_err(|_| "outbound closed".to_string())?;
    let mut inbound = client
        .connect(ReceiverStream::new(out_rx))
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
        .await
        .map_err(|_| "no hello in time".to_string())?
        .map_err(|e| e.to_string())?;
    match first {
        Some(HostMessage {
            msg: Some(host_message::Msg::Hello(hello)),
        }) => Ok((hello, inbound, client, out_tx)),
        _ => Err("first message was not a hello".into()),
    }
}
