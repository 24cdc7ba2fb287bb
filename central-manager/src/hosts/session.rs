//! One supervision session per pod-host endpoint: dial, open the `Connect`
//! stream, say hello, then keep reading everything the host sends, pinging
//! at the heartbeat interval so the host's fence timer stays fresh. When
//! the stream ends the session redials with backoff and jitter, until
//! cancelled.
//!
//! This is core logic over ports: the host is reached through a
//! [`Dialer`] (gRPC in production, `hosts::grpc`; the simulator's network
//! in `sim/`), messages are domain types, time and jitter come from the
//! clock and entropy ports.
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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::directory::{HostDirectory, HostState};
use super::hello::{accept_hello, clamp_count};
use super::registry::HelloOutcome;
use crate::core::ports::{Clock, Dialer, Entropy, HostCommands, Link};
use crate::domain::backoff;
use crate::domain::host::{CentralMessage, Hello, HostMessage, PodEvent};

/// Reconnect backoff: first retry after ~100 ms, at most ~5 s apart. Short
/// enough that a host back from a blip rejoins well inside the
/// unreachable timeout's order of magnitude.
const RECONNECT_INITIAL: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// How long a host has to send its hello after the stream opens.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
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
        hello: Hello,
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
#[derive(Clone)]
pub struct SessionHandle {
    pub endpoint: String,
    pub host_id: String,
    pub boot_id: String,
    /// The host's commands, over the same connection.
    pub commands: Arc<dyn HostCommands>,
    /// The newest host clock received on this session, echoed in pings and
    /// StartPods (the host's lease, see [`HostClock`]).
    pub host_clock: HostClock,
    out: mpsc::Sender<CentralMessage>,
    /// Ends this connection (the session then redials and the host says
    /// hello again).
    reset: CancellationToken,
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle")
            .field("endpoint", &self.endpoint)
            .field("host_id", &self.host_id)
            .field("boot_id", &self.boot_id)
            .finish_non_exhaustive()
    }
}

impl SessionHandle {
    /// Acknowledges every event up to `seq`. Never blocks: if the outbound
    /// buffer is full the ack is dropped, and the next one covers it.
    pub fn ack(&self, seq: u64) {
        let _ = self.out.try_send(CentralMessage::Ack(seq));
    }

    /// Drops this connection so the host reconnects with a fresh hello,
    /// e.g. after it was declared LOST while its stream stayed open.
    pub fn reset(&self) {
        self.reset.cancel();
    }
}

/// The newest reading of a host's clock (ms since its boot, from its hello
/// and heartbeats) that central has received on one session. Central
/// echoes it in every ping and StartPod; the host's lease runs a fence
/// timeout from that instant of its own clock, which is never later than
/// when central heard from it, so the host stops its pods before central's
/// fence deadline even when a ping or StartPod is held up in the network
/// (docs/architecture.md, "Failure model"). Cheap to clone; clones share it.
#[derive(Debug, Clone, Default)]
pub struct HostClock(Arc<AtomicU64>);

impl HostClock {
    /// Records a reading (readings only move forward).
    pub fn observe(&self, ms: u64) {
        self.0.fetch_max(ms, Ordering::AcqRel);
    }

    /// The newest reading (0: none yet).
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// Settings of all sessions.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub heartbeat_interval: Duration,
    pub central_id: String,
}

/// What every session works with. Cheap to clone.
#[derive(Clone)]
pub struct SessionEnv {
    pub config: SessionConfig,
    /// How hosts are reached (gRPC in production).
    pub dialer: Arc<dyn Dialer>,
    pub hosts: HostDirectory,
    pub updates: mpsc::UnboundedSender<HostUpdate>,
    pub clock: Arc<dyn Clock>,
    pub entropy: Arc<dyn Entropy>,
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
pub async fn run(endpoint: String, env: SessionEnv, cancel: CancellationToken) {
    let mut attempt: u32 = 0;
    loop {
        if cancel.is_cancelled() {
            return;
        }
        let wait = match connect_once(&endpoint, &env, &cancel).await {
            End::Served => {
                attempt = 0;
                backoff::delay(RECONNECT_INITIAL, RECONNECT_MAX, 0, env.entropy.jitter())
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
                    env.entropy.jitter(),
                )
            }
            End::Refused => REFUSED_RETRY,
        };
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One connection, from dial to the end of the stream.
async fn connect_once(endpoint: &str, env: &SessionEnv, cancel: &CancellationToken) -> End {
    let (hello, link) = match open(endpoint, env).await {
        Ok(v) => v,
        Err(e) => return End::Failed(e),
    };
    let (at, wall) = (env.clock.now(), env.clock.wall());
    let entry = match accept_hello(&hello, endpoint) {
        Ok(e) => e,
        Err(why) => {
            tracing::warn!(%endpoint, %why, "pod-host hello refused");
            return End::Refused;
        }
    };
    let host_clock = HostClock::default();
    host_clock.observe(hello.host_clock_ms);
    let mut session = Session {
        host_id: entry.host_id.clone(),
        boot_id: entry.boot_id.clone(),
        env,
        host_clock: host_clock.clone(),
        in_flight: Arc::new(AtomicUsize::new(0)),
        overflowed: false,
    };
    let reset = cancel.child_token();
    let handle = SessionHandle {
        endpoint: endpoint.to_owned(),
        host_id: session.host_id.clone(),
        boot_id: session.boot_id.clone(),
        commands: link.commands.clone(),
        host_clock,
        out: link.outbound.clone(),
        reset: reset.clone(),
    };
    let outcome = match env.hosts.register_hello(entry, handle.clone(), at, wall) {
        Ok(o) => o,
        Err(holder) => {
            tracing::warn!(%endpoint, host_id = %session.host_id, held_by = %holder,
                "pod-host hello refused: another endpoint holds this host id (shown as conflict_endpoint)");
            return End::Refused;
        }
    };
    let new_boot =
        matches!(&outcome, HelloOutcome::NewBoot { previous_boot } if !previous_boot.is_empty());
    tracing::info!(%endpoint, host_id = %session.host_id, boot_id = %session.boot_id, ?outcome,
        self_fenced = hello.self_fenced, "pod-host connected");
    let connected = HostUpdate::Connected {
        hello,
        new_boot,
        handle,
    };
    if env.updates.send(connected).is_ok() {
        session.serve(link, &reset).await;
    }
    env.hosts
        .remove_session(&session.host_id, &session.boot_id, endpoint);
    tracing::info!(%endpoint, host_id = %session.host_id, "pod-host session ended");
    End::Served
}

/// Dials, sends the central's hello (with the resume point) and waits for
/// the host's hello.
async fn open(endpoint: &str, env: &SessionEnv) -> Result<(Hello, Link), String> {
    let (known_boot_id, acked_seq) = env.hosts.resume_point(endpoint).unwrap_or_default();
    let first = CentralMessage::Hello {
        heartbeat_interval_ms: u32::try_from(env.config.heartbeat_interval.as_millis())
            .unwrap_or(u32::MAX),
        known_boot_id,
        acked_seq,
        central_id: env.config.central_id.clone(),
    };
    let mut link = env.dialer.open(endpoint, first).await?;
    let first = tokio::time::timeout(HELLO_TIMEOUT, link.inbound.next())
        .await
        .map_err(|_| "no hello in time".to_string())?;
    match first {
        Some(Ok(HostMessage::Hello(hello))) => Ok((hello, link)),
        Some(Err(e)) => Err(e),
        _ => Err("first message was not a hello".into()),
    }
}

/// One accepted connection's state.
struct Session<'a> {
    host_id: String,
    boot_id: String,
    env: &'a SessionEnv,
    /// The newest host clock reading received on this stream.
    host_clock: HostClock,
    /// Pod events handed to the supervisor and not yet done with.
    in_flight: Arc<AtomicUsize>,
    /// Set once events were dropped for backlog: from then on none is
    /// forwarded (order!) until the supervisor caught up and a reconnect
    /// makes the host replay them.
    overflowed: bool,
}

/// What to do after a message.
enum Next {
    Continue,
    /// End this connection (the session redials).
    Close,
}

impl Session<'_> {
    /// Reads everything the host sends until the stream ends or must be
    /// reset, pinging every heartbeat interval.
    async fn serve(&mut self, mut link: Link, reset: &CancellationToken) {
        let mut ping = tokio::time::interval(self.env.config.heartbeat_interval);
        // Pings exist to keep the host's fence timer fresh: after a stall
        // send one now, not a burst.
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = reset.cancelled() => {
                    tracing::info!(host_id = %self.host_id, "resetting the Connect stream for a fresh hello");
                    break;
                }
                // Before the inbound stream, so a long replay cannot starve
                // the pings that keep the host's fence timer fresh.
                _ = ping.tick() => {
                    let ping = CentralMessage::Ping { echo_host_clock_ms: self.host_clock.get() };
                    let _ = link.outbound.try_send(ping);
                }
                msg = link.inbound.next() => {
                    let at = self.env.clock.now();
                    let wall = self.env.clock.wall();
                    let next = match msg {
                        Some(Ok(m)) => self.on_message(m, at, wall),
                        None => Next::Close,
                        Some(Err(e)) => {
                            tracing::info!(host_id = %self.host_id, error = %e, "Connect stream failed");
                            Next::Close
                        }
                    };
                    if let Next::Close = next {
                        break;
                    }
                }
            }
        }
    }

    /// Handles one message from the host.
    fn on_message(&mut self, msg: HostMessage, at: Instant, wall: SystemTime) -> Next {
        let event = match msg {
            HostMessage::Heartbeat {
                running_pods,
                draining,
                host_clock_ms,
                ..
            } => {
                self.host_clock.observe(host_clock_ms);
                let running = clamp_count(running_pods);
                if self.contact(at, wall, Some(draining), Some(running)) {
                    return Next::Close;
                }
                return Next::Continue;
            }
            HostMessage::PodEvent(event) => {
                if self.contact(at, wall, None, None) {
                    return Next::Close;
                }
                event
            }
            HostMessage::Hello(_) => {
                tracing::warn!(host_id = %self.host_id, "unexpected hello on an open Connect stream; ignored");
                return Next::Continue;
            }
        };
        if !self.overflowed && self.in_flight.load(Ordering::Acquire) >= MAX_IN_FLIGHT {
            tracing::warn!(host_id = %self.host_id, MAX_IN_FLIGHT,
                "supervisor backlog full; holding this host's events until it catches up");
            self.overflowed = true;
        }
        if !self.overflowed {
            let update = HostUpdate::PodEvent {
                host_id: self.host_id.clone(),
                boot_id: self.boot_id.clone(),
                event,
                in_flight: InFlight::new(&self.in_flight),
            };
            if self.env.updates.send(update).is_err() {
                return Next::Close;
            }
        }
        if self.overflowed && self.in_flight.load(Ordering::Acquire) == 0 {
            tracing::info!(host_id = %self.host_id, "supervisor caught up; reconnecting so the host replays held events");
            return Next::Close;
        }
        Next::Continue
    }

    /// Records a message from the host. True when the stream must be reset
    /// for a fresh hello: the host was UNREACHABLE (its pods' state is not
    /// assumed, the hello's snapshot is reconciled) or LOST (its pods were
    /// given up).
    fn contact(
        &self,
        at: Instant,
        wall: SystemTime,
        draining: Option<bool>,
        running: Option<u32>,
    ) -> bool {
        let hosts = &self.env.hosts;
        if let Some(t) = hosts.contact(&self.host_id, at, wall, draining, running) {
            tracing::info!(host_id = %self.host_id, from = ?t.from, to = ?t.to, "pod-host state");
            if t.from == HostState::Unreachable {
                return true;
            }
        }
        hosts.state(&self.host_id) == Some(HostState::Lost)
    }
}
