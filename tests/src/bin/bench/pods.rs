//! Pods through the whole system: StartPod latency (1 client) and
//! throughput (32 clients over 2 pod-hosts), crash detection and automatic
//! restart (SIGKILL a pod, watch `pod_crashed` and the next `pod_started`
//! arrive on WatchEvents), and a frozen pod-host (SIGSTOP) becoming
//! UNREACHABLE with the default timings.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use ipa_tests::pb;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::Scale;
use crate::proc::{self, CentralClient, Server};
use crate::stats::{self, Load, Samples};

/// How long one expected event may take before the sample is abandoned.
const EVENT_DEADLINE: Duration = Duration::from_secs(10);

/// Writes the bench's pod-host config: `sleeper` (sleeps, dies on SIGTERM),
/// `stubborn` (ignores SIGTERM, so a graceful stop needs the SIGKILL after
/// the grace), `crashy` (the bench's own `crash-pod` mode: exits 1 after
/// 100 ms, appending start/exit times to `ledger`).
pub fn write_config(dir: &Path, ledger: &Path) -> PathBuf {
    let bench = std::env::current_exe().expect("current_exe");
    let toml = format!(
        "[templates.sleeper]\ncommand = \"/bin/sleep\"\nargs = [\"3600\"]\n\n\
         [templates.stubborn]\ncommand = \"/bin/sh\"\nargs = [\"-c\", \"trap '' TERM; exec /bin/sleep 3600\"]\n\n\
         [templates.crashy]\ncommand = {:?}\nargs = [\"crash-pod\", {:?}, \"100\"]\n",
        bench.display().to_string(),
        ledger.display().to_string(),
    );
    let path = dir.join("pod-host.toml");
    std::fs::write(&path, toml).expect("write pod-host config");
    path
}

pub fn task_req(
    i: usize,
    template: &str,
    restart: Option<pb::RestartPolicy>,
) -> pb::CreateTaskRequest {
    pb::CreateTaskRequest {
        title: format!("bench pod {i}"),
        actor_id: "bench".into(),
        template: template.into(),
        restart_policy: restart,
        ..Default::default()
    }
}

/// Creates `n` tasks with 16 clients; returns their ids.
pub async fn create_tasks(central: &Server, n: usize, template: &str) -> Vec<String> {
    create_tasks_with(central, n, template, None).await
}

/// [`create_tasks`] with a restart policy.
pub async fn create_tasks_with(
    central: &Server,
    n: usize,
    template: &str,
    restart: Option<pb::RestartPolicy>,
) -> Vec<String> {
    let ids = std::sync::Arc::new(std::sync::Mutex::new(Vec::with_capacity(n)));
    let out = ids.clone();
    let template = template.to_owned();
    let load = stats::drive(
        16,
        Some(n),
        None,
        |_| central.channel(),
        move |ch, i| {
            let out = out.clone();
            let template = template.clone();
            async move {
                let mut c = CentralClient::new(ch.clone());
                let r = c.create_task(task_req(i, &template, restart)).await;
                let r = r.map(|r| out.lock().expect("ids").push(r.into_inner().task_id));
                (ch, r)
            }
        },
    )
    .await;
    assert_eq!(load.errors, 0, "creating tasks failed");

    ids.lock().expect("ids").clone()
}

/// Starts the pods of `ids` from `clients` workers.
pub async fn start_all(central: &Server, ids: Vec<String>, clients: usize) -> Load {
    let ids = std::sync::Arc::new(ids);
    let n = ids.len();
    stats::drive(
        clients,
        Some(n),
        None,
        |_| central.channel(),
        move |ch, i| {
            let ids = ids.clone();
            async move {
                let mut c = CentralClient::new(ch.clone());
                let r = c
                    .start_pod(pb::StartPodRequest {
                        task_id: ids[i].clone(),
                        actor_id: "bench".into(),
                        ..Default::default()
                    })
                    .await
                    .map(|_| ());
                (ch, r)
            }
        },
    )
    .await
}

pub struct PodResults {
    pub start_1: Samples,
    pub start_32: Load,
    pub crash_detect: Samples,
    pub crash_restart: Samples,
    /// Why the crash loop stopped early, if it did.
    pub crash_note: Option<String>,
    /// CPU per start at 32 clients: (central + both pod-hosts, benchmark).
    pub start_32_cpu: (Duration, Duration),
    /// The pod-host's StartPod alone (no central, no database).
    pub host_only: Samples,
}

/// The StartPod set-up: two pod-hosts with room for every start, a
/// central-manager on `db` (`None`: SQLite in the phase's dir) seeing both
/// READY, and the `sleeper` tasks to start: `seq` for 1 client, `par` for
/// 32 (20 more were started as a warm-up).
pub struct StartRig {
    pub h1: Server,
    pub h2: Server,
    pub central: Server,
    pub client: CentralClient,
    pub seq: Vec<String>,
    pub par: Vec<String>,
}

impl StartRig {
    pub async fn start(dir: &Path, scale: &Scale, db: Option<&str>) -> Self {
        let config = write_config(dir, &dir.join("crash-ledger"));
        let capacity = (scale.start_1 + scale.start_32 + 10).to_string();
        let flags = ["--capacity", capacity.as_str(), "--stop-grace-ms", "2000"];
        let h1 = proc::pod_host(dir, "host-a", &config, &flags).await;
        let h2 = proc::pod_host(dir, "host-b", &config, &flags).await;
        let urls = [h1.url(), h2.url()];
        let central = match db {
            Some(db) => proc::central_db(dir, db, &urls, &[]).await,
            None => proc::central_at(dir, &urls, &[]).await,
        };
        let mut client = CentralClient::new(central.channel().await);
        proc::wait_hosts_ready(&mut client, 2).await;

        let ids = create_tasks(&central, scale.start_1 + scale.start_32 + 20, "sleeper").await;
        let (warm, rest) = ids.split_at(20);
        let (seq, par) = rest.split_at(scale.start_1);
        // Warm-up: both hosts' connections and spawner threads.
        start_all(&central, warm.to_vec(), 1).await;
        Self {
            seq: seq.to_vec(),
            par: par.to_vec(),
            h1,
            h2,
            central,
            client,
        }
    }

    /// StartPod from 1 client over `seq`.
    pub async fn start_1(&self) -> Load {
        eprintln!("  StartPod, 1 client × {}", self.seq.len());
        let start_1 = start_all(&self.central, self.seq.clone(), 1).await;
        assert_eq!(start_1.errors, 0, "StartPod failed");
        start_1
    }

    /// StartPod from 32 clients over `par`, with the CPU per start of
    /// (central + both pod-hosts, the benchmark).
    pub async fn start_32(&self) -> (Load, (Duration, Duration)) {
        crate::baseline::settle().await;
        eprintln!(
            "  StartPod, 32 clients × {} over 2 pod-hosts",
            self.par.len()
        );
        let pids = [self.central.pid, self.h1.pid, self.h2.pid];
        let cpu0 = (proc::cpu_of(&pids), proc::cpu_time(std::process::id()));
        let start_32 = start_all(&self.central, self.par.clone(), 32).await;
        let n = (start_32.ok + start_32.errors).max(1) as u32;
        let cpu = (
            proc::cpu_of(&pids).saturating_sub(cpu0.0) / n,
            proc::cpu_time(std::process::id()).saturating_sub(cpu0.1) / n,
        );
        (start_32, cpu)
    }

    /// Stops the hosts first (their pods die with SIGTERM), then central.
    pub async fn stop(self) {
        let Self {
            mut h1,
            mut h2,
            mut central,
            client,
            seq,
            par,
        } = self;
        drop(client);
        let (a, b) = tokio::join!(
            h1.stop(Duration::from_secs(30)),
            h2.stop(Duration::from_secs(30))
        );
        eprintln!(
            "  (pod-hosts with ~{} pods each stopped in {a:?} / {b:?})",
            (seq.len() + par.len() + 20) / 2
        );
        central.stop(Duration::from_secs(10)).await;
    }
}

pub async fn run(dir: &Path, scale: &Scale) -> PodResults {
    let mut rig = StartRig::start(dir, scale, None).await;
    let start_1 = rig.start_1().await;
    let seq = &rig.seq;

    eprintln!("  pod-host StartPod alone, 1 client × {}", seq.len() / 2);
    let host_only = host_start(&rig.h1, seq.len() / 2).await;

    eprintln!("  crash detection and restart × {}", scale.crashes);
    let (crash_detect, crash_restart, crash_note) =
        crash_loop(&rig.central, &mut rig.client, scale.crashes).await;

    let (start_32, start_32_cpu) = rig.start_32().await;
    rig.stop().await;
    PodResults {
        start_1: start_1.samples,
        start_32,
        crash_detect,
        crash_restart,
        crash_note,
        start_32_cpu,
        host_only,
    }
}

/// The pod-host's share of a StartPod: its own `ipa.v1.PodHost/StartPod`
/// called directly (spawn, pipes, task file, log file), for tasks central
/// does not know; they are stopped with the host.
async fn host_start(host: &Server, n: usize) -> Samples {
    let mut c = pb::pod_host_client::PodHostClient::new(host.channel().await);
    let mut s = Samples::new();
    for _ in 0..n {
        let req = pb::HostStartPodRequest {
            task_id: uuid::Uuid::new_v4().to_string(),
            pod_id: uuid::Uuid::now_v7().to_string(),
            generation: 1,
            template: "sleeper".into(),
            title: "host-only start".into(),
            ..Default::default()
        };
        let t0 = Instant::now();
        if c.start_pod(req).await.is_ok() {
            s.push(t0.elapsed());
        }
    }
    s
}

/// One task that restarts at once: SIGKILL its pod `n` times; each time,
/// time `pod_crashed` and the next `pod_started` as WatchEvents delivers
/// them (so after commit: an upper bound of the commit time).
async fn crash_loop(
    central: &Server,
    client: &mut CentralClient,
    n: usize,
) -> (Samples, Samples, Option<String>) {
    let policy = pb::RestartPolicy {
        auto_restart: Some(true),
        // The API cap; with a 1 s window it never binds at these rates.
        max_restarts: Some(1000),
        window_seconds: Some(1),
        initial_backoff_ms: Some(0),
        max_backoff_ms: None,
    };
    let task = client
        .create_task(task_req(0, "sleeper", Some(policy)))
        .await
        .expect("CreateTask")
        .into_inner()
        .task_id;
    let mut watcher = CentralClient::new(central.channel().await);
    let mut events = watcher
        .watch_events(pb::WatchEventsRequest {
            after_position: 0,
            task_id: task.clone(),
        })
        .await
        .expect("WatchEvents")
        .into_inner();
    let pod = client
        .start_pod(pb::StartPodRequest {
            task_id: task.clone(),
            actor_id: "bench".into(),
            ..Default::default()
        })
        .await
        .expect("StartPod")
        .into_inner()
        .pod
        .expect("pod");
    let mut pid = pod.pid;
    let mut generation = pod.generation;
    let mut detect = Samples::new();
    let mut restart = Samples::new();
    let mut note = None;
    'samples: for _ in 0..n {
        // A little idle time between crashes, as in real life.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let t0 = Instant::now();
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        let mut crashed = false;
        loop {
            let ev = match tokio::time::timeout(EVENT_DEADLINE, events.next()).await {
                Ok(Some(Ok(ev))) => ev,
                other => {
                    note = Some(format!("event stream stopped: {other:?}"));
                    break 'samples;
                }
            };
            let data: serde_json::Value = serde_json::from_str(&ev.data_json).unwrap_or_default();
            let ev_gen = data.get("generation").and_then(|g| g.as_u64()).unwrap_or(0);
            match ev.r#type.as_str() {
                "pod_crashed" if ev_gen == generation || ev_gen == 0 => {
                    detect.push(t0.elapsed());
                    crashed = true;
                }
                "pod_started" if ev_gen > generation => {
                    if !crashed {
                        note = Some("pod_started before pod_crashed".into());
                    }
                    restart.push(t0.elapsed());
                    generation = ev_gen;
                    pid = data.get("pid").and_then(|p| p.as_u64()).unwrap_or(0) as u32;
                    break;
                }
                "task_failed" => {
                    note = Some(format!("task failed: {}", ev.data_json));
                    break 'samples;
                }
                _ => {}
            }
        }
    }
    let _ = client
        .cancel_task(pb::CancelTaskRequest {
            task_id: task,
            reason: "benchmark done".into(),
            actor_id: "bench".into(),
            ..Default::default()
        })
        .await;
    (detect, restart, note)
}

/// SIGSTOP → UNREACHABLE with every timing at its default, `n` times.
pub async fn frozen_host(dir: &Path, n: usize) -> Samples {
    let config = write_config(dir, &dir.join("unused-ledger"));
    let host = proc::pod_host(dir, "host-frozen", &config, &[]).await;
    let mut central = proc::central(dir, &[&host], &[]).await;
    let mut client = CentralClient::new(central.channel().await);
    let mut samples = Samples::new();
    for i in 0..n {
        proc::wait_hosts_ready(&mut client, 1).await;
        // Freeze at a different point of the heartbeat cycle each time.
        let offset = (i as u64 * 137 + std::process::id() as u64) % 500;
        tokio::time::sleep(Duration::from_millis(200 + offset)).await;
        host.signal(Signal::SIGSTOP);
        let t0 = Instant::now();
        let seen = loop {
            let state = client
                .list_pod_hosts(pb::ListPodHostsRequest {})
                .await
                .ok()
                .and_then(|r| r.into_inner().hosts.first().map(|h| h.state));
            if state == Some(pb::PodHostState::Unreachable as i32) {
                break Some(t0.elapsed());
            }
            if t0.elapsed() > Duration::from_secs(4) {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        host.signal(Signal::SIGCONT);
        match seen {
            Some(d) => samples.push(d),
            None => eprintln!("  frozen host not UNREACHABLE within 4 s"),
        }
    }
    drop(client);
    let mut host = host;
    host.stop(Duration::from_secs(10)).await;
    central.stop(Duration::from_secs(10)).await;
    samples
}
