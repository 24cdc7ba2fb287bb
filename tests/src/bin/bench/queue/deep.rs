//! The cost of a deep queue: CreateTask (queued) and GetTask from 1
//! client on a central-manager with `queue_deep` tasks queued, against one
//! holding as many tasks none queued, in alternating rounds.

use std::path::Path;
use std::time::Instant;

use ipa_tests::pb;

use super::{central_with_hosts, count_queued, priority_of, queued_req, stop_all};
use crate::Scale;
use crate::proc::{CentralClient, Server};
use crate::stats::{self, Samples};

#[derive(Default)]
pub struct Deep {
    /// Tasks in the queue while the deep figures were taken (the baseline
    /// central-manager holds as many tasks, none queued).
    pub queued: u64,
    pub create_deep: Samples,
    pub get_deep: Samples,
    pub create_empty: Samples,
    pub get_empty: Samples,
}

/// Rounds the deep-queue figures alternate over, so that the machine's
/// noise falls on both sides alike.
const DEEP_ROUNDS: usize = 5;

/// CreateTask (queued) and GetTask of queued tasks from 1 client on two
/// central-managers side by side, each holding `queue_deep` tasks: on one
/// they are all queued, on the other none is (created without a start).
/// The rounds alternate between the two.
pub(super) async fn deep_queue(dir: &Path, scale: &Scale) -> Deep {
    let (deep, deep_hosts, deep_ids) =
        blocked_central(&dir.join("deep"), scale.queue_deep, true).await;
    let (flat, flat_hosts, flat_ids) =
        blocked_central(&dir.join("flat"), scale.queue_deep, false).await;
    let mut cd = CentralClient::new(deep.channel().await);
    let mut cf = CentralClient::new(flat.channel().await);
    let queued = count_queued(&mut cd).await;
    crate::baseline::settle().await;
    let mut r = Deep {
        queued,
        ..Default::default()
    };
    let (creates, gets) = (
        scale.create_1.div_ceil(DEEP_ROUNDS),
        scale.get_1.div_ceil(DEEP_ROUNDS),
    );
    for round in 0..DEEP_ROUNDS {
        let tag = format!("deep {round}");
        let (s, _) = create_queued(&mut cd, creates, &tag).await;
        r.create_deep.extend(s);
        let (s, _) = create_queued(&mut cf, creates, &format!("flat {round}")).await;
        r.create_empty.extend(s);
        r.get_deep
            .extend(get_tasks(&mut cd, &deep_ids, gets, true).await);
        // The same spread over a table as large, so both read pages alike.
        r.get_empty
            .extend(get_tasks(&mut cf, &flat_ids, gets, false).await);
    }
    stop_all(deep, deep_hosts).await;
    stop_all(flat, flat_hosts).await;
    r
}

/// A central-manager with one pod-host of capacity 1, taken by a blocker,
/// and `n` more tasks (their ids): queued behind it if `queued`, else only
/// created.
async fn blocked_central(dir: &Path, n: usize, queued: bool) -> (Server, Vec<Server>, Vec<String>) {
    std::fs::create_dir_all(dir).expect("bench dir");
    let (central, hosts) = central_with_hosts(dir, 1, 1).await;
    let mut c = CentralClient::new(central.channel().await);
    let blocker = c
        .create_task(pb::CreateTaskRequest {
            title: "bench blocker".into(),
            actor_id: "bench".into(),
            template: "sleeper".into(),
            auto_start: true,
            ..Default::default()
        })
        .await
        .expect("CreateTask (blocker)")
        .into_inner();
    assert_eq!(
        blocker.task.map(|t| t.pod_status),
        Some(pb::PodStatus::Running as i32),
        "the blocker did not start"
    );
    let ids = std::sync::Arc::new(std::sync::Mutex::new(Vec::with_capacity(n)));
    let out = ids.clone();
    let fill = stats::drive(
        64,
        Some(n),
        None,
        |_| central.channel(),
        move |ch, i| {
            let out = out.clone();
            async move {
                let mut c = CentralClient::new(ch.clone());
                let mut req = queued_req(i, "sleeper", priority_of(i));
                if !queued {
                    req.queue = false;
                    req.auto_start = false;
                }
                let r = c
                    .create_task(req)
                    .await
                    .map(|r| out.lock().expect("ids").push(r.into_inner().task_id));
                (ch, r)
            }
        },
    )
    .await;
    assert_eq!(fill.errors, 0, "filling the table failed");
    let ids = std::mem::take(&mut *ids.lock().expect("ids"));
    (central, hosts, ids)
}

async fn create_queued(c: &mut CentralClient, n: usize, tag: &str) -> (Samples, Vec<String>) {
    let mut s = Samples::new();
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let t0 = Instant::now();
        let t = c
            .create_task(queued_req(i, "sleeper", priority_of(i)))
            .await
            .unwrap_or_else(|e| panic!("CreateTask (queued, {tag}): {e}"))
            .into_inner();
        s.push(t0.elapsed());
        assert_eq!(
            t.task.as_ref().map(|t| t.pod_status),
            Some(pb::PodStatus::Queued as i32),
            "not queued"
        );
        ids.push(t.task_id);
    }
    (s, ids)
}

/// GetTask of `n` tasks spread over `ids`, each checked to show a place
/// in the queue if `queued`, none if not.
async fn get_tasks(c: &mut CentralClient, ids: &[String], n: usize, queued: bool) -> Samples {
    let mut s = Samples::new();
    for i in 0..n {
        let id = &ids[(i * 7919) % ids.len()];
        let t0 = Instant::now();
        let t = c
            .get_task(pb::GetTaskRequest {
                task_id: id.clone(),
                ..Default::default()
            })
            .await
            .expect("GetTask (queued)")
            .into_inner();
        s.push(t0.elapsed());
        assert_eq!(
            t.queue_position > 0,
            queued,
            "queue_position {} of a task queued: {queued}",
            t.queue_position
        );
    }
    s
}
