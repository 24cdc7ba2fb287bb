//! One supervision session per pod-host endpoint: dial, open the `Connect`
//! stream, say hello, then forward everything the host sends to the single
//! consumer (the supervisor) and carry the consumer's acks back, pinging at
//! the heartbeat interval so the host's fence timer stays fresh. When the
//! stream ends the session reports it and redials with backoff and jitter,
//! until cancelled.
//!
//! Every update carries the monotonic instant the message *arrived*, so a
//! busy consumer cannot make a host look silent.

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

/// What a session tells the supervisor.
#[derive(Debug)]
pub enum HostUpdate {
    /// The stream is open and the host said hello.
    Connected {
        hello: HostHello,
        handle: SessionHandle,
        at: Instant,
        wall: SystemTime,
    },
    /// A heartbeat arrived.
    Heartbeat {
        host_id: String,
        last_seq: u64,
        running_pods: u32,
        draining: bool,
        at: Instant,
        wall: SystemTime,
    },
    /// A pod event arrived; ack `event.seq` once its effects are committed.
    PodEvent {
        host_id: String,
        boot_id: String,
        event: PodEvent,
        at: Instant,
        wall: SystemTime,
    },
    /// The stream ended (the host may still be alive: timers decide).
    Disconnected {
        host_id: String,
        boot_id: String,
        endpoint: String,
    },
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

/// Resume point for a host: the boot the central last saw and the last
/// sequence it committed. Kept by the supervisor, read at each (re)dial.
pub trait ResumePoint: Send + Sync + 'static {
    fn resume_point(&self, endpoint: &str) -> Option<(String, u64)>;
}

/// Runs the session for `endpoint` until `cancel`.
pub async fn run(
    endpoint: String,
    config: SessionConfig,
    resume: std::sync::Arc<dyn ResumePoint>,
    updates: mpsc::Sender<HostUpdate>,
    cancel: CancellationToken,
) {
    let mut attempt: u32 = 0;
    loop {
        if cancel.is_cancelled() {
            return;
        }
        match connect_once(&endpoint, &config, resume.as_ref(), &updates, &cancel).await {
            Ok(()) => attempt = 0,
            Err(e) => {
                // The first failure in a row is worth an operator's eye (a
                // refused certificate looks exactly like this); the retries
                // that follow are not.
                if attempt == 0 {
                    tracing::warn!(%endpoint, error = %e, "pod-host session failed; retrying with backoff");
                } else {
                    tracing::debug!(%endpoint, error = %e, attempt, "pod-host session failed");
                }
                attempt = attempt.saturating_add(1);
            }
        }
        let wait = backoff::delay(
            RECONNECT_INITIAL,
            RECONNECT_MAX,
            attempt,
            rand::random::<f64>(),
        );
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

/// One connection: `Ok` if a hello was received (so the next dial starts
/// with a short backoff), `Err` otherwise.
async fn connect_once(
    endpoint: &str,
    config: &SessionConfig,
    resume: &dyn ResumePoint,
    updates: &mpsc::Sender<HostUpdate>,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let channel = dial(endpoint, config.tls.as_ref()).await?;
    let mut client =
        PodHostClient::with_interceptor(channel, ipa_common::trace_context::InjectTraceContext);
    let (out_tx, out_rx) = mpsc::channel(OUTBOUND_CAPACITY);
    let (known_boot_id, acked_seq) = resume.resume_point(endpoint).unwrap_or_default();
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
    let Some(HostMessage {
        msg: Some(host_message::Msg::Hello(hello)),
    }) = first
    else {
        return Err("first message was not a hello".into());
    };
    let host_id = hello.host_id.clone();
    let boot_id = hello.boot_id.clone();
    let reset = cancel.child_token();
    let handle = SessionHandle {
        endpoint: endpoint.to_owned(),
        host_id: host_id.clone(),
        boot_id: boot_id.clone(),
        client,
        out: out_tx.clone(),
        reset: reset.clone(),
    };
    let connected = HostUpdate::Connected {
        hello,
        handle,
        at: Instant::now(),
        wall: SystemTime::now(),
    };
    if updates.send(connected).await.is_err() {
        return Ok(());
    }
    tracing::info!(%endpoint, %host_id, %boot_id, "pod-host connected");

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
                let update = match msg {
                    Ok(Some(HostMessage { msg: Some(host_message::Msg::Heartbeat(hb)) })) => HostUpdate::Heartbeat {
                        host_id: host_id.clone(),
                        last_seq: hb.last_seq,
                        running_pods: hb.running_pods,
                        draining: hb.draining,
                        at,
                        wall,
                    },
                    Ok(Some(HostMessage { msg: Some(host_message::Msg::PodEvent(event)) })) => HostUpdate::PodEvent {
                        host_id: host_id.clone(),
                        boot_id: boot_id.clone(),
                        event,
                        at,
                        wall,
                    },
                    Ok(Some(other)) => {
                        tracing::warn!(%host_id, ?other, "unexpected message on Connect stream; ignored");
                        continue;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::info!(%host_id, error = %e, "Connect stream failed");
                        break;
                    }
                };
                if updates.send(update).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = updates
        .send(HostUpdate::Disconnected {
            host_id,
            boot_id,
            endpoint: endpoint.to_owned(),
        })
        .await;
    Ok(())
}
