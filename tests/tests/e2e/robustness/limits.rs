//! API.md's Limits table on central-manager, end to end: message and
//! metadata sizes, restart-policy caps, pages that stay under a default
//! client's 4 MiB, the stream budget, flag ranges (exit 2 naming the flag)
//! and LOST hosts ageing out of ListPodHosts.

use std::collections::BTreeSet;

use ipa_proto::ErrorReason;
use ipa_tests::cluster::start_central;
use ipa_tests::{DEADLINE, bin_path, pb, wait_for_async};
use nix::sys::signal::Signal;
use prost::Message;

use crate::system::support::{Client, Spec, System};

fn reason(s: &tonic::Status) -> Option<ErrorReason> {
    ipa_proto::reason_of(s)
}

fn create(title: &str) -> pb::CreateTaskRequest {
    pb::CreateTaskRequest {
        title: title.into(),
        actor_id: "tester".into(),
        ..Default::default()
    }
}

/// A task at every field's maximum: 255 + 10 000 four-byte characters and
/// 64 KiB of metadata (about 105 KB on the wire).
fn max_task(i: usize) -> pb::CreateTaskRequest {
    pb::CreateTaskRequest {
        title: format!("{i:04}{}", "😀".repeat(251)),
        description: "😀".repeat(10_000),
        metadata: (0..16)
            .map(|k| (format!("k{k:03}"), "v".repeat(4092)))
            .collect(),
        ..create("")
    }
}

async fn central_alone(extra: &[&str]) -> (tempfile::TempDir, ipa_tests::ServerProcess, Client) {
    let dir = tempfile::tempdir().unwrap();
    let central = start_central(dir.path(), &[], extra).await;
    let client = Client::new(central.channel());
    (dir, central, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_and_caps_are_refused_with_their_reasons() {
    let (_dir, _central, mut client) = central_alone(&[]).await;
    // A 5 MiB request (the client may send it; the server refuses it).
    let mut huge = create("huge");
    huge.description = "x".repeat(5 * 1024 * 1024);
    let e = client.create_task(huge).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert_eq!(reason(&e), Some(ErrorReason::MessageTooLarge), "{e:?}");
    assert!(
        e.message().starts_with("MESSAGE_TOO_LARGE: "),
        "{}",
        e.message()
    );

    // Metadata over 64 KiB in total (each entry within its own limits).
    let mut meta = max_task(0);
    meta.metadata.insert("k016".into(), "v".into());
    let e = client.create_task(meta).await.unwrap_err();
    assert_eq!(reason(&e), Some(ErrorReason::InvalidArgument), "{e:?}");
    assert!(e.message().contains("metadata"), "{}", e.message());
    // At the limit it is fine.
    client
        .create_task(max_task(0))
        .await
        .expect("64 KiB of metadata");

    // Restart-policy caps, each named.
    for (policy, field) in [
        (
            pb::RestartPolicy {
                max_restarts: Some(1001),
                ..Default::default()
            },
            "restart_policy.max_restarts",
        ),
        (
            pb::RestartPolicy {
                window_seconds: Some(604_801),
                ..Default::default()
            },
            "restart_policy.window_seconds",
        ),
        (
            pb::RestartPolicy {
                max_backoff_ms: Some(3_600_001),
                ..Default::default()
            },
            "restart_policy.max_backoff_ms",
        ),
    ] {
        let mut r = create("capped");
        r.restart_policy = Some(policy);
        let e = client.create_task(r).await.unwrap_err();
        assert_eq!(reason(&e), Some(ErrorReason::InvalidArgument), "{e:?}");
        assert!(e.message().contains(field), "{}", e.message());
    }
    let mut r = create("at the caps");
    r.restart_policy = Some(pb::RestartPolicy {
        max_restarts: Some(1000),
        window_seconds: Some(604_800),
        max_backoff_ms: Some(3_600_000),
        ..Default::default()
    });
    client.create_task(r).await.expect("at the caps");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_client_lists_100_tasks_at_maximum_size_page_by_page() {
    let (_dir, _central, client) = central_alone(&[]).await;
    let mut want = BTreeSet::new();
    for i in 0..100 {
        let id = client
            .clone()
            .create_task(max_task(i))
            .await
            .expect("CreateTask")
            .into_inner()
            .task_id;
        want.insert(id);
    }
    // A default client: 4 MiB decode limit.
    let mut client = client;
    let mut got = BTreeSet::new();
    let mut offset = 0;
    let mut pages = 0;
    loop {
        let page = client
            .list_tasks(pb::ListTasksRequest {
                limit: 100,
                offset,
                order_by: pb::OrderBy::CreatedAt as i32,
                order: pb::Order::Asc as i32,
                ..Default::default()
            })
            .await
            .expect("a page fits a default client")
            .into_inner();
        assert!(page.encoded_len() <= 4 * 1024 * 1024);
        pages += 1;
        assert!(!page.tasks.is_empty() || !page.truncated);
        offset += page.tasks.len() as u32;
        got.extend(page.tasks.into_iter().map(|t| t.task_id));
        if !page.truncated {
            break;
        }
        assert!(pages < 100, "no progress");
    }
    assert!(pages > 1, "100 tasks of ~105 KB cannot fit one 4 MiB page");
    assert_eq!(got, want);
    // ListActivePods and GetTaskEvents carry the flag too.
    let active = client
        .list_active_pods(pb::ListActivePodsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(!active.truncated && active.pods.is_empty());
    let events = client
        .get_task_events(pb::GetTaskEventsRequest {
            task_id: want.first().unwrap().clone(),
            after_version: 0,
            limit: 1000,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!events.truncated);
    assert_eq!(events.events.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_max_streams_are_refused_until_one_closes() {
    let (_dir, central, client) = central_alone(&["--max-streams", "2"]).await;
    let open = |c: &Client| {
        let mut c = c.clone();
        async move {
            c.watch_events(pb::WatchEventsRequest::default())
                .await
                .map(|r| r.into_inner())
        }
    };
    // Each on its own connection, as separate clients would.
    let a = open(&Client::new(central.channel())).await.expect("first");
    let _b = open(&Client::new(central.channel())).await.expect("second");
    let e = open(&client).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert_eq!(reason(&e), Some(ErrorReason::TooManyStreams), "{e:?}");
    // One closes: a slot frees (once the server sees the stream end).
    drop(a);
    wait_for_async("a free stream slot", DEADLINE, || async {
        open(&client).await.ok().map(drop)
    })
    .await;
}

/// Runs central-manager with `args` and `env`; it must exit 2 at once with
/// a message naming `flag`.
fn refused(args: &[&str], env: &[(&str, &str)], flag: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let mut cmd = std::process::Command::new(bin_path("central-manager"));
    cmd.args(["--listen", "127.0.0.1:0", "--database-url", &db])
        .args(args)
        .current_dir(dir.path())
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run central-manager");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
    assert!(stderr.contains(flag), "{args:?}: {stderr}");
    assert!(!dir.path().join("c.db").exists(), "nothing was started");
}

#[test]
fn out_of_range_flags_exit_2_naming_the_flag() {
    refused(
        &["--heartbeat-interval-ms", "0"],
        &[],
        "--heartbeat-interval-ms",
    );
    refused(
        &["--host-unreachable-ms", "0"],
        &[],
        "--host-unreachable-ms",
    );
    refused(
        &[
            "--heartbeat-interval-ms",
            "1000",
            "--host-unreachable-ms",
            "1500",
        ],
        &[],
        "--host-unreachable-ms",
    );
    refused(
        &[
            "--fence-timeout-ms",
            "1000",
            "--host-unreachable-ms",
            "1500",
        ],
        &[],
        "--fence-timeout-ms",
    );
    refused(&["--max-restarts", "1001"], &[], "--max-restarts");
    refused(&["--pod-host", "ftp://x:1"], &[], "--pod-host");
    refused(&["--pod-host-dns", "no-port"], &[], "--pod-host-dns");
    refused(&[], &[("IPA_MAX_STREAMS", "0")], "--max-streams");
    refused(
        &[],
        &[("IPA_WATCH_LAG_LIMIT_MS", "5")],
        "--watch-lag-limit-ms",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_hosts_age_out_of_list_pod_hosts() {
    let mut sys = System::start(Spec {
        hosts: vec!["host-a", "host-b"],
        central_extra: vec!["--lost-host-retention-ms".into(), "1000".into()],
        ..Spec::default()
    })
    .await;
    let b = sys.hosts.get_mut("host-b").expect("host-b");
    b.signal(Signal::SIGKILL);
    b.kill().await;
    sys.wait_host_state("host-b", pb::PodHostState::Lost).await;
    wait_for_async("host-b forgotten", DEADLINE, || async {
        let hosts = sys.pod_hosts().await;
        (!hosts.iter().any(|h| h.host_id == "host-b")).then_some(())
    })
    .await;
    // The live one stays.
    let hosts = sys.pod_hosts().await;
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    assert_eq!(hosts[0].state(), pb::PodHostState::Ready);
}
