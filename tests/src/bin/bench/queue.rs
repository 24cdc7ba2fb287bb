//! The queue (priorities, FIFO within a priority, dispatch as room
//! appears), three measurements, each against its own central-manager:
//!
//! - dispatch latency: one pod-host of capacity 1 and a queue of short
//!   pods; for each pod's end, the time from its end event's commit to the
//!   commit of the next queued task's `pod_started` (both `occurred_at`,
//!   central's clock), i.e. noticing the room, choosing, the claim, the
//!   pod-host's spawn and the commit;
//! - draining a deep queue: 2 pod-hosts of capacity 50 filled with
//!   blockers, `queue_drain` tasks of mixed priorities queued behind them
//!   (pods that exit at once), then the blockers stopped: starts per
//!   second from the first blocker's end to the last `pod_started`, and
//!   how far the start order strays from strict priority, FIFO within a
//!   priority (the enqueue order is the `pod_queued` positions);
//! - the cost of a queue of `queue_deep` tasks: CreateTask (queued) and
//!   GetTask of a queued task (which computes its `queue_position`) from 1
//!   client, against a second central-manager whose table holds as many
//!   tasks, none queued, in alternating rounds (the baseline).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use ipa_tests::pb;

use crate::Scale;
use crate::proc::{self, CentralClient, Server};
use crate::report::METRICS;
use crate::stats::{self, Samples};

mod deep;
pub use deep::Deep;

/// How long the event stream may stay silent before a phase gives up.
const QUIET_LIMIT: Duration = Duration::from_secs(60);

pub struct QueueResults {
    /// End event committed → next queued task's `pod_started` committed.
    pub dispatch: Samples,
    pub drain: Drain,
    pub deep: Deep,
}

#[derive(Default)]
pub struct Drain {
    /// Tasks queued behind the blockers, and how many of them started.
    pub queued: usize,
    pub started: usize,
    /// Pod slots (2 pod-hosts × capacity).
    pub slots: usize,
    /// First blocker's end → last `pod_started`, on central's clock.
    pub span: Duration,
    /// Pairs started before a task of higher priority.
    pub inversions: u64,
    /// Largest distance (in starts) between a task's place in the start
    /// order and its place in strict priority + FIFO order.
    pub max_displacement: usize,
    /// Each drained task's `pod_started` → its end event (`pod_exited`,
    /// `pod_crashed`), on central's clock: how long a slot stays taken by
    /// a pod that exits at once.
    pub slot: Samples,
    /// Why the phase ended early, if it did.
    pub note: Option<String>,
}

/// The queue bench's pod templates: `sleeper` (blocks a slot), `blink`
/// (runs 20 ms), `instant` (exits at once).
fn write_config(dir: &Path) -> std::path::PathBuf {
    let toml = "[templates.sleeper]\ncommand = \"/bin/sleep\"\nargs = [\"3600\"]\n\n\
                [templates.blink]\ncommand = \"/bin/sleep\"\nargs = [\"0.02\"]\n\n\
                [templates.instant]\ncommand = \"/bin/true\"\nargs = []\n";
    let path = dir.join("pod-host.toml");
    std::fs::write(&path, toml).expect("write pod-host config");
    path
}

fn queued_req(i: usize, template: &str, priority: pb::Priority) -> pb::CreateTaskRequest {
    pb::CreateTaskRequest {
        title: format!("bench queued {i}"),
        actor_id: "bench".into(),
        template: template.into(),
        auto_start: true,
        queue: true,
        priority: priority as i32,
        ..Default::default()
    }
}

/// A fixed spread of priorities over the task numbers (no two neighbours
/// alike, all four equally often).
fn priority_of(i: usize) -> pb::Priority {
    match (i * 7 + i / 4) % 4 {
        0 => pb::Priority::Low,
        1 => pb::Priority::Medium,
        2 => pb::Priority::High,
        _ => pb::Priority::Critical,
    }
}

pub async fn run(dir: &Path, scale: &Scale) -> QueueResults {
    let sub = |name: &str| {
        let p = dir.join(name);
        std::fs::create_dir_all(&p).expect("phase dir");
        p
    };
    eprintln!(
        "  dispatch latency: {} short pods through 1 slot",
        scale.queue_hops + 1
    );
    let dispatch = dispatch_latency(&sub("dispatch"), scale.queue_hops).await;
    eprintln!(
        "  draining {} queued tasks through 2 pod-hosts × 50",
        scale.queue_drain
    );
    let drain = drain(&sub("drain"), scale.queue_drain).await;
    eprintln!(
        "  CreateTask/GetTask with {} queued tasks",
        scale.queue_deep
    );
    let deep = deep::deep_queue(&sub("deep"), scale).await;
    QueueResults {
        dispatch,
        drain,
        deep,
    }
}

/// One event as the measurements need it.
struct Ev {
    position: u64,
    task_id: String,
    kind: String,
    at: Duration,
}

fn since_epoch(t: &Option<prost_types::Timestamp>) -> Duration {
    t.as_ref()
        .map(|t| Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32))
        .unwrap_or_default()
}

/// Streams every event after `after` until `done` says so or the stream
/// stays silent for [`QUIET_LIMIT`]; `Err` says why it stopped early.
async fn collect_events(
    central: &Server,
    after: u64,
    mut done: impl FnMut(&Ev) -> bool,
) -> (Vec<Ev>, Option<String>) {
    let mut c = CentralClient::new(central.channel().await);
    let mut stream = c
        .watch_events(pb::WatchEventsRequest {
            after_position: after,
            task_id: String::new(),
        })
        .await
        .expect("WatchEvents")
        .into_inner();
    let mut out = Vec::new();
    loop {
        let ev = match tokio::time::timeout(QUIET_LIMIT, stream.next()).await {
            Ok(Some(Ok(e))) => e,
            other => return (out, Some(format!("event stream stopped: {other:?}"))),
        };
        let ev = Ev {
            position: ev.position,
            task_id: ev.task_id,
            kind: ev.r#type,
            at: since_epoch(&ev.occurred_at),
        };
        let finished = done(&ev);
        out.push(ev);
        if finished {
            return (out, None);
        }
    }
}

async fn central_with_hosts(dir: &Path, hosts: usize, capacity: u32) -> (Server, Vec<Server>) {
    let config = write_config(dir);
    let cap = capacity.to_string();
    let mut hs = Vec::new();
    for h in 0..hosts {
        hs.push(proc::pod_host(dir, &format!("q{h}"), &config, &["--capacity", &cap]).await);
    }
    let refs: Vec<&Server> = hs.iter().collect();
    let central = proc::central(dir, &refs, &[]).await;
    let mut c = CentralClient::new(central.channel().await);
    proc::wait_hosts_ready(&mut c, hosts).await;
    (central, hs)
}

async fn stop_all(mut central: Server, hosts: Vec<Server>) {
    central.stop(Duration::from_secs(10)).await;
    for mut h in hosts {
        h.stop(Duration::from_secs(10)).await;
    }
}

/// `hops + 1` tasks of 20 ms pods queued on one slot; each end → the next
/// start is one sample.
async fn dispatch_latency(dir: &Path, hops: usize) -> Samples {
    let (central, hosts) = central_with_hosts(dir, 1, 1).await;
    let mut c = CentralClient::new(central.channel().await);
    let total = hops + 1;
    for i in 0..total {
        c.create_task(queued_req(i, "blink", pb::Priority::Medium))
            .await
            .expect("CreateTask (queued)");
    }
    let mut ended = 0;
    let (events, note) = collect_events(&central, 0, |e| {
        if matches!(e.kind.as_str(), "pod_exited" | "pod_crashed") {
            ended += 1;
        }
        ended >= total
    })
    .await;
    if let Some(n) = note {
        eprintln!("  dispatch latency: {n}");
    }
    let mut samples = Samples::new();
    let mut last_end: Option<Duration> = None;
    for e in &events {
        match e.kind.as_str() {
            "pod_exited" | "pod_crashed" => last_end = Some(e.at),
            "pod_started" => {
                if let Some(end) = last_end.take() {
                    samples.push(e.at.saturating_sub(end));
                }
            }
            _ => {}
        }
    }
    stop_all(central, hosts).await;
    samples
}

/// The deep-queue drain: blockers fill every slot, `n` instant tasks queue
/// behind them, the blockers stop, the queue drains.
async fn drain(dir: &Path, n: usize) -> Drain {
    const HOSTS: usize = 2;
    const CAPACITY: u32 = 50;
    let slots = HOSTS * CAPACITY as usize;
    let (central, hosts) = central_with_hosts(dir, HOSTS, CAPACITY).await;
    let mut c = CentralClient::new(central.channel().await);
    let mut blockers = Vec::with_capacity(slots);
    for i in 0..slots {
        let t = c
            .create_task(pb::CreateTaskRequest {
                title: format!("bench blocker {i}"),
                actor_id: "bench".into(),
                template: "sleeper".into(),
                auto_start: true,
                ..Default::default()
            })
            .await
            .expect("CreateTask (blocker)")
            .into_inner();
        let task = t.task.unwrap_or_default();
        assert_eq!(
            task.pod_status,
            pb::PodStatus::Running as i32,
            "blocker {i} did not start: {}",
            task.pod_message
        );
        blockers.push(t.task_id);
    }
    let priorities = std::sync::Arc::new(std::sync::Mutex::new(HashMap::with_capacity(n)));
    let out = priorities.clone();
    let load = stats::drive(
        32,
        Some(n),
        None,
        |_| central.channel(),
        move |ch, i| {
            let out = out.clone();
            async move {
                let mut c = CentralClient::new(ch.clone());
                let p = priority_of(i);
                let r = c.create_task(queued_req(i, "instant", p)).await.map(|r| {
                    let t = r.into_inner();
                    out.lock().expect("ids").insert(t.task_id, p as i32);
                });
                (ch, r)
            }
        },
    )
    .await;
    let priorities = std::mem::take(&mut *priorities.lock().expect("ids"));
    let queued = count_queued(&mut c).await;
    assert_eq!(
        (load.errors, queued as usize),
        (0, priorities.len()),
        "queueing the drain tasks (errors, queued)"
    );

    let blocker_set: std::collections::HashSet<String> = blockers.iter().cloned().collect();
    let stopper = {
        let ids = std::sync::Arc::new(blockers);
        stats::drive(
            16,
            Some(ids.len()),
            None,
            |_| central.channel(),
            move |ch, i| {
                let ids = ids.clone();
                async move {
                    let mut c = CentralClient::new(ch.clone());
                    let r = c
                        .stop_pod(pb::StopPodRequest {
                            task_id: ids[i].clone(),
                            actor_id: "bench".into(),
                            reason: "release the queue".into(),
                            ..Default::default()
                        })
                        .await
                        .map(|_| ());
                    (ch, r)
                }
            },
        )
    };
    let mut started = 0;
    let target = priorities.len();
    let (events, note) = tokio::join!(stopper, async {
        collect_events(&central, 0, |e| {
            if e.kind == "pod_started" && priorities.contains_key(&e.task_id) {
                started += 1;
            }
            started >= target
        })
        .await
    })
    .1;
    let mut r = order_figures(&events, &priorities, &blocker_set);
    r.queued = priorities.len();
    r.slots = slots;
    r.note = note;
    stop_all(central, hosts).await;
    r
}

/// Start rate and priority order of the drain from its events.
fn order_figures(
    events: &[Ev],
    priorities: &HashMap<String, i32>,
    blockers: &std::collections::HashSet<String>,
) -> Drain {
    let first_release = events
        .iter()
        .filter(|e| blockers.contains(&e.task_id) && e.kind == "pod_stopped")
        .map(|e| e.at)
        .min()
        .unwrap_or_default();
    let mut enqueued: Vec<(&str, u64)> = Vec::new();
    let mut started: Vec<(&str, Duration)> = Vec::new();
    let mut began: HashMap<&str, Duration> = HashMap::new();
    let mut slot = Samples::new();
    for e in events {
        if !priorities.contains_key(&e.task_id) {
            continue;
        }
        match e.kind.as_str() {
            "pod_queued" => enqueued.push((&e.task_id, e.position)),
            "pod_started" => {
                started.push((&e.task_id, e.at));
                began.insert(&e.task_id, e.at);
            }
            "pod_exited" | "pod_crashed" => {
                if let Some(b) = began.remove(e.task_id.as_str()) {
                    slot.push(e.at.saturating_sub(b));
                }
            }
            _ => {}
        }
    }
    // Strict priority, then FIFO: the order the dispatcher owes.
    enqueued.sort_by_key(|(id, pos)| (-priorities[*id], *pos));
    let owed: HashMap<&str, usize> = enqueued
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (*id, i))
        .collect();
    let mut max_displacement = 0;
    let mut inversions = 0u64;
    // Starts so far per priority (1..=4), to count inversions in one pass.
    let mut seen = [0u64; 5];
    for (place, (id, _)) in started.iter().enumerate() {
        if let Some(&o) = owed.get(id) {
            max_displacement = max_displacement.max(place.abs_diff(o));
        }
        let p = priorities[*id].clamp(0, 4) as usize;
        inversions += seen[..p].iter().sum::<u64>();
        seen[p] += 1;
    }
    let last = started.iter().map(|(_, t)| *t).max().unwrap_or_default();
    Drain {
        started: started.len(),
        span: last.saturating_sub(first_release),
        inversions,
        max_displacement,
        slot,
        ..Default::default()
    }
}

async fn count_queued(c: &mut CentralClient) -> u64 {
    c.count_tasks(pb::CountTasksRequest {
        pod_status: pb::PodStatus::Queued as i32,
        ..Default::default()
    })
    .await
    .expect("CountTasks (queued)")
    .into_inner()
    .count
}

/// The table rows of this phase.
pub fn rows(r: &QueueResults) -> Vec<crate::report::Row> {
    use crate::report::{Row, ratio};
    use crate::stats::{ms, p50_p99};
    let d = &r.dispatch;
    let mut rows = vec![
        Row::new(metric(0), "—", "p50 ≤ 5 ms, p99 ≤ 20 ms")
            .measured(format!(
                "{}, max {} (end event committed → next pod_started committed, 1 slot)",
                p50_p99(d),
                ms(d.max())
            ))
            .met(
                d.len() > 0
                    && d.p50() <= Duration::from_millis(5)
                    && d.p99() <= Duration::from_millis(20),
            ),
    ];
    let dr = &r.drain;
    let rate = dr.started as f64 / dr.span.as_secs_f64().max(1e-9);
    rows.push(
        Row::new(metric(1), "—", "≥ 500 starts/s, strict priority order held")
            .measured(format!(
                "{}/{} started in {:.2} s: {rate:.0} starts/s; {} priority inversions, \
             largest displacement {} starts (≤ {} slots in flight); a slot from \
             pod_started to the pod's end event {}{}",
                dr.started,
                dr.queued,
                dr.span.as_secs_f64(),
                dr.inversions,
                dr.max_displacement,
                dr.slots,
                p50_p99(&dr.slot),
                dr.note
                    .as_ref()
                    .map(|n| format!("; {n}"))
                    .unwrap_or_default()
            ))
            .met(
                dr.queued > 0
                    && dr.started == dr.queued
                    && rate >= 500.0
                    && dr.max_displacement <= dr.slots,
            ),
    );
    let q = &r.deep;
    let s = |d: Duration| d.as_secs_f64();
    let create_ratio = s(q.create_deep.p50()) / s(q.create_empty.p50()).max(1e-9);
    let get_ratio = s(q.get_deep.p50()) / s(q.get_empty.p50()).max(1e-9);
    rows.push(
        Row::new(metric(2), "—", "p50 within 10 % of an empty queue")
            .measured(format!(
                "{} queued: CreateTask {}; GetTask {}",
                q.queued,
                p50_p99(&q.create_deep),
                p50_p99(&q.get_deep)
            ))
            .baseline(format!(
                "as many tasks, none queued (alternating rounds): CreateTask {}; GetTask {}",
                p50_p99(&q.create_empty),
                p50_p99(&q.get_empty)
            ))
            .ratio(format!(
                "{} / {} (p99 {} / {})",
                ratio(s(q.create_deep.p50()), s(q.create_empty.p50())),
                ratio(s(q.get_deep.p50()), s(q.get_empty.p50())),
                ratio(s(q.create_deep.p99()), s(q.create_empty.p99())),
                ratio(s(q.get_deep.p99()), s(q.get_empty.p99())),
            ))
            .met(q.queued >= 100_000 && create_ratio <= 1.10 && get_ratio <= 1.10),
    );
    rows
}

/// The metric name of this phase's row `i`.
fn metric(i: usize) -> &'static str {
    let first = METRICS
        .iter()
        .position(|m| m.starts_with("Queue:"))
        .unwrap_or(0);
    METRICS[first + i]
}
