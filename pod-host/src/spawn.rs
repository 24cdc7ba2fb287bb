//! Process creation for pods.
//!
//! Each pod is started without a shell, as the leader of its own process
//! group (so one `killpg` reaches its children), with a cleared environment
//! (a small base, then the template's env, then the pod contract variables),
//! stdin from /dev/null, stdout/stderr as pipes the host reads, and fd 3 as
//! the write end of the status pipe. Every other descriptor of the host is
//! close-on-exec (Rust and tokio open everything with O_CLOEXEC, and so do
//! we), so a pod inherits nothing else.
//!
//! Parent-death signal: the child sets `PR_SET_PDEATHSIG(SIGKILL)` before
//! exec. This needs a `pre_exec` hook, which makes std use fork+exec instead
//! of posix_spawn; there is no cheaper way to set it for a child we do not
//! control, and a fork of this small process costs well under a millisecond.
//! Linux delivers the signal when the *thread* that forked exits, not the
//! process, so all pods are forked by one dedicated, never-idle-exiting
//! thread ([`Spawner`]) that lives until every pod is gone. (Blocking-pool
//! threads exit when idle and would kill pods at random.) PDEATHSIG only
//! reaches the direct child; the `reaper` covers grandchildren.
//!
//! Exit detection is tokio's `Child::wait`, which on Linux waits on a pidfd
//! registered with the reactor (SIGCHLD-driven otherwise): event-driven, no
//! polling, and it reaps the child.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;

use tokio::sync::oneshot;

use crate::templates::Template;

/// The descriptor a pod writes its status lines to (`IPA_STATUS_FD`).
pub const STATUS_FD: i32 = 3;

/// Host variables passed through to pods when set; everything else is
/// cleared so pods do not see the host's configuration or secrets.
const BASE_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR",
];

/// Used when the host itself has no PATH.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The pod contract variables of one pod.
#[derive(Debug, Clone)]
pub struct PodEnv<'a> {
    pub task_id: &'a str,
    pub pod_id: &'a str,
    pub generation: u64,
    pub task_file: &'a Path,
}

/// The environment a pod gets, in order of precedence (later wins).
pub fn pod_environment(
    host_env: impl Iterator<Item = (OsString, OsString)>,
    template: &Template,
    pod: &PodEnv<'_>,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = host_env
        .filter(|(k, _)| BASE_ENV.iter().any(|b| k == b))
        .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    let mut set = |k: &str, v: OsString| {
        env.retain(|(ek, _)| ek != k);
        env.push((k.into(), v));
    };
    for (k, v) in &template.env {
        set(k, v.into());
    }
    set("IPA_TASK_ID", pod.task_id.into());
    set("IPA_POD_ID", pod.pod_id.into());
    set("IPA_POD_GENERATION", pod.generation.to_string().into());
    set("IPA_TASK_FILE", pod.task_file.as_os_str().to_owned());
    set("IPA_STATUS_FD", STATUS_FD.to_string().into());
    env
}

/// Builds the command for a pod. `status_w` is the write end of the status
/// pipe (opened close-on-exec); the caller must keep it open until
/// [`Spawner::spawn`] returns and close it right after, so that the host
/// sees EOF once the pod (and its children) are gone.
pub fn pod_command(
    template: &Template,
    env: Vec<(OsString, OsString)>,
    cwd: &Path,
    status_w: &OwnedFd,
) -> tokio::process::Command {
    let mut cmd = std::process::Command::new(&template.command);
    cmd.args(&template.args)
        .env_clear()
        .envs(env)
        .current_dir(template.cwd.as_deref().unwrap_or(cwd))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let parent = std::process::id() as libc::pid_t;
    let status_fd = status_w.as_raw_fd();
    // SAFETY: the hook runs in the forked child before exec and only makes
    // async-signal-safe system calls (prctl, getppid, dup2, fcntl); it
    // allocates nothing and touches no locks.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The host may have died between fork and prctl: then the signal
            // will never come, so do not start at all.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            if status_fd == STATUS_FD {
                // dup2 onto itself would keep FD_CLOEXEC; clear it instead.
                let flags = libc::fcntl(status_fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(status_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0
                {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(status_fd, STATUS_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut cmd = tokio::process::Command::from(cmd);
    // The supervisor decides when a pod dies, not a dropped handle.
    cmd.kill_on_drop(false);
    cmd
}

/// A close-on-exec pipe: (read end, write end).
pub fn status_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

struct Job {
    cmd: tokio::process::Command,
    reply: oneshot::Sender<io::Result<tokio::process::Child>>,
}

/// The one thread that forks pods (see the module docs for why).
///
/// Dropping the last handle ends the thread, which SIGKILLs every pod it
/// started: keep it alive until all pods are reaped.
#[derive(Clone)]
pub struct Spawner {
    tx: std::sync::mpsc::Sender<Job>,
}

impl Spawner {
    /// Starts the thread; children are registered with `runtime`'s reactor.
    pub fn start(runtime: tokio::runtime::Handle) -> io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("pod-spawner".into())
            .spawn(move || {
                let _guard = runtime.enter();
                while let Ok(mut job) = rx.recv() {
                    let _ = job.reply.send(job.cmd.spawn());
                }
            })?;
        Ok(Self { tx })
    }

    /// Spawns `cmd` on the spawner thread.
    pub async fn spawn(&self, cmd: tokio::process::Command) -> io::Result<tokio::process::Child> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { cmd, reply })
            .map_err(|_| io::Error::other("pod spawner thread is gone"))?;
        rx.await
            .map_err(|_| io::Error::other("pod spawner thread is gone"))?
    }
}

#[cfg(test)]
mod tests {
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
        let spawner = Spawner::start(tokio::runtime::Handle::current()).unwrap();
        let mut child = spawner
            .spawn(pod_command(&t, env, dir.path(), &w))
            .await
            .unwrap();
        drop(w);
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
}
