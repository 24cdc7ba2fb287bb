//! One central-manager and one pod-host with test templates, relaxed
//! liveness timeouts (these tests inject no host failure), and a default
//! client (4 MiB message limit, as every stock gRPC client has).

use ipa_tests::cluster::{start_central, start_pod_host, write_host_config};
use ipa_tests::{DEADLINE, ServerProcess, pb, wait_for_async};
use tonic::transport::Channel;

pub type Client = pb::central_manager_client::CentralManagerClient<Channel>;

pub struct Cluster {
    /// Kept running for the test's lifetime.
    _host: ServerProcess,
    pub central: ServerProcess,
    pub client: Client,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Templates are `(name, toml body)`; `host_flags` go to the pod-host.
    pub async fn start(templates: &[(&str, &str)], host_flags: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = dir.path().join("ledger.txt");
        let config = write_host_config(dir.path(), &ledger, templates);
        let mut flags = vec!["--fence-timeout-ms", "10000"];
        flags.extend_from_slice(host_flags);
        let host = start_pod_host(dir.path(), "host-a", &config, &flags).await;
        let central = start_central(
            dir.path(),
            &[host.url()],
            &[
                "--heartbeat-interval-ms",
                "100",
                "--host-unreachable-ms",
                "3000",
                "--fence-timeout-ms",
                "10000",
            ],
        )
        .await;
        let client = Client::new(central.channel());
        let c = Self {
            _host: host,
            central,
            client,
            _dir: dir,
        };
        wait_for_async("host-a READY", DEADLINE, || async {
            let hosts = c
                .client
                .clone()
                .list_pod_hosts(pb::ListPodHostsRequest {})
                .await
                .ok()?
                .into_inner()
                .hosts;
            hosts
                .iter()
                .any(|h| h.state == pb::PodHostState::Ready as i32)
                .then_some(())
        })
        .await;
        c
    }

    /// Creates a task with `template` (not started).
    pub async fn task(&self, template: &str) -> pb::Task {
        self.client
            .clone()
            .create_task(pb::CreateTaskRequest {
                title: format!("a {template} task"),
                actor_id: "tester".into(),
                template: template.into(),
                ..Default::default()
            })
            .await
            .expect("CreateTask")
            .into_inner()
            .task
            .expect("task")
    }

    pub async fn get(&self, task_id: &str) -> pb::Task {
        self.client
            .clone()
            .get_task(pb::GetTaskRequest {
                task_id: task_id.into(),
                ..Default::default()
            })
            .await
            .expect("GetTask")
            .into_inner()
    }

    pub async fn start_pod(&self, task_id: &str) -> Result<pb::Pod, tonic::Status> {
        self.client
            .clone()
            .start_pod(pb::StartPodRequest {
                task_id: task_id.into(),
                actor_id: "tester".into(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().pod.expect("pod"))
    }

    /// Waits until the task's pod reported at least `version` status lines.
    pub async fn wait_version(&self, task_id: &str, version: u64) -> pb::Task {
        wait_for_async(
            &format!("task {task_id} version {version}"),
            DEADLINE,
            || async { Some(self.get(task_id).await).filter(|t| t.version >= version) },
        )
        .await
    }

    pub async fn events(&self, task_id: &str) -> Vec<pb::Event> {
        self.client
            .clone()
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

    /// GetPodLogs from central, read to the end: the chunks.
    pub async fn logs(
        &self,
        task_id: &str,
        tail_lines: u32,
    ) -> Result<Vec<pb::PodLogChunk>, tonic::Status> {
        let mut s = self
            .client
            .clone()
            .get_pod_logs(pb::GetPodLogsRequest {
                task_id: task_id.into(),
                follow: false,
                tail_lines,
            })
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(c) = tokio::time::timeout(DEADLINE, s.message())
            .await
            .expect("log chunk in time")?
        {
            out.push(c);
        }
        Ok(out)
    }
}
