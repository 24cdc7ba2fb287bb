//! Exit codes and error lines: `Error: REASON: sentence` and exit 1 for
//! every failure, exit 2 for usage errors; `cluster` against a lone
//! central-manager.

use std::net::TcpListener;

use ipa_tests::ipactl::Ipactl;

use super::support::System;

const UNKNOWN_ID: &str = "0b6f5a4e-8d7c-4b3a-9e21-5f0c7d8e9a10";

#[tokio::test]
async fn server_errors_print_their_reason_and_exit_1() {
    let sys = System::start().await;
    let ctl = &sys.ipactl;

    ctl.run(&["tasks", "get", UNKNOWN_ID])
        .await
        .fails_with("TASK_NOT_FOUND");
    let bad = ctl.run(&["tasks", "get", "not-an-id"]).await;
    assert!(bad.fails_with("INVALID_ARGUMENT").contains("task_id"));
    ctl.run(&["tasks", "create", " "])
        .await
        .fails_with("INVALID_TITLE");
    ctl.run(&["tasks", "list", "--limit", "5000"])
        .await
        .fails_with("INVALID_ARGUMENT");
    ctl.run(&["tasks", "stop", UNKNOWN_ID])
        .await
        .fails_with("TASK_NOT_FOUND");
    // Errors go to stderr only: stdout stays clean for scripts.
    let r = ctl.run(&["tasks", "get", UNKNOWN_ID, "-o", "json"]).await;
    assert_eq!(r.stdout, "");

    let id = sys.create("done", 1000, false).await;
    ctl.run(&["tasks", "complete", &id]).await.ok();
    ctl.run(&["tasks", "complete", &id])
        .await
        .fails_with("ALREADY_COMPLETED");
    ctl.run(&["tasks", "stop", &id])
        .await
        .fails_with("ALREADY_COMPLETED");
}

/// `cluster` (GetClusterInfo): a lone central-manager leads its cluster
/// of one, at an epoch of at least 1, and lists itself.
#[tokio::test]
async fn cluster_shows_a_lone_central_as_its_leader() {
    let sys = System::start().await;
    let out = sys.ipactl.run(&["-o", "json", "cluster"]).await;
    let v: serde_json::Value = serde_json::from_str(out.ok()).expect("json");
    let leader = v["leaderReplicaId"].as_str().unwrap_or_default().to_owned();
    assert!(!leader.is_empty(), "{v}");
    let epoch: u64 = v["epoch"]
        .as_str()
        .and_then(|e| e.parse().ok())
        .or(v["epoch"].as_u64())
        .unwrap_or(0);
    assert!(epoch >= 1, "{v}");
    let replicas = v["replicas"].as_array().cloned().unwrap_or_default();
    assert_eq!(replicas.len(), 1, "{v}");
    assert_eq!(
        replicas[0]["replicaId"].as_str(),
        Some(leader.as_str()),
        "{v}"
    );
    assert_eq!(replicas[0]["leader"].as_bool(), Some(true), "{v}");
    let table = sys.ipactl.run(&["cluster"]).await;
    assert!(
        table.ok().contains(&format!("Leader: {leader}")),
        "{table:#?}"
    );
}

#[tokio::test]
async fn usage_errors_exit_2() {
    let ctl = Ipactl::new("127.0.0.1:1");
    for args in [
        &["tasks", "wait", UNKNOWN_ID][..],
        &["tasks", "wait", UNKNOWN_ID, "--for", "sleeping"],
        &["tasks", "cancel", UNKNOWN_ID],
        &["tasks", "frobnicate"],
        &["-o", "xml", "tasks", "list"],
        &["completion", "powershell"],
        &["tasks", "create", "t", "-m", "novalue"],
        &["schedules", "create", "n", "--title", "t"],
    ] {
        let r = ctl.run(args).await;
        assert_eq!(r.code, Some(2), "{args:?}: {r:#?}");
        assert!(
            r.stderr.contains("Usage:") || r.stderr.contains("error:"),
            "{r:#?}"
        );
    }
    // --help is not an error.
    let help = ctl.run(&["tasks", "wait", "--help"]).await;
    assert!(help.ok().contains("--timeout"));
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    // A port that nothing listens on: bind, learn it, close it.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ctl = Ipactl::new(format!("127.0.0.1:{port}"));
    let r = ctl.run(&["tasks", "list"]).await;
    assert!(
        r.fails_with("UNAVAILABLE").contains(&format!(
            "cannot reach central-manager at http://127.0.0.1:{port}"
        )),
        "{r:#?}"
    );
    // A bad address or credentials file is caught before dialing.
    ctl.run(&["--server", "ftp://x:1", "tasks", "list"])
        .await
        .fails_with("INVALID_ARGUMENT");
    ctl.run(&["--token-file", "/nonexistent/token", "tasks", "list"])
        .await
        .fails_with("INVALID_ARGUMENT");
    ctl.run(&["--ca", "/nonexistent/ca.pem", "tasks", "list"])
        .await
        .fails_with("INVALID_ARGUMENT");
}

#[tokio::test]
async fn wait_times_out_or_gives_up_when_the_condition_cannot_hold() {
    let sys = System::start().await;
    let ctl = &sys.ipactl;
    let idle = sys.create("never started", 1000, false).await;
    let r = ctl
        .run(&[
            "tasks",
            "wait",
            &idle,
            "--for",
            "completed",
            "--timeout",
            "1s",
        ])
        .await;
    let err = r.fails_with("TIMEOUT");
    assert!(
        err.contains("inactive"),
        "says where the task stands: {err}"
    );

    ctl.run(&["tasks", "cancel", &idle, "--reason", "r"])
        .await
        .ok();
    let r = ctl
        .run(&[
            "tasks",
            "wait",
            &idle,
            "--for",
            "completed",
            "--timeout",
            "60s",
        ])
        .await;
    assert!(r.fails_with("CONDITION_UNREACHABLE").contains("cancelled"));
    ctl.run(&["tasks", "wait", UNKNOWN_ID, "--for", "running"])
        .await
        .fails_with("TASK_NOT_FOUND");

    // A task that crashes fails after its restart budget: --for failed.
    let crash = ctl
        .run(&[
            "tasks",
            "create",
            "crasher",
            "-q",
            "--start",
            "-m",
            "demo.step_ms=50",
            "-m",
            "demo.crash_at=planning",
            "--auto-restart",
            "true",
            "--max-restarts",
            "1",
            "--initial-backoff-ms",
            "0",
        ])
        .await;
    let crash_id = crash.ok().trim().to_owned();
    ctl.run(&[
        "tasks",
        "wait",
        &crash_id,
        "--for",
        "failed",
        "--timeout",
        "60s",
    ])
    .await
    .ok();
}
