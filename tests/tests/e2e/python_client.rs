//! The Python client (clients/python) against real servers: its stubs are
//! generated from proto/ with grpcio-tools (from the scripts/tools venv),
//! then its example script and its unit tests run against a live
//! central-manager with a pod-host — the proto works from a second
//! ecosystem, errors and their ErrorInfo reason included.

use std::path::Path;
use std::process::Output;

use ipa_tests::DEADLINE;
use ipa_tests::tools::{python, repo_root};

use crate::ipactl::support::System;

async fn run_python(py: &Path, args: &[&str], server: &str) -> Output {
    let child = tokio::process::Command::new(py)
        .args(args)
        .current_dir(repo_root())
        .env("IPA_SERVER", server)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true)
        .output();
    // Generous: a cold Python start on a loaded CI box, plus the tasks.
    tokio::time::timeout(DEADLINE * 3, child)
        .await
        .unwrap_or_else(|_| panic!("python {args:?} did not finish"))
        .expect("run python")
}

#[track_caller]
fn ok(what: &str, out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn the_python_client_and_its_example_work_against_real_servers() {
    let py = tokio::task::spawn_blocking(python)
        .await
        .expect("scripts/tools");
    let sys = System::start().await;
    let server = sys.ipactl.server.clone();

    let generated = run_python(&py, &["clients/python/generate.py"], &server).await;
    ok("generate.py", &generated);

    let example = ok(
        "example.py",
        &run_python(&py, &["clients/python/example.py"], &server).await,
    );
    for want in [
        "event 1 task_created by python-example",
        "pod_started",
        "task_completed by system",
        "final status TASK_STATUS_COMPLETED phase PHASE_COMPLETED",
        "completed tasks of python-example: 1",
        "error reason TASK_NOT_FOUND (domain ipa.v1): TASK_NOT_FOUND: ",
    ] {
        assert!(example.contains(want), "{want:?} missing:\n{example}");
    }

    let tests = run_python(
        &py,
        &[
            "-m",
            "unittest",
            "discover",
            "-s",
            "clients/python/tests",
            "-v",
        ],
        &server,
    )
    .await;
    ok("the Python client's unit tests", &tests);
    let report = String::from_utf8_lossy(&tests.stderr);
    assert!(
        report.contains("Ran 6 tests") && report.contains("\nOK"),
        "{report}"
    );
}
