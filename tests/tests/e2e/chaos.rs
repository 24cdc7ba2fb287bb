//! The chaos run of issue 12 in the test suite: `chaos --seconds 60` with a
//! fixed seed against the real binaries (see tests/src/bin/chaos). It exits
//! non-zero when any invariant is broken; the report names which, with the
//! task trails involved, and the same seed replays the same fault schedule.
//! `.config/nextest.toml` runs it alone.

use std::process::Command;

/// Faults are drawn from this seed; change it only with a reason.
const SEED: &str = "1";

#[test]
fn a_seeded_chaos_run_holds_every_invariant() {
    // The system it starts lives next to it in target/<profile>/.
    let _ = ipa_tests::bin_path("central-manager");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("chaos.md");
    let run = Command::new(env!("CARGO_BIN_EXE_chaos"))
        .args(["--seconds", "60", "--seed", SEED, "--out"])
        .arg(&out)
        .output()
        .expect("run chaos");
    let stderr = String::from_utf8_lossy(&run.stderr);
    let report = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        run.status.success(),
        "chaos --seed {SEED} failed ({:?}); replay with scripts/chaos --seconds 60 --seed {SEED}\n\
         report:\n{report}\nstderr (tail):\n{}",
        run.status,
        tail(&stderr, 60)
    );
    // The run really exercised the system: faults were injected and
    // operations acknowledged, and the report says every invariant held.
    assert!(report.contains("violations: 0"), "{report}");
    assert!(!report.contains("**NO**"), "{report}");
    let injected = count_after(&report, "| **all** | **").expect("faults table");
    assert!(injected >= 10, "only {injected} faults injected:\n{report}");
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The number that follows `prefix` on its first line.
fn count_after(report: &str, prefix: &str) -> Option<u64> {
    let rest = &report[report.find(prefix)? + prefix.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}
