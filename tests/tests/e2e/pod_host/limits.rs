//! The pod-host's limits and flag checks: the 4 MiB message cap, the
//! `tail_lines` cap, HTTP/2 keepalive closing a peer that stopped
//! answering, and flags/configs that cannot be used refused at start with
//! exit status 2 naming the flag.

use ipa_tests::{DEADLINE, pb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

use super::support::{Central, Host, new_id};

#[tokio::test]
async fn an_oversized_request_is_resource_exhausted() {
    let host = Host::start(&[]).await;
    let err = host
        .client
        .clone()
        .start_pod(pb::HostStartPodRequest {
            task_id: new_id(),
            pod_id: new_id(),
            generation: 1,
            template: "sleep".into(),
            description: "d".repeat(5 << 20),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(
        ipa_proto::reason_of(&err),
        Some(ipa_proto::ErrorReason::MessageTooLarge),
        "{err:?}"
    );
    // Nothing was started and the host still serves.
    assert!(host.list().await.is_empty());
    host.start_pod(&new_id(), 1, "sleep").await;
}

#[tokio::test]
async fn tail_lines_over_10000_is_invalid() {
    let host = Host::start(&[]).await;
    let task = new_id();
    let pod = host.start_pod(&task, 1, "sleep").await;
    let err = host
        .client
        .clone()
        .get_pod_logs(pb::HostGetPodLogsRequest {
            task_id: task.clone(),
            pod_id: pod.pod_id.clone(),
            follow: false,
            tail_lines: 10_001,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("tail_lines"), "{err:?}");
    // The limit itself is fine.
    host.logs(&task, &pod.pod_id, 10_000).await;
}

/// A peer that opens an HTTP/2 connection and then never answers a ping
/// (a partitioned or frozen central) has its connection closed after the
/// keepalive interval and timeout, instead of holding it for ever.
#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_disconnected() {
    let host = Host::start(&[
        "--keepalive-interval-ms",
        "200",
        "--keepalive-timeout-ms",
        "200",
    ])
    .await;
    let mut sock = tokio::net::TcpStream::connect(host.proc.addr)
        .await
        .expect("connect");
    // The client preface and an empty SETTINGS frame; then silence.
    sock.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    sock.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let closed = tokio::time::timeout(DEADLINE, async {
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the pod-host kept a silent peer's connection open"
    );
}

async fn run_pod_host(args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(ipa_tests::bin_path("pod-host"));
    cmd.args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(args)
        .current_dir(dir.path())
        .kill_on_drop(true);
    tokio::time::timeout(DEADLINE, cmd.output())
        .await
        .expect("pod-host exits at once")
        .expect("run pod-host")
}

#[tokio::test]
async fn unusable_flags_exit_2_naming_the_flag() {
    for (args, needle) in [
        (vec!["--capacity", "0"], "--capacity"),
        (vec!["--fence-timeout-ms", "5"], "--fence-timeout-ms"),
        (vec!["--stop-grace-ms", "3600001"], "--stop-grace-ms"),
        (vec!["--log-max-bytes", "10"], "--log-max-bytes"),
        (
            vec!["--keepalive-interval-ms", "0"],
            "--keepalive-interval-ms",
        ),
        (vec!["--host-id", "bad id"], "--host-id"),
    ] {
        let out = run_pod_host(&args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn a_config_central_would_refuse_is_rejected_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for (body, needle) in [
        (
            "[templates.\"my agent\"]\ncommand = \"/bin/true\"\n",
            "template name \"my agent\" contains ' '",
        ),
        (
            "[templates.ok]\ncommand = \"/bin/true\"\ncwd = \"relative\"\n",
            "cwd \"relative\" is not an absolute path",
        ),
        ("[templates.ok]\nprogram = \"/bin/true\"\n", "unknown field"),
    ] {
        let config = dir.path().join("pod-host.toml");
        std::fs::write(&config, body).unwrap();
        let out = run_pod_host(&["--config", config.to_str().unwrap()]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{body}: {stderr}");
        assert!(stderr.contains("--config"), "{body}: {stderr}");
        assert!(stderr.contains(needle), "{body}: {stderr}");
    }
}

/// A template whose working directory is missing starts the host (it may
/// appear later) with a warning naming it, and each start says so.
#[tokio::test]
async fn a_missing_cwd_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pod-host.toml");
    std::fs::write(
        &config,
        "[templates.homeless]\ncommand = \"/bin/sleep\"\nargs = [\"100\"]\ncwd = \"/nonexistent/ipa-cwd\"\n\n[templates.ok]\ncommand = \"/bin/sleep\"\nargs = [\"100\"]\n",
    )
    .unwrap();
    let proc = ipa_tests::ServerProcess::start(
        "pod-host",
        &[
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--config".into(),
            config.into(),
            "--data-dir".into(),
            dir.path().join("data").into(),
        ],
        &[],
        Some(dir.path()),
    )
    .await;
    let log = proc.log();
    assert!(
        log.contains("working directory /nonexistent/ipa-cwd does not exist"),
        "{log}"
    );
    let mut client = pb::pod_host_client::PodHostClient::new(proc.channel());
    let mut central = Central::connect(&client, "", 0, 100).await;
    let start = |template: &str| pb::HostStartPodRequest {
        task_id: new_id(),
        pod_id: new_id(),
        generation: 1,
        template: template.into(),
        ..Default::default()
    };
    let err = client.start_pod(start("homeless")).await.unwrap_err();
    assert_eq!(
        ipa_proto::reason_of(&err),
        Some(ipa_proto::ErrorReason::SpawnFailed)
    );
    assert!(
        err.message()
            .contains("cannot enter the working directory /nonexistent/ipa-cwd"),
        "{err:?}"
    );
    // Nothing ran, so nothing is reported: the next event on the stream is
    // the next pod's start, and ListPods shows only that pod.
    let ok = client
        .start_pod(start("ok"))
        .await
        .expect("a good template still starts")
        .into_inner()
        .pod
        .expect("pod");
    let first = central.event().await;
    assert_eq!(first.pod_id, ok.pod_id, "{first:?}");
    assert!(
        matches!(first.kind, Some(pb::pod_event::Kind::Started(_))),
        "{first:?}"
    );
    let pods = client
        .list_pods(pb::HostListPodsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pods;
    assert_eq!(
        pods.iter().map(|p| p.pod_id.as_str()).collect::<Vec<_>>(),
        vec![ok.pod_id.as_str()]
    );
}

/// A log follow ends when the pod-host shuts down (its pods are stopped,
/// their output ends), and the host still exits cleanly.
#[tokio::test]
async fn a_follow_ends_when_the_pod_host_shuts_down() {
    let mut host = Host::start(&["--stop-grace-ms", "300"]).await;
    let task = new_id();
    let pod = host.start_pod(&task, 1, "ignore_term").await;
    host.wait_version(&pod.pod_id, 1).await;
    let mut follow = host
        .client
        .clone()
        .get_pod_logs(pb::HostGetPodLogsRequest {
            task_id: task,
            pod_id: pod.pod_id,
            follow: true,
            tail_lines: 0,
        })
        .await
        .expect("follow")
        .into_inner();
    host.proc.signal(nix::sys::signal::Signal::SIGTERM);
    // Output may still arrive; then the stream ends (cleanly or not).
    tokio::time::timeout(DEADLINE, async {
        while let Ok(Some(_)) = follow.message().await {}
    })
    .await
    .expect("the follow ends");
    let status = host.proc.wait_exit(DEADLINE).await.expect("exits");
    assert!(status.success(), "{status:?}");
}
