//! Pods apart from their host (`--pod-user`, `--pod-uid-range`): a pod
//! cannot read another pod's task file (with a uid per pod), the
//! pod-host's key or data dir listing, and cannot signal the pod-host or
//! its reaper. Needs root (CI runs as root); skipped with a message
//! otherwise.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ipa_tests::cluster::start_pod_host;
use ipa_tests::pb;
use ipa_tests::pb::pod_host_client::PodHostClient;
use ipa_tests::pki::ClientAuth;
use ipa_tests::{DEADLINE, ServerProcess, wait_for};

use super::support::{Pki, is_root};

/// The pid of the pod-host's watchdog (`pod-host --internal-reaper`).
async fn reaper_of(host_pid: u32) -> u32 {
    wait_for("the reaper", DEADLINE, || find_reaper(host_pid)).await
}

fn find_reaper(host_pid: u32) -> Option<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat.rsplit(") ").next().and_then(|r| r.split(' ').nth(1));
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            ppid == Some(&host_pid.to_string())
                && String::from_utf8_lossy(&cmd).contains("--internal-reaper")
        })
}

/// Everything a curious pod tries, reported one line each.
fn spy_script(targets: &[&Path], data_dir: &Path, host_pid: u32, reaper_pid: u32) -> String {
    let mut s = String::from("id -u | sed 's/^/uid=/'\n");
    for t in targets {
        s += &format!(
            "if cat {t:?} >/dev/null 2>&1; then echo 'READ {t}'; else echo 'DENIED {t}'; fi\n",
            t = t.display()
        );
    }
    s += &format!(
        "if ls {d:?}/pods >/dev/null 2>&1; then echo 'LISTED pods'; else echo 'DENIED pods'; fi\n",
        d = data_dir.display()
    );
    for (what, pid) in [("host", host_pid), ("reaper", reaper_pid)] {
        s += &format!(
            "if kill -0 {pid} 2>/dev/null; then echo 'SIGNALLED {what}'; else echo 'DENIED {what}'; fi\n"
        );
    }
    s += "cat \"$IPA_TASK_FILE\" >/dev/null && echo 'OWN task file'\n";
    s += "echo \"home=$HOME\"\necho '{\"message\":\"done\"}' >&3\nexec sleep 1000\n";
    s
}

struct Setup {
    pki: Pki,
    host: ServerProcess,
    client: PodHostClient<tonic::transport::Channel>,
    data: std::path::PathBuf,
    script: std::path::PathBuf,
}

async fn setup(identity: &[&str]) -> Setup {
    let pki = Pki::new();
    let dir = pki.path();
    // Pods must be able to walk down to their own dirs (a tempdir is 0700);
    // the key stays 0600, the pki files the host's.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    let script = dir.join("spy.sh");
    std::fs::write(&script, "exec sleep 1000\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = dir.join("pod-host.toml");
    std::fs::write(
        &config,
        format!(
            "[templates.spy]\ncommand = \"/bin/sh\"\nargs = [{:?}]\n",
            script.display().to_string()
        ),
    )
    .unwrap();
    let (cc, ck) = pki.ca.leaf(&["central.ipa"]).write(dir, "central");
    let s = |p: &Path| p.display().to_string();
    let mut args = vec![
        "--tls-cert".to_owned(),
        s(&pki.server_cert),
        "--tls-key".to_owned(),
        s(&pki.server_key),
        "--client-ca".to_owned(),
        s(&pki.ca_path),
        "--capacity".to_owned(),
        "4".to_owned(),
    ];
    args.extend(identity.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let host = start_pod_host(dir, "iso", &config, &args).await;
    let auth = ClientAuth {
        identity: Some((cc, ck)),
        ..pki.tls_only()
    };
    let client = PodHostClient::new(auth.channel(host.addr));
    Setup {
        data: dir.join("iso"),
        pki,
        host,
        client,
        script,
    }
}

impl Setup {
    async fn start(&self, n: u64) -> pb::PodInfo {
        let task_id = uuid::Uuid::new_v4().to_string();
        let pod_id = uuid::Uuid::new_v4().to_string();
        self.client
            .clone()
            .start_pod(pb::HostStartPodRequest {
                task_id,
                pod_id,
                generation: n,
                template: "spy".into(),
                title: format!("pod {n}"),
                ..Default::default()
            })
            .await
            .expect("StartPod")
            .into_inner()
            .pod
            .unwrap()
    }

    /// The pod's output once it reported `done`.
    async fn output(&self, pod: &pb::PodInfo) -> String {
        let log = self.data.join("pods").join(&pod.pod_id).join("output.log");
        wait_for("the spy's report", DEADLINE, || {
            let text = std::fs::read_to_string(&log).ok()?;
            text.contains("home=").then_some(text)
        })
        .await
    }
}

fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_pod_cannot_read_another_pods_task_file_or_the_hosts_key() {
    if !is_root() {
        eprintln!("skipped: pods as other users need root (CI runs as root)");
        return;
    }
    let s = setup(&["--pod-uid-range", "70100-70109"]).await;
    let victim = s.start(1).await;
    let victim_file = s
        .data
        .join("pods")
        .join(&victim.pod_id)
        .join("work/task.json");
    wait_for("the victim's task file", DEADLINE, || {
        victim_file.exists().then_some(())
    })
    .await;
    let reaper = reaper_of(s.host.pid).await;
    std::fs::write(
        &s.script,
        spy_script(
            &[&victim_file, &s.pki.server_key],
            &s.data,
            s.host.pid,
            reaper,
        ),
    )
    .unwrap();
    let spy = s.start(2).await;
    let out = s.output(&spy).await;

    // Each pod has a uid of its own from the range, not the host's.
    assert_eq!(uid_of(victim.pid), 70100);
    assert!(out.contains("o uid=70101"), "{out}");
    assert!(
        out.contains(&format!("DENIED {}", victim_file.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!("DENIED {}", s.pki.server_key.display())),
        "{out}"
    );
    assert!(out.contains("DENIED pods"), "{out}");
    assert!(out.contains("DENIED host"), "{out}");
    assert!(out.contains("DENIED reaper"), "{out}");
    assert!(out.contains("OWN task file"), "{out}");
    let work = s.data.join("pods").join(&spy.pod_id).join("work");
    assert!(out.contains(&format!("home={}", work.display())), "{out}");
    let meta = std::fs::metadata(&work).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.mode() & 0o777), (70101, 0o700));
    // The host's own files stay the host's.
    let pod_dir = std::fs::metadata(s.data.join("pods").join(&spy.pod_id)).unwrap();
    assert_eq!((pod_dir.uid(), pod_dir.mode() & 0o777), (0, 0o711));
}

#[tokio::test]
async fn pod_user_runs_every_pod_as_that_user_and_keeps_the_host_out_of_reach() {
    if !is_root() {
        eprintln!("skipped: pods as other users need root (CI runs as root)");
        return;
    }
    let s = setup(&["--pod-user", "70200:70200"]).await;
    let first = s.start(1).await;
    assert_eq!(uid_of(first.pid), 70200);
    let reaper = reaper_of(s.host.pid).await;
    std::fs::write(
        &s.script,
        spy_script(&[&s.pki.server_key], &s.data, s.host.pid, reaper),
    )
    .unwrap();
    let spy = s.start(2).await;
    let out = s.output(&spy).await;
    assert!(out.contains("o uid=70200"), "{out}");
    assert!(
        out.contains(&format!("DENIED {}", s.pki.server_key.display())),
        "{out}"
    );
    assert!(out.contains("DENIED pods"), "{out}");
    assert!(out.contains("DENIED host"), "{out}");
    assert!(out.contains("DENIED reaper"), "{out}");
    assert!(out.contains("OWN task file"), "{out}");
    assert_eq!(uid_of(spy.pid), 70200);
}
