//! The demo pod: walks a task through its phases as a pod-host pod would.
//!
//! It reads the task from `IPA_TASK_FILE` (JSON: `task_id`, `title`,
//! `description`, `metadata`) and reports, in order, `PHASE_SPEC_CLARIFICATION`,
//! `PHASE_PLANNING`, `PHASE_DEVELOPMENT`, `PHASE_REVIEW`, `PHASE_COMPLETED`:
//! one JSON line per phase on the status fd (`IPA_STATUS_FD`, 3) and a human
//! line on stdout, waiting `demo.step_ms` (metadata, default 1000) between
//! phases. It exits 0 right after reporting `PHASE_COMPLETED`.
//!
//! `demo.crash_at` (metadata; `planning`, `PHASE_PLANNING`, any case) makes
//! it exit 1 when it *reaches* that phase, before reporting it: the last
//! phase central sees is the one before the crash. Without a status fd
//! (run by hand) it still runs and says so on stderr. SIGTERM keeps its
//! default action (exit at once).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::time::Duration;

use serde::Deserialize;

const PHASES: [&str; 5] = [
    "PHASE_SPEC_CLARIFICATION",
    "PHASE_PLANNING",
    "PHASE_DEVELOPMENT",
    "PHASE_REVIEW",
    "PHASE_COMPLETED",
];

const DEFAULT_STEP_MS: u64 = 1000;

#[derive(Debug, Default, Deserialize)]
struct TaskFile {
    #[serde(default)]
    task_id: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

/// Normalises `planning` / `PHASE_PLANNING` to `PHASE_PLANNING`.
fn normalise_phase(s: &str) -> String {
    let up = s.trim().to_ascii_uppercase();
    if up.starts_with("PHASE_") {
        up
    } else {
        format!("PHASE_{up}")
    }
}

fn read_task() -> TaskFile {
    let Some(path) = std::env::var_os("IPA_TASK_FILE") else {
        eprintln!("demo-pod: IPA_TASK_FILE not set; running with defaults");
        return TaskFile::default();
    };
    match std::fs::read(&path).map(|b| serde_json::from_slice::<TaskFile>(&b)) {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            eprintln!("demo-pod: task file is not valid JSON ({e}); running with defaults");
            TaskFile::default()
        }
        Err(e) => {
            eprintln!("demo-pod: cannot read task file: {e}; running with defaults");
            TaskFile::default()
        }
    }
}

/// The status fd, when the pod-host gave us one.
fn status_fd() -> Option<File> {
    use std::os::fd::FromRawFd;
    let fd: i32 = std::env::var("IPA_STATUS_FD").ok()?.parse().ok()?;
    // Only take the descriptor if it is really open.
    std::fs::metadata(format!("/proc/self/fd/{fd}")).ok()?;
    // SAFETY: the pod-host passes this descriptor to us for our exclusive
    // use (the pod contract), we checked it is open, and nothing else in
    // this process owns it.
    Some(unsafe { File::from_raw_fd(fd) })
}

fn main() {
    let task = read_task();
    let step_ms = task
        .metadata
        .get("demo.step_ms")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_STEP_MS);
    let crash_at = task
        .metadata
        .get("demo.crash_at")
        .map(|s| normalise_phase(s));
    let mut status = status_fd();
    if status.is_none() {
        eprintln!("demo-pod: no status fd; phases are only logged");
    }
    println!(
        "demo-pod: task {} {:?}, {step_ms} ms per phase",
        task.task_id, task.title
    );
    for (i, phase) in PHASES.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(step_ms));
        }
        if crash_at.as_deref() == Some(*phase) {
            eprintln!("demo-pod: crashing at {phase} (demo.crash_at)");
            std::process::exit(1);
        }
        let message = format!("demo step {}/{}", i + 1, PHASES.len());
        println!("demo-pod: entering {phase} ({message})");
        if let Some(f) = status.as_mut() {
            let line = serde_json::json!({ "phase": phase, "message": message });
            if let Err(e) = writeln!(f, "{line}") {
                eprintln!("demo-pod: status fd write failed: {e}");
                status = None;
            }
        }
    }
    let _ = std::io::stdout().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_names_normalise() {
        assert_eq!(normalise_phase("planning"), "PHASE_PLANNING");
        assert_eq!(normalise_phase("Phase_Review"), "PHASE_REVIEW");
        assert_eq!(normalise_phase(" development "), "PHASE_DEVELOPMENT");
    }
}
