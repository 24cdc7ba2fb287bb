//! The Connect session: the supervision stream to central-manager.
//!
//! On open the host sends its HostHello at once (snapshot of every pod,
//! exited-but-unacknowledged ones included, and `last_seq`), then waits for
//! the central's first message. A CentralHello sets the heartbeat interval
//! and the replay point: when its `known_boot_id` is this boot, events after
//! its `acked_seq` are replayed (and everything up to it counts as
//! acknowledged); otherwise the whole unacknowledged buffer is. After that
//! the session sends heartbeats every interval and each new event as it is
//! issued, in sequence order, from the same buffer, so replay and live
//! events are one path and an event can neither be skipped nor reordered.
//!
//! Every message received counts as contact for self-fencing (checked for a
//! missed deadline first, see `fence`). Acks drop events from the buffer.
//!
//! Only one session at a time: a new Connect cancels the previous one
//! (its response stream ends), so a reconnecting central never competes with
//! its own half-dead stream. With `--client-ca` only an allowed client gets
//! this far (`gate`), and a Connect without a verified identity is refused
//! here too, before it can touch the current session: a rogue stream could
//! otherwise keep the fence timer fresh or ack away pod exits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipa_proto::time::timestamp;
use ipa_proto::v1 as pb;
use pb::central_message::Msg as CentralMsg;
use pb::host_message::Msg as HostMsg;
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Status, Streaming};
use tracing::Instrument;

use crate::convert;
use crate::pods::Supervisor;

/// Heartbeat interval when the central asks for 0.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(500);

/// Lower bound on the heartbeat interval: a confused central must not make
/// the host spin.
const MIN_HEARTBEAT: Duration = Duration::from_millis(10);

/// Outbound messages buffered per session before the session waits for the
/// central to read (HTTP/2 flow control does the rest).
const OUTBOUND_BUFFER: usize = 256;

pub type HostStream = ReceiverStream<Result<pb::HostMessage, Status>>;

/// The current session, if any.
pub struct Sessions {
    sup: Arc<Supervisor>,
    /// `--client-ca`: a Connect must come with a verified identity.
    require_identity: bool,
    current: Mutex<Option<(u64, CancellationToken)>>,
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
            current: Mutex::new(None),
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

    /// Starts a session on a new Connect stream from `client` (the verified
    /// certificate's principal, if any), replacing any previous one. Without
    /// an identity where one is required it is refused and the current
    /// session carries on.
    pub fn open(
        self: &Arc<Self>,
        inbound: Streaming<pb::CentralMessage>,
        client: Option<&str>,
    ) -> Result<HostStream, crate::error::HostError> {
        if self.require_identity && client.is_none() {
            tracing::warn!("Connect without a verified client certificate refused");
            return Err(crate::error::HostError::Unauthenticated(
                "Connect requires a client certificate from this pod-host's --client-ca".into(),
            ));
        }
        let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cancel = self.shutdown.child_token();
        let previous = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace((id, cancel.clone()));
        if let Some((old, token)) = previous {
            tracing::info!(
                old_session = old,
                session = id,
                client = client.unwrap_or("-"),
                "new Connect replaces the previous session"
            );
            token.cancel();
        }
        let this = self.clone();
        self.tracker.spawn(
            async move {
                this.run(inbound, tx, cancel).await;
                let mut cur = this.current.lock().unwrap_or_else(|e| e.into_inner());
                if cur.as_ref().is_some_and(|(i, _)| *i == id) {
                    *cur = None;
                }
            }
            .instrument(tracing::info_span!(
                "connect",
                session = id,
                client = client.unwrap_or("-")
            )),
        );
        Ok(ReceiverStream::new(rx))
    }

    /// Whether a central is connected.
    pub fn active(&self) -> bool {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
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

    async fn run(
        &self,
        mut inbound: Streaming<pb::CentralMessage>,
        tx: mpsc::Sender<Result<pb::HostMessage, Status>>,
        cancel: CancellationToken,
    ) {
        let sup = &self.sup;
        let out = Out {
            tx: &tx,
            cancel: &cancel,
        };
        if !out.send(HostMsg::Hello(self.hello())).await {
            return;
        }

        // The central's first message decides replay and heartbeat.
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            m = inbound.message() => m,
        };
        let first = match first {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(e) => {
                tracing::info!(status = %e, "Connect stream failed before the central's hello");
                return;
            }
        };
        sup.contact();
        let (mut cursor, interval) = match first.msg {
            Some(CentralMsg::Hello(h)) => {
                let interval = match h.heartbeat_interval_ms {
                    0 => DEFAULT_HEARTBEAT,
                    ms => Duration::from_millis(ms.into()).max(MIN_HEARTBEAT),
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
                m = inbound.message() => match m {
                    Ok(Some(m)) => {
                        sup.contact();
                        match m.msg {
                            Some(CentralMsg::Ack(a)) => sup.ack(a.seq),
                            Some(CentralMsg::Ping(_)) | None => {}
                            Some(CentralMsg::Hello(_)) => {
                                tracing::debug!("ignoring a repeated CentralHello");
                            }
                        }
                    }
                    Ok(None) => {
                        tracing::info!("central closed the Connect stream");
                        return;
                    }
                    Err(e) => {
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
                    };
                    if !out.send(HostMsg::Heartbeat(hb)).await {
                        return;
                    }
                }
            }
        }
    }

    fn hello(&self) -> pb::HostHello {
        let cfg = self.sup.config();
        let snap = self.sup.hello();
        pb::HostHello {
            host_id: cfg.host_id.clone(),
            boot_id: self.sup.boot_id().to_owned(),
            capacity: cfg.capacity,
            templates: cfg.templates.names(),
            pods: snap.pods.iter().map(convert::pod).collect(),
            fence_timeout_ms: u32::try_from(cfg.fence_timeout.as_millis()).unwrap_or(u32::MAX),
            last_seq: snap.last_seq,
            self_fenced: snap.self_fenced,
            draining: snap.draining,
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
