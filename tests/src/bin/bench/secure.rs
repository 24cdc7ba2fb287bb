//! The cost of security: CreateTask from 1 and 64 clients and StartPod from
//! 1 client, plaintext (as shipped by default) against TLS + token
//! authentication (central-manager serving TLS and checking a bearer token
//! on every call; for StartPod also mutual TLS between central-manager and
//! the pod-host). The figure that matters is server CPU per call, secure
//! against plaintext (goal: at most 15 % more).
//!
//! Both systems run side by side and each measurement alternates between
//! them in rounds (plaintext, secure, plaintext, …), so load from the rest
//! of a shared machine falls on both alike instead of on whichever ran
//! second. CPU comes from /proc/PID/stat in clock ticks (10 ms), so the
//! counts are sized for hundreds of ticks per variant.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipa_common::bearer::BearerToken;
use ipa_tests::pb;
use ipa_tests::pki::{Ca, ClientAuth, token_file};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::Scale;
use crate::proc::{self, Server};
use crate::stats::{self, Load, Samples};

type Client =
    pb::central_manager_client::CentralManagerClient<InterceptedService<Channel, BearerToken>>;

const TOKEN: &str = "bench-operator-token";

/// Rounds each measurement is split into, alternating the two systems.
const ROUNDS: usize = 4;

/// One variant's figures.
#[derive(Default)]
pub struct Variant {
    pub create_1: Samples,
    pub create_1_cpu: Duration,
    pub create_64: Load,
    pub create_64_cpu: Duration,
    pub start_1: Samples,
    /// central-manager + pod-host.
    pub start_1_cpu: Duration,
}

pub struct SecureResults {
    pub plain: Variant,
    pub secure: Variant,
}

/// Certificates and the token file for the secure variant.
struct Pki {
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    central_client: (PathBuf, PathBuf),
    tokens: PathBuf,
}

fn pki(dir: &Path) -> Pki {
    let ca = Ca::new("bench CA");
    let tokens = dir.join("tokens.toml");
    std::fs::write(&tokens, token_file(&[("bench", "operator", TOKEN)])).expect("token file");
    Pki {
        ca: ca.write(dir, "ca.pem"),
        server: ca.leaf(&["localhost", "127.0.0.1"]).write(dir, "server"),
        central_client: ca.leaf(&["central.bench"]).write(dir, "central"),
        tokens,
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// How many calls each measurement makes per variant: a few times the
/// plaintext rows' counts (a full run: 3000, 4000 and 600 calls).
fn counts(scale: &Scale) -> (usize, usize, usize) {
    (
        scale.create_1 * 3,
        scale.create_64_min * 2,
        scale.start_1 * 2,
    )
}

/// central-manager and one pod-host, plaintext or secure.
struct System {
    central: Server,
    host: Server,
    auth: ClientAuth,
    /// Tasks created so far, to start pods of.
    ids: Vec<String>,
    next_start: usize,
    /// The 64 clients of the concurrent run, connected (handshakes done)
    /// before it: real clients keep their connections.
    pool: Vec<Client>,
}

impl System {
    async fn start(dir: &Path, capacity: usize, pki: Option<&Pki>) -> Self {
        std::fs::create_dir_all(dir).expect("dir");
        let config = crate::pods::write_config(dir, &dir.join("ledger"));
        let mut host_flags: Vec<String> = vec![
            "--capacity".into(),
            capacity.to_string(),
            "--stop-grace-ms".into(),
            "2000".into(),
        ];
        let mut central_flags: Vec<String> = Vec::new();
        if let Some(p) = pki {
            host_flags.extend([
                "--tls-cert".into(),
                s(&p.server.0),
                "--tls-key".into(),
                s(&p.server.1),
                "--client-ca".into(),
                s(&p.ca),
                "--allowed-client".into(),
                "central.bench".into(),
            ]);
            central_flags.extend([
                "--tls-cert".into(),
                s(&p.server.0),
                "--tls-key".into(),
                s(&p.server.1),
                "--auth-tokens".into(),
                s(&p.tokens),
                "--pod-host-ca".into(),
                s(&p.ca),
                "--pod-host-client-cert".into(),
                s(&p.central_client.0),
                "--pod-host-client-key".into(),
                s(&p.central_client.1),
            ]);
        }
        let hf: Vec<&str> = host_flags.iter().map(String::as_str).collect();
        let cf: Vec<&str> = central_flags.iter().map(String::as_str).collect();
        let host = proc::pod_host(dir, "host", &config, &hf).await;
        let central = proc::central(dir, &[&host], &cf).await;
        let auth = match pki {
            Some(p) => ClientAuth {
                ca: Some(p.ca.clone()),
                identity: None,
                token: Some(TOKEN.into()),
            },
            None => ClientAuth::default(),
        };
        let mut sys = Self {
            central,
            host,
            auth,
            ids: Vec::new(),
            next_start: 0,
            pool: Vec::new(),
        };
        let mut c = sys.client();
        wait_ready(&mut c).await;
        // Warm-up: connection, prepared statements, page cache.
        for i in 0..50 {
            let r = c.create_task(sys.req(i)).await.expect("CreateTask warm-up");
            sys.ids.push(r.into_inner().task_id);
        }
        for _ in 0..64 {
            let mut c = sys.client();
            c.list_pod_hosts(pb::ListPodHostsRequest {})
                .await
                .expect("connect a load client");
            sys.pool.push(c);
        }
        sys
    }

    fn secure(&self) -> bool {
        self.auth.token.is_some()
    }

    fn client(&self) -> Client {
        let token = self
            .auth
            .token
            .as_deref()
            .map_or_else(BearerToken::none, |t| BearerToken::new(t).expect("token"));
        pb::central_manager_client::CentralManagerClient::with_interceptor(
            self.auth.channel(self.central.addr),
            token,
        )
    }

    fn req(&self, i: usize) -> pb::CreateTaskRequest {
        create_req(i, self.secure())
    }

    /// `n` sequential creates on `c`.
    async fn create_1(&mut self, c: &mut Client, n: usize, v: &mut Variant) {
        let cpu0 = proc::cpu_time(self.central.pid);
        for i in 0..n {
            let t0 = Instant::now();
            let r = c.create_task(self.req(i)).await.expect("CreateTask");
            v.create_1.push(t0.elapsed());
            self.ids.push(r.into_inner().task_id);
        }
        v.create_1_cpu += proc::cpu_time(self.central.pid).saturating_sub(cpu0);
    }

    /// `n` creates from 64 clients.
    async fn create_64(&self, n: usize, v: &mut Variant) {
        let cpu0 = proc::cpu_time(self.central.pid);
        let secure = self.secure();
        let load = stats::drive(
            64,
            Some(n),
            None,
            |i| {
                let c = self.pool[i].clone();
                async move { c }
            },
            move |mut c, i| async move {
                let r = c.create_task(create_req(i, secure)).await.map(|_| ());
                (c, r)
            },
        )
        .await;
        assert_eq!(load.errors, 0, "CreateTask failed");
        v.create_64_cpu += proc::cpu_time(self.central.pid).saturating_sub(cpu0);
        v.create_64.samples.extend(load.samples);
        v.create_64.ok += load.ok;
        v.create_64.errors += load.errors;
        v.create_64.elapsed += load.elapsed;
    }

    /// `n` sequential pod starts of tasks created before.
    async fn start_1(&mut self, c: &mut Client, n: usize, v: &mut Variant) {
        let pids = [self.central.pid, self.host.pid];
        let cpu0 = proc::cpu_of(&pids);
        for _ in 0..n {
            let id = self.ids[self.next_start].clone();
            self.next_start += 1;
            let t0 = Instant::now();
            c.start_pod(pb::StartPodRequest {
                task_id: id,
                actor_id: if self.secure() {
                    String::new()
                } else {
                    "bench".into()
                },
                ..Default::default()
            })
            .await
            .expect("StartPod");
            v.start_1.push(t0.elapsed());
        }
        v.start_1_cpu += proc::cpu_of(&pids).saturating_sub(cpu0);
    }

    async fn stop(mut self) {
        self.host.stop(Duration::from_secs(30)).await;
        self.central.stop(Duration::from_secs(10)).await;
    }
}

pub async fn run(dir: &Path, scale: &Scale) -> SecureResults {
    let (n1, n64, nstart) = counts(scale);
    let capacity = nstart + 60;
    let secure_dir = dir.join("secure");
    std::fs::create_dir_all(&secure_dir).expect("dir");
    let p = pki(&secure_dir);
    let mut systems = [
        System::start(&dir.join("plain"), capacity, None).await,
        System::start(&secure_dir, capacity, Some(&p)).await,
    ];
    let mut clients: Vec<Client> = systems.iter().map(System::client).collect();
    let mut v = [Variant::default(), Variant::default()];
    // Warm the pod-host side (connection, spawner) of both.
    for (i, sys) in systems.iter_mut().enumerate() {
        let mut warm = Variant::default();
        sys.start_1(&mut clients[i], 10, &mut warm).await;
    }

    eprintln!("  CreateTask, 1 client × {n1} each, alternating in {ROUNDS} rounds");
    for _ in 0..ROUNDS {
        for i in 0..2 {
            systems[i]
                .create_1(&mut clients[i], n1 / ROUNDS, &mut v[i])
                .await;
        }
    }
    eprintln!("  CreateTask, 64 clients × {n64} each");
    for _ in 0..ROUNDS {
        for i in 0..2 {
            systems[i].create_64(n64 / ROUNDS, &mut v[i]).await;
        }
    }
    crate::baseline::settle().await;
    eprintln!("  StartPod, 1 client × {nstart} each");
    for _ in 0..ROUNDS {
        for i in 0..2 {
            systems[i]
                .start_1(&mut clients[i], nstart / ROUNDS, &mut v[i])
                .await;
        }
    }
    drop(clients);
    let [a, b] = systems;
    tokio::join!(a.stop(), b.stop());
    for x in &mut v {
        let per = |d: Duration, n: usize| d / n.max(1) as u32;
        x.create_1_cpu = per(x.create_1_cpu, x.create_1.len());
        x.create_64_cpu = per(x.create_64_cpu, x.create_64.ok + x.create_64.errors);
        x.start_1_cpu = per(x.start_1_cpu, x.start_1.len());
    }
    let [plain, secure] = v;
    SecureResults { plain, secure }
}

fn create_req(i: usize, auth: bool) -> pb::CreateTaskRequest {
    pb::CreateTaskRequest {
        title: format!("bench task {i}"),
        description: "created by the benchmark".into(),
        // Empty: the principal under auth; "bench" (required) without.
        actor_id: if auth { String::new() } else { "bench".into() },
        template: "sleeper".into(),
        ..Default::default()
    }
}

async fn wait_ready(c: &mut Client) {
    let t0 = Instant::now();
    loop {
        let ready = c
            .list_pod_hosts(pb::ListPodHostsRequest {})
            .await
            .map(|r| {
                r.into_inner()
                    .hosts
                    .iter()
                    .any(|h| h.state == pb::PodHostState::Ready as i32)
            })
            .unwrap_or(false);
        if ready {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "pod-host not READY");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
