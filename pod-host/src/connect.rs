//! The Connect session: the supervision stream to central-manager.
//!
//! On open the host first reads the central's first message (central sends
//! its CentralHello without waiting for the host's): its `epoch` decides
//! whether the Connect is accepted at all (`crate::epoch`; a stale one is
//! refused with STALE_EPOCH before anything is sent or changed). Then the
//! host sends its HostHello (snapshot of every pod, exited-but-unacknowledged
//! ones included, and `last_seq`). A CentralHello sets the heartbeat
//! interval and the replay point: when its `known_boot_id` is this boot,
//! events after its `acked_seq` are replayed (and everything up to it
//! counts as acknowledged); otherwise the whole unacknowledged buffer is.
//! After that the session sends heartbeats every interval and each new
//! event as it is issued, in sequence order, from the same buffer, so
//! replay and live events are one path and an event can neither be skipped
//! nor reordered.
//!
//! Every message received counts as contact for self-fencing (checked for a
//! missed deadline first, see `fence`). Acks drop events from the buffer.
//! Once a newer leader epoch was seen the session is stale: it ends, and
//! nothing it still delivers counts as contact or acks anything.
//!
//! Only one session at a time: an accepted Connect cancels the previous one
//! (its response stream ends), so a reconnecting central never competes with
//! its own half-dead stream. With `--client-ca` only an allowed client gets
//! this far (`gate`), and a Connect without a verified identity is refused
//! here too, before it can touch the current session: a rogue stream could
//! otherwise keep the fence timer fresh or ack away pod exits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt};
use ipa_proto::time::timestamp;
use ipa_proto::v1 as pb;
use pb::central_message::Msg as CentralMsg;
use pb::host_message::Msg as HostMsg;
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::Status;
use tracing::Instrument;

use crate::convert;
use crate::epoch::{Leadership, Session};
use crate::error::HostError;
use crate::fence::Proof;
use crate::pods::Supervisor;

/// Heartbeat interval when the central asks for 0.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(500);

/// Bounds on the heartbeat interval central asks for: a confused central
/// must not make the host spin, nor silence it for so long that it looks
/// lost.
const MIN_HEARTBEAT: Duration = Duration::from_millis(10);
const MAX_HEARTBEAT: Duration = Duration::from_secs(60);

/// How long a Connect may take to deliver the central's first message
/// (central queues it before the call even opens).
pub const HELLO_WAIT: Duration = Duration::from_secs(10);

/// Outbound messages buffered per session before the session waits for the
/// central to read (HTTP/2 flow control does the rest).
const OUTBOUND_BUFFER: usize = 256;

pub type HostStream = ReceiverStream<Result<pb::HostMessage, Status>>;

/// A hello must fit one message (4 MiB, see `server`) however many pods
/// the host knows and whatever they reported: what the pods' messages may
/// take after this much is set aside for the rest of the hello.
const HELLO_RESERVED: usize = 512 * 1024;
/// Generous size of a snapshot entry without its messages (ids, times,
/// exit status, a 64-character template name).
const POD_ENTRY_BYTES: usize = 230;

/// Cuts the pods' status and exit messages so the hello (or a ListPods
/// answer, the same pods) fits in a message: each pod gets an equal share of what is left after the fixed
/// part of every entry. (Central needs the phases, versions and exits;
/// the messages are only human detail.)
pub fn fit_messages(pods: &mut [pb::PodInfo]) {
    let budget = crate::server::MAX_MESSAGE_BYTES
        .saturating_sub(HELLO_RESERVED)
        .saturating_sub(pods.len().saturating_mul(POD_ENTRY_BYTES));
    let share = budget / pods.len().max(1) / 2;
    for p in pods {
        truncate(&mut p.message, share);
        if let Some(e) = p.exit.as_mut() {
            truncate(&mut e.message, share);
        }
    }
}

/// `s` cut to at most `max` bytes at a char boundary.
fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// The current session, if any, and the highest leader epoch seen.
pub struct Sessions {
    sup: Arc<Supervisor>,
    /// `--client-ca`: a Connect must come with a verified identity.
    require_identity: bool,
    lead: Leadership,
    next_id: AtomicU64,
    /// Highest event sequence written to the current session's stream.
    sent: watch::Sender<u64>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Sessions {
    /// `shutdown` ends every session (the server is stopping).
    pub fn new(sup: Arc<Supervisor>, shutdown: CancellationToken, tracker: TaskTracker) -> Self {
        Self {
            sup,
            require_identity: false,
            lead: Leadership::default(),
            next_id: AtomicU64::new(1),
            sent: watch::channel(0).0,
            shutdown,
            tracker,
        }
    }

    /// Requires a verified client identity for every Connect.
    pub fn requiring_identity(mut self) -> Self {
        self.require_identity = true;
        self
    }

    /// The leader epochs seen (StartPod and StopPod are checked here too).
    pub fn leadership(&self) -> &Leadership {
        &self.lead
    }

    /// Starts a session on a new Connect stream from `client` (the verified
    /// certificate's principal, if any), replacing any previous one, once
    /// the central's first message arrived. Without an identity where one
    /// is required, or with a stale epoch, it is refused and the current
    /// session carries on.
    pub async fn open<S>(
        self: &Arc<Self>,
        mut inbound: S,
        client: Option<&str>,
    ) -> Result<HostStream, Status>
    where
        S: Stream<Item = Result<pb::CentralMessage, Status>> + Send + Unpin + 'static,
    {
        if self.require_identity && client.is_none() {
            tracing::warn!("Connect without a verified client certificate refused");
            return Err(HostError::Unauthenticated(
                "Connect requires a client certificate from this pod-host's --client-ca".into(),
            )
            .into());
        }
        let first = tokio::select! {
            _ = self.shutdown.cancelled() => return Err(HostError::ShuttingDown.into()),
            m = tokio::time::timeout(HELLO_WAIT, inbound.next()) => m,
        };
        let first = match first {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => {
                tracing::info!(status = %e, "Connect stream failed before the central's hello");
                return Err(e);
            }
            Ok(None) => {
                return Err(HostError::invalid(
                    "hello",
                    "the Connect stream ended before the central's first message",
                )
                .into());
            }
            Err(_) => {
                return Err(HostError::invalid(
                    "hello",
                    format!(
                        "no message from the central within {} ms of the Connect",
                        HELLO_WAIT.as_millis()
                    ),
                )
                .into());
            }
        };
        // Not a hello: an older or confused central; epoch 0, the oldest.
        let epoch = match &first.msg {
            Some(CentralMsg::Hello(h)) => h.epoch,
            _ => 0,
        };
        let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cancel = self.shutdown.child_token();
        let previous = self.lead.admit_session(Session {
            id,
            epoch,
            cancel: cancel.clone(),
        })?;
        if let Some(old) = previous {
            tracing::info!(
                old_session = old.id,
                old_epoch = old.epoch,
                session = id,
                epoch,
                client = client.unwrap_or("-"),
                "new Connect replaces the previous session"
            );
        }
        self.sup.contact(Proof::Arrival);
        let this = self.clone();
        self.tracker.spawn(
            async move {
                this.run(first, inbound, epoch, tx, cancel).await;
                this.lead.end(id);
            }
            .instrument(tracing::info_span!(
                "connect",
                session = id,
                epoch,
                client = client.unwrap_or("-")
            )),
        );
        Ok(ReceiverStream::new(rx))
    }

    /// Whether a central is connected.
    pub fn active(&self) -> bool {
        self.lead.active()
    }

    /// Waits (up to `limit`) until every issued event was written to the
    /// connected central's stream; returns at once without a session.
    pub async fn flush(&self, limit: Duration) {
        if !self.active() {
            return;
        }
        let last = self.sup.last_seq();
        let mut rx = self.sent.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|s| *s >= last)).await;
    }

    /// The session after the central's `first` message (already counted
    /// as contact): hello, replay, then heartbeats, events and whatever
    /// central sends, until it ends, is replaced or its `epoch` is stale.
    async fn run<S>(
        &self,
        first: pb::CentralMessage,
        mut inbound: S,
        epoch: u64,
        tx: mpsc::Sender<Result<pb::HostMessage, Status>>,
        cancel: CancellationToken,
    ) where
        S: Stream<Item = Result<pb::CentralMessage, Status>> + Unpin,
    {
        let sup = &self.sup;
        let out = Out {
            tx: &tx,
            cancel: &cancel,
        };
        if !out.send(HostMsg::Hello(self.hello())).await {
            return;
        }

        // The central's first message decides replay and heartbeat.
        if !self.stale_check(epoch) {
            return;
        }
        let (mut cursor, interval) = match first.msg {
            Some(CentralMsg::Hello(h)) => {
                let interval = match h.heartbeat_interval_ms {
                    0 => DEFAULT_HEARTBEAT,
                    ms => Duration::from_millis(ms.into()).clamp(MIN_HEARTBEAT, MAX_HEARTBEAT),
                };
                let cursor = if h.known_boot_id == sup.boot_id() {
                    let acked = h.acked_seq.min(sup.last_seq());
                    sup.ack(acked);
                    acked
                } else {
                    0
                };
                tracing::info!(
                    central_id = %h.central_id,
                    epoch,
                    heartbeat_ms = interval.as_millis() as u64,
                    replay_after = cursor,
                    same_boot = h.known_boot_id == sup.boot_id(),
                    "central connected"
                );
                (cursor, interval)
            }
            other => {
                tracing::warn!("central's first message was not a hello; using defaults");
                if let Some(CentralMsg::Ack(a)) = other {
                    sup.ack(a.seq);
                }
                (0, DEFAULT_HEARTBEAT)
            }
        };
        self.sent.send_replace(cursor);

        let mut events = sup.subscribe_events();
        events.mark_changed();
        let mut heartbeat = tokio::time::interval(interval);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                m = inbound.next() => match m {
                    Some(Ok(m)) => {
                        // A deposed leader's messages prove nothing.
                        if !self.stale_check(epoch) {
                            return;
                        }
                        // Only a ping's echo moves the lease (crate::fence).
                        let proof = match &m.msg {
                            Some(CentralMsg::Ping(p)) => sup.proof(p.echo_host_clock_ms),
                            _ => Proof::Arrival,
                        };
                        sup.contact(proof);
                        match m.msg {
                            Some(CentralMsg::Ack(a)) => sup.ack(a.seq),
                            Some(CentralMsg::Ping(_)) | None => {}
                            Some(CentralMsg::Hello(_)) => {
                                tracing::debug!("ignoring a repeated CentralHello");
                            }
                        }
                    }
                    None => {
                        tracing::info!("central closed the Connect stream");
                        return;
                    }
                    Some(Err(e)) => {
                        tracing::info!(status = %e, "Connect stream failed");
                        return;
                    }
                },
                changed = events.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    for e in sup.events_after(cursor) {
                        let seq = e.seq;
                        if !out.send(HostMsg::PodEvent(convert::event(&e))).await {
                            return;
                        }
                        cursor = seq;
                        self.sent.send_replace(cursor);
                    }
                }
                _ = heartbeat.tick() => {
                    let hb = pb::Heartbeat {
                        sent_at: Some(timestamp(std::time::SystemTime::now())),
                        last_seq: sup.last_seq(),
                        running_pods: u32::try_from(sup.live_pods()).unwrap_or(u32::MAX),
                        draining: sup.draining(),
                        host_clock_ms: sup.host_clock_ms(),
                    };
                    if !out.send(HostMsg::Heartbeat(hb)).await {
                        return;
                    }
                }
            }
        }
    }

    /// Whether a session of `epoch` may still act; logs its end when a
    /// newer epoch was seen (the session is being cancelled already).
    fn stale_check(&self, epoch: u64) -> bool {
        let current = self.lead.is_current(epoch);
        if !current {
            tracing::info!(
                epoch,
                newest = self.lead.highest(),
                "a newer leader epoch was seen: this session's messages no longer count; ending it"
            );
        }
        current
    }

    fn hello(&self) -> pb::HostHello {
        let cfg = self.sup.config();
        let snap = self.sup.hello();
        let mut pods: Vec<pb::PodInfo> = snap.pods.iter().map(convert::pod).collect();
        fit_messages(&mut pods);
        pb::HostHello {
            host_id: cfg.host_id.clone(),
            boot_id: self.sup.boot_id().to_owned(),
            capacity: cfg.capacity,
            templates: cfg.templates.names(),
            pods,
            fence_timeout_ms: u32::try_from(cfg.fence_timeout.as_millis()).unwrap_or(u32::MAX),
            last_seq: snap.last_seq,
            self_fenced: snap.self_fenced,
            draining: snap.draining,
            host_clock_ms: self.sup.host_clock_ms(),
        }
    }
}

struct Out<'a> {
    tx: &'a mpsc::Sender<Result<pb::HostMessage, Status>>,
    cancel: &'a CancellationToken,
}

impl Out<'_> {
    /// Sends one message; false when the session is over (cancelled, or the
    /// central stopped reading and the stream was dropped).
    async fn send(&self, msg: HostMsg) -> bool {
        let m = pb::HostMessage { msg: Some(msg) };
        tokio::select! {
            _ = self.cancel.cancelled() => false,
            r = self.tx.send(Ok(m)) => r.is_ok(),
        }
    }
}

#[cfg(test)]
mod epoch_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn pod(message: &str) -> pb::PodInfo {
        pb::PodInfo {
            task_id: uuid::Uuid::new_v4().to_string(),
            pod_id: uuid::Uuid::new_v4().to_string(),
            generation: 1_000_000,
            template: "t".repeat(64),
            pid: 4_000_000,
            state: pb::PodState::Exited as i32,
            phase: pb::Phase::Review as i32,
            version: u64::MAX,
            message: message.to_owned(),
            started_at: Some(timestamp(std::time::SystemTime::now())),
            exit: Some(pb::PodExit {
                exit_code: Some(-1),
                signal: Some(9),
                cause: pb::ExitCause::SelfFenced as i32,
                reported_completed: true,
                exited_at: Some(timestamp(std::time::SystemTime::now())),
                message: message.to_owned(),
            }),
        }
    }

    /// The most pods a host can report (capacity + unacknowledged exits),
    /// each with the longest messages, still make one message.
    #[test]
    fn a_hello_fits_in_a_message_whatever_the_pods_reported() {
        let long = "é".repeat(crate::status::MAX_MESSAGE_BYTES / 2);
        let most = *crate::config::CAPACITY_RANGE.end() as usize + crate::pods::MAX_UNACKED_EXITED;
        for n in [1, 100, 1000, most] {
            let mut pods: Vec<_> = (0..n).map(|_| pod(&long)).collect();
            fit_messages(&mut pods);
            let hello = pb::HostHello {
                host_id: "h".repeat(253),
                boot_id: uuid::Uuid::new_v4().to_string(),
                capacity: 10_000,
                templates: (0..100).map(|i| format!("{i:064}")).collect(),
                pods,
                ..Default::default()
            };
            let size = pb::HostMessage {
                msg: Some(HostMsg::Hello(hello.clone())),
            }
            .encoded_len();
            assert!(
                size < crate::server::MAX_MESSAGE_BYTES,
                "{n} pods: {size} bytes"
            );
            // Few pods keep their messages whole.
            if n <= 100 {
                assert_eq!(hello.pods[0].message, long);
            }
            assert!(
                hello
                    .pods
                    .iter()
                    .all(|p| p.message.is_char_boundary(p.message.len()))
            );
        }
    }
}
