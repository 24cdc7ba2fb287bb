//! The simulated host's supervision session, as the real pod-host's
//! (`pod-host/src/session.rs`): one Connect at a time, the hello with its
//! snapshot, heartbeats, events with per-boot sequence numbers kept until
//! acknowledged, and central's messages.

use std::time::Duration;

use central_manager::domain::host::{
    CentralMessage, Hello, HostMessage, PodEvent, PodEventKind, PodSnapshot,
};
use pod_host::fence::Proof;
use tokio::time::Instant;

use super::{Pod, Session, SimHost, Timer};
use crate::net::ConnId;

impl SimHost {
    /// A new Connect replaces the current one; the hello goes first.
    pub(super) fn open(&mut self, conn: ConnId) {
        if let Some(old) = self.session.take() {
            self.net.close_from_host(old.conn);
        }
        self.session = Some(Session {
            conn,
            hello_seen: false,
            cursor: 0,
            heartbeat: Duration::from_millis(500),
        });
        let hello = self.hello();
        self.net.send_to_central(conn, HostMessage::Hello(hello));
    }

    /// The pods a hello or a ListPods answer reports.
    pub(super) fn snapshot(&self) -> Vec<PodSnapshot> {
        self.pods
            .values()
            .filter(|p| !p.archived)
            .map(Pod::snapshot)
            .collect()
    }

    pub(super) fn hello(&mut self) -> Hello {
        let pods = self.snapshot();
        Hello {
            host_id: self.host_id.clone(),
            boot_id: self.boot_id.clone(),
            capacity: self.spec.capacity,
            templates: vec!["default".into()],
            pods,
            fence_timeout_ms: self.spec.fence.as_millis() as u32,
            last_seq: self.last_seq,
            self_fenced: std::mem::take(&mut self.self_fenced),
            draining: false,
            host_clock_ms: self.host_clock_ms(),
        }
    }

    pub(super) fn on_message(&mut self, conn: ConnId, msg: CentralMessage) {
        if self.session.as_ref().is_none_or(|s| s.conn != conn) {
            // The replaced session's stream is no longer read.
            return;
        }
        // Only a ping's echo moves the lease (pod_host::fence).
        let proof = match &msg {
            CentralMessage::Ping { echo_host_clock_ms } => self.proof(*echo_host_clock_ms),
            _ => Proof::Arrival,
        };
        self.touch(proof);
        match msg {
            CentralMessage::Hello {
                heartbeat_interval_ms,
                known_boot_id,
                acked_seq,
                ..
            } => {
                let already = self.session.as_ref().is_some_and(|s| s.hello_seen);
                if already {
                    return;
                }
                let cursor = if known_boot_id == self.boot_id {
                    let acked = acked_seq.min(self.last_seq);
                    self.ack(acked);
                    acked
                } else {
                    0
                };
                let interval = Duration::from_millis(u64::from(heartbeat_interval_ms))
                    .clamp(Duration::from_millis(10), Duration::from_secs(60));
                if let Some(s) = self.session.as_mut() {
                    s.hello_seen = true;
                    s.cursor = cursor;
                    s.heartbeat = interval;
                }
                self.at(Instant::now() + interval, Timer::Heartbeat(conn));
                self.flush_events();
            }
            CentralMessage::Ack(seq) => self.ack(seq),
            CentralMessage::Ping { .. } => {}
        }
    }

    pub(super) fn heartbeat(&mut self, conn: ConnId) {
        let Some(s) = self.session.as_ref().filter(|s| s.conn == conn) else {
            return;
        };
        let interval = s.heartbeat;
        let running = self.pods.values().filter(|p| p.is_live()).count() as u32;
        self.net.send_to_central(
            conn,
            HostMessage::Heartbeat {
                running_pods: running,
                draining: false,
                last_seq: self.last_seq,
                host_clock_ms: self.host_clock_ms(),
            },
        );
        self.at(Instant::now() + interval, Timer::Heartbeat(conn));
    }

    /// Issues an event (sent at once on a session past its hello).
    pub(super) fn push_event(
        &mut self,
        task_id: &str,
        pod_id: &str,
        generation: u64,
        kind: PodEventKind,
    ) -> u64 {
        self.last_seq += 1;
        self.log.push_back(PodEvent {
            seq: self.last_seq,
            task_id: task_id.to_owned(),
            pod_id: pod_id.to_owned(),
            generation,
            kind,
        });
        self.flush_events();
        self.last_seq
    }

    pub(super) fn flush_events(&mut self) {
        let Some(s) = self.session.as_mut().filter(|s| s.hello_seen) else {
            return;
        };
        let from = s.cursor;
        for e in self.log.iter().filter(|e| e.seq > from) {
            self.net
                .send_to_central(s.conn, HostMessage::PodEvent(e.clone()));
            s.cursor = e.seq;
        }
    }

    pub(super) fn ack(&mut self, seq: u64) {
        while self.log.front().is_some_and(|e| e.seq <= seq) {
            self.log.pop_front();
        }
        for p in self.pods.values_mut() {
            if p.exit_seq.is_some_and(|s| s <= seq) {
                p.archived = true;
            }
        }
        // Archived pods are kept only for their logs; the simulation has
        // none, so they go (their task's generation stays).
        self.pods.retain(|_, p| !p.archived);
    }
}
