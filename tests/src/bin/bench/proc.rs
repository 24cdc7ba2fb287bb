//! Child processes of the benchmark: the real `central-manager` and
//! `pod-host` binaries, started from the directory the `bench` executable
//! itself lives in (`target/<profile>/`), on 127.0.0.1 port 0.
//!
//! The test harness's `ServerProcess` looks one directory further up (it is
//! made for test executables in `target/<profile>/deps/`), so the bench has
//! this small variant. Every child is SIGKILLed and reaped on drop, so a
//! failing benchmark leaves nothing behind; the normal path stops them
//! gracefully with SIGTERM first.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ipa_tests::pb;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::{Channel, Endpoint};

/// A server announces its port within this long or the benchmark fails.
const START_DEADLINE: Duration = Duration::from_secs(30);

pub type CentralClient = pb::central_manager_client::CentralManagerClient<Channel>;

/// The directory holding the workspace binaries: the bench's own.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent().expect("bench executable dir").to_path_buf()
}

/// `bin_dir()/name`, checked to exist.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --release --workspace --bins` first",
        p.display()
    );
    p
}

/// A running server process.
pub struct Server {
    pub addr: SocketAddr,
    pub pid: u32,
    child: Option<Child>,
}

impl Server {
    /// Starts `bin_dir()/name` with `args` in `dir`, stderr to
    /// `dir/<name>-<tag>.log`, and waits for its `listening on` line.
    pub async fn start(name: &str, tag: &str, args: &[OsString], dir: &Path) -> Self {
        // Appended to: a restarted server keeps the log of the one before.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{name}-{tag}.log")))
            .expect("log file");
        let mut cmd = Command::new(bin(name));
        cmd.args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            // Measured as shipped: the binaries' default log level (info)
            // unless BENCH_LOG asks for another filter.
            .env_remove("RUST_LOG")
            .kill_on_drop(true);
        if let Ok(filter) = std::env::var("BENCH_LOG") {
            cmd.env("RUST_LOG", filter);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let pid = child.id().expect("pid");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let addr = tokio::time::timeout(START_DEADLINE, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(a) = ipa_common::parse_listening_line(&line) {
                    return Some(a);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            panic!(
                "{name} did not announce its address (see {})",
                dir.display()
            )
        });
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            addr,
            pid,
            child: Some(child),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A new HTTP/2 connection to the server (one per simulated client).
    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(self.url())
            .expect("endpoint")
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect")
    }

    pub fn signal(&self, sig: Signal) {
        let _ = kill(Pid::from_raw(self.pid as i32), sig);
    }

    /// Resident memory in KiB (VmRSS), if the process is alive.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid)
    }

    /// SIGTERM, then waits up to `grace` for the exit (SIGKILL after it).
    /// Returns how long the exit took after SIGTERM.
    pub async fn stop(&mut self, grace: Duration) -> Duration {
        let t0 = Instant::now();
        self.signal(Signal::SIGTERM);
        if let Some(c) = self.child.as_mut()
            && tokio::time::timeout(grace, c.wait()).await.is_err()
        {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
        self.child = None;
        t0.elapsed()
    }
}

impl Server {
    /// Waits for the process to exit after a signal sent with
    /// [`Server::signal`] (reaps it; nothing is signalled again).
    pub async fn reap(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.wait().await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            // Reap synchronously so no zombie outlives the benchmark.
            let _ = nix::sys::wait::waitpid(Pid::from_raw(self.pid as i32), None);
        }
    }
}

/// VmRSS of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Starts a pod-host `host_id` with `config` and `extra` flags.
pub async fn pod_host(dir: &Path, host_id: &str, config: &Path, extra: &[&str]) -> Server {
    let data = dir.join(host_id);
    std::fs::create_dir_all(&data).expect("host data dir");
    let mut args: Vec<OsString> = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--host-id".into(),
        host_id.into(),
        "--config".into(),
        config.into(),
        "--data-dir".into(),
        data.clone().into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    Server::start("pod-host", host_id, &args, &data).await
}

/// Starts central-manager with its database in `dir/central.db`.
pub async fn central(dir: &Path, hosts: &[&Server], extra: &[&str]) -> Server {
    let urls: Vec<String> = hosts.iter().map(|h| h.url()).collect();
    central_at(dir, &urls, extra).await
}

/// Starts central-manager with its database in `dir/central.db`, pointed
/// at the pod-hosts at `urls`.
pub async fn central_at(dir: &Path, urls: &[String], extra: &[&str]) -> Server {
    let db = format!("sqlite://{}", dir.join("central.db").display());
    central_db(dir, &db, urls, extra).await
}

/// Starts central-manager on the database at `db` (`sqlite://…` or
/// `postgres://…`), pointed at the pod-hosts at `urls`.
pub async fn central_db(dir: &Path, db: &str, urls: &[String], extra: &[&str]) -> Server {
    let mut args: Vec<OsString> = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--database-url".into(),
        db.into(),
    ];
    for u in urls {
        args.push("--pod-host".into());
        args.push(u.into());
    }
    args.extend(extra.iter().map(OsString::from));
    Server::start("central-manager", "central", &args, dir).await
}

/// Polls ListPodHosts until `n` hosts are READY.
pub async fn wait_hosts_ready(client: &mut CentralClient, n: usize) {
    let t0 = Instant::now();
    loop {
        let ready = client
            .list_pod_hosts(pb::ListPodHostsRequest {})
            .await
            .map(|r| {
                r.into_inner()
                    .hosts
                    .iter()
                    .filter(|h| h.state == pb::PodHostState::Ready as i32)
                    .count()
            })
            .unwrap_or(0);
        if ready >= n {
            return;
        }
        assert!(
            t0.elapsed() < START_DEADLINE,
            "only {ready} of {n} pod-hosts READY"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// CPU time (user + system) used so far by process `pid`, from
/// `/proc/PID/stat` (clock ticks, 100 per second on Linux).
pub fn cpu_time(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the parenthesised command name: state is field 3, so
    // utime (14) and stime (15) are the 12th and 13th after it.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    let ticks: u64 = f.iter().sum();
    Duration::from_millis(ticks * 10)
}

/// CPU used by several processes, e.g. central-manager and its pod-hosts.
pub fn cpu_of(pids: &[u32]) -> Duration {
    pids.iter().map(|p| cpu_time(*p)).sum()
}
