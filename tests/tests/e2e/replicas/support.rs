//! A cluster for the replica tests: a private PostgreSQL server (one fresh
//! database per test), pod-hosts serving the `ledger` template, and
//! central-manager replicas with short leases, each optionally reaching
//! the database through a partitionable [`Proxy`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipa_tests::cluster::{start_central_url, start_pod_host, write_host_config};
use ipa_tests::ledger::{self, Run};
use ipa_tests::pb::central_manager_client::CentralManagerClient;
use ipa_tests::proxy::Proxy;
use ipa_tests::{DEADLINE, ServerProcess, pb, wait_for_async};
use tonic::transport::Channel;

/// The replicas' lease in these tests (ms): the default, so failover is
/// measured as users get it (a shorter lease leaves renewals little room
/// on a loaded CI machine).
pub const LEASE_MS: u64 = 3000;

pub struct Cluster {
    pub pg: Arc<ipa_tests::postgres::PgServer>,
    pub url: String,
    pub dir: tempfile::TempDir,
    pub ledger: PathBuf,
    pub hosts: Vec<ServerProcess>,
    pub replicas: BTreeMap<String, ServerProcess>,
    /// Proxies between a replica and the database, by replica id.
    pub proxies: BTreeMap<String, Proxy>,
}

impl Cluster {
    /// A database and `hosts` pod-hosts (fence timeout 5 s, the default),
    /// no replica yet.
    pub async fn start(hosts: &[&str]) -> Self {
        let (pg, url) = tokio::task::spawn_blocking(|| {
            let server = ipa_tests::postgres::shared().expect("starting PostgreSQL");
            let url = server.database().expect("creating a database");
            (server, url)
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("ledger.txt");
        let config = write_host_config(dir.path(), &ledger, &[]);
        let mut started = Vec::new();
        for h in hosts {
            started.push(start_pod_host(dir.path(), h, &config, &[]).await);
        }
        Self {
            pg,
            url,
            dir,
            ledger,
            hosts: started,
            replicas: BTreeMap::new(),
            proxies: BTreeMap::new(),
        }
    }

    /// Starts replica `id`; `through_proxy` puts a [`Proxy`] between it
    /// and the database.
    pub async fn add_replica(&mut self, id: &str, through_proxy: bool) {
        let url = if through_proxy {
            let target: SocketAddr = format!("127.0.0.1:{}", self.pg.port()).parse().unwrap();
            let proxy = Proxy::start(target).await;
            let url = self.url.replace(
                &format!("127.0.0.1:{}", self.pg.port()),
                &proxy.addr.to_string(),
            );
            self.proxies.insert(id.to_owned(), proxy);
            url
        } else {
            self.url.clone()
        };
        let hosts: Vec<String> = self.hosts.iter().map(|h| h.url()).collect();
        let dir = self.dir.path().join(id);
        std::fs::create_dir_all(&dir).unwrap();
        let lease = LEASE_MS.to_string();
        let p = start_central_url(
            &dir,
            &url,
            &hosts,
            &["--replica-id", id, "--leader-lease-ms", &lease],
        )
        .await;
        self.replicas.insert(id.to_owned(), p);
    }

    pub fn client(&self, id: &str) -> CentralManagerClient<Channel> {
        CentralManagerClient::new(self.replicas[id].channel())
    }

    /// GetClusterInfo from replica `id`.
    pub async fn info(&self, id: &str) -> Option<pb::GetClusterInfoResponse> {
        self.client(id)
            .get_cluster_info(pb::GetClusterInfoRequest {})
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    /// Waits until replica `via` reports a leader other than `not`; returns
    /// it and its epoch.
    pub async fn wait_leader(&self, via: &str, not: Option<&str>) -> (String, u64) {
        wait_for_async("a leader", DEADLINE, || async {
            let i = self.info(via).await?;
            let ok =
                !i.leader_replica_id.is_empty() && not.is_none_or(|n| n != i.leader_replica_id);
            ok.then(|| (i.leader_replica_id.clone(), i.epoch))
        })
        .await
    }

    pub fn runs(&self) -> Vec<Run> {
        ledger::read(&self.ledger)
    }

    pub fn assert_no_overlap(&self) {
        let o = ledger::overlaps(&self.runs());
        assert!(o.is_empty(), "two pods of one task ran at once: {o:#?}");
    }

    /// Every replica's log, for a failure message.
    pub fn logs(&self) -> String {
        self.replicas
            .iter()
            .map(|(id, p)| format!("--- {id} ---\n{}", p.log()))
            .collect()
    }
}

/// A ledger task.
pub fn ledger_task(tag: &str, request_id: &str) -> pb::CreateTaskRequest {
    pb::CreateTaskRequest {
        title: format!("replica test {tag}"),
        actor_id: "tester".into(),
        template: "ledger".into(),
        request_id: request_id.into(),
        ..Default::default()
    }
}

/// Whether process `pid` is alive.
pub fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// Starts a pod for `task_id` through replica `id`, retrying while a
/// failover is under way; the pod it reports.
pub async fn start_pod(c: &Cluster, id: &str, task_id: &str) -> pb::Pod {
    let mut client = c.client(id);
    let task_id = task_id.to_owned();
    wait_for_async("StartPod", DEADLINE, || {
        let mut client = client.clone();
        let task_id = task_id.clone();
        async move {
            client
                .start_pod(pb::StartPodRequest {
                    task_id,
                    actor_id: "tester".into(),
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .pod
        }
    })
    .await;
    // The task's current pod, once RUNNING.
    wait_running(&mut client, &task_id).await
}

/// Waits until `task_id` has a RUNNING pod; returns it.
pub async fn wait_running(client: &mut CentralManagerClient<Channel>, task_id: &str) -> pb::Pod {
    wait_for_async("pod RUNNING", DEADLINE, || {
        let mut client = client.clone();
        let task_id = task_id.to_owned();
        async move {
            let t = client
                .get_task(pb::GetTaskRequest {
                    task_id,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner();
            (t.pod_status() == pb::PodStatus::Running).then_some(t.pod?)
        }
    })
    .await
}

/// Waits (bounded) for `p` to exit; its exit code.
pub async fn exit_code(p: &mut ServerProcess, within: Duration) -> Option<i32> {
    p.wait_exit(within).await.and_then(|s| s.code())
}
