//! A WatchEvents client that follows the feed for the whole run, through
//! central restarts, freezes and slow-watcher cut-offs, resuming from the
//! last position it saw, as a well-behaved consumer does. It records every
//! position so the end check can prove the feed never skipped or repeated
//! an event.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipa_tests::pb;
use tokio_util::sync::CancellationToken;

use crate::system::Client;

/// What the auditor saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub positions: BTreeSet<u64>,
    /// Events delivered at or below a position already seen.
    pub repeats: Vec<u64>,
    /// Events delivered out of order (below the last one).
    pub out_of_order: Vec<u64>,
    /// Stream ends and failures, by reason.
    pub resumes: u64,
    pub last: u64,
}

pub type SharedSeen = Arc<Mutex<Seen>>;

/// Follows the feed until `stop`.
pub async fn run(client: Client, seen: SharedSeen, stop: CancellationToken) {
    let mut client = client;
    loop {
        if stop.is_cancelled() {
            return;
        }
        let after = seen.lock().unwrap().last;
        let open = tokio::time::timeout(
            Duration::from_secs(3),
            client.watch_events(pb::WatchEventsRequest {
                after_position: after,
                ..Default::default()
            }),
        )
        .await;
        let mut stream = match open {
            Ok(Ok(s)) => s.into_inner(),
            _ => {
                seen.lock().unwrap().resumes += 1;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => return,
                m = stream.message() => m,
            };
            match msg {
                Ok(Some(e)) => {
                    let mut s = seen.lock().unwrap();
                    if !s.positions.insert(e.position) {
                        s.repeats.push(e.position);
                    } else if e.position < s.last {
                        s.out_of_order.push(e.position);
                    }
                    s.last = s.last.max(e.position);
                }
                _ => {
                    seen.lock().unwrap().resumes += 1;
                    break;
                }
            }
        }
    }
}
