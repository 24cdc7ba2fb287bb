//! A spawned pod process as the supervisor sees it: its pid, its output
//! pipes, and an event-driven wait on a pidfd registered with the tokio
//! reactor (the pidfd turns readable when the process exits; no polling,
//! no SIGCHLD handler). `wait` reaps it, so no zombie remains.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

/// A running pod process.
pub struct PodChild {
    pid: libc::pid_t,
    pidfd: AsyncFd<OwnedFd>,
    /// The read end of the pod's stdout.
    pub stdout: Option<pipe::Receiver>,
    /// The read end of the pod's stderr.
    pub stderr: Option<pipe::Receiver>,
    status: Option<ExitStatus>,
}

impl PodChild {
    /// Wraps a freshly spawned (unreaped) child. Must run inside the tokio
    /// runtime. On error the caller still owns the child.
    pub(super) fn new(
        pid: libc::pid_t,
        pidfd: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> io::Result<Self> {
        // SAFETY: an OwnedFd stays open, and the same descriptor, for as
        // long as the AsyncFd owns it.
        let pidfd =
            unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }?;
        Ok(Self {
            pid,
            pidfd,
            stdout: Some(pipe::Receiver::from_owned_fd(stdout)?),
            stderr: Some(pipe::Receiver::from_owned_fd(stderr)?),
            status: None,
        })
    }

    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Waits for the process to exit and reaps it.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(st) = self.status {
                return Ok(st);
            }
            let mut ready = self.pidfd.readable().await?;
            match try_reap(self.pid)? {
                Some(st) => self.status = Some(st),
                None => ready.clear_ready(),
            }
        }
    }
}

/// `waitpid(pid, WNOHANG)`: the status once it exited, `None` before.
fn try_reap(pid: libc::pid_t) -> io::Result<Option<ExitStatus>> {
    loop {
        let mut status = 0;
        // SAFETY: our own child; we hold its pidfd, so the pid is not reused
        // before this reaps it.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Ok(Some(ExitStatus::from_raw(status)));
        }
        if r == 0 {
            return Ok(None);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `pidfd_open(pid)`: a descriptor that becomes readable when `pid` exits.
pub(super) fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: plain system call; the result is a new descriptor we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor (pidfds are always close-on-exec).
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    debug_assert!(fd.as_raw_fd() >= 0);
    Ok(fd)
}

/// Kills and reaps a child that could not be handed over.
pub(super) fn kill_and_reap(pid: libc::pid_t) {
    // SAFETY: our own unreaped child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) < 0
            && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
        {}
    }
}
