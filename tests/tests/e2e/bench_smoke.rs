//! The benchmark is not part of the test suite, but it must keep working:
//! run `bench --quick` at a tenth of its counts (a debug build is slow) and
//! check it exits 0 and prints the table with every metric row.

use std::process::Command;
use std::time::{Duration, Instant};

use ipa_tests::BENCH_METRICS as METRICS;
#[test]
fn bench_quick_runs_and_prints_every_row() {
    // The servers the bench starts live next to it in target/<profile>/.
    let _ = ipa_tests::bin_path("central-manager");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("BENCHMARKS.md");
    let t0 = Instant::now();
    let run = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["--quick", "--scale", "0.1", "--out"])
        .arg(&out)
        .current_dir(dir.path())
        .output()
        .expect("run bench");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "bench --quick failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        run.status
    );
    let md = std::fs::read_to_string(&out).expect("BENCHMARKS.md written");
    for m in METRICS {
        let row = format!("| {m} |");
        assert!(
            stdout.contains(&row),
            "printed table lacks {m:?}:\n{stdout}"
        );
        assert!(md.contains(&row), "BENCHMARKS.md lacks {m:?}");
    }
    for section in ["Machine:", "Date:", "Command:"] {
        assert!(md.contains(section), "BENCHMARKS.md lacks {section}");
    }
    // A tenth of --quick takes ~20 s here; far more means something hangs.
    assert!(
        t0.elapsed() < Duration::from_secs(120),
        "bench --quick --scale 0.1 took {:?}",
        t0.elapsed()
    );
}
