//! The reaper process's side (`pod-host --internal-reaper`): the
//! instructions the host sends on its stdin, and what it does with them —
//! kill every registered group when the host is gone (EOF) or when the
//! host's lease ends with no newer one. See the parent module.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::time::{Duration, Instant};

/// The hidden first argument that runs the binary as a reaper.
pub const REAPER_ARG: &str = "--internal-reaper";

/// One instruction on the reaper's stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaperCommand {
    Watch(i32),
    Forget(i32),
    /// The host's lease ends this many ms from now.
    Lease(u64),
}

/// A lease is re-sent only when it moved by this much ([`Reaper::lease`]),
/// so the reaper's end lags the host's by less: [`backstop_delay`] is at
/// least as long, and the reaper never acts before the host's deadline.
pub(super) const LEASE_STEP: Duration = Duration::from_millis(50);

/// How long after the host's own fence deadline the reaper acts: long
/// enough for a healthy host to fence first (and report its pods as
/// self-fenced rather than killed), short enough to stay well inside the
/// margin central-manager adds to its own deadline (at least 250 ms).
pub fn backstop_delay(fence_timeout: Duration) -> Duration {
    (fence_timeout / 8).clamp(Duration::from_millis(50), Duration::from_millis(200))
}

impl ReaperCommand {
    pub fn parse(line: &str) -> Option<Self> {
        let line = line.trim();
        let (op, num) = line.split_at_checked(1)?;
        if op == "L" {
            return num.parse().ok().map(Self::Lease);
        }
        let pgid: i32 = num.parse().ok().filter(|p| *p > 1)?;
        match op {
            "+" => Some(Self::Watch(pgid)),
            "-" => Some(Self::Forget(pgid)),
            _ => None,
        }
    }

    pub fn line(self) -> String {
        match self {
            Self::Watch(p) => format!("+{p}\n"),
            Self::Forget(p) => format!("-{p}\n"),
            Self::Lease(ms) => format!("L{ms}\n"),
        }
    }
}

/// What the reaper process knows: the registered groups and when the
/// host's lease ends (pure, so both sides of the deadline are tested).
#[derive(Debug, Default)]
pub struct Watchdog {
    pub groups: BTreeSet<i32>,
    lease_end: Option<Instant>,
}

impl Watchdog {
    /// Applies one instruction read at `now`.
    pub fn apply(&mut self, cmd: ReaperCommand, now: Instant) {
        match cmd {
            ReaperCommand::Watch(p) => {
                self.groups.insert(p);
            }
            ReaperCommand::Forget(p) => {
                self.groups.remove(&p);
            }
            ReaperCommand::Lease(ms) => {
                self.lease_end = now.checked_add(Duration::from_millis(ms));
            }
        }
    }

    /// How long until the lease ends (`None`: no lease to watch).
    pub fn time_left(&self, now: Instant) -> Option<Duration> {
        self.lease_end.map(|e| e.saturating_duration_since(now))
    }

    /// The lease ended at `now`: the groups to kill (each lease ends once).
    pub fn expire(&mut self, now: Instant) -> Vec<i32> {
        match self.lease_end {
            Some(e) if now >= e => {
                self.lease_end = None;
                self.groups.iter().copied().collect()
            }
            _ => Vec::new(),
        }
    }
}

fn kill_all(groups: &[i32]) {
    for pgid in groups {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(*pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Entry point of `pod-host --internal-reaper`: never returns.
pub fn reaper_main() -> ! {
    use nix::sys::signal::{SigHandler, Signal, signal};
    use std::sync::mpsc::RecvTimeoutError;
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: installing SIG_IGN has no handler code to be unsafe.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
    // Lines are read on a thread of their own so the main loop can wait
    // for the next one with a timeout (the lease).
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        // Any read error is treated like EOF: we can no longer hear the host.
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut dog = Watchdog::default();
    loop {
        let next = match dog.time_left(Instant::now()) {
            Some(left) => rx.recv_timeout(left),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match next {
            Ok(line) => {
                if let Some(cmd) = ReaperCommand::parse(&line) {
                    dog.apply(cmd, Instant::now());
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                let victims = dog.expire(Instant::now());
                if !victims.is_empty() {
                    kill_all(&victims);
                    eprintln!(
                        "pod-host reaper: the pod-host's fence deadline passed and it did not renew its lease (stalled?); killed {} pod process group(s)",
                        victims.len()
                    );
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let groups: Vec<i32> = dog.groups.iter().copied().collect();
    kill_all(&groups);
    if !groups.is_empty() {
        eprintln!(
            "pod-host reaper: pod-host is gone; killed {} pod process group(s)",
            groups.len()
        );
    }
    std::process::exit(0)
}
