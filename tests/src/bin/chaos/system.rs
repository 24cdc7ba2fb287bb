//! The system under chaos: one central-manager and N pod-hosts as real
//! processes on fixed loopback ports (so a killed process comes back at the
//! same address), every pod-host behind a partitionable [`Proxy`], pods of
//! the `ledger` template writing to one ledger file, and central's database
//! on a small tmpfs of its own (when running as root) so that the disk can
//! really fill up.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipa_tests::cluster::write_host_config;
use ipa_tests::{Proxy, ServerProcess, pb};
use nix::sys::signal::Signal;
use tonic::transport::{Channel, Endpoint};

pub type Client = pb::central_manager_client::CentralManagerClient<Channel>;
pub type HostClient = pb::pod_host_client::PodHostClient<Channel>;

/// Size of the database's tmpfs: room for a minute of heavy writes and
/// its WAL, small enough to fill in a few milliseconds.
const TMPFS_SIZE: &str = "64m";

/// Timeouts of the run: short, so faults resolve within seconds, and in the
/// order that makes them meaningful (heartbeat < unreachable < fence).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub heartbeat_ms: u64,
    pub unreachable_ms: u64,
    pub fence_ms: u64,
    pub stop_grace_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat_ms: 100,
            unreachable_ms: 600,
            fence_ms: 2000,
            stop_grace_ms: 300,
        }
    }
}

/// One pod-host slot: its process (None while killed), its fixed port and
/// the proxy central reaches it through.
pub struct Host {
    pub id: String,
    pub port: u16,
    pub proc: Option<ServerProcess>,
    pub proxy: Proxy,
    data: PathBuf,
}

/// The running system.
pub struct System {
    pub timing: Timing,
    pub root: PathBuf,
    pub ledger: PathBuf,
    pub db_dir: PathBuf,
    /// Whether `db_dir` is a tmpfs of our own (root only).
    pub tmpfs: bool,
    config: PathBuf,
    central_port: u16,
    pub central: Option<ServerProcess>,
    pub hosts: Vec<Host>,
}

/// A free loopback port (bound and released; the servers bind it with
/// SO_REUSEADDR, so a restart on it works at once).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

impl System {
    /// Starts everything under `root` (which the caller owns).
    pub async fn start(root: &Path, hosts: usize, timing: Timing) -> Self {
        let ledger = root.join("ledger.txt");
        let config = write_host_config(root, &ledger, &[]);
        let db_dir = root.join("db");
        std::fs::create_dir_all(&db_dir).expect("db dir");
        let tmpfs = is_root() && mount_tmpfs(&db_dir);
        let mut sys = Self {
            timing,
            root: root.to_path_buf(),
            ledger,
            db_dir,
            tmpfs,
            config,
            central_port: free_port(),
            central: None,
            hosts: Vec::new(),
        };
        for i in 0..hosts {
            let id = format!("chaos-host-{i}");
            let data = root.join(&id);
            std::fs::create_dir_all(&data).expect("host data dir");
            let port = free_port();
            let proxy = Proxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], port))).await;
            let mut h = Host {
                id,
                port,
                proc: None,
                proxy,
                data,
            };
            h.proc = Some(sys.spawn_host(&h).await);
            sys.hosts.push(h);
        }
        sys.central = Some(sys.spawn_central().await);
        sys
    }

    async fn spawn_host(&self, h: &Host) -> ServerProcess {
        let t = self.timing;
        let args: Vec<OsString> = [
            "--listen".to_owned(),
            format!("127.0.0.1:{}", h.port),
            "--host-id".into(),
            h.id.clone(),
            "--config".into(),
            self.config.display().to_string(),
            "--data-dir".into(),
            h.data.display().to_string(),
            "--fence-timeout-ms".into(),
            t.fence_ms.to_string(),
            "--stop-grace-ms".into(),
            t.stop_grace_ms.to_string(),
            "--capacity".into(),
            "64".into(),
        ]
        .into_iter()
        .map(OsString::from)
        .collect();
        ServerProcess::start("pod-host", &args, &[], Some(&h.data)).await
    }

    async fn spawn_central(&self) -> ServerProcess {
        let t = self.timing;
        let db = format!("sqlite://{}", self.db_dir.join("central.db").display());
        let mut args: Vec<String> = vec![
            "--listen".into(),
            format!("127.0.0.1:{}", self.central_port),
            "--database-url".into(),
            db,
            "--heartbeat-interval-ms".into(),
            t.heartbeat_ms.to_string(),
            "--host-unreachable-ms".into(),
            t.unreachable_ms.to_string(),
            "--fence-timeout-ms".into(),
            t.fence_ms.to_string(),
        ];
        for h in &self.hosts {
            args.push("--pod-host".into());
            args.push(h.proxy.url());
        }
        let args: Vec<OsString> = args.into_iter().map(OsString::from).collect();
        ServerProcess::start("central-manager", &args, &[], Some(&self.root)).await
    }

    /// A client of central at its fixed address (it reconnects by itself
    /// across central restarts).
    pub fn client(&self) -> Client {
        let ch = Endpoint::from_shared(format!("http://127.0.0.1:{}", self.central_port))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy();
        Client::new(ch)
    }

    /// A direct client of pod-host `i` (not through its proxy).
    pub fn host_client(&self, i: usize) -> HostClient {
        let ch = Endpoint::from_shared(format!("http://127.0.0.1:{}", self.hosts[i].port))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy();
        HostClient::new(ch)
    }

    /// SIGKILLs central (its pods keep running on their hosts).
    pub async fn kill_central(&mut self) {
        if let Some(mut c) = self.central.take() {
            c.kill().await;
        }
    }

    /// Starts central again on the same port and database.
    pub async fn restart_central(&mut self) {
        if self.central.is_none() {
            self.central = Some(self.spawn_central().await);
        }
    }

    /// SIGKILLs pod-host `i` (its pods die with it).
    pub async fn kill_host(&mut self, i: usize) {
        if let Some(mut p) = self.hosts[i].proc.take() {
            p.kill().await;
        }
    }

    /// Starts pod-host `i` again with the same id, port and data dir.
    pub async fn restart_host(&mut self, i: usize) {
        if self.hosts[i].proc.is_none() {
            let p = self.spawn_host(&self.hosts[i]).await;
            self.hosts[i].proc = Some(p);
        }
    }

    /// Sends `sig` to central, if it runs.
    pub fn signal_central(&self, sig: Signal) {
        if let Some(c) = &self.central {
            c.signal(sig);
        }
    }

    /// Sends `sig` to pod-host `i`, if it runs.
    pub fn signal_host(&self, i: usize, sig: Signal) {
        if let Some(p) = &self.hosts[i].proc {
            p.signal(sig);
        }
    }

    /// Central's pid, if it runs.
    pub fn central_pid(&self) -> Option<u32> {
        self.central.as_ref().map(|c| c.pid)
    }

    /// Fills the database's filesystem: returns false if it is not a
    /// tmpfs of ours (the fault is then skipped).
    pub fn fill_disk(&self) -> bool {
        if !self.tmpfs {
            return false;
        }
        fill(&self.db_dir.join("filler"));
        true
    }

    /// Frees what [`fill_disk`] took.
    pub fn drain_disk(&self) {
        let _ = std::fs::remove_file(self.db_dir.join("filler"));
    }

    /// Copies the database out of its tmpfs (which goes with the run) into
    /// `root/db-kept`, for a failed run's inspection.
    pub fn keep_database(&self) -> PathBuf {
        let to = self.root.join("db-kept");
        let _ = std::fs::create_dir_all(&to);
        if let Ok(dir) = std::fs::read_dir(&self.db_dir) {
            for e in dir.flatten() {
                let name = e.file_name();
                if name.to_string_lossy().starts_with("central.db") {
                    let _ = std::fs::copy(e.path(), to.join(name));
                }
            }
        }
        to
    }

    /// Stops everything gracefully (SIGTERM, then SIGKILL after a while),
    /// central first so it does not see the hosts go.
    pub async fn shutdown(&mut self) {
        if let Some(mut c) = self.central.take() {
            c.signal(Signal::SIGTERM);
            if c.wait_exit(Duration::from_secs(20)).await.is_none() {
                c.kill().await;
            }
        }
        for h in &mut self.hosts {
            if let Some(mut p) = h.proc.take() {
                p.signal(Signal::SIGTERM);
                if p.wait_exit(Duration::from_secs(20)).await.is_none() {
                    p.kill().await;
                }
            }
        }
    }
}

impl Drop for System {
    fn drop(&mut self) {
        // Processes are SIGKILLed by their own drops; the mount goes last.
        self.central.take();
        for h in &mut self.hosts {
            h.proc.take();
        }
        if self.tmpfs {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.db_dir)
                .status();
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn mount_tmpfs(dir: &Path) -> bool {
    std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_SIZE}"), "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
}

/// Writes zeros to `path` until the filesystem is full.
fn fill(path: &Path) {
    use std::io::Write;
    let Ok(mut f) = std::fs::File::create(path) else {
        return;
    };
    let block = vec![0u8; 1 << 20];
    while f.write_all(&block).is_ok() {}
    // The last partial block: byte by byte is too slow, so halve.
    let mut n = block.len() / 2;
    while n > 0 {
        if f.write_all(&block[..n]).is_err() {
            n /= 2;
        }
    }
    let _ = f.sync_all();
}
