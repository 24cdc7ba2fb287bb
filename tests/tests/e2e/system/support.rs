//! The whole system for end-to-end tests: one central-manager, two or more
//! pod-hosts (optionally behind a partitionable [`Proxy`]), the `ledger`
//! template writing to one ledger file, short timeouts, and the client-side
//! helpers every system test needs (waiting on task state, events and host
//! state; process inspection through /proc; the ledger invariant).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipa_tests::cluster::{start_central_url, write_host_config};
use ipa_tests::ledger::{self, Run};
use ipa_tests::{DEADLINE, Proxy, ServerProcess, pb, wait_for, wait_for_async};
use nix::sys::signal::Signal;
use tonic::transport::Channel;

pub use super::clock_procs::*;

pub type Client = pb::central_manager_client::CentralManagerClient<Channel>;

/// Short timeouts so the chaos tests stay fast, with the ordering that
/// makes them meaningful: heartbeat < unreachable < fence.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Host ids, started in this order.
    pub hosts: Vec<&'static str>,
    /// Hosts central reaches through a [`Proxy`] (for partitions).
    pub proxied: Vec<&'static str>,
    pub heartbeat_ms: u64,
    pub unreachable_ms: u64,
    /// Central's `--fence-timeout-ms`.
    pub central_fence_ms: u64,
    /// The pod-hosts' `--fence-timeout-ms`.
    pub host_fence_ms: u64,
    pub stop_grace_ms: u64,
    /// `--capacity` of every host (their default when `None`).
    pub capacity: Option<u32>,
    /// More central flags (e.g. restart-policy defaults).
    pub central_extra: Vec<String>,
    /// Where central's database file is (default: the system's dir).
    pub database: Option<PathBuf>,
    /// A database URL instead (e.g. `postgres://…`); wins over `database`.
    pub database_url: Option<String>,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            hosts: vec!["host-a", "host-b"],
            proxied: vec![],
            heartbeat_ms: 100,
            unreachable_ms: 500,
            central_fence_ms: 1000,
            host_fence_ms: 1000,
            stop_grace_ms: 300,
            capacity: None,
            central_extra: vec![],
            database: None,
            database_url: None,
        }
    }
}

impl Spec {
    /// For tests that inject no host failure: loose liveness timeouts, so a
    /// scheduling stall of a loaded CI box cannot make a healthy host
    /// UNREACHABLE or fence its pods mid-test.
    pub fn relaxed() -> Self {
        Self {
            unreachable_ms: 3000,
            central_fence_ms: 10_000,
            host_fence_ms: 10_000,
            ..Self::default()
        }
    }

    fn host_flags(&self) -> Vec<String> {
        let mut v = vec![
            "--fence-timeout-ms".into(),
            self.host_fence_ms.to_string(),
            "--stop-grace-ms".into(),
            self.stop_grace_ms.to_string(),
        ];
        if let Some(c) = self.capacity {
            v.extend(["--capacity".into(), c.to_string()]);
        }
        v
    }

    /// The `--database-url` central is given.
    fn database_url(&self, dir: &Path) -> String {
        if let Some(url) = &self.database_url {
            return url.clone();
        }
        let file = self
            .database
            .clone()
            .unwrap_or_else(|| dir.join("central.db"));
        format!("sqlite://{}", file.display())
    }

    fn central_flags(&self) -> Vec<String> {
        let mut v = vec![
            "--heartbeat-interval-ms".into(),
            self.heartbeat_ms.to_string(),
            "--host-unreachable-ms".into(),
            self.unreachable_ms.to_string(),
            "--fence-timeout-ms".into(),
            self.central_fence_ms.to_string(),
        ];
        v.extend(self.central_extra.iter().cloned());
        v
    }
}

/// A running system. Dropping it SIGKILLs every server (pods die with their
/// pod-host: PDEATHSIG).
pub struct System {
    pub spec: Spec,
    pub ledger: PathBuf,
    pub config: PathBuf,
    /// Pod-hosts by id.
    pub hosts: BTreeMap<String, ServerProcess>,
    /// Proxies in front of the `spec.proxied` hosts, by host id.
    pub proxies: BTreeMap<String, Proxy>,
    pub central: ServerProcess,
    pub client: Client,
    /// Last, so it is removed after every process is gone; kept when the
    /// test panics, for the logs and the ledger.
    dir: Option<tempfile::TempDir>,
}

impl Drop for System {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(d) = self.dir.take()
        {
            eprintln!("system test dir kept: {}", d.keep().display());
        }
    }
}

impl System {
    /// Starts the hosts, then central, and waits until every host is READY.
    pub async fn start(spec: Spec) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = dir.path().join("ledger.txt");
        let config = write_host_config(dir.path(), &ledger, &[]);
        let mut hosts = BTreeMap::new();
        let mut proxies = BTreeMap::new();
        let mut urls = Vec::new();
        for id in &spec.hosts {
            let h = start_host(dir.path(), id, &config, "127.0.0.1:0", &spec.host_flags()).await;
            if spec.proxied.contains(id) {
                let p = Proxy::start(h.addr).await;
                urls.push(p.url());
                proxies.insert(id.to_string(), p);
            } else {
                urls.push(h.url());
            }
            hosts.insert(id.to_string(), h);
        }
        let flags = spec.central_flags();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let db = spec.database_url(dir.path());
        let central = start_central_url(dir.path(), &db, &urls, &flags).await;
        let client = Client::new(central.channel());
        let sys = Self {
            spec,
            dir: Some(dir),
            ledger,
            config,
            hosts,
            proxies,
            central,
            client,
        };
        for id in sys.spec.hosts.clone() {
            sys.wait_host_state(id, pb::PodHostState::Ready).await;
        }
        sys
    }

    /// The system's temp dir (database, ledger, host data dirs).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("dir").path()
    }

    /// The URLs central was given (proxy URLs for proxied hosts).
    pub fn host_urls(&self) -> Vec<String> {
        self.spec
            .hosts
            .iter()
            .map(|id| match self.proxies.get(*id) {
                Some(p) => p.url(),
                None => self.hosts[*id].url(),
            })
            .collect()
    }

    /// A new client on its own connection.
    pub fn client(&self) -> Client {
        Client::new(self.central.channel())
    }

    pub fn host(&self, id: &str) -> &ServerProcess {
        &self.hosts[id]
    }

    /// SIGKILLs central and starts a new one on the same database and hosts.
    pub async fn kill_and_restart_central(&mut self) {
        self.central.signal(Signal::SIGKILL);
        self.central.kill().await;
        self.start_central_again().await;
    }

    /// Starts central again (after it exited) on the same database and hosts.
    pub async fn start_central_again(&mut self) {
        let flags = self.spec.central_flags();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let db = self.spec.database_url(self.dir());
        self.central = start_central_url(self.dir(), &db, &self.host_urls(), &flags).await;
        self.client = Client::new(self.central.channel());
    }

    /// Starts host `id` again on the address it had (same host id and data
    /// dir: a reboot of that machine, so a new `boot_id`).
    pub async fn restart_host(&mut self, id: &str) {
        let old = self.hosts.remove(id).expect("host");
        let addr: SocketAddr = old.addr;
        drop(old);
        let h = start_host(
            self.dir(),
            id,
            &self.config,
            &addr.to_string(),
            &self.spec.host_flags(),
        )
        .await;
        self.hosts.insert(id.to_string(), h);
    }

    // ---- tasks -------------------------------------------------------

    /// Creates a task from `req` (actor `tester` filled in).
    pub async fn create(&self, mut req: pb::CreateTaskRequest) -> pb::Task {
        if req.actor_id.is_empty() {
            req.actor_id = "tester".into();
        }
        self.client()
            .create_task(req)
            .await
            .expect("CreateTask")
            .into_inner()
            .task
            .expect("task")
    }

    /// Creates an inactive task of template `ledger` with `metadata`.
    pub async fn ledger_task(&self, metadata: &[(&str, &str)]) -> pb::Task {
        self.create(ledger_req(metadata, None, false)).await
    }

    /// Creates a `ledger` task and starts its pod (auto_start), asserting
    /// it runs.
    pub async fn running_ledger_task(
        &self,
        metadata: &[(&str, &str)],
        policy: Option<pb::RestartPolicy>,
    ) -> pb::Task {
        let t = self.create(ledger_req(metadata, policy, true)).await;
        assert_eq!(
            t.status(),
            pb::TaskStatus::Active,
            "auto_start failed: {:?}",
            t.pod_message
        );
        assert!(t.pod.is_some(), "auto_start gave no pod: {t:?}");
        t
    }

    pub async fn start_pod(&self, task_id: &str) -> Result<pb::Pod, tonic::Status> {
        self.client()
            .start_pod(pb::StartPodRequest {
                task_id: task_id.into(),
                actor_id: "tester".into(),
                correlation_id: String::new(),
                queue: false,
            })
            .await
            .map(|r| r.into_inner().pod.expect("pod in StartPod response"))
    }

    pub async fn restart_pod(&self, task_id: &str) -> Result<pb::Pod, tonic::Status> {
        self.client()
            .restart_pod(pb::RestartPodRequest {
                task_id: task_id.into(),
                actor_id: "tester".into(),
                correlation_id: String::new(),
            })
            .await
            .map(|r| r.into_inner().pod.expect("pod in RestartPod response"))
    }

    pub async fn stop_pod(&self, task_id: &str) -> Result<(), tonic::Status> {
        self.client()
            .stop_pod(pb::StopPodRequest {
                task_id: task_id.into(),
                actor_id: "tester".into(),
                reason: "test".into(),
                correlation_id: String::new(),
            })
            .await
            .map(|_| ())
    }

    pub async fn task(&self, task_id: &str) -> pb::Task {
        self.client()
            .get_task(pb::GetTaskRequest {
                task_id: task_id.into(),
                ..Default::default()
            })
            .await
            .expect("GetTask")
            .into_inner()
    }

    /// Waits until GetTask satisfies `pred`.
    pub async fn wait_task(
        &self,
        task_id: &str,
        what: &str,
        pred: impl Fn(&pb::Task) -> bool,
    ) -> pb::Task {
        let c = self.client();
        let pred = &pred;
        wait_for_async(&format!("task {task_id}: {what}"), DEADLINE, || {
            let mut c = c.clone();
            let id = task_id.to_owned();
            async move {
                let t = c
                    .get_task(pb::GetTaskRequest {
                        task_id: id,
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner();
                pred(&t).then_some(t)
            }
        })
        .await
    }

    /// The task's whole audit trail.
    pub async fn events(&self, task_id: &str) -> Vec<pb::Event> {
        self.client()
            .get_task_events(pb::GetTaskEventsRequest {
                task_id: task_id.into(),
                after_version: 0,
                limit: 1000,
                ..Default::default()
            })
            .await
            .expect("GetTaskEvents")
            .into_inner()
            .events
    }

    /// Waits for the `n`-th (1-based) event of `kind` of the task.
    pub async fn wait_event_n(&self, task_id: &str, kind: &str, n: usize) -> pb::Event {
        let c = self.client();
        wait_for_async(
            &format!("event #{n} {kind} of task {task_id}"),
            DEADLINE,
            || {
                let mut c = c.clone();
                let id = task_id.to_owned();
                async move {
                    let evs = c
                        .get_task_events(pb::GetTaskEventsRequest {
                            task_id: id,
                            after_version: 0,
                            limit: 1000,
                            ..Default::default()
                        })
                        .await
                        .ok()?
                        .into_inner()
                        .events;
                    evs.into_iter().filter(|e| e.r#type == kind).nth(n - 1)
                }
            },
        )
        .await
    }

    /// Waits for the first event of `kind` of the task.
    pub async fn wait_event(&self, task_id: &str, kind: &str) -> pb::Event {
        self.wait_event_n(task_id, kind, 1).await
    }

    pub async fn active_pods(&self) -> Vec<pb::ActivePod> {
        self.client()
            .list_active_pods(pb::ListActivePodsRequest::default())
            .await
            .expect("ListActivePods")
            .into_inner()
            .pods
    }

    // ---- hosts -------------------------------------------------------

    pub async fn pod_hosts(&self) -> Vec<pb::PodHostInfo> {
        self.client()
            .list_pod_hosts(pb::ListPodHostsRequest {})
            .await
            .expect("ListPodHosts")
            .into_inner()
            .hosts
    }

    /// After `cause` (a freeze, a partition) at `since`: `host_id` must show
    /// UNREACHABLE, and each of `tasks` pod UNKNOWN in GetTask, within 2 s.
    pub async fn wait_host_cut_off(
        &self,
        host_id: &str,
        tasks: &[pb::Task],
        cause: &str,
        since: std::time::Instant,
    ) {
        const BOUND: Duration = Duration::from_secs(2);
        self.wait_host_state(host_id, pb::PodHostState::Unreachable)
            .await;
        let unreachable_after = since.elapsed();
        eprintln!("{cause} → UNREACHABLE seen after {unreachable_after:?}");
        assert!(unreachable_after <= BOUND, "{unreachable_after:?}");
        for t in tasks {
            // GetTask reads the tasks table, which the supervisor updates
            // just after the host state changes: allow for that commit,
            // within the same bound.
            self.wait_task(&t.task_id, "pod UNKNOWN", |t| {
                t.pod_status() == pb::PodStatus::Unknown
            })
            .await;
            let lag = since.elapsed();
            eprintln!("{cause} → pod UNKNOWN in GetTask after {lag:?}");
            assert!(lag <= BOUND, "{lag:?}");
        }
    }

    /// Waits until ListPodHosts shows `host_id` in `state`.
    pub async fn wait_host_state(&self, host_id: &str, state: pb::PodHostState) -> pb::PodHostInfo {
        let c = self.client();
        wait_for_async(&format!("pod-host {host_id} {state:?}"), DEADLINE, || {
            let mut c = c.clone();
            async move {
                let hosts = c
                    .list_pod_hosts(pb::ListPodHostsRequest {})
                    .await
                    .ok()?
                    .into_inner()
                    .hosts;
                hosts
                    .into_iter()
                    .find(|h| h.host_id == host_id && h.state() == state)
            }
        })
        .await
    }

    // ---- ledger ------------------------------------------------------

    pub fn runs(&self) -> Vec<Run> {
        ledger::read(&self.ledger)
    }

    /// Runs of one task, in order of start.
    pub fn runs_of(&self, task_id: &str) -> Vec<Run> {
        self.runs()
            .into_iter()
            .filter(|r| r.task_id == task_id)
            .collect()
    }

    /// The invariant: no two pods of one task ever ran at the same time.
    #[track_caller]
    pub fn assert_no_overlap(&self) {
        let o = ledger::overlaps(&self.runs());
        assert!(o.is_empty(), "two pods of one task ran at once: {o:#?}");
    }

    /// Waits until the ledger shows a run of pod `pod_id` (its `start` line).
    pub async fn wait_run(&self, pod_id: &str) -> Run {
        wait_for(
            &format!("ledger start line of pod {pod_id}"),
            DEADLINE,
            || self.runs().into_iter().find(|r| r.pod_id == pod_id),
        )
        .await
    }
}

/// A CreateTask request for the `ledger` template.
pub fn ledger_req(
    metadata: &[(&str, &str)],
    policy: Option<pb::RestartPolicy>,
    auto_start: bool,
) -> pb::CreateTaskRequest {
    pb::CreateTaskRequest {
        title: "ledger task".into(),
        actor_id: "tester".into(),
        template: "ledger".into(),
        metadata: metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        restart_policy: policy,
        auto_start,
        ..Default::default()
    }
}

/// An auto-restart policy with the given budget and backoff.
pub fn auto_restart(max_restarts: u32, initial_ms: u32, max_ms: u32) -> pb::RestartPolicy {
    pb::RestartPolicy {
        auto_restart: Some(true),
        max_restarts: Some(max_restarts),
        window_seconds: Some(600),
        initial_backoff_ms: Some(initial_ms),
        max_backoff_ms: Some(max_ms),
    }
}

/// Starts a pod-host listening on `listen` (like
/// `ipa_tests::cluster::start_pod_host`, which always takes port 0).
pub async fn start_host(
    dir: &Path,
    host_id: &str,
    config: &Path,
    listen: &str,
    extra: &[String],
) -> ServerProcess {
    let data = dir.join(host_id);
    std::fs::create_dir_all(&data).expect("host data dir");
    let mut args: Vec<OsString> = vec![
        "--listen".into(),
        listen.into(),
        "--host-id".into(),
        host_id.into(),
        "--config".into(),
        config.into(),
        "--data-dir".into(),
        data.clone().into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    ServerProcess::start("pod-host", &args, &[], Some(&data)).await
}
