//! WatchEvents from the bench's side: the timing feed the storms are
//! measured with (every event with the wall-clock instant it arrived), the
//! position markers that bound a measurement, and the crowd of watchers
//! whose agreement and lag are measured during a crash storm.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use ipa_tests::pb;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::proc::CentralClient;

/// An event and the unix µs at which the bench received it.
pub type Received = (i64, pb::Event);

/// Creates a task nobody starts and returns the position of its
/// `task_created`: every event committed later has a higher position.
pub async fn marker(client: &mut CentralClient) -> u64 {
    let id = client
        .create_task(pb::CreateTaskRequest {
            title: "bench marker".into(),
            actor_id: "bench".into(),
            ..Default::default()
        })
        .await
        .expect("CreateTask (marker)")
        .into_inner()
        .task_id;
    client
        .get_task_events(pb::GetTaskEventsRequest {
            task_id: id,
            ..Default::default()
        })
        .await
        .expect("GetTaskEvents (marker)")
        .into_inner()
        .events
        .first()
        .map(|e| e.position)
        .expect("the marker's task_created")
}

/// Every event after a position, as it arrives, on its own connection.
pub struct Feed {
    rx: mpsc::UnboundedReceiver<Received>,
    task: JoinHandle<()>,
}

impl Feed {
    pub async fn start(channel: Channel, after: u64) -> Self {
        let mut c = CentralClient::new(channel);
        let mut stream = c
            .watch_events(pb::WatchEventsRequest {
                after_position: after,
                ..Default::default()
            })
            .await
            .expect("WatchEvents")
            .into_inner();
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Some(Ok(ev)) = stream.next().await {
                if tx.send((ipa_proto::time::now_micros(), ev)).is_err() {
                    return;
                }
            }
        });
        Self { rx, task }
    }

    /// The next event, or `None` after `wait` without one.
    pub async fn next(&mut self, wait: Duration) -> Option<Received> {
        tokio::time::timeout(wait, self.rx.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Per task: when its pod ended (`pod_crashed` or `pod_lost`) and when the
/// next pod started, as received.
#[derive(Debug, Clone, Copy, Default)]
pub struct EndAndRestart {
    pub ended_us: Option<i64>,
    pub restarted_us: Option<i64>,
}

/// Reads `feed` until every task in `tasks` has ended (an event of type
/// `ending`) and started again, or `limit` passes.
pub async fn await_restarts(
    feed: &mut Feed,
    tasks: &[String],
    ending: &str,
    limit: Duration,
) -> HashMap<String, EndAndRestart> {
    let mut out: HashMap<String, EndAndRestart> = tasks
        .iter()
        .map(|t| (t.clone(), EndAndRestart::default()))
        .collect();
    let mut left = tasks.len();
    let deadline = tokio::time::Instant::now() + limit;
    while left > 0 {
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some((at, ev)) = feed.next(wait).await else {
            break;
        };
        let Some(e) = out.get_mut(&ev.task_id) else {
            continue;
        };
        match ev.r#type.as_str() {
            t if t == ending && e.ended_us.is_none() => e.ended_us = Some(at),
            "pod_started" if e.ended_us.is_some() && e.restarted_us.is_none() => {
                e.restarted_us = Some(at);
                left -= 1;
            }
            _ => {}
        }
    }
    out
}

/// What one watcher of the crowd received: positions in order and, per
/// event, the lag from its `occurred_at` to its arrival (µs).
#[derive(Debug, Default)]
pub struct Seen {
    pub positions: Vec<u64>,
    pub lags_us: Vec<i64>,
}

/// `n` watchers, each on its own connection, from one position on.
pub struct Crowd {
    last: Arc<Vec<AtomicU64>>,
    tasks: Vec<JoinHandle<Seen>>,
    stop: tokio_util::sync::CancellationToken,
}

impl Crowd {
    pub async fn start(channels: Vec<Channel>, after: u64) -> Self {
        let last = Arc::new(
            (0..channels.len())
                .map(|_| AtomicU64::new(0))
                .collect::<Vec<_>>(),
        );
        let stop = tokio_util::sync::CancellationToken::new();
        let mut tasks = Vec::new();
        for (i, ch) in channels.into_iter().enumerate() {
            let mut stream = CentralClient::new(ch)
                .watch_events(pb::WatchEventsRequest {
                    after_position: after,
                    ..Default::default()
                })
                .await
                .expect("WatchEvents (crowd)")
                .into_inner();
            let (last, stop) = (last.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut seen = Seen::default();
                loop {
                    let ev = tokio::select! {
                        _ = stop.cancelled() => break,
                        ev = stream.next() => match ev {
                            Some(Ok(ev)) => ev,
                            _ => break,
                        },
                    };
                    let now = ipa_proto::time::now_micros();
                    let at = ev
                        .occurred_at
                        .as_ref()
                        .and_then(ipa_proto::time::micros_from_timestamp)
                        .unwrap_or(now);
                    seen.positions.push(ev.position);
                    seen.lags_us.push(now - at);
                    last[i].store(ev.position, Ordering::Relaxed);
                }
                seen
            }));
        }
        Self { last, tasks, stop }
    }

    /// Waits until every watcher received position `pos` (or `limit`);
    /// returns how many did.
    pub async fn wait_all_past(&self, pos: u64, limit: Duration) -> usize {
        let t0 = tokio::time::Instant::now();
        loop {
            let n = self
                .last
                .iter()
                .filter(|p| p.load(Ordering::Relaxed) >= pos)
                .count();
            if n == self.last.len() || t0.elapsed() > limit {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Ends every watcher and returns what each received.
    pub async fn finish(self) -> Vec<Seen> {
        self.stop.cancel();
        let mut out = Vec::new();
        for t in self.tasks {
            out.push(t.await.unwrap_or_default());
        }
        out
    }
}
