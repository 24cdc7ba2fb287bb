//! A server binary running as a child process of the test.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::{Channel, Endpoint};

/// Path of a workspace binary (`central-manager`, `pod-host`, `demo-pod`)
/// in the same target directory as the running test executable.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/e2e-<hash> → target/<profile>/<name>; a
    // binary of this crate (bench, chaos) already sits in target/<profile>.
    let parent = exe.parent().expect("target dir");
    let dir = if parent.ends_with("deps") {
        parent.parent().expect("target dir")
    } else {
        parent
    };
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

/// A running server. Dropping it SIGKILLs and reaps the process (and keeps
/// its temp dir only while the test panics, so the logs can be read).
pub struct ServerProcess {
    /// Binary name, for messages.
    pub name: String,
    /// The gRPC address it announced.
    pub addr: SocketAddr,
    /// Its process id.
    pub pid: u32,
    child: Option<Child>,
    log_path: PathBuf,
    _dir: Option<tempfile::TempDir>,
    dir_path: PathBuf,
}

impl ServerProcess {
    /// Starts `bin` with `args` (add `--listen 127.0.0.1:0` yourself) and
    /// waits until it prints its `listening on` line. `dir` is a working dir
    /// for the process (its relative paths land there); pass `None` to get a
    /// fresh temp dir owned by this handle.
    pub async fn start(
        bin: &str,
        args: &[OsString],
        envs: &[(&str, &str)],
        dir: Option<&Path>,
    ) -> Self {
        let (owned, dir_path) = match dir {
            Some(d) => (None, d.to_path_buf()),
            None => {
                let t = tempfile::tempdir().expect("tempdir");
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let log_path = dir_path.join(format!("{bin}-{}.log", uuid::Uuid::new_v4().simple()));
        let mut cmd = Command::new(bin_path(bin));
        cmd.args(args)
            .current_dir(&dir_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        // Keep the child's logs quiet and structured unless asked.
        cmd.env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        if std::env::var_os("TEST_LOG").is_some() {
            cmd.stderr(Stdio::inherit());
        } else {
            let f = std::fs::File::create(&log_path).expect("log file");
            cmd.stderr(Stdio::from(f));
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        let pid = child.id().expect("pid");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(crate::DEADLINE, async {
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
                "{bin} did not announce its address; log: {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            )
        });
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            name: bin.to_owned(),
            addr,
            pid,
            child: Some(child),
            log_path,
            _dir: owned,
            dir_path,
        }
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A lazily connecting channel to the server.
    pub fn channel(&self) -> Channel {
        Endpoint::from_shared(self.url())
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy()
    }

    /// The process's working directory.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// Its stderr log so far (empty with `TEST_LOG`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: Signal) {
        let _ = kill(Pid::from_raw(self.pid as i32), sig);
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        tokio::time::timeout(timeout, child.wait()).await.ok()?.ok()
    }

    /// SIGKILL and reap.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            // Reap synchronously so no zombie outlives the test.
            let _ = nix::sys::wait::waitpid(Pid::from_raw(self.pid as i32), None);
            drop(c);
        }
        if std::thread::panicking() {
            eprintln!(
                "{} log ({}):\n{}",
                self.name,
                self.log_path.display(),
                self.log()
            );
            if let Some(d) = self._dir.take() {
                let _ = d.keep();
            }
        }
    }
}
