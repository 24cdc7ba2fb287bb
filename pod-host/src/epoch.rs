//! Leader-epoch fencing: a deposed central-manager leader can neither keep
//! this host's fence timer alive nor start or stop pods.
//!
//! Central-manager replicas elect one leader through a lease row whose
//! `epoch` only grows; the leader sends its epoch in `CentralHello.epoch`
//! and in every StartPod and StopPod. The host remembers the highest epoch
//! it has seen (in memory: a restarted host has no pods to protect):
//!
//! - a Connect or command with an older epoch is refused (`STALE_EPOCH`,
//!   FAILED_PRECONDITION) and changes nothing;
//! - a newer epoch, whether it comes on a Connect or a command (they can
//!   race), raises the highest and ends at once a current session of an
//!   older epoch, so the deposed leader's pings stop feeding the fence
//!   timer;
//! - an accepted Connect replaces the current session, whatever its epoch
//!   (a reconnecting central never competes with its own half-dead
//!   stream);
//! - epoch 0 (a central that knows no epoch) is the oldest: accepted while
//!   no newer one was seen.
//!
//! [`Leadership`] holds the highest epoch and the current session under one
//! lock, so a raise and a session's replacement cannot interleave; the
//! highest is mirrored in an atomic for the per-message check of a running
//! session ([`Leadership::is_current`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;

use crate::error::HostError;

/// The call an epoch arrived on (the `call` label of the refusal metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Connect,
    StartPod,
    StopPod,
}

impl Call {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "Connect",
            Self::StartPod => "StartPod",
            Self::StopPod => "StopPod",
        }
    }
}

/// The session a Connect runs: its id (for logs) and epoch, and the token
/// that ends it.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: u64,
    pub epoch: u64,
    pub cancel: CancellationToken,
}

/// The highest epoch seen and the current session; see the module docs.
#[derive(Debug, Default)]
pub struct Leadership {
    current: Mutex<Option<Session>>,
    /// Written only under `current`'s lock; read without it.
    highest: AtomicU64,
}

impl Leadership {
    /// The highest epoch seen.
    pub fn highest(&self) -> u64 {
        self.highest.load(Ordering::Acquire)
    }

    /// Whether a session of `epoch` may still act (its messages count as
    /// contact, its acks drop events): no newer epoch was seen since.
    pub fn is_current(&self, epoch: u64) -> bool {
        epoch >= self.highest()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Session>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses `epoch` if older than the highest seen, else raises the
    /// highest to it and ends the current session if that is now older.
    /// Called with the lock held.
    fn admit(&self, cur: &Option<Session>, call: Call, epoch: u64) -> Result<(), HostError> {
        let newest = self.highest();
        if epoch < newest {
            tracing::warn!(
                call = call.as_str(),
                epoch,
                newest,
                "refused: STALE_EPOCH (the caller is a deposed central-manager leader)"
            );
            crate::metrics::stale_epoch(call.as_str());
            return Err(HostError::StaleEpoch { epoch, newest });
        }
        if epoch > newest {
            self.highest.store(epoch, Ordering::Release);
            if let Some(s) = cur.as_ref().filter(|s| s.epoch < epoch) {
                tracing::info!(
                    session = s.id,
                    session_epoch = s.epoch,
                    epoch,
                    call = call.as_str(),
                    "a newer leader epoch ends the current Connect session"
                );
                s.cancel.cancel();
            }
        }
        Ok(())
    }

    /// A StartPod or StopPod carrying `epoch`: refused when stale; a newer
    /// one raises the highest (and ends an older session).
    pub fn admit_command(&self, call: Call, epoch: u64) -> Result<(), HostError> {
        let cur = self.lock();
        self.admit(&cur, call, epoch)
    }

    /// A Connect whose CentralHello carried `session.epoch`: refused when
    /// stale (the current session carries on); otherwise `session` becomes
    /// the current one and the previous one, if any, is ended and
    /// returned.
    pub fn admit_session(&self, session: Session) -> Result<Option<Session>, HostError> {
        let mut cur = self.lock();
        self.admit(&cur, Call::Connect, session.epoch)?;
        let previous = cur.replace(session);
        if let Some(p) = &previous {
            p.cancel.cancel();
        }
        Ok(previous)
    }

    /// The session `id` ended: it is no longer current (unless replaced).
    pub fn end(&self, id: u64) {
        let mut cur = self.lock();
        if cur.as_ref().is_some_and(|s| s.id == id) {
            *cur = None;
        }
    }

    /// Whether a session is current.
    pub fn active(&self) -> bool {
        self.lock().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: u64, epoch: u64) -> Session {
        Session {
            id,
            epoch,
            cancel: CancellationToken::new(),
        }
    }

    fn stale(r: Result<impl std::fmt::Debug, HostError>) -> (u64, u64) {
        match r {
            Err(HostError::StaleEpoch { epoch, newest }) => (epoch, newest),
            other => panic!("expected STALE_EPOCH, got {other:?}"),
        }
    }

    #[test]
    fn an_older_connect_is_refused_and_the_current_session_carries_on() {
        let l = Leadership::default();
        let two = session(1, 2);
        assert!(l.admit_session(two.clone()).unwrap().is_none());
        assert_eq!(l.highest(), 2);
        assert_eq!(stale(l.admit_session(session(2, 1))), (1, 2));
        assert!(!two.cancel.is_cancelled(), "a refused Connect ends nothing");
        assert!(l.active());
        assert!(l.is_current(2));
        assert!(!l.is_current(1));
    }

    #[test]
    fn a_newer_connect_ends_the_older_session() {
        let l = Leadership::default();
        let one = session(1, 1);
        l.admit_session(one.clone()).unwrap();
        let two = session(2, 2);
        let previous = l.admit_session(two.clone()).unwrap().expect("replaced");
        assert_eq!((previous.id, previous.epoch), (1, 1));
        assert!(one.cancel.is_cancelled());
        assert!(!two.cancel.is_cancelled());
        assert!(
            !l.is_current(1),
            "the old session's messages no longer count"
        );
        // The old session's end does not clear the new one.
        l.end(1);
        assert!(l.active());
        l.end(2);
        assert!(!l.active());
    }

    #[test]
    fn an_equal_epoch_connect_replaces_the_session_as_before() {
        let l = Leadership::default();
        let first = session(1, 3);
        l.admit_session(first.clone()).unwrap();
        l.admit_session(session(2, 3)).unwrap();
        assert!(
            first.cancel.is_cancelled(),
            "a reconnect replaces its old stream"
        );
        assert!(l.is_current(3));
    }

    #[test]
    fn commands_older_than_the_highest_are_refused_and_newer_ones_raise_it() {
        let l = Leadership::default();
        l.admit_command(Call::StartPod, 4).unwrap();
        assert_eq!(l.highest(), 4);
        assert_eq!(stale(l.admit_command(Call::StopPod, 3)), (3, 4));
        assert_eq!(stale(l.admit_command(Call::StartPod, 0)), (0, 4));
        l.admit_command(Call::StopPod, 4).unwrap();
        assert_eq!(l.highest(), 4, "a refusal never lowers it");
        // A Connect of the epoch a command raised is accepted.
        l.admit_session(session(1, 4)).unwrap();
        assert_eq!(stale(l.admit_session(session(2, 3))), (3, 4));
    }

    /// Commands can race the Connect: the new leader's StartPod arriving
    /// before its Connect ends the deposed leader's session.
    #[test]
    fn a_newer_command_ends_an_older_session() {
        let l = Leadership::default();
        let one = session(1, 1);
        l.admit_session(one.clone()).unwrap();
        l.admit_command(Call::StartPod, 1).unwrap();
        assert!(!one.cancel.is_cancelled(), "its own epoch's command");
        l.admit_command(Call::StartPod, 2).unwrap();
        assert!(one.cancel.is_cancelled());
        assert!(!l.is_current(1));
    }

    #[test]
    fn epoch_zero_is_the_oldest() {
        let l = Leadership::default();
        l.admit_session(session(1, 0)).unwrap();
        l.admit_command(Call::StartPod, 0).unwrap();
        l.admit_session(session(2, 0)).unwrap();
        assert!(l.is_current(0));
        l.admit_command(Call::StopPod, 1).unwrap();
        assert!(!l.is_current(0));
        assert_eq!(stale(l.admit_command(Call::StartPod, 0)), (0, 1));
        assert_eq!(stale(l.admit_session(session(3, 0))), (0, 1));
    }
}
