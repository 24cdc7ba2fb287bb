//! Certificates rotated on disk (what cert-manager does) are used for new
//! connections without a restart, while the established Connect stream
//! and the pods on it carry on.

use ipa_tests::cluster::{start_central, start_pod_host, write_host_config};
use ipa_tests::pb;
use ipa_tests::pb::pod_host_client::PodHostClient;
use ipa_tests::pki::{Ca, ClientAuth, SERVER_NAME};
use ipa_tests::{DEADLINE, wait_for_async};

use super::support::{Pki, health};

#[tokio::test]
async fn rotated_certificates_are_picked_up_with_pods_still_running() {
    let pki = Pki::new();
    let dir = pki.path();
    let next_ca = Ca::new("next CA");
    let next_ca_path = next_ca.write(dir, "next-ca.pem");
    // Central trusts both CAs for pod-hosts (a rotation bundle).
    let bundle = dir.join("bundle.pem");
    std::fs::write(&bundle, format!("{}{}", pki.ca.pem, next_ca.pem)).unwrap();
    let config = write_host_config(dir, &dir.join("ledger"), &[]);
    let (central_cert, central_key) = pki.ca.leaf(&["central.ipa"]).write(dir, "central");
    // The pod-host's own files, rotated below.
    let (host_cert, host_key) = pki.ca.leaf(&[SERVER_NAME, "127.0.0.1"]).write(dir, "host");
    let s = |p: &std::path::Path| p.display().to_string();
    let ca = s(&pki.ca_path);
    let host = start_pod_host(
        dir,
        "h1",
        &config,
        &[
            "--tls-cert",
            &s(&host_cert),
            "--tls-key",
            &s(&host_key),
            "--client-ca",
            &ca,
            "--allowed-client",
            "central.ipa",
        ],
    )
    .await;
    let central = start_central(
        dir,
        &[format!("https://{}", host.addr)],
        &[
            "--pod-host-ca",
            &s(&bundle),
            "--pod-host-client-cert",
            &s(&central_cert),
            "--pod-host-client-key",
            &s(&central_key),
            // Its own API over TLS too, rotated below.
            "--tls-cert",
            &s(&pki.server_cert),
            "--tls-key",
            &s(&pki.server_key),
        ],
    )
    .await;
    let old_trust = pki.tls_only();
    let mut client = old_trust.client(central.addr);
    wait_for_async("h1 connected", DEADLINE, || {
        let mut c = client.clone();
        async move {
            let hosts = c
                .list_pod_hosts(pb::ListPodHostsRequest {})
                .await
                .ok()?
                .into_inner()
                .hosts;
            hosts
                .iter()
                .any(|h| h.state == pb::PodHostState::Ready as i32)
                .then_some(())
        }
    })
    .await;
    let task = client
        .create_task(pb::CreateTaskRequest {
            title: "survives rotation".into(),
            actor_id: "alice".into(),
            auto_start: true,
            metadata: [("demo.step_ms".to_owned(), "600000".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    let pod = task.pod.expect("running");

    // Who trusts only the next CA cannot reach either server yet.
    let probe_host = ClientAuth {
        ca: Some(next_ca_path.clone()),
        identity: Some((central_cert.clone(), central_key.clone())),
        token: None,
    };
    let probe_central = ClientAuth {
        ca: Some(next_ca_path.clone()),
        ..ClientAuth::default()
    };
    assert!(health(host.addr, &probe_host).await.is_err());
    assert!(health(central.addr, &probe_central).await.is_err());

    // Rotate both servers' certificates in place.
    let next_leaf = next_ca.leaf(&[SERVER_NAME, "127.0.0.1"]);
    std::fs::write(&host_key, &next_leaf.key_pem).unwrap();
    std::fs::write(&host_cert, &next_leaf.cert_pem).unwrap();
    let next_central = next_ca.leaf(&[SERVER_NAME, "127.0.0.1"]);
    std::fs::write(&pki.server_cert, &next_central.cert_pem).unwrap();
    std::fs::write(&pki.server_key, &next_central.key_pem).unwrap();

    wait_for_async(
        "the pod-host to serve the new certificate",
        DEADLINE,
        || async { health(host.addr, &probe_host).await.ok() },
    )
    .await;
    wait_for_async("central to serve the new certificate", DEADLINE, || async {
        health(central.addr, &probe_central).await.ok()
    })
    .await;

    // The established connections carry on: central's Connect stream was
    // never re-opened, the pod runs on, and the client's old connection
    // still works.
    let now = client
        .get_task(pb::GetTaskRequest {
            task_id: task.task_id.clone(),
        })
        .await
        .expect("the established API connection survives rotation")
        .into_inner();
    assert_eq!(now.pod_status, pb::PodStatus::Running as i32);
    assert_eq!(now.pod.unwrap().pod_id, pod.pod_id);
    assert_eq!(
        host.log().matches("central connected").count(),
        1,
        "one Connect stream throughout: {}",
        host.log()
    );
    let pods = PodHostClient::new(probe_host.channel(host.addr))
        .list_pods(pb::HostListPodsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pods;
    assert!(pods.iter().any(|p| p.pod_id == pod.pod_id && p.pid > 0));
    assert!(host.log().contains("reloaded"), "{}", host.log());
}
