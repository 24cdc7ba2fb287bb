//! Failover (issue 15): how long supervision stops when the leader dies.
//!
//! A private PostgreSQL server (the postgres phase's durable settings), one
//! pod-host (fence timeout at its default, 5000 ms) serving the `ledger`
//! template, and three central-manager replicas on the release binaries
//! with `--leader-lease-ms` at its default (3000 ms; `--only failover` also
//! measures 1000 ms). [`PODS`] long-running ledger pods are started through
//! a follower before the first kill, their pids recorded. Then, `kills`
//! times: find the leader (GetClusterInfo), SIGKILL it and measure
//! (a) until a surviving replica's GetClusterInfo names another leader at a
//! newer epoch (the lease taken), and (b) until that new leader supervises:
//! asked directly, its ListPodHosts shows the pod-host READY, and a StartPod
//! of a task created before the kill succeeds through the surviving
//! follower (forwarded) with the pod RUNNING. The killed replica is then
//! started again under the same id (another replica holds the lease, so it
//! comes back a follower) and the next kill waits until GetClusterInfo
//! lists it at its new address. The killed replica is always the current
//! leader, so no replica is killed twice in a row.
//!
//! At the end every pod started before or between the kills must still run
//! with the same pod id, generation and pid, with no `pod_lost`,
//! `pod_fenced`, `pod_crashed` or `pod_stopped` in its task's events, and
//! the ledger must show no two pods of one task at once: measured and
//! counted, not assumed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipa_tests::pb;
use ipa_tests::postgres::{DURABLE, PgServer};
use nix::sys::signal::Signal;

use crate::proc::{self, CentralClient, Server};
use crate::report::Row;
use crate::stats::{Samples, ms};

/// The replicas' ids.
const REPLICAS: [&str; 3] = ["a", "b", "c"];
/// central-manager's default `--leader-lease-ms`.
pub const DEFAULT_LEASE_MS: u64 = 3000;
/// Long-running pods started before the first kill.
pub const PODS: usize = 3;
/// One step of a failover (a new leader, READY, RUNNING, a replica back)
/// may take this long before the run is abandoned.
const STEP_DEADLINE: Duration = Duration::from_secs(30);
/// One RPC may take this long (a dead replica must not stall a poll).
const RPC: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(10);
/// The goal for both durations, at the default lease.
const GOAL: Duration = Duration::from_secs(5);

/// The figures of one lease setting.
pub struct LeaseRun {
    pub lease_ms: u64,
    /// Leader SIGKILL → another replica's GetClusterInfo names a new leader.
    pub leader: Samples,
    /// Leader SIGKILL → host READY on the new leader and StartPod RUNNING.
    pub supervising: Samples,
    pub kills_wanted: usize,
    /// Kills per replica id.
    pub killed: BTreeMap<String, usize>,
    /// Pods started before the first kill, and how many a failover killed.
    pub before: (usize, usize),
    /// Pods started between kills (the StartPods measured), likewise.
    pub between: (usize, usize),
    /// What was wrong with the pods, one line each.
    pub damage: Vec<String>,
    /// Pairs of ledger runs of one task that overlapped.
    pub overlaps: usize,
    /// Why the run stopped early, if it did.
    pub error: Option<String>,
}

pub struct FailoverResults {
    pub runs: Vec<LeaseRun>,
    /// The server's version, or why nothing was measured.
    pub note: String,
}

/// A pod to check at the end: its task and what GetTask said once RUNNING.
struct Watched {
    task_id: String,
    pod: pb::Pod,
}

struct Replica {
    server: Server,
    client: CentralClient,
}

struct Rig {
    dir: PathBuf,
    db: String,
    host: Server,
    ledger: PathBuf,
    lease_ms: u64,
    replicas: BTreeMap<String, Replica>,
}

/// Runs `fut` with the [`RPC`] bound; `None` on error or time-out.
async fn rpc<T>(
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Option<T> {
    tokio::time::timeout(RPC, fut)
        .await
        .ok()?
        .ok()
        .map(|r| r.into_inner())
}

/// Polls `f` every [`POLL`] until it gives a value, for at most
/// [`STEP_DEADLINE`]; `Err(what)` after it.
async fn until<T, F, Fut>(what: &str, mut f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let t0 = Instant::now();
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if t0.elapsed() > STEP_DEADLINE {
            return Err(format!("{what}: not within {STEP_DEADLINE:?}"));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn ledger_task(tag: &str) -> pb::CreateTaskRequest {
    pb::CreateTaskRequest {
        title: format!("failover bench {tag}"),
        actor_id: "bench".into(),
        template: "ledger".into(),
        // A line every 100 ms is plenty to bound a run; 10 ms (the
        // default) would write a ledger of megabytes.
        metadata: [("ledger.alive_ms".to_owned(), "100".to_owned())].into(),
        ..Default::default()
    }
}

impl Rig {
    async fn start(dir: &Path, db: String, lease_ms: u64) -> Self {
        let ledger = dir.join("ledger.txt");
        let toml = format!(
            "[templates.ledger]\ncommand = {:?}\nenv = {{ LEDGER = {:?} }}\n",
            proc::bin("ledger-pod").display().to_string(),
            ledger.display().to_string(),
        );
        let config = dir.join("pod-host.toml");
        std::fs::write(&config, toml).expect("write pod-host config");
        // Fence timeout at its default (5000 ms): the goal is for defaults.
        let host = proc::pod_host(dir, "host-a", &config, &["--capacity", "64"]).await;
        let mut rig = Self {
            dir: dir.to_owned(),
            db,
            host,
            ledger,
            lease_ms,
            replicas: BTreeMap::new(),
        };
        for id in REPLICAS {
            let r = rig.start_replica(id).await;
            rig.replicas.insert(id.to_owned(), r);
        }
        rig
    }

    async fn start_replica(&self, id: &str) -> Replica {
        let dir = self.dir.join(format!("replica-{id}"));
        std::fs::create_dir_all(&dir).expect("replica dir");
        let lease = self.lease_ms.to_string();
        let mut extra = vec!["--replica-id", id];
        // The default lease is measured as shipped: no flag.
        if self.lease_ms != DEFAULT_LEASE_MS {
            extra.extend(["--leader-lease-ms", lease.as_str()]);
        }
        let server = proc::central_db(&dir, &self.db, &[self.host.url()], &extra).await;
        let client = CentralClient::new(server.channel().await);
        Replica { server, client }
    }

    fn client(&self, id: &str) -> CentralClient {
        self.replicas[id].client.clone()
    }

    async fn info(&self, id: &str) -> Option<pb::GetClusterInfoResponse> {
        rpc(self
            .client(id)
            .get_cluster_info(pb::GetClusterInfoRequest {}))
        .await
    }

    /// The leader and its epoch, as replica `via` sees it, once every
    /// replica is listed at its current address.
    async fn settled(&self, via: &str) -> Result<(String, u64), String> {
        until("a leader with every replica listed", || async {
            let i = self.info(via).await?;
            let listed = self.replicas.iter().all(|(id, r)| {
                i.replicas
                    .iter()
                    .any(|x| &x.replica_id == id && x.address == r.server.url())
            });
            (listed && !i.leader_replica_id.is_empty()).then_some((i.leader_replica_id, i.epoch))
        })
        .await
    }

    async fn create(&self, via: &str, tag: &str) -> Result<String, String> {
        until("CreateTask", || async {
            rpc(self.client(via).create_task(ledger_task(tag)))
                .await
                .map(|t| t.task_id)
        })
        .await
    }

    /// StartPod through `via` (retried while it fails), then the pod once
    /// GetTask shows it RUNNING.
    async fn start_pod(&self, via: &str, task_id: &str) -> Result<pb::Pod, String> {
        until("StartPod accepted", || async {
            let r = tokio::time::timeout(
                RPC,
                self.client(via).start_pod(pb::StartPodRequest {
                    task_id: task_id.to_owned(),
                    actor_id: "bench".into(),
                    ..Default::default()
                }),
            )
            .await
            .ok()?;
            match r {
                Ok(_) => Some(()),
                // An earlier try went through but its answer was lost.
                Err(s) if s.code() == tonic::Code::AlreadyExists => Some(()),
                Err(_) => None,
            }
        })
        .await?;
        until("pod RUNNING", || async {
            let t = rpc(self.client(via).get_task(pb::GetTaskRequest {
                task_id: task_id.to_owned(),
                ..Default::default()
            }))
            .await?;
            (t.pod_status() == pb::PodStatus::Running).then_some(t.pod?)
        })
        .await
    }

    /// One kill of the leader: (lease taken, supervising), the pod it
    /// started, and the id killed.
    async fn kill_once(
        &mut self,
        k: usize,
    ) -> Result<(Duration, Duration, Watched, String), String> {
        let any = REPLICAS[k % REPLICAS.len()];
        let (old, epoch) = self.settled(any).await?;
        let follower = REPLICAS
            .iter()
            .find(|id| **id != old)
            .copied()
            .unwrap_or(any);
        // Created before the kill: CreateTask needs no leader, and the
        // StartPod after it is what is timed.
        let fresh = self.create(follower, &format!("kill-{k}")).await?;
        let survivors: Vec<&str> = REPLICAS.iter().copied().filter(|id| *id != old).collect();

        let t0 = Instant::now();
        let killed = self
            .replicas
            .get_mut(&old)
            .ok_or_else(|| format!("leader {old:?} is not one of ours"))?;
        killed.server.signal(Signal::SIGKILL);
        killed.server.reap().await;

        let leader = until("a new leader", || async {
            for s in &survivors {
                if let Some(i) = self.info(s).await
                    && !i.leader_replica_id.is_empty()
                    && i.leader_replica_id != old
                    && i.epoch > epoch
                {
                    return Some(i.leader_replica_id);
                }
            }
            None
        })
        .await?;
        let t_leader = t0.elapsed();
        let via = survivors
            .iter()
            .copied()
            .find(|s| *s != leader)
            .ok_or("no surviving follower")?;
        until("the pod-host READY on the new leader", || async {
            let hosts = rpc(self
                .client(&leader)
                .list_pod_hosts(pb::ListPodHostsRequest {}))
            .await?;
            hosts
                .hosts
                .iter()
                .any(|h| h.state == pb::PodHostState::Ready as i32)
                .then_some(())
        })
        .await?;
        let pod = self.start_pod(via, &fresh).await?;
        let t_sup = t0.elapsed();

        // The killed replica again, under its id: a follower now.
        let back = self.start_replica(&old).await;
        self.replicas.insert(old.clone(), back);
        Ok((
            t_leader,
            t_sup,
            Watched {
                task_id: fresh,
                pod,
            },
            old,
        ))
    }

    /// What is wrong with `w` now (through replica `via`), if anything.
    async fn damage(&self, via: &str, w: &Watched) -> Option<String> {
        let t = rpc(self.client(via).get_task(pb::GetTaskRequest {
            task_id: w.task_id.clone(),
            ..Default::default()
        }))
        .await;
        let Some(t) = t else {
            return Some(format!("task {}: GetTask failed", w.task_id));
        };
        let now = t.pod.as_ref();
        let same = now.is_some_and(|p| {
            (p.pod_id.as_str(), p.generation, p.pid)
                == (w.pod.pod_id.as_str(), w.pod.generation, w.pod.pid)
        });
        if t.pod_status() != pb::PodStatus::Running || !same {
            return Some(format!(
                "task {}: pod {} pid {} became {:?} pid {:?}",
                w.task_id,
                w.pod.pod_id,
                w.pod.pid,
                t.pod_status(),
                now.map(|p| p.pid)
            ));
        }
        if nix::sys::signal::kill(nix::unistd::Pid::from_raw(w.pod.pid as i32), None).is_err() {
            return Some(format!("task {}: pid {} is gone", w.task_id, w.pod.pid));
        }
        let events = rpc(self.client(via).get_task_events(pb::GetTaskEventsRequest {
            task_id: w.task_id.clone(),
            limit: 1000,
            ..Default::default()
        }))
        .await;
        let Some(events) = events else {
            return Some(format!("task {}: GetTaskEvents failed", w.task_id));
        };
        let bad: Vec<&str> = events
            .events
            .iter()
            .map(|e| e.r#type.as_str())
            .filter(|t| {
                matches!(
                    *t,
                    "pod_lost" | "pod_fenced" | "pod_crashed" | "pod_stopped"
                )
            })
            .collect();
        (!bad.is_empty()).then(|| format!("task {}: {bad:?}", w.task_id))
    }

    /// Stops the replicas (SIGTERM), then the pod-host with its pods.
    async fn stop(self) {
        let Self {
            mut host, replicas, ..
        } = self;
        for (_, mut r) in replicas {
            r.server.stop(Duration::from_secs(10)).await;
        }
        host.stop(Duration::from_secs(30)).await;
    }
}

/// Measures one lease setting on a fresh database `db` in `dir`.
async fn measure(dir: &Path, db: String, lease_ms: u64, kills: usize) -> LeaseRun {
    std::fs::create_dir_all(dir).expect("phase dir");
    let mut rig = Rig::start(dir, db, lease_ms).await;
    let mut run = LeaseRun {
        lease_ms,
        leader: Samples::new(),
        supervising: Samples::new(),
        kills_wanted: kills,
        killed: BTreeMap::new(),
        before: (PODS, 0),
        between: (0, 0),
        damage: Vec::new(),
        overlaps: 0,
        error: None,
    };
    let mut before = Vec::new();
    let mut between = Vec::new();
    let started: Result<(), String> = async {
        let (leader, _) = rig.settled("a").await?;
        let via = REPLICAS
            .iter()
            .copied()
            .find(|r| *r != leader)
            .unwrap_or("a");
        for i in 0..PODS {
            let task_id = rig.create(via, &format!("long-{i}")).await?;
            let pod = rig.start_pod(via, &task_id).await?;
            before.push(Watched { task_id, pod });
        }
        Ok(())
    }
    .await;
    if let Err(e) = started {
        run.error = Some(format!("before the first kill: {e}"));
    }
    for k in 0..kills {
        if run.error.is_some() {
            break;
        }
        match rig.kill_once(k).await {
            Ok((a, b, pod, id)) => {
                eprintln!(
                    "  kill {}/{kills} of {id:?}: new leader after {}, supervising after {}",
                    k + 1,
                    ms(a),
                    ms(b)
                );
                run.leader.push(a);
                run.supervising.push(b);
                between.push(pod);
                *run.killed.entry(id).or_default() += 1;
            }
            Err(e) => run.error = Some(format!("kill {}: {e}", k + 1)),
        }
    }
    // Through a replica that has run since before the last kill.
    let via = match rig.settled("a").await {
        Ok((leader, _)) => leader,
        Err(_) => "a".to_owned(),
    };
    for (list, slot) in [(&before, 0usize), (&between, 1)] {
        let mut hurt = 0;
        for w in list {
            if let Some(d) = rig.damage(&via, w).await {
                run.damage.push(d);
                hurt += 1;
            }
        }
        if slot == 0 {
            run.before = (list.len(), hurt);
        } else {
            run.between = (list.len(), hurt);
        }
    }
    run.overlaps = ipa_tests::ledger::overlaps(&ipa_tests::ledger::read(&rig.ledger)).len();
    rig.stop().await;
    run
}

/// The phase: `leases` measured one after the other, each on a fresh
/// database of one private PostgreSQL server.
pub async fn run(dir: &Path, kills: usize, leases: &[u64]) -> FailoverResults {
    eprintln!("  starting PostgreSQL (fsync on, synchronous_commit on)");
    let server = match tokio::task::block_in_place(|| PgServer::start_with(DURABLE)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("  failover not measured: {e}");
            return FailoverResults {
                runs: Vec::new(),
                note: format!("PostgreSQL not available: {e}"),
            };
        }
    };
    let mut runs = Vec::new();
    let mut note = String::new();
    for &lease in leases {
        let db = match tokio::task::block_in_place(|| server.database()) {
            Ok(db) => db,
            Err(e) => {
                note = format!("no database: {e}");
                break;
            }
        };
        eprintln!("  3 replicas, --leader-lease-ms {lease}, {kills} leader SIGKILLs");
        runs.push(measure(&dir.join(format!("lease-{lease}")), db, lease, kills).await);
    }
    tokio::task::block_in_place(|| drop(server));
    FailoverResults { runs, note }
}

/// The row labels of one lease setting: the default's are in the table's
/// list ([`crate::report::METRICS`]), another lease's name it.
fn labels(lease_ms: u64) -> [String; 3] {
    let first = crate::report::METRICS
        .iter()
        .position(|m| m.starts_with("Failover:"))
        .unwrap_or(0);
    let base: [&str; 3] = std::array::from_fn(|i| crate::report::METRICS[first + i]);
    if lease_ms == DEFAULT_LEASE_MS {
        return base.map(str::to_owned);
    }
    base.map(|m| m.replacen("Failover:", &format!("Failover, lease {lease_ms} ms:"), 1))
}

fn p50_max(s: &Samples) -> String {
    if s.len() == 0 {
        return "no kill measured".into();
    }
    format!("p50 {} / max {}", ms(s.p50()), ms(s.max()))
}

/// `n=10 kills (a 4, b 3, c 3)`, and why the run stopped early.
fn kills(r: &LeaseRun) -> String {
    let per: Vec<String> = r.killed.iter().map(|(id, n)| format!("{id} {n}")).collect();
    let mut s = format!(
        "n={} of {} kills (killed: {})",
        r.leader.len(),
        r.kills_wanted,
        per.join(", ")
    );
    if let Some(e) = &r.error {
        s.push_str(&format!("; stopped: {e}"));
    }
    s
}

pub fn rows(r: &FailoverResults) -> Vec<Row> {
    if r.runs.is_empty() {
        return labels(DEFAULT_LEASE_MS)
            .iter()
            .map(|m| Row::new(m, "—", "—").measured(format!("not measured: {}", r.note)))
            .collect();
    }
    let mut rows = Vec::new();
    for run in &r.runs {
        let [lease_row, sup_row, pods_row] = labels(run.lease_ms);
        let complete = run.error.is_none() && run.leader.len() == run.kills_wanted;
        let within = |s: &Samples| complete && s.len() > 0 && s.max() <= GOAL;
        let fence = Duration::from_millis(5000);
        let ratio = |s: &Samples| crate::report::ratio(s.max().as_secs_f64(), fence.as_secs_f64());
        let expected = Duration::from_millis(run.lease_ms + run.lease_ms / 6);
        let spec = "well inside the pod-hosts' fence timeout (5 s)";
        rows.push(
            Row::new(&lease_row, spec, "max ≤ 5 s")
                .measured(format!("{}, {}", p50_max(&run.leader), kills(run)))
                .baseline(format!(
                    "lease {} ms: a dead leader is replaced ≤ {} after its last renewal (renewed every {}); pod-host fence timeout 5000 ms",
                    run.lease_ms,
                    ms(expected),
                    ms(Duration::from_millis(run.lease_ms / 3))
                ))
                .ratio(ratio(&run.leader))
                .met(within(&run.leader)),
        );
        rows.push(
            Row::new(&sup_row, spec, "max ≤ 5 s")
                .measured(format!("{}, {}", p50_max(&run.supervising), kills(run)))
                .baseline("pod-host fence timeout 5000 ms (a pod-host left without a leader longer kills its pods)")
                .ratio(ratio(&run.supervising))
                .met(within(&run.supervising)),
        );
        let (n, hurt) = run.before;
        let (m, hurt_m) = run.between;
        let mut measured = format!(
            "{hurt} of {n} started before the first kill; {hurt_m} of {m} started between kills \
             (same pod id, generation and pid at the end, process alive, no pod_lost / pod_fenced / \
             pod_crashed / pod_stopped); ledger: {} overlapping runs",
            run.overlaps
        );
        if let Some(d) = run.damage.first() {
            measured.push_str(&format!("; first: {d}"));
        }
        rows.push(
            Row::new(&pods_row, "no pod killed or restarted by a failover", "0")
                .measured(measured)
                .met(complete && hurt == 0 && hurt_m == 0 && run.overlaps == 0),
        );
    }
    rows
}
