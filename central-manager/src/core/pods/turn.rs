//! The order in which a template's dispatched starts write their outcomes
//! (see [`Turn`]).

/// The turn of one start from the queue to write its outcome: after the
/// start the dispatcher launched before it has written its own. The
/// pod-hosts' spawns run concurrently, but the `pod_started` (or the
/// return to the queue) of one template's queue commits in dispatch order,
/// so the trail shows the queue's order. The turn passes on as soon as the
/// outcome's write is queued in a store that commits in queue order (the
/// writes of a drain then share commits instead of waiting for each
/// other's: 185 starts/s, one commit each, before); dropping a turn
/// (whatever the outcome, or a panic) passes it on too.
#[derive(Debug)]
pub struct Turn {
    before: std::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
    after: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl Turn {
    /// The next turn after `last` (the receiver of the turn before it;
    /// `None` for the first); `last` becomes this turn's receiver.
    pub fn after(last: &mut Option<tokio::sync::oneshot::Receiver<()>>) -> Self {
        let (tx, rx) = tokio::sync::oneshot::channel();
        Self {
            before: std::sync::Mutex::new(last.replace(rx)),
            after: std::sync::Mutex::new(Some(tx)),
        }
    }

    /// Lets the next turn go (once).
    pub(super) fn pass(&self) {
        let after = self
            .after
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(tx) = after {
            let _ = tx.send(());
        }
    }

    /// Waits until the turn before this one has ended.
    pub(super) async fn wait(&self) {
        let before = self
            .before
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(b) = before {
            // A dropped sender ends the wait as well.
            let _ = b.await;
        }
    }
}

impl Drop for Turn {
    /// A turn dropped before it waited (its claim was refused, so it had
    /// nothing to write) still lets the next one go only after the one
    /// before it: passing at once would let a later start's outcome
    /// commit ahead of an earlier one still in flight.
    fn drop(&mut self) {
        let before = self
            .before
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let after = self
            .after
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(tx) = after else { return };
        match (before, tokio::runtime::Handle::try_current()) {
            (Some(b), Ok(rt)) => {
                rt.spawn(async move {
                    let _ = b.await;
                    let _ = tx.send(());
                });
            }
            _ => {
                let _ = tx.send(());
            }
        }
    }
}
