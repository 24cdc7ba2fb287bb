//! A test pod that proves, after the fact, when it ran.
//!
//! It appends one line per event to the ledger file named by `$LEDGER`:
//! `start TASK GEN POD PID T`, then `alive TASK GEN POD PID T` every
//! `ledger.alive_ms` (metadata, default 10 ms), and `stop … T` when it exits
//! on its own or on SIGTERM (T = Unix nanoseconds). A pod killed by SIGKILL
//! writes no stop line, but its last `alive` line bounds when it died, so
//! [`ipa_tests::ledger`] can check that two pods of one task never ran at
//! the same time.
//!
//! Metadata (from `$IPA_TASK_FILE`): `ledger.crash_after_ms` exits 1 after
//! that long; `ledger.exit_after_ms` exits 0 after that long (reporting
//! PHASE_COMPLETED first when `ledger.complete` is "true").

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

static TERM: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    TERM.store(true, Ordering::SeqCst);
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn main() {
    let ledger = std::env::var("LEDGER").expect("LEDGER env var");
    let task = std::env::var("IPA_TASK_ID").unwrap_or_default();
    let generation = std::env::var("IPA_POD_GENERATION").unwrap_or_default();
    let pod = std::env::var("IPA_POD_ID").unwrap_or_default();
    let meta: serde_json::Value = std::env::var("IPA_TASK_FILE")
        .ok()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    let md = |k: &str| {
        meta.get("metadata")
            .and_then(|m| m.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let ms = |k: &str| {
        md(k)
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis)
    };
    let alive_every = ms("ledger.alive_ms").unwrap_or(Duration::from_millis(10));
    let crash_after = ms("ledger.crash_after_ms");
    let exit_after = ms("ledger.exit_after_ms");
    let complete = md("ledger.complete").as_deref() == Some("true");

    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&ledger)
        .expect("open ledger");
    let pid = std::process::id();
    let mut line = |kind: &str| {
        // One write per line: O_APPEND makes it atomic among pods.
        let l = format!("{kind} {task} {generation} {pod} {pid} {}\n", now_ns());
        let _ = file.write_all(l.as_bytes());
    };
    line("start");
    // fd 3 is the status pipe when run under a pod-host.
    // SAFETY: fd 3 is ours by the pod contract; if it is not open the
    // writes fail and are ignored.
    let mut status = unsafe { std::fs::File::from_raw_fd(3) };
    let _ = writeln!(
        status,
        r#"{{"phase":"PHASE_DEVELOPMENT","message":"ledger pod running"}}"#
    );
    println!("ledger pod {pod} of task {task} generation {generation} started");

    let start = Instant::now();
    loop {
        if TERM.load(Ordering::SeqCst) {
            line("stop");
            std::process::exit(0);
        }
        if crash_after.is_some_and(|d| start.elapsed() >= d) {
            line("stop");
            eprintln!("ledger pod crashing on purpose");
            std::process::exit(1);
        }
        if exit_after.is_some_and(|d| start.elapsed() >= d) {
            if complete {
                let _ = writeln!(status, r#"{{"phase":"PHASE_COMPLETED"}}"#);
            }
            line("stop");
            std::process::exit(0);
        }
        line("alive");
        std::thread::sleep(alive_every);
    }
}
