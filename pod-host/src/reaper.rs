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
//! If the reaper dies (killed, OOM) the host starts a new one at once and
//! registers every live group with it ([`Reaper::monitor`]). If no reaper
//! can be started, the pods have lost their protection: the host kills
//! them (self-fencing, reported as such) and refuses new pods until a
//! reaper runs again.
//!
//! Known limits: a process that leaves its pod's group (setsid/setpgid)
//! escapes; and a pgid is only unregistered after the host reaped the group
//! leader and killed the group, so a SIGKILL of the host in that microsecond
//! window could signal a reused pgid (the kernel does not reuse a pid while
//! it is still in use as a group id, so this needs the whole group gone and
//! the id recycled within that window).

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

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

/// A reaper that lived less than this before dying counts as failing to
/// start (a binary that crashes at once must not be restarted in a loop).
const MIN_UPTIME: Duration = Duration::from_secs(1);

/// Quick deaths in a row after which the host stops trusting restarts and
/// fences (see [`ReaperEvents::lost`]).
const MAX_QUICK_DEATHS: u32 = 3;

/// Retry pacing while no reaper runs.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What the pod-host does when its pods lose (and regain) the reaper's
/// protection.
pub trait ReaperEvents: Send + Sync {
    /// No reaper could be (re)started: pods could outlive a crash of the
    /// host, so the host kills them and refuses new ones.
    fn lost(&self, why: &str);
    /// A reaper runs again: new pods may start.
    fn restored(&self);
}

struct State {
    /// The write end of the running reaper's stdin; `None` while none runs.
    pipe: Option<std::fs::File>,
    /// The running reaper; taken by the monitor while it waits on it.
    child: Option<tokio::process::Child>,
    /// Its pid while it runs.
    pid: Option<u32>,
    /// Every registered group, re-sent to a restarted reaper.
    groups: BTreeSet<i32>,
    stopping: bool,
}

/// The pod-host's side: the pipe to the reaper and its process, and the
/// groups registered with it. [`Reaper::monitor`] restarts a reaper that
/// dies.
pub struct Reaper {
    exe: PathBuf,
    state: Mutex<State>,
}

impl Reaper {
    /// Starts `exe --internal-reaper`.
    pub fn start(exe: &Path) -> std::io::Result<Self> {
        let (pipe, child) = spawn_reaper(exe)?;
        Ok(Self {
            exe: exe.to_path_buf(),
            state: Mutex::new(State {
                pipe: Some(pipe),
                pid: child.id(),
                child: Some(child),
                groups: BTreeSet::new(),
                stopping: false,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a pod's process group.
    pub fn watch(&self, pgid: u32) {
        let Ok(pgid) = i32::try_from(pgid) else {
            return;
        };
        let mut st = self.lock();
        st.groups.insert(pgid);
        send(&mut st, ReaperCommand::Watch(pgid));
    }

    /// Unregisters a group that is dead.
    pub fn forget(&self, pgid: u32) {
        let Ok(pgid) = i32::try_from(pgid) else {
            return;
        };
        let mut st = self.lock();
        st.groups.remove(&pgid);
        send(&mut st, ReaperCommand::Forget(pgid));
    }

    /// Whether a reaper is running (its pipe is open).
    pub fn is_running(&self) -> bool {
        self.lock().pipe.is_some()
    }

    /// Watches the reaper until `cancel`: when it dies it is restarted and
    /// every registered group is sent to the new one. If it cannot be
    /// restarted (or keeps dying at once), `events.lost` is called and
    /// restarts are retried with backoff until one lives, then
    /// `events.restored`.
    pub async fn monitor(&self, events: &dyn ReaperEvents, cancel: CancellationToken) {
        let mut quick_deaths = 0u32;
        let mut is_lost = false;
        let mut retry = RETRY_FIRST;
        loop {
            let Some(mut child) = self.lock().child.take() else {
                return;
            };
            let started = Instant::now();
            let status = tokio::select! {
                s = child.wait() => s,
                _ = cancel.cancelled() => {
                    // Back for `stop`, which waits for it.
                    self.lock().child = Some(child);
                    return;
                }
            };
            let stopping = {
                let mut st = self.lock();
                st.pipe = None;
                st.pid = None;
                st.stopping
            };
            if stopping {
                return;
            }
            tracing::error!(status = ?status, "the orphan reaper died; restarting it");
            quick_deaths = if started.elapsed() < MIN_UPTIME {
                quick_deaths + 1
            } else {
                0
            };
            // Restart (with backoff after quick deaths) until one runs.
            loop {
                if quick_deaths > 0 {
                    if quick_deaths >= MAX_QUICK_DEATHS && !is_lost {
                        is_lost = true;
                        events.lost("the orphan reaper keeps dying at once");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(retry) => {}
                        _ = cancel.cancelled() => return,
                    }
                    retry = (retry * 2).min(RETRY_MAX);
                }
                match self.restart() {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::error!(error = %e, exe = %self.exe.display(), "cannot restart the orphan reaper");
                        if !is_lost {
                            is_lost = true;
                            events.lost(&format!("the orphan reaper cannot be restarted: {e}"));
                        }
                        quick_deaths = quick_deaths.max(1);
                    }
                }
            }
            tracing::info!("orphan reaper restarted");
            if std::mem::take(&mut is_lost) {
                events.restored();
            }
            if quick_deaths == 0 {
                retry = RETRY_FIRST;
            }
        }
    }

    /// Starts a new reaper and registers every known group with it.
    fn restart(&self) -> std::io::Result<()> {
        let (mut pipe, child) = spawn_reaper(&self.exe)?;
        let mut st = self.lock();
        let lines: String = st
            .groups
            .iter()
            .map(|g| ReaperCommand::Watch(*g).line())
            .collect();
        pipe.write_all(lines.as_bytes())?;
        st.pipe = Some(pipe);
        st.pid = child.id();
        st.child = Some(child);
        Ok(())
    }

    /// Closes the pipe (the reaper kills whatever is still registered, which
    /// after a clean shutdown is nothing) and waits for it to exit. Call
    /// after the monitor returned.
    pub async fn stop(&self) {
        let child = {
            let mut st = self.lock();
            st.stopping = true;
            st.pid = None;
            drop(st.pipe.take());
            st.child.take()
        };
        if let Some(mut child) = child {
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

    /// The reaper's pid (tests and diagnostics).
    pub fn pid(&self) -> Option<u32> {
        self.lock().pid
    }
}

/// Sends one instruction; a failed write means the reaper is gone (the
/// monitor restarts it and re-sends every group).
fn send(st: &mut State, cmd: ReaperCommand) {
    let written = st.pipe.as_mut().map(|f| f.write_all(cmd.line().as_bytes()));
    if let Some(Err(e)) = written {
        tracing::error!(error = %e, "orphan reaper is gone; restarting it");
        st.pipe = None;
    }
}

/// Starts `exe --internal-reaper` in its own process group; returns the
/// write end of its stdin and the child.
fn spawn_reaper(exe: &Path) -> std::io::Result<(std::fs::File, tokio::process::Child)> {
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
    Ok((file, child))
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

    /// Counts the events of a monitor.
    #[derive(Default)]
    struct Recorder {
        lost: std::sync::atomic::AtomicU32,
        restored: std::sync::atomic::AtomicU32,
    }

    impl ReaperEvents for Recorder {
        fn lost(&self, _why: &str) {
            self.lost.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        fn restored(&self) {
            self.restored
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    async fn until(what: &str, mut cond: impl FnMut() -> bool) {
        for _ in 0..1000 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    /// A reaper that dies is restarted with every registered group; one
    /// that cannot be restarted is reported lost, then restored once a
    /// restart works again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_reaper_is_restarted_and_a_missing_one_reported() {
        use std::os::unix::fs::PermissionsExt;
        use std::sync::atomic::Ordering::SeqCst;
        let dir = tempfile::tempdir().unwrap();
        // A stand-in reaper: appends what it is told to a file.
        let got = dir.path().join("got");
        let script = dir.path().join("reaper");
        let spare = dir.path().join("reaper.spare");
        std::fs::write(
            &spare,
            format!(
                "#!/bin/sh
exec cat >> {}
",
                got.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&spare, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::copy(&spare, &script).unwrap();
        let reaper = std::sync::Arc::new(Reaper::start(&script).unwrap());
        reaper.watch(4242);
        reaper.watch(4343);
        reaper.forget(4343);
        let events = std::sync::Arc::new(Recorder::default());
        let cancel = CancellationToken::new();
        let monitor = tokio::spawn({
            let (r, e, c) = (reaper.clone(), events.clone(), cancel.clone());
            async move { r.monitor(e.as_ref(), c).await }
        });
        let kill = |pid: u32| {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        };
        let first = reaper.pid().unwrap();
        until("the first reaper read its groups", || {
            std::fs::read_to_string(&got).is_ok_and(|s| s == "+4242\n+4343\n-4343\n")
        })
        .await;
        kill(first);
        until("a new reaper", || reaper.pid().is_some_and(|p| p != first)).await;
        until("the live group re-registered", || {
            std::fs::read_to_string(&got).is_ok_and(|s| s.ends_with("-4343\n+4242\n"))
        })
        .await;
        assert_eq!(events.lost.load(SeqCst), 0);
        assert!(reaper.is_running());

        // The program is gone: the next death cannot be repaired.
        std::fs::remove_file(&script).unwrap();
        let second = reaper.pid().unwrap();
        kill(second);
        until("lost", || events.lost.load(SeqCst) == 1).await;
        assert!(!reaper.is_running());
        assert_eq!(events.restored.load(SeqCst), 0);
        // It comes back: the retries find it.
        std::fs::rename(&spare, &script).unwrap();
        until("restored", || events.restored.load(SeqCst) == 1).await;
        assert!(reaper.is_running());
        assert_eq!(events.lost.load(SeqCst), 1);

        cancel.cancel();
        monitor.await.unwrap();
        reaper.stop().await;
        assert!(reaper.pid().is_none());
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
