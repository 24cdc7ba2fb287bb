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
//! Creation is `clone(CLONE_VM | CLONE_VFORK)` ([`vfork`]), not `fork`: no
//! copy of the host's page tables, no copy-on-write faults, no teardown of
//! the copy at exec. The child sets `PR_SET_PDEATHSIG(SIGKILL)` before
//! exec (which is why this is not plain `posix_spawn`). Linux delivers that
//! signal when the *thread* that created the child exits, not the process,
//! so all pods are created by one dedicated, never-idle-exiting thread
//! ([`Spawner`]) that lives until every pod is gone. (Blocking-pool threads
//! exit when idle and would kill pods at random.) PDEATHSIG only reaches
//! the direct child; the `reaper` covers grandchildren.
//!
//! Exit detection ([`PodChild::wait`]) waits on a pidfd registered with the
//! tokio reactor: event-driven, no polling, and it reaps the child.

mod child;
mod vfork;

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

pub use child::PodChild;
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

/// A pod's program, ready for [`Spawner::spawn`].
pub struct PodCommand(vfork::Exec);

fn c_string(bytes: Vec<u8>) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "NUL byte in a pod's command, argument, environment or directory",
        )
    })
}

/// Builds the command for a pod: the template's program and args, `env`
/// as its whole environment, and `cwd` unless the template names one. A
/// command without a `/` is looked up on the pod's own PATH, as execvp
/// would.
/// `ids`: the (uid, gid) the pod runs as (`crate::isolation`); `None` for
/// the host's own.
pub fn pod_command(
    template: &Template,
    env: Vec<(OsString, OsString)>,
    cwd: &Path,
    ids: Option<(u32, u32)>,
) -> io::Result<PodCommand> {
    let program = c_string(template.command.as_os_str().as_bytes().to_vec())?;
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_bytes().to_vec())
        .unwrap_or_else(|| DEFAULT_PATH.as_bytes().to_vec());
    let candidates = vfork::candidates(&program, &path);
    let mut argv = Vec::with_capacity(template.args.len() + 1);
    argv.push(program);
    for a in &template.args {
        argv.push(c_string(a.clone().into_bytes())?);
    }
    let envp = env
        .into_iter()
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            c_string(kv)
        })
        .collect::<io::Result<Vec<_>>>()?;
    let cwd = template.cwd.as_deref().unwrap_or(cwd);
    Ok(PodCommand(vfork::Exec {
        candidates,
        argv,
        envp,
        cwd: c_string(cwd.as_os_str().as_bytes().to_vec())?,
        ids,
    }))
}

/// A close-on-exec pipe: (read end, write end).
pub fn status_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

/// A child the spawner thread created, before the runtime wraps it.
struct Spawned {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

enum Job {
    Spawn {
        cmd: PodCommand,
        status_w: OwnedFd,
        reply: oneshot::Sender<io::Result<Spawned>>,
    },
    /// Kill every process of a per-pod uid (`crate::isolation`).
    Sweep {
        uid: u32,
        reply: oneshot::Sender<io::Result<()>>,
    },
}

/// The one thread that creates pods (see the module docs for why).
///
/// Dropping the last handle ends the thread, which SIGKILLs every pod it
/// started: keep it alive until all pods are reaped.
#[derive(Clone)]
pub struct Spawner {
    tx: std::sync::mpsc::Sender<Job>,
}

impl Spawner {
    /// Starts the thread.
    pub fn start() -> io::Result<Self> {
        let mut stack = vfork::ChildStack::new()?;
        let null = vfork::above_stdio(std::fs::File::open("/dev/null")?.into())?;
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("pod-spawner".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    match job {
                        Job::Spawn {
                            cmd,
                            status_w,
                            reply,
                        } => {
                            let result = spawn_one(&cmd, status_w, &null, &mut stack);
                            if let Err(Ok(orphan)) = reply.send(result) {
                                // The caller is gone: nobody would supervise it.
                                child::kill_and_reap(orphan.pid);
                            }
                        }
                        Job::Sweep { uid, reply } => {
                            let _ = reply.send(vfork::kill_all_of(uid, &mut stack));
                        }
                    }
                }
            })?;
        Ok(Self { tx })
    }

    /// Spawns `cmd` on the spawner thread with `status_w` (the write end of
    /// the status pipe) as its fd 3. The host's copy of `status_w` is closed
    /// once the child has it, so the host sees EOF when the pod (and its
    /// children) are gone.
    pub async fn spawn(&self, cmd: PodCommand, status_w: OwnedFd) -> io::Result<PodChild> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Spawn {
                cmd,
                status_w,
                reply,
            })
            .map_err(|_| io::Error::other("pod spawner thread is gone"))?;
        let s = rx
            .await
            .map_err(|_| io::Error::other("pod spawner thread is gone"))??;
        let pid = s.pid;
        PodChild::new(s.pid, s.pidfd, s.stdout, s.stderr).inspect_err(|_| child::kill_and_reap(pid))
    }
}

impl Spawner {
    /// Kills every process running as `uid` (a per-pod uid whose pod
    /// ended), on the spawner thread, which owns the child stack.
    pub async fn kill_all_of(&self, uid: u32) -> io::Result<()> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Sweep { uid, reply })
            .map_err(|_| io::Error::other("pod spawner thread is gone"))?;
        rx.await
            .map_err(|_| io::Error::other("pod spawner thread is gone"))?
    }
}

/// Creates one pod process (on the spawner thread).
fn spawn_one(
    cmd: &PodCommand,
    status_w: OwnedFd,
    null: &OwnedFd,
    stack: &mut vfork::ChildStack,
) -> io::Result<Spawned> {
    let (out_r, out_w) = status_pipe()?;
    let (err_r, err_w) = status_pipe()?;
    let out_w = vfork::above_stdio(out_w)?;
    let err_w = vfork::above_stdio(err_w)?;
    let status_w = vfork::above_stdio(status_w)?;
    let pid = vfork::spawn(&cmd.0, [null, &out_w, &err_w, &status_w], stack)?;
    // The write ends now belong to the pod alone.
    drop((out_w, err_w, status_w));
    match child::pidfd_open(pid) {
        Ok(pidfd) => Ok(Spawned {
            pid,
            pidfd,
            stdout: out_r,
            stderr: err_r,
        }),
        Err(e) => {
            child::kill_and_reap(pid);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests;
