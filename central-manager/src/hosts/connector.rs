//! Keeps exactly one supervision session per pod-host endpoint: starts a
//! session for every endpoint discovery publishes and cancels the sessions
//! of endpoints that disappear (a scaled-down StatefulSet). A cancelled
//! session's host is then judged by the silence rules like any other.

use std::collections::{BTreeMap, BTreeSet};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::session::{self, SessionEnv};

/// Runs until `cancel`, reacting to every change of `endpoints`.
pub async fn run(
    mut endpoints: watch::Receiver<BTreeSet<String>>,
    env: SessionEnv,
    tracker: TaskTracker,
    cancel: CancellationToken,
) {
    let mut sessions: BTreeMap<String, CancellationToken> = BTreeMap::new();
    loop {
        let wanted = endpoints.borrow_and_update().clone();
        sessions.retain(|ep, token| {
            let keep = wanted.contains(ep);
            if !keep {
                tracing::info!(endpoint = %ep, "pod-host endpoint gone; closing its session");
                token.cancel();
            }
            keep
        });
        for ep in wanted {
            if sessions.contains_key(&ep) {
                continue;
            }
            let token = cancel.child_token();
            sessions.insert(ep.clone(), token.clone());
            let span = tracing::info_span!("session", endpoint = %ep);
            tracker.spawn(session::run(ep, env.clone(), token).instrument(span));
        }
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            changed = endpoints.changed() => if changed.is_err() {
                // Discovery finished (static list): keep the sessions until
                // shutdown.
                cancel.cancelled().await;
                return;
            },
        }
    }
}
