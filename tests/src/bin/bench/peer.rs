//! The peer: supervisord restarting the same crashing program through its
//! own `autorestart`, against our pod-host + central-manager doing it with
//! zero initial backoff. The program is the bench itself in `crash-pod`
//! mode: it appends `start NS` when it starts and `exit NS` just before it
//! exits 1 (100 ms later), so both systems are timed the same way: the next
//! `start` minus the previous `exit`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ipa_tests::pb;

use crate::pods::{task_req, write_config};
use crate::proc::{self, CentralClient};
use crate::stats::Samples;

/// The `crash-pod` mode of the bench binary (runs before any runtime).
pub fn crash_pod_main(ledger: &str, delay_ms: &str) -> ! {
    use std::io::Write;
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(ledger)
        .expect("open crash ledger");
    // One write per line: O_APPEND keeps lines whole.
    let _ = f.write_all(format!("start {}\n", now()).as_bytes());
    let delay = delay_ms.parse().unwrap_or(100);
    std::thread::sleep(Duration::from_millis(delay));
    let _ = f.write_all(format!("exit {}\n", now()).as_bytes());
    std::process::exit(1);
}

/// Restart gaps in a ledger: each `start` after an `exit`.
pub fn restart_gaps(ledger: &Path) -> Samples {
    let text = std::fs::read_to_string(ledger).unwrap_or_default();
    let mut s = Samples::new();
    let mut last_exit: Option<u128> = None;
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(kind), Some(t)) = (it.next(), it.next().and_then(|t| t.parse::<u128>().ok()))
        else {
            continue;
        };
        match kind {
            "exit" => last_exit = Some(t),
            "start" => {
                if let Some(e) = last_exit.take() {
                    s.push(Duration::from_nanos(t.saturating_sub(e) as u64));
                }
            }
            _ => {}
        }
    }
    s
}

fn starts(ledger: &Path) -> usize {
    std::fs::read_to_string(ledger)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("start "))
        .count()
}

/// Waits until `ledger` shows `n` restarts or `limit` passes.
async fn wait_restarts(ledger: &Path, n: usize, limit: Duration) {
    let t0 = Instant::now();
    while starts(ledger) < n + 1 && t0.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Our system: one pod-host, one task crash-looping with zero backoff.
pub async fn ours(dir: &Path, n: usize, limit: Duration) -> Samples {
    let ledger = dir.join("ours-ledger");
    let config = write_config(dir, &ledger);
    let mut host = proc::pod_host(dir, "host-peer", &config, &[]).await;
    let mut central = proc::central(dir, &[&host], &[]).await;
    let mut client = CentralClient::new(central.channel().await);
    proc::wait_hosts_ready(&mut client, 1).await;
    let policy = pb::RestartPolicy {
        auto_restart: Some(true),
        // The API cap; with a 1 s window it never binds at these rates.
        max_restarts: Some(1000),
        window_seconds: Some(1),
        initial_backoff_ms: Some(0),
        max_backoff_ms: None,
    };
    let task = client
        .create_task(task_req(0, "crashy", Some(policy)))
        .await
        .expect("CreateTask")
        .into_inner()
        .task_id;
    client
        .start_pod(pb::StartPodRequest {
            task_id: task.clone(),
            actor_id: "bench".into(),
            ..Default::default()
        })
        .await
        .expect("StartPod");
    wait_restarts(&ledger, n, limit).await;
    let _ = client
        .cancel_task(pb::CancelTaskRequest {
            task_id: task,
            reason: "benchmark done".into(),
            actor_id: "bench".into(),
            ..Default::default()
        })
        .await;
    drop(client);
    host.stop(Duration::from_secs(10)).await;
    central.stop(Duration::from_secs(10)).await;
    restart_gaps(&ledger)
}

/// supervisord's path, if installed.
pub fn supervisord() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("supervisord"))
        .find(|p| p.exists())
}

/// supervisord's version string.
pub fn supervisord_version(bin: &Path) -> String {
    std::process::Command::new(bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// supervisord as a child with a generated config in `dir` (its own unix
/// socket, no inet listener), the crashing program under
/// `autorestart=true`, `startsecs=0`, a huge `startretries`.
pub async fn supervisord_run(bin: &Path, dir: &Path, n: usize, limit: Duration) -> Samples {
    let ledger = dir.join("supervisord-ledger");
    let bench = std::env::current_exe().expect("current_exe");
    let d = dir.display();
    let conf = format!(
        "[unix_http_server]\nfile={d}/supervisor.sock\n\n\
         [supervisord]\nnodaemon=true\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\n\
         childlogdir={d}\nuser=root\n\n\
         [rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
         [program:crashy]\ncommand={} crash-pod {} 100\nautostart=true\nautorestart=true\n\
         startsecs=0\nstartretries=1000000\nexitcodes=0\nstopsignal=KILL\n\
         stdout_logfile={d}/crashy.out\nstderr_logfile={d}/crashy.err\n",
        bench.display(),
        ledger.display(),
    );
    let conf_path = dir.join("supervisord.conf");
    std::fs::write(&conf_path, conf).expect("write supervisord.conf");
    let mut child = tokio::process::Command::new(bin)
        .arg("-n")
        .arg("-c")
        .arg(&conf_path)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn supervisord");
    let pgid = child.id().expect("supervisord pid") as i32;
    wait_restarts(&ledger, n, limit).await;
    // supervisord stops its programs on SIGTERM; then make sure of it.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pgid),
        nix::sys::signal::Signal::SIGTERM,
    );
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid),
        nix::sys::signal::Signal::SIGKILL,
    );
    restart_gaps(&ledger)
}
