//! The cost of security: CreateTask from 1 and 64 clients and StartPod from
//! 1 client, each measured twice in this phase on fresh servers with the
//! same counts: plaintext (as shipped by default) and with TLS + token
//! authentication on (central-manager serving TLS and checking a bearer
//! token on every call; for StartPod also mutual TLS between
//! central-manager and the pod-host). The figure that matters is server
//! CPU per call, secure against plaintext (goal: at most 15 % more).
//!
//! CPU comes from /proc/PID/stat in clock ticks (10 ms), so the counts are
//! sized for at least a few hundred ticks per measurement.

use std::path::Path;
use std::time::{Duration, Instant};

use ipa_common::bearer::BearerToken;
use ipa_tests::pb;
use ipa_tests::pki::{Ca, ClientAuth, token_file};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::Scale;
use crate::proc;
use crate::stats::{self, Load, Samples};

type Client =
    pb::central_manager_client::CentralManagerClient<InterceptedService<Channel, BearerToken>>;

const TOKEN: &str = "bench-operator-token";

/// One variant's figures.
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
    ca: std::path::PathBuf,
    server: (std::path::PathBuf, std::path::PathBuf),
    central_client: (std::path::PathBuf, std::path::PathBuf),
    tokens: std::path::PathBuf,
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

pub async fn run(dir: &Path, scale: &Scale) -> SecureResults {
    let plain_dir = dir.join("plain");
    let secure_dir = dir.join("secure");
    std::fs::create_dir_all(&plain_dir).expect("dir");
    std::fs::create_dir_all(&secure_dir).expect("dir");
    eprintln!("  plaintext");
    let plain = variant(&plain_dir, scale, None).await;
    crate::baseline::settle().await;
    eprintln!("  TLS + token (mTLS to the pod-host)");
    let p = pki(&secure_dir);
    let secure = variant(&secure_dir, scale, Some(&p)).await;
    SecureResults { plain, secure }
}

/// How many calls each measurement makes: a few times the plaintext
/// rows' counts, for enough CPU ticks to compare (a full run: 3000, 4000
/// and 600 calls, hundreds of ticks each).
fn counts(scale: &Scale) -> (usize, usize, usize) {
    (
        scale.create_1 * 3,
        scale.create_64_min * 2,
        scale.start_1 * 2,
    )
}

async fn variant(dir: &Path, scale: &Scale, pki: Option<&Pki>) -> Variant {
    let (n_create_1, n_create_64, n_start_1) = counts(scale);
    let config = crate::pods::write_config(dir, &dir.join("ledger"));
    let capacity = (n_start_1 + 40).to_string();
    let mut host_flags: Vec<String> = vec![
        "--capacity".into(),
        capacity,
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
    let mut host = proc::pod_host(dir, "host", &config, &hf).await;
    let mut central = proc::central(dir, &[&host], &cf).await;
    let auth = match pki {
        Some(p) => ClientAuth {
            ca: Some(p.ca.clone()),
            identity: None,
            token: Some(TOKEN.into()),
        },
        None => ClientAuth::default(),
    };
    let addr = central.addr;
    let client = || -> Client {
        let token = auth
            .token
            .as_deref()
            .map_or_else(BearerToken::none, |t| BearerToken::new(t).expect("token"));
        pb::central_manager_client::CentralManagerClient::with_interceptor(
            auth.channel(addr),
            token,
        )
    };
    let mut c = client();
    wait_ready(&mut c).await;
    let auth_on = pki.is_some();
    let req = move |i: usize| create_req(i, auth_on);
    for i in 0..50 {
        c.create_task(req(i)).await.expect("CreateTask warm-up");
    }

    let mut create_1 = Samples::new();
    let cpu0 = proc::cpu_time(central.pid);
    let mut ids = Vec::with_capacity(n_create_1);
    for i in 0..n_create_1 {
        let t0 = Instant::now();
        let r = c.create_task(req(i)).await.expect("CreateTask");
        create_1.push(t0.elapsed());
        ids.push(r.into_inner().task_id);
    }
    let create_1_cpu = proc::cpu_time(central.pid).saturating_sub(cpu0) / n_create_1 as u32;

    let cpu0 = proc::cpu_time(central.pid);
    let create_64 = stats::drive(
        64,
        Some(n_create_64),
        None,
        |_| {
            let c = client();
            async move { c }
        },
        move |mut c, i| async move {
            let r = c.create_task(req(i)).await.map(|_| ());
            (c, r)
        },
    )
    .await;
    assert_eq!(create_64.errors, 0, "CreateTask failed");
    let create_64_cpu =
        proc::cpu_time(central.pid).saturating_sub(cpu0) / (create_64.ok.max(1) as u32);

    crate::baseline::settle().await;
    // Warm the host's side (connection, spawner) with a few starts.
    let (warm, measured) = ids.split_at(20);
    for id in warm {
        start(&mut c, id, pki.is_some()).await;
    }
    let mut start_1 = Samples::new();
    let pids = [central.pid, host.pid];
    let cpu0 = proc::cpu_of(&pids);
    for id in &measured[..n_start_1.min(measured.len())] {
        let t0 = Instant::now();
        start(&mut c, id, pki.is_some()).await;
        start_1.push(t0.elapsed());
    }
    let start_1_cpu = proc::cpu_of(&pids).saturating_sub(cpu0) / start_1.len().max(1) as u32;

    drop(c);
    host.stop(Duration::from_secs(30)).await;
    central.stop(Duration::from_secs(10)).await;
    Variant {
        create_1,
        create_1_cpu,
        create_64,
        create_64_cpu,
        start_1,
        start_1_cpu,
    }
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

async fn start(c: &mut Client, id: &str, auth: bool) {
    c.start_pod(pb::StartPodRequest {
        task_id: id.to_owned(),
        actor_id: if auth { String::new() } else { "bench".into() },
        ..Default::default()
    })
    .await
    .expect("StartPod");
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
