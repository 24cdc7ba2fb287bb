//! The clients of a chaos run: workers that create, start, stop, restart,
//! complete and cancel tasks at random, retrying creates with the same
//! `request_id` as a real client would, and recording what central
//! acknowledged so the end checks can prove none of it was lost.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipa_tests::pb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use crate::system::Client;

/// Client-side deadline of one call: long enough for a loaded machine,
/// short enough that a frozen central does not stall a worker for long.
const CALL_DEADLINE: Duration = Duration::from_secs(5);

/// What kind of pod a task runs (chosen at creation, in its metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Runs until stopped; restarted after crashes and losses.
    Steady,
    /// Crashes after a while; fails after its third crash.
    Crashy,
    /// Reports PHASE_COMPLETED and exits 0 after a while.
    Finisher,
    /// No automatic restarts.
    Manual,
}

/// What central acknowledged, for the end checks.
#[derive(Debug, Default)]
pub struct Acks {
    /// Every task whose creation was acknowledged, with its kind.
    pub created: BTreeMap<String, Kind>,
    /// Tasks whose CompleteTask was acknowledged.
    pub completed: Vec<String>,
    /// Tasks whose CancelTask was acknowledged.
    pub cancelled: Vec<String>,
    /// Calls by operation: (ok, failed by gRPC code).
    pub calls: BTreeMap<&'static str, (u64, BTreeMap<String, u64>)>,
}

impl Acks {
    fn record(&mut self, op: &'static str, r: &Result<(), tonic::Status>) {
        let e = self.calls.entry(op).or_default();
        match r {
            Ok(()) => e.0 += 1,
            Err(s) => *e.1.entry(format!("{:?}", s.code())).or_default() += 1,
        }
    }

    /// Acknowledged calls in all.
    pub fn ok_calls(&self) -> u64 {
        self.calls.values().map(|(ok, _)| ok).sum()
    }

    /// Failed calls in all.
    pub fn failed_calls(&self) -> u64 {
        self.calls.values().flat_map(|(_, f)| f.values()).sum()
    }
}

pub type SharedAcks = Arc<Mutex<Acks>>;

/// Runs `workers` clients until `stop`; each draws from its own seed.
pub async fn run(
    client: Client,
    seed: u64,
    workers: usize,
    acks: SharedAcks,
    stop: CancellationToken,
) {
    let mut set = tokio::task::JoinSet::new();
    for w in 0..workers {
        let client = client.clone();
        let acks = acks.clone();
        let stop = stop.clone();
        let seed = seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(w as u64 + 1));
        set.spawn(worker(client, seed, w, acks, stop));
    }
    while set.join_next().await.is_some() {}
}

async fn worker(
    mut client: Client,
    seed: u64,
    id: usize,
    acks: SharedAcks,
    stop: CancellationToken,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut n = 0u64;
    while !stop.is_cancelled() {
        n += 1;
        let known: Vec<String> = acks.lock().unwrap().created.keys().cloned().collect();
        let pick = |rng: &mut StdRng| -> Option<String> {
            (!known.is_empty()).then(|| known[rng.random_range(0..known.len())].clone())
        };
        let roll = rng.random_range(0..100);
        match roll {
            0..35 => create(&mut client, &mut rng, id, n, &acks).await,
            35..50 => {
                if let Some(t) = pick(&mut rng) {
                    let r = call(client.start_pod(pb::StartPodRequest {
                        task_id: t,
                        actor_id: "chaos".into(),
                        ..Default::default()
                    }))
                    .await;
                    acks.lock().unwrap().record("StartPod", &r);
                }
            }
            50..60 => {
                if let Some(t) = pick(&mut rng) {
                    let r = call(client.stop_pod(pb::StopPodRequest {
                        task_id: t,
                        actor_id: "chaos".into(),
                        reason: "chaos stop".into(),
                        ..Default::default()
                    }))
                    .await;
                    acks.lock().unwrap().record("StopPod", &r);
                }
            }
            60..65 => {
                if let Some(t) = pick(&mut rng) {
                    let r = call(client.restart_pod(pb::RestartPodRequest {
                        task_id: t,
                        actor_id: "chaos".into(),
                        ..Default::default()
                    }))
                    .await;
                    acks.lock().unwrap().record("RestartPod", &r);
                }
            }
            65..72 => {
                if let Some(t) = pick(&mut rng) {
                    let r = call(client.complete_task(pb::CompleteTaskRequest {
                        task_id: t.clone(),
                        actor_id: "chaos".into(),
                        ..Default::default()
                    }))
                    .await;
                    let mut a = acks.lock().unwrap();
                    a.record("CompleteTask", &r);
                    if r.is_ok() {
                        a.completed.push(t);
                    }
                }
            }
            72..79 => {
                if let Some(t) = pick(&mut rng) {
                    let r = call(client.cancel_task(pb::CancelTaskRequest {
                        task_id: t.clone(),
                        actor_id: "chaos".into(),
                        reason: "chaos cancel".into(),
                        ..Default::default()
                    }))
                    .await;
                    let mut a = acks.lock().unwrap();
                    a.record("CancelTask", &r);
                    if r.is_ok() {
                        a.cancelled.push(t);
                    }
                }
            }
            79..90 => {
                if let Some(t) = pick(&mut rng) {
                    let r = call(client.get_task(pb::GetTaskRequest { task_id: t })).await;
                    acks.lock().unwrap().record("GetTask", &r);
                }
            }
            _ => {
                let r = call(client.list_tasks(pb::ListTasksRequest {
                    limit: 50,
                    ..Default::default()
                }))
                .await;
                acks.lock().unwrap().record("ListTasks", &r);
            }
        }
        let think = Duration::from_millis(rng.random_range(20..120));
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(think) => {}
        }
    }
}

/// A CreateTask retried (same `request_id`) up to three times while central
/// is unavailable, as a careful client would.
async fn create(client: &mut Client, rng: &mut StdRng, worker: usize, n: u64, acks: &SharedAcks) {
    let kind = match rng.random_range(0..100) {
        0..45 => Kind::Steady,
        45..60 => Kind::Crashy,
        60..80 => Kind::Finisher,
        _ => Kind::Manual,
    };
    let mut metadata = BTreeMap::from([("ledger.alive_ms".to_owned(), "25".to_owned())]);
    let policy = match kind {
        Kind::Steady => policy(true, 1000, 50, 1000),
        Kind::Crashy => {
            metadata.insert(
                "ledger.crash_after_ms".into(),
                rng.random_range(300..1500).to_string(),
            );
            policy(true, 2, 50, 500)
        }
        Kind::Finisher => {
            metadata.insert(
                "ledger.exit_after_ms".into(),
                rng.random_range(500..4000).to_string(),
            );
            metadata.insert("ledger.complete".into(), "true".into());
            policy(true, 1000, 50, 1000)
        }
        Kind::Manual => policy(false, 0, 0, 0),
    };
    let req = pb::CreateTaskRequest {
        title: format!("chaos task {worker}-{n}"),
        actor_id: "chaos".into(),
        auto_start: rng.random_bool(0.7),
        template: "ledger".into(),
        metadata: metadata.into_iter().collect(),
        restart_policy: Some(policy),
        request_id: format!("chaos-{worker}-{n}"),
        ..Default::default()
    };
    for _attempt in 0..3 {
        let r = tokio::time::timeout(CALL_DEADLINE, client.create_task(req.clone())).await;
        let r = match r {
            Ok(r) => r,
            Err(_) => Err(tonic::Status::deadline_exceeded("client deadline")),
        };
        let retry = {
            let mut a = acks.lock().unwrap();
            match r {
                Ok(resp) => {
                    a.record("CreateTask", &Ok(()));
                    a.created.insert(resp.into_inner().task_id, kind);
                    false
                }
                Err(s) => {
                    let retry = matches!(
                        s.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::DeadlineExceeded
                            | tonic::Code::Unknown
                    );
                    a.record("CreateTask", &Err(s));
                    retry
                }
            }
        };
        if !retry {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn policy(auto: bool, max: u32, initial_ms: u32, max_ms: u32) -> pb::RestartPolicy {
    pb::RestartPolicy {
        auto_restart: Some(auto),
        max_restarts: Some(max),
        window_seconds: Some(600),
        initial_backoff_ms: Some(initial_ms),
        max_backoff_ms: Some(max_ms),
    }
}

/// One call with the client deadline; the response body is not needed.
async fn call<T>(
    f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<(), tonic::Status> {
    match tokio::time::timeout(CALL_DEADLINE, f).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(s)) => Err(s),
        Err(_) => Err(tonic::Status::deadline_exceeded("client deadline")),
    }
}
