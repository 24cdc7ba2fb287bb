//! Helpers for the pod-host tests: a host with script templates, a fake
//! central on the Connect stream, and process inspection through /proc.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use ipa_tests::pb::pod_host_client::PodHostClient;
use ipa_tests::{DEADLINE, ServerProcess, pb};
use pb::central_message::Msg as CMsg;
use pb::host_message::Msg as HMsg;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// Shell scripts used as pod templates (`/bin/sh SCRIPT`). Scripts that
/// need the test to wait for them report `{"message":"ready"}` on fd 3 once
/// their traps are installed.
pub const SCRIPTS: &[(&str, &str)] = &[
    ("sleep", "echo started\nexec sleep 1000\n"),
    (
        // Exits 7 on SIGUSR1 (the sleep child is left to the host to kill).
        "trapper",
        "trap 'echo got-usr1; exit 7' USR1\necho '{\"message\":\"ready\"}' >&3\nsleep 1000 &\nwait\nwait\n",
    ),
    (
        // Ignores SIGTERM (and so do its children): needs SIGKILL.
        "ignore_term",
        "trap '' TERM\nsleep 1000 &\necho '{\"message\":\"ready\"}' >&3\nwait\n",
    ),
    (
        // A pod with two grandchildren in its group.
        "family",
        "sleep 1000 &\nsleep 1000 &\necho '{\"message\":\"ready\"}' >&3\nwait\n",
    ),
    (
        "env",
        "echo \"$IPA_TASK_ID $IPA_POD_ID $IPA_POD_GENERATION $IPA_STATUS_FD\"\ncat \"$IPA_TASK_FILE\"\necho\necho '{\"message\":\"ready\"}' >&3\nexec sleep 1000\n",
    ),
    (
        "reporter",
        r#"echo '{"phase":"spec_clarification","message":"m0"}' >&3
echo 'garbage' >&3
echo '{"phase":"PHASE_PLANNING","message":"m1"}' >&3
head -c 100000 /dev/zero | tr '\0' x >&3; echo >&3
echo '{"message":"only message"}' >&3
echo '{"phase":"nope"}' >&3
echo '[1,2]' >&3
echo '{"phase":"Review"}' >&3
echo '{"phase":"completed","message":"done"}' >&3
exit 0
"#,
    ),
    (
        // 20 MB of status garbage without a newline, then a valid line.
        "garbage",
        "head -c 20000000 /dev/zero | tr '\\0' x >&3\necho >&3\necho '{\"message\":\"still alive\"}' >&3\nexec sleep 1000\n",
    ),
    (
        "chatty",
        "i=1\nwhile [ $i -le 5 ]; do echo \"out $i\"; i=$((i+1)); done\necho 'err 1' >&2\ntrap 'echo \"late line\"; exit 0' USR1\necho '{\"message\":\"ready\"}' >&3\nsleep 1000 &\nwait\nwait\n",
    ),
    (
        "flood",
        "i=0\nwhile [ $i -lt 20000 ]; do echo \"line $i\"; i=$((i+1)); done\nexec sleep 1000\n",
    ),
];

/// A running pod-host with the script templates (plus `demo`, the demo-pod).
pub struct Host {
    pub proc: ServerProcess,
    pub client: PodHostClient<Channel>,
    pub data_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Host {
    /// Starts a pod-host with the script templates and `extra` flags.
    pub async fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut toml = String::new();
        for (name, script) in SCRIPTS {
            let path = dir.path().join(format!("{name}.sh"));
            std::fs::write(&path, script).expect("write script");
            toml.push_str(&format!(
                "[templates.{name}]\ncommand = \"/bin/sh\"\nargs = [{:?}]\n\n",
                path.display().to_string()
            ));
        }
        toml.push_str(&format!(
            "[templates.demo]\ncommand = {:?}\n",
            ipa_tests::bin_path("demo-pod").display().to_string()
        ));
        let config = dir.path().join("pod-host.toml");
        std::fs::write(&config, toml).expect("write config");
        Self::start_with(dir, Some(&config), extra).await
    }

    /// Starts a pod-host without `--config` (the built-in demo template).
    pub async fn start_default(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_with(dir, None, extra).await
    }

    /// Starts another pod-host on this one's data dir and config (this one
    /// is killed first if it still runs): a restart of the host.
    pub async fn start_again(self, extra: &[&str]) -> Self {
        let Host {
            proc, _dir: dir, ..
        } = self;
        drop(proc);
        let config = dir.path().join("pod-host.toml");
        let config = config.exists().then_some(config);
        Self::start_with(dir, config.as_deref(), extra).await
    }

    async fn start_with(dir: tempfile::TempDir, config: Option<&Path>, extra: &[&str]) -> Self {
        let data_dir = dir.path().join("data");
        let mut args: Vec<OsString> = vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--host-id".into(),
            "test-host".into(),
            "--data-dir".into(),
            data_dir.clone().into(),
        ];
        if let Some(c) = config {
            args.push("--config".into());
            args.push(c.into());
        }
        args.extend(extra.iter().map(OsString::from));
        let proc = ServerProcess::start("pod-host", &args, &[], Some(dir.path())).await;
        let client = PodHostClient::new(proc.channel());
        Self {
            proc,
            client,
            data_dir,
            _dir: dir,
        }
    }

    /// StartPod with a fresh pod id; panics on error.
    pub async fn start_pod(&self, task_id: &str, generation: u64, template: &str) -> pb::PodInfo {
        self.try_start_pod(task_id, &new_id(), generation, template, &[])
            .await
            .unwrap_or_else(|e| panic!("StartPod {template}: {e}"))
    }

    pub async fn try_start_pod(
        &self,
        task_id: &str,
        pod_id: &str,
        generation: u64,
        template: &str,
        metadata: &[(&str, &str)],
    ) -> Result<pb::PodInfo, tonic::Status> {
        self.start_request(pb::HostStartPodRequest {
            task_id: task_id.to_owned(),
            pod_id: pod_id.to_owned(),
            generation,
            template: template.to_owned(),
            title: "a title".to_owned(),
            description: "a description".to_owned(),
            metadata: metadata
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        })
        .await
    }

    /// StartPod with a request built by the test (e.g. a lease echo).
    pub async fn start_request(
        &self,
        req: pb::HostStartPodRequest,
    ) -> Result<pb::PodInfo, tonic::Status> {
        let r = self.client.clone().start_pod(req).await?;
        Ok(r.into_inner().pod.expect("pod in response"))
    }

    pub async fn stop_pod(
        &self,
        task_id: &str,
        pod_id: &str,
        generation: u64,
    ) -> Result<pb::PodInfo, tonic::Status> {
        let r = self
            .client
            .clone()
            .stop_pod(pb::HostStopPodRequest {
                task_id: task_id.to_owned(),
                pod_id: pod_id.to_owned(),
                generation,
                grace_ms: 0,
                reason: "test".to_owned(),
                fence: false,
                epoch: 0,
            })
            .await?;
        Ok(r.into_inner().pod.expect("pod in response"))
    }

    pub async fn list(&self) -> Vec<pb::PodInfo> {
        self.client
            .clone()
            .list_pods(pb::HostListPodsRequest {})
            .await
            .expect("ListPods")
            .into_inner()
            .pods
    }

    pub async fn pod(&self, pod_id: &str) -> Option<pb::PodInfo> {
        self.list().await.into_iter().find(|p| p.pod_id == pod_id)
    }

    /// Waits until the pod reported at least `version` status lines.
    pub async fn wait_version(&self, pod_id: &str, version: u64) -> pb::PodInfo {
        ipa_tests::wait_for_async(
            &format!("pod {pod_id} version {version}"),
            DEADLINE,
            || async { self.pod(pod_id).await.filter(|p| p.version >= version) },
        )
        .await
    }

    /// Waits until ListPods shows the pod exited.
    pub async fn wait_exited(&self, pod_id: &str) -> pb::PodInfo {
        ipa_tests::wait_for_async(&format!("pod {pod_id} exited"), DEADLINE, || async {
            self.pod(pod_id)
                .await
                .filter(|p| p.state == pb::PodState::Exited as i32)
        })
        .await
    }

    /// All output of a pod (tail_lines lines, 0 = all) as (stream, text).
    pub async fn logs(
        &self,
        task_id: &str,
        pod_id: &str,
        tail_lines: u32,
    ) -> Vec<(String, String)> {
        let mut s = self
            .client
            .clone()
            .get_pod_logs(pb::HostGetPodLogsRequest {
                task_id: task_id.to_owned(),
                pod_id: pod_id.to_owned(),
                follow: false,
                tail_lines,
            })
            .await
            .expect("GetPodLogs")
            .into_inner();
        let mut out = Vec::new();
        while let Some(c) = s.message().await.expect("log chunk") {
            out.push((c.stream, String::from_utf8_lossy(&c.data).into_owned()));
        }
        out
    }

    /// Connects a fake central.
    pub async fn central(&self, known_boot_id: &str, acked_seq: u64) -> Central {
        Central::connect(&self.client, known_boot_id, acked_seq, 100).await
    }
}

/// A fresh lowercase UUID.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The test playing central-manager on one Connect stream.
pub struct Central {
    tx: Option<mpsc::Sender<pb::CentralMessage>>,
    rx: tonic::Streaming<pb::HostMessage>,
    pub hello: pb::HostHello,
}

impl Central {
    pub async fn connect(
        client: &PodHostClient<Channel>,
        known_boot_id: &str,
        acked_seq: u64,
        heartbeat_interval_ms: u32,
    ) -> Self {
        Self::try_connect(client, known_boot_id, acked_seq, heartbeat_interval_ms, 0)
            .await
            .expect("Connect")
    }

    /// A Connect as the leader of `epoch`: the call's error when the
    /// pod-host refuses it (`STALE_EPOCH`).
    pub async fn try_connect(
        client: &PodHostClient<Channel>,
        known_boot_id: &str,
        acked_seq: u64,
        heartbeat_interval_ms: u32,
        epoch: u64,
    ) -> Result<Self, tonic::Status> {
        let (tx, rx) = mpsc::channel(64);
        tx.send(pb::CentralMessage {
            msg: Some(CMsg::Hello(pb::CentralHello {
                heartbeat_interval_ms,
                known_boot_id: known_boot_id.to_owned(),
                acked_seq,
                central_id: format!("test-central-{epoch}"),
                epoch,
            })),
        })
        .await
        .expect("queue hello");
        let mut rx = client
            .clone()
            .connect(ReceiverStream::new(rx))
            .await?
            .into_inner();
        let first = tokio::time::timeout(DEADLINE, rx.message())
            .await
            .expect("hello in time")
            .expect("stream ok")
            .expect("a first message");
        let Some(HMsg::Hello(hello)) = first.msg else {
            panic!("first message is not a hello: {first:?}");
        };
        Ok(Self {
            tx: Some(tx),
            rx,
            hello,
        })
    }

    /// The next message, or `None` when the stream ended.
    pub async fn next(&mut self) -> Option<HMsg> {
        match tokio::time::timeout(DEADLINE, self.rx.message()).await {
            Ok(Ok(Some(m))) => Some(m.msg.expect("message body")),
            Ok(Ok(None)) | Ok(Err(_)) => None,
            Err(_) => panic!("no message from the pod-host within {DEADLINE:?}"),
        }
    }

    /// The next pod event (heartbeats skipped).
    pub async fn event(&mut self) -> pb::PodEvent {
        loop {
            match self.next().await {
                Some(HMsg::PodEvent(e)) => return e,
                Some(_) => {}
                None => panic!("Connect stream ended while waiting for an event"),
            }
        }
    }

    /// The next event of `pod_id` matching `pred` (others skipped).
    /// Panics after [`DEADLINE`] (heartbeats keep the stream busy, so a
    /// per-message timeout alone would never fire).
    pub async fn event_of(
        &mut self,
        pod_id: &str,
        mut pred: impl FnMut(&pb::PodEvent) -> bool,
    ) -> pb::PodEvent {
        let found = tokio::time::timeout(DEADLINE, async {
            loop {
                let e = self.event().await;
                if e.pod_id == pod_id && pred(&e) {
                    return e;
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("no matching event of pod {pod_id} within {DEADLINE:?}"))
    }

    /// The exit event of `pod_id`.
    pub async fn exit_of(&mut self, pod_id: &str) -> (u64, pb::PodExit) {
        let e = self
            .event_of(pod_id, |e| {
                matches!(e.kind, Some(pb::pod_event::Kind::Exited(_)))
            })
            .await;
        match e.kind {
            Some(pb::pod_event::Kind::Exited(x)) => (e.seq, x),
            _ => unreachable!(),
        }
    }

    pub async fn send(&self, msg: CMsg) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(pb::CentralMessage { msg: Some(msg) }).await;
        }
    }

    pub async fn ack(&self, seq: u64) {
        self.send(CMsg::Ack(pb::Ack { seq })).await;
    }

    /// A sender for pings from another task.
    pub fn sender(&self) -> mpsc::Sender<pb::CentralMessage> {
        self.tx.clone().expect("stream open")
    }
}

pub fn exited_kind(e: &pb::PodEvent) -> Option<&pb::PodExit> {
    match &e.kind {
        Some(pb::pod_event::Kind::Exited(x)) => Some(x),
        _ => None,
    }
}

/// `/proc/PID/stat` fields after the command name: (state, ppid, pgrp).
fn stat(pid: i32) -> Option<(char, i32, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

/// Whether a process exists and is not a zombie (a zombie is dead; its
/// reaping is up to its new parent once the pod-host is gone).
pub fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|(state, _, _)| state != 'Z')
}

/// Live members of process group `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| stat(pid).is_some_and(|(s, _, g)| g == pgid && s != 'Z'))
        .collect()
}

/// Live children of `ppid` whose command line contains `needle`.
pub fn children_with(ppid: i32, needle: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            stat(pid).is_some_and(|(s, pp, _)| pp == ppid && s != 'Z')
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

/// Resident memory of a process in KiB.
pub fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

pub fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

pub fn reason(status: &tonic::Status) -> Option<ipa_proto::ErrorReason> {
    ipa_proto::reason_of(status)
}
