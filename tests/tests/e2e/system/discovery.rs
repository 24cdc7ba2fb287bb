//! `--pod-host-dns NAME:PORT`: central connects to every address the name
//! resolves to and picks up a pod-host that appears there later.

use ipa_tests::cluster::{start_central, write_host_config};
use ipa_tests::pb;

use super::support::{Client, start_host};

#[tokio::test]
async fn pod_host_dns_picks_up_a_host_that_appears_later() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.txt");
    let config = write_host_config(dir.path(), &ledger, &[]);
    // A free port nobody listens on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dns = format!("localhost:{port}");
    let central = start_central(
        dir.path(),
        &[],
        &["--pod-host-dns", &dns, "--heartbeat-interval-ms", "100"],
    )
    .await;
    let client = Client::new(central.channel());
    let ready = |c: &Client| {
        let mut c = c.clone();
        async move {
            let hs = c
                .list_pod_hosts(pb::ListPodHostsRequest {})
                .await
                .ok()?
                .into_inner()
                .hosts;
            hs.into_iter()
                .find(|h| h.host_id == "dns-host" && h.state() == pb::PodHostState::Ready)
        }
    };
    assert!(ready(&client).await.is_none());

    let _host = start_host(
        dir.path(),
        "dns-host",
        &config,
        &format!("127.0.0.1:{port}"),
        &[],
    )
    .await;
    // Re-resolution and reconnect backoff are up to central: generous wait.
    let h = ipa_tests::wait_for_async(
        "the host behind the name READY",
        std::time::Duration::from_secs(60),
        || ready(&client),
    )
    .await;
    assert!(h.templates.iter().any(|t| t == "ledger"), "{h:?}");
}
