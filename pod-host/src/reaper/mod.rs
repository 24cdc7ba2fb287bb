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
//! **It is also the fence's backstop.** The pod-host sends `L<ms>` whenever
//! its self-fencing deadline moves (`crate::fence`): "my lease ends this
//! many ms from now" (plus a small delay, [`backstop_delay`]). If that
//! moment passes with no newer lease, the reaper SIGKILLs every registered
//! group. A healthy host has fenced its pods itself by then; this catches a
//! host that is alive but cannot act (its runtime stalled, a lock held
//! forever), whose pods would otherwise run on after central-manager gave
//! them up and started them elsewhere. The lease is measured on the
//! reaper's own clock from when it reads the line, which is never earlier
//! than when the host wrote it, so it ends no earlier than the host's.
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

mod watchdog;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

pub use watchdog::{LEASE_STEP, REAPER_ARG, ReaperCommand, Watchdog, backstop_delay, reaper_main};

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
    /// When the host's lease ends (with the backstop delay), re-sent too.
    lease_end: Option<tokio::time::Instant>,
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
                lease_end: None,
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

    /// The host's lease now ends at `end` (its fence deadline plus
    /// [`backstop_delay`]): past it, the reaper kills every group.
    pub fn lease(&self, end: tokio::time::Instant) {
        let mut st = self.lock();
        // A few writes a second at most: only a lease that moved by
        // LEASE_STEP since the last one sent is sent.
        if st.lease_end.is_some_and(|sent| end < sent + LEASE_STEP) {
            return;
        }
        st.lease_end = Some(end);
        let ms = end.saturating_duration_since(tokio::time::Instant::now());
        send(&mut st, ReaperCommand::Lease(millis(ms)));
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
        let mut lines: String = st
            .groups
            .iter()
            .map(|g| ReaperCommand::Watch(*g).line())
            .collect();
        if let Some(end) = st.lease_end {
            let ms = end.saturating_duration_since(tokio::time::Instant::now());
            lines.push_str(&ReaperCommand::Lease(millis(ms)).line());
        }
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

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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
        assert_eq!(
            ReaperCommand::parse("L1500"),
            Some(ReaperCommand::Lease(1500))
        );
        assert_eq!(ReaperCommand::parse("L-1"), None);
        for c in [
            ReaperCommand::Watch(42),
            ReaperCommand::Forget(42),
            ReaperCommand::Lease(7),
        ] {
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
        let now = Instant::now();
        let mut d = Watchdog::default();
        d.apply(ReaperCommand::Watch(10), now);
        d.apply(ReaperCommand::Watch(11), now);
        d.apply(ReaperCommand::Forget(10), now);
        d.apply(ReaperCommand::Forget(99), now);
        assert_eq!(d.groups.iter().copied().collect::<Vec<_>>(), vec![11]);
    }

    #[test]
    fn the_lease_ends_at_its_time_and_not_before_and_once() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Watchdog::default();
        d.apply(ReaperCommand::Watch(10), t0);
        assert_eq!(d.time_left(t0), None, "no lease: nothing to watch");
        assert!(d.expire(t0 + ms(10_000)).is_empty());
        d.apply(ReaperCommand::Lease(1000), t0);
        assert_eq!(d.time_left(t0), Some(ms(1000)));
        assert!(d.expire(t0 + ms(999)).is_empty());
        // A newer lease moves the end.
        d.apply(ReaperCommand::Lease(1000), t0 + ms(500));
        assert!(d.expire(t0 + ms(1499)).is_empty());
        assert_eq!(d.expire(t0 + ms(1500)), vec![10]);
        // Once: the next kill needs a new lease that runs out.
        assert!(d.expire(t0 + ms(5000)).is_empty());
        assert_eq!(d.time_left(t0 + ms(5000)), None);
    }

    #[test]
    fn the_backstop_stays_inside_central_managers_margin() {
        for fence_ms in [100, 1000, 2000, 10_000, 86_400_000] {
            let fence = Duration::from_millis(fence_ms);
            let delay = backstop_delay(fence);
            let margin = (fence / 4).max(Duration::from_millis(250));
            assert!(delay < margin, "{fence:?}: {delay:?} vs {margin:?}");
        }
    }
}
