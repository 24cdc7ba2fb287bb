//! Tests of pod process creation: environment, file descriptors, process
//! group, signal state, PATH lookup, failures, and running as another user.

use super::*;
use std::collections::BTreeMap;

fn template() -> Template {
    Template {
        command: "/bin/sh".into(),
        args: vec![],
        env: BTreeMap::from([
            ("FOO".to_owned(), "bar".to_owned()),
            ("IPA_TASK_ID".to_owned(), "spoofed".to_owned()),
            ("PATH".to_owned(), "/custom".to_owned()),
        ]),
        cwd: None,
    }
}

fn get<'a>(env: &'a [(OsString, OsString)], k: &str) -> Option<&'a str> {
    env.iter()
        .find(|(ek, _)| ek == k)
        .and_then(|(_, v)| v.to_str())
}

#[test]
fn environment_is_base_then_template_then_contract() {
    let host = vec![
        ("PATH".into(), "/usr/bin".into()),
        ("HOME".into(), "/home/x".into()),
        ("AWS_SECRET".into(), "s3cr3t".into()),
    ];
    let env = pod_environment(
        host.into_iter(),
        &template(),
        &PodEnv {
            task_id: "t1",
            pod_id: "p1",
            generation: 7,
            task_file: Path::new("/data/p1/task.json"),
        },
    );
    assert_eq!(get(&env, "HOME"), Some("/home/x"));
    assert_eq!(get(&env, "AWS_SECRET"), None, "host env is not leaked");
    assert_eq!(
        get(&env, "PATH"),
        Some("/custom"),
        "template overrides base"
    );
    assert_eq!(get(&env, "FOO"), Some("bar"));
    assert_eq!(get(&env, "IPA_TASK_ID"), Some("t1"), "contract wins");
    assert_eq!(get(&env, "IPA_POD_ID"), Some("p1"));
    assert_eq!(get(&env, "IPA_POD_GENERATION"), Some("7"));
    assert_eq!(get(&env, "IPA_TASK_FILE"), Some("/data/p1/task.json"));
    assert_eq!(get(&env, "IPA_STATUS_FD"), Some("3"));
    let keys: Vec<_> = env.iter().map(|(k, _)| k.clone()).collect();
    let mut dedup = keys.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(keys.len(), dedup.len(), "no duplicate variables");
}

#[test]
fn path_defaults_when_host_has_none() {
    let mut t = template();
    t.env.clear();
    let env = pod_environment(
        std::iter::empty(),
        &t,
        &PodEnv {
            task_id: "t",
            pod_id: "p",
            generation: 1,
            task_file: Path::new("/f"),
        },
    );
    assert_eq!(get(&env, "PATH"), Some(DEFAULT_PATH));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn spawned_child_gets_status_fd_own_group_and_env() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let t = Template {
        command: "/bin/sh".into(),
        args: vec![
            "-c".into(),
            // Report on fd 3, print our pgid and pid to stdout.
            r#"echo "{\"message\":\"$IPA_POD_ID\"}" >&3; echo "$(cut -d' ' -f5 /proc/$$/stat) $$""#
                .into(),
        ],
        env: BTreeMap::new(),
        cwd: None,
    };
    let env = pod_environment(
        std::env::vars_os(),
        &t,
        &PodEnv {
            task_id: "t",
            pod_id: "pod-9",
            generation: 1,
            task_file: Path::new("/f"),
        },
    );
    let (r, w) = status_pipe().unwrap();
    let spawner = Spawner::start().unwrap();
    let mut child = spawner
        .spawn(pod_command(&t, env, dir.path(), None).unwrap(), w)
        .await
        .unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    let mut status = String::new();
    tokio::net::unix::pipe::Receiver::from_owned_fd(r)
        .unwrap()
        .read_to_string(&mut status)
        .await
        .unwrap();
    assert!(child.wait().await.unwrap().success());
    assert_eq!(status, "{\"message\":\"pod-9\"}\n");
    let nums: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(nums.len(), 2, "{out}");
    assert_eq!(nums[0], nums[1], "the pod leads its own process group");
}

fn env_for(t: &Template) -> Vec<(OsString, OsString)> {
    pod_environment(
        std::env::vars_os(),
        t,
        &PodEnv {
            task_id: "t",
            pod_id: "p",
            generation: 1,
            task_file: Path::new("/f"),
        },
    )
}

/// Spawns `t` in `dir`, reads its stdout to the end and checks it
/// exited 0; returns what it printed.
async fn run_to_success(t: &Template, dir: &Path) -> String {
    use tokio::io::AsyncReadExt;
    let (_r, w) = status_pipe().unwrap();
    let spawner = Spawner::start().unwrap();
    let mut child = spawner
        .spawn(pod_command(t, env_for(t), dir, None).unwrap(), w)
        .await
        .unwrap();
    let mut out = String::new();
    let mut stdout = child.stdout.take().unwrap();
    stdout.read_to_string(&mut out).await.unwrap();
    assert!(child.wait().await.unwrap().success(), "{out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn pods_start_with_a_clean_signal_state_in_their_dir_via_path() {
    let dir = tempfile::tempdir().unwrap();
    let t = Template {
        // A bare name: looked up on the pod's PATH.
        command: "sh".into(),
        args: vec![
            "-c".into(),
            "grep -E '^Sig(Blk|Ign)' /proc/self/status; pwd; ls -l /proc/self/fd/0".into(),
        ],
        env: BTreeMap::from([("PATH".to_owned(), "/nonexistent::/usr/bin:/bin".to_owned())]),
        cwd: None,
    };
    let out = run_to_success(&t, dir.path()).await;
    // Nothing blocked, SIGPIPE not ignored (the host ignores it).
    assert!(out.contains("SigBlk:\t0000000000000000"), "{out}");
    let ignored = out
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    assert_eq!(ignored & (1 << (libc::SIGPIPE - 1)), 0, "{out}");
    let real = std::fs::canonicalize(dir.path()).unwrap();
    assert!(out.contains(&format!("\n{}\n", real.display())), "{out}");
    assert!(out.contains("-> /dev/null"), "{out}");
}

/// Like execvp: an executable file without a `#!` line runs under
/// `/bin/sh`, with its arguments.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_script_without_an_interpreter_line_runs_under_sh() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("plain-script");
    std::fs::write(&script, "echo \"ran as $0 with $1 $2\"\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let t = Template {
        command: script.clone(),
        args: vec!["a".into(), "b".into()],
        env: BTreeMap::new(),
        cwd: None,
    };
    let out = run_to_success(&t, dir.path()).await;
    assert_eq!(out, format!("ran as {} with a b\n", script.display()));
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: changing a pod's uid needs root");
    }
    root
}

/// `--pod-user`: the pod runs with exactly that uid and gid and no
/// supplementary groups, and the host's threads keep theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_runs_as_the_given_user() {
    use tokio::io::AsyncReadExt;
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = Template {
        command: "/bin/sh".into(),
        args: vec![
            "-c".into(),
            "grep -E '^(Uid|Gid|Groups):' /proc/self/status".into(),
        ],
        env: BTreeMap::new(),
        cwd: Some("/".into()),
    };
    let (_r, w) = status_pipe().unwrap();
    let spawner = Spawner::start().unwrap();
    let mut child = spawner
        .spawn(
            pod_command(&t, env_for(&t), dir.path(), Some((4242, 4343))).unwrap(),
            w,
        )
        .await
        .unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    assert!(child.wait().await.unwrap().success(), "{out}");
    assert!(out.contains("Uid:\t4242\t4242\t4242\t4242"), "{out}");
    assert!(out.contains("Gid:\t4343\t4343\t4343\t4343"), "{out}");
    let groups = out.lines().find(|l| l.starts_with("Groups:")).unwrap();
    assert_eq!(groups.trim(), "Groups:", "no supplementary groups: {out}");
    // The host is still root on every thread.
    let me = std::fs::read_to_string("/proc/self/status").unwrap();
    assert!(me.contains("Uid:\t0\t0\t0\t0"), "{me}");
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let st = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        assert!(st.is_empty() || st.contains("Uid:\t0\t0\t0\t0"), "{st}");
    }
}

/// A per-pod uid is swept: whatever still runs under it (here a process
/// that left the pod's group) is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeping_a_uid_kills_what_escaped_the_group() {
    use tokio::io::AsyncReadExt;
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = Template {
        command: "/bin/sh".into(),
        // A daemon in a session of its own, then exit at once.
        args: vec![
            "-c".into(),
            "setsid sleep 300 >/dev/null 2>&1 & echo $!".into(),
        ],
        env: BTreeMap::new(),
        cwd: Some("/".into()),
    };
    let (_r, w) = status_pipe().unwrap();
    let spawner = Spawner::start().unwrap();
    let mut child = spawner
        .spawn(
            pod_command(&t, env_for(&t), dir.path(), Some((4244, 4244))).unwrap(),
            w,
        )
        .await
        .unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    assert!(child.wait().await.unwrap().success());
    let pid: i32 = out.trim().parse().unwrap();
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map(|s| !s.contains("State:\tZ"))
            .unwrap_or(false)
    };
    assert!(alive(pid), "the escaped process runs");
    spawner.kill_all_of(4244).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while alive(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "pid {pid} survived the sweep"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_missing_program_is_a_spawn_error_and_exit_codes_come_through() {
    let dir = tempfile::tempdir().unwrap();
    let spawner = Spawner::start().unwrap();
    let mut t = Template {
        command: "/nonexistent/program".into(),
        args: vec![],
        env: BTreeMap::new(),
        cwd: None,
    };
    let (_r, w) = status_pipe().unwrap();
    let err = spawner
        .spawn(pod_command(&t, env_for(&t), dir.path(), None).unwrap(), w)
        .await
        .err()
        .expect("spawn fails");
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(
        err.to_string()
            .starts_with("cannot execute /nonexistent/program: "),
        "{err}"
    );
    t.command = "no-such-program-anywhere".into();
    let (_r, w) = status_pipe().unwrap();
    let err = spawner
        .spawn(pod_command(&t, env_for(&t), dir.path(), None).unwrap(), w)
        .await
        .err()
        .expect("spawn fails");
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    // A missing working directory fails the spawn too, and says so
    // (not "cannot execute /bin/true").
    t.command = "/bin/true".into();
    t.cwd = Some("/nonexistent/dir".into());
    let (_r, w) = status_pipe().unwrap();
    let err = spawner
        .spawn(pod_command(&t, env_for(&t), dir.path(), None).unwrap(), w)
        .await
        .err()
        .expect("spawn fails");
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(
        err.to_string()
            .starts_with("cannot enter the working directory /nonexistent/dir: "),
        "{err}"
    );
    t.cwd = None;
    t.command = "/bin/sh".into();
    t.args = vec!["-c".into(), "kill -TERM $$".into()];
    let (_r, w) = status_pipe().unwrap();
    let mut child = spawner
        .spawn(pod_command(&t, env_for(&t), dir.path(), None).unwrap(), w)
        .await
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(child.wait().await.unwrap().signal(), Some(libc::SIGTERM));
    t.args = vec!["-c".into(), "exit 7".into()];
    let (_r, w) = status_pipe().unwrap();
    let mut child = spawner
        .spawn(pod_command(&t, env_for(&t), dir.path(), None).unwrap(), w)
        .await
        .unwrap();
    assert_eq!(child.wait().await.unwrap().code(), Some(7));
    // No zombie is left behind by the failed spawns.
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit(") ").next().unwrap_or("").split(' ').collect();
        if fields.get(1) == Some(&me.to_string().as_str()) {
            assert_ne!(fields[0], "Z", "zombie child: {stat}");
        }
    }
}
