//! `--local-pod-host`: the single-machine default. central-manager starts
//! one `pod-host` child on a free loopback port (it binds port 0 and
//! announces the port on stdout), serving the demo pod template, and stops
//! it when central-manager stops.
//!
//! The child gets SIGTERM as its parent-death signal, so even if
//! central-manager is killed with SIGKILL the pod-host shuts down
//! gracefully (its pods are stopped, none is orphaned). A graceful
//! central-manager shutdown sends SIGTERM itself and waits for the child's
//! own grace period to run out.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long the child may take to bind and announce its port. Generous: a
/// cold start on a loaded machine can take seconds.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(30);

/// A running local pod-host.
pub struct LocalPodHost {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

/// Where the `pod-host` binary is: next to our own executable.
pub fn pod_host_binary() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| std::io::Error::other("executable has no directory"))?;
    Ok(dir.join("pod-host"))
}

impl LocalPodHost {
    /// Starts `binary` with its data under `data_dir` and waits until it
    /// announces its address. `extra_args` are passed through (e.g. the
    /// fence timeout, so host and central agree).
    pub async fn start(
        binary: &Path,
        data_dir: &Path,
        extra_args: &[String],
        tracker: &tokio_util::task::TaskTracker,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let mut cmd = Command::new(binary);
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--host-id")
            .arg("local")
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // The child's logs join ours on stderr.
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe and touches no memory of the
        // parent. Spawned from a runtime worker thread, which lives as long
        // as the runtime (PDEATHSIG fires when the spawning *thread* exits).
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout pipe"))?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(ANNOUNCE_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(a) = ipa_common::parse_listening_line(&line) {
                    return Ok(Some(a));
                }
            }
            Ok::<_, std::io::Error>(None)
        })
        .await
        .map_err(|_| std::io::Error::other("local pod-host did not announce its address in time"))??
        .ok_or_else(|| {
            std::io::Error::other("local pod-host exited before announcing its address")
        })?;
        // Keep reading so the child never blocks on a full stdout pipe; the
        // task ends when the child closes stdout (it exits).
        tracker.spawn(tracing::Instrument::instrument(
            async move { while let Ok(Some(_)) = lines.next_line().await {} },
            tracing::info_span!("local_pod_host_stdout"),
        ));
        tracing::info!(%addr, pid = child.id(), "local pod-host started");
        Ok(Self {
            child,
            url: format!("http://{addr}"),
        })
    }

    /// Asks the child to stop (SIGTERM) and waits up to `timeout` for it;
    /// SIGKILL after that.
    pub async fn stop(mut self, timeout: Duration) {
        if let Some(pid) = self.child.id() {
            // SAFETY: plain kill(2) on our own child's pid, which cannot have
            // been reused while we hold the un-reaped Child.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => tracing::info!(%status, "local pod-host stopped"),
            _ => {
                tracing::warn!("local pod-host did not stop in time; killing it");
                let _ = self.child.kill().await;
            }
        }
    }
}
