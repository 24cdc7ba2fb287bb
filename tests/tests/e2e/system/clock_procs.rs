//! Time and process helpers of the system tests (re-exported by
//! `support`): timestamps and medians, and process inspection through
//! /proc.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipa_tests::wait_for;

// ---- time ----------------------------------------------------------------

/// Unix nanoseconds of a protobuf timestamp.
pub fn ts_ns(t: &Option<prost_types::Timestamp>) -> u128 {
    let t = t.as_ref().expect("timestamp set");
    t.seconds as u128 * 1_000_000_000 + t.nanos as u128
}

/// Unix nanoseconds now (the clock the ledger and the servers use).
pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos()
}

/// Milliseconds from `a` to `b` (negative when `b` is earlier).
pub fn ms_between(a: u128, b: u128) -> f64 {
    (b as f64 - a as f64) / 1e6
}

/// The median of some samples.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

// ---- processes -----------------------------------------------------------

/// `/proc/PID/stat` (state, ppid) of a process.
fn stat(pid: u32) -> Option<(char, u32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(s, _)| s != 'Z')
}

/// Live processes whose command line contains `needle` and whose parent is
/// `ppid`.
pub fn children_with(ppid: u32, needle: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            stat(pid).is_some_and(|(s, pp)| pp == ppid && s != 'Z')
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

/// Waits until none of `pids` is alive.
pub async fn wait_all_dead(what: &str, pids: &[u32], deadline: Duration) {
    wait_for(what, deadline, || {
        pids.iter().all(|&p| !alive(p)).then_some(())
    })
    .await;
}
