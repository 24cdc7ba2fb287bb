//! The orphan reaper: guarantees that no pod process outlives a pod-host
//! that was SIGKILLed (or crashed).
//!
//! PDEATHSIG (see `spawn`) kills each pod's direct child only; processes the
//! pod started stay alive in its process group. So at boot the pod-host
//! re-executes itself as a tiny watchdog (`pod-host --internal-reaper`, no
//! tokio, no sockets) whose stdin is a pipe whose write end only the
//! pod-host holds (close-on-exec, so pods never inherit it). The pod-host
//! writes `+PGID` when it starts a pod and `-PGID` once the pod's group is
//! dead. When the reaper reads EOF, the pod-host is gone (the kernel closes
//! the pipe whatever way it died): the reaper SIGKILLs every registered
//! group and exits. On a graceful shutdown the set is already empty, so
//! EOF just ends it.
//!
//! The reaper runs in its own process group and ignores SIGINT, SIGTERM and
//! SIGHUP, so a Ctrl-C to the terminal's foreground group or a signal to the
//! host's group cannot take it down before the pods.
//!
//! Known limits: a process that leaves its pod's group (setsid/setpgid)
//! escapes; and a pgid is only unregistered after the host reaped the group
//! leader and killed the group, so a SIGKILL of the host in that microsecond
//! window could signal a reused pgid (the kernel does not reuse a pid while
//! it is still in use as a group id, so this needs the whole group gone and
//! the id recycled within that window).

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

/// The hidden first argument that runs the binary as a reaper.
pub const REAPER_ARG: &str = "--internal-reaper";

/// One instruction on the reaper's stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaperCommand {
    Watch(i32),
    Forget(i32),
}

impl ReaperCommand {
    pub fn parse(line: &str) -> Option<Self> {
        let line = line.trim();
        let (op, num) = line.split_at_checked(1)?;
        let pgid: i32 = num.parse().ok().filter(|p| *p > 1)?;
        match op {
            "+" => Some(Self::Watch(pgid)),
            "-" => Some(Self::Forget(pgid)),
            _ => None,
        }
    }

    fn line(self) -> String {
        match self {
            Self::Watch(p) => format!("+{p}\n"),
            Self::Forget(p) => format!("-{p}\n"),
        }
    }
}

/// The watched groups after applying `commands`.
pub fn apply(set: &mut BTreeSet<i32>, cmd: ReaperCommand) {
    match cmd {
        ReaperCommand::Watch(p) => {
            set.insert(p);
        }
        ReaperCommand::Forget(p) => {
            set.remove(&p);
        }
    }
}

/// Entry point of `pod-host --internal-reaper`: never returns.
pub fn reaper_main() -> ! {
    use nix::sys::signal::{SigHandler, Signal, signal};
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: installing SIG_IGN has no handler code to be unsafe.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
    let mut groups = BTreeSet::new();
    let stdin = std::io::stdin().lock();
    // Any read error is treated like EOF: we can no longer hear the host.
    for line in stdin.lines() {
        let Ok(line) = line else { break };
        if let Some(cmd) = ReaperCommand::parse(&line) {
            apply(&mut groups, cmd);
        }
    }
    for pgid in &groups {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(*pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    if !groups.is_empty() {
        eprintln!(
            "pod-host reaper: pod-host is gone; killed {} pod process group(s)",
            groups.len()
        );
    }
    std::process::exit(0)
}

/// The pod-host's side: the pipe to the reaper and its process.
pub struct Reaper {
    pipe: Mutex<Option<std::fs::File>>,
    child: tokio::sync::Mutex<Option<tokio::process::Child>>,
}

impl Reaper {
    /// Starts `exe --internal-reaper`.
    pub fn start(exe: &Path) -> std::io::Result<Self> {
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg(REAPER_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .kill_on_drop(false);
        let mut child = cmd.spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("reaper has no stdin"))?;
        // Blocking writes of a few bytes: the reaper drains its pipe
        // continuously, so they never wait in practice and never get lost
        // to EAGAIN.
        let file = std::fs::File::from(stdin.into_owned_fd()?);
        Ok(Self {
            pipe: Mutex::new(Some(file)),
            child: tokio::sync::Mutex::new(Some(child)),
        })
    }

    /// Registers a pod's process group.
    pub fn watch(&self, pgid: u32) {
        self.send(ReaperCommand::Watch(pgid as i32));
    }

    /// Unregisters a group that is dead.
    pub fn forget(&self, pgid: u32) {
        self.send(ReaperCommand::Forget(pgid as i32));
    }

    fn send(&self, cmd: ReaperCommand) {
        let mut guard = self.pipe.lock().unwrap_or_else(|e| e.into_inner());
        let written = guard.as_mut().map(|f| f.write_all(cmd.line().as_bytes()));
        if let Some(Err(e)) = written {
            tracing::error!(error = %e, "orphan reaper is gone; pods could outlive a crash of this host");
            *guard = None;
        }
    }

    /// Closes the pipe (the reaper kills whatever is still registered, which
    /// after a clean shutdown is nothing) and waits for it to exit.
    pub async fn stop(&self) {
        drop(self.pipe.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(mut child) = self.child.lock().await.take() {
            match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
                Ok(_) => {}
                Err(_) => {
                    tracing::warn!("orphan reaper did not exit; killing it");
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands_and_rejects_junk() {
        assert_eq!(
            ReaperCommand::parse("+123"),
            Some(ReaperCommand::Watch(123))
        );
        assert_eq!(
            ReaperCommand::parse("-123\n"),
            Some(ReaperCommand::Forget(123))
        );
        for junk in [
            "",
            "+",
            "123",
            "*12",
            "+abc",
            "+-5",
            "+0",
            "+1",
            "+99999999999",
        ] {
            assert_eq!(ReaperCommand::parse(junk), None, "{junk:?}");
        }
        for c in [ReaperCommand::Watch(42), ReaperCommand::Forget(42)] {
            assert_eq!(ReaperCommand::parse(&c.line()), Some(c));
        }
    }

    #[test]
    fn set_tracks_watch_and_forget() {
        let mut s = BTreeSet::new();
        apply(&mut s, ReaperCommand::Watch(10));
        apply(&mut s, ReaperCommand::Watch(11));
        apply(&mut s, ReaperCommand::Forget(10));
        apply(&mut s, ReaperCommand::Forget(99));
        assert_eq!(s.into_iter().collect::<Vec<_>>(), vec![11]);
    }
}
