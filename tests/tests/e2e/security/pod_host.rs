//! central-manager ↔ pod-host over mutual TLS, and a pod-host that refuses
//! everyone else: a rogue `Connect` (plaintext, no certificate, an expired
//! one, or a certificate from the CA whose name is not allowed) never
//! replaces central's stream, and central's stream and pods carry on.

use ipa_tests::cluster::{start_central, start_pod_host, write_host_config};
use ipa_tests::pb;
use ipa_tests::pb::pod_host_client::PodHostClient;
use ipa_tests::pki::ClientAuth;
use ipa_tests::{DEADLINE, wait_for_async};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use super::support::{Pki, health, refused, transport_error};

/// A Connect as central would open it, with `auth`.
async fn rogue_connect(addr: std::net::SocketAddr, auth: &ClientAuth) -> Result<(), tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::CentralMessage {
        msg: Some(pb::central_message::Msg::Hello(pb::CentralHello {
            heartbeat_interval_ms: 100,
            known_boot_id: String::new(),
            acked_seq: u64::MAX,
            central_id: "rogue".into(),
            // Even the newest epoch: refused for who it is, not its epoch.
            epoch: u64::MAX,
        })),
    })
    .await
    .unwrap();
    let mut stream = PodHostClient::new(auth.channel(addr))
        .connect(ReceiverStream::new(rx))
        .await?
        .into_inner();
    // A stream that opened would now say hello: that must not happen.
    let first = stream.message().await?;
    panic!("a rogue Connect was served: {first:?}");
}

#[tokio::test]
async fn rogue_connects_are_refused_while_centrals_stream_and_pods_carry_on() {
    let pki = Pki::new();
    let dir = pki.path();
    let config = write_host_config(dir, &dir.join("ledger"), &[]);
    let (central_cert, central_key) = pki.ca.leaf(&["central.ipa"]).write(dir, "central");
    let ca = pki.ca_path.display().to_string();
    let (cert, key) = (
        pki.server_cert.display().to_string(),
        pki.server_key.display().to_string(),
    );
    let host = start_pod_host(
        dir,
        "h1",
        &config,
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--client-ca",
            &ca,
            "--allowed-client",
            "central.ipa",
        ],
    )
    .await;
    let (cc, ck) = (
        central_cert.display().to_string(),
        central_key.display().to_string(),
    );
    let central = start_central(
        dir,
        &[format!("https://{}", host.addr)],
        &[
            "--pod-host-ca",
            &ca,
            "--pod-host-client-cert",
            &cc,
            "--pod-host-client-key",
            &ck,
        ],
    )
    .await;
    let mut client = pb::central_manager_client::CentralManagerClient::new(central.channel());
    let ready = |c: &mut pb::central_manager_client::CentralManagerClient<_>| {
        let mut c = c.clone();
        async move {
            let hosts = c
                .list_pod_hosts(pb::ListPodHostsRequest {})
                .await
                .ok()?
                .into_inner()
                .hosts;
            hosts
                .into_iter()
                .find(|h| h.host_id == "h1" && h.state == pb::PodHostState::Ready as i32)
        }
    };
    wait_for_async("h1 connected over mTLS", DEADLINE, || ready(&mut client)).await;
    let task = client
        .create_task(pb::CreateTaskRequest {
            title: "long".into(),
            actor_id: "alice".into(),
            auto_start: true,
            metadata: [("demo.step_ms".to_owned(), "600000".to_owned())].into(),
            ..Default::default()
        })
        .await
        .expect("CreateTask")
        .into_inner()
        .task
        .unwrap();
    let pod = task.pod.clone().expect("started over mTLS");
    assert_eq!(task.pod_status, pb::PodStatus::Running as i32, "{task:?}");

    // Rogues. Without a certificate the handshake fails.
    transport_error(rogue_connect(host.addr, &ClientAuth::default()).await);
    transport_error(rogue_connect(host.addr, &pki.tls_only()).await);
    let expired = ClientAuth {
        identity: Some(pki.ca.expired_leaf(&["central.ipa"]).write(dir, "expired")),
        ..pki.tls_only()
    };
    transport_error(rogue_connect(host.addr, &expired).await);
    // A certificate from the CA that is not an allowed client: every call
    // is refused, health on this port included.
    let mallory = ClientAuth {
        identity: Some(pki.client_cert("mallory", "mallory")),
        ..pki.tls_only()
    };
    refused(
        rogue_connect(host.addr, &mallory).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    let mut m = PodHostClient::new(mallory.channel(host.addr));
    refused(
        m.stop_pod(pb::HostStopPodRequest {
            task_id: task.task_id.clone(),
            generation: pod.generation,
            ..Default::default()
        })
        .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    refused(
        m.list_pods(pb::HostListPodsRequest {}).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    refused(
        health(host.addr, &mallory).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );

    // Central's stream was never replaced, and it carries on: fresh
    // heartbeats after the rogues, the pod still running, nothing lost.
    assert!(
        !host.log().contains("replaces the previous session"),
        "{}",
        host.log()
    );
    let after = std::time::SystemTime::now();
    wait_for_async("a heartbeat after the rogues", DEADLINE, || {
        let mut c = client.clone();
        async move {
            let h = ready(&mut c).await?;
            let at = h.last_heartbeat_at?;
            let at = std::time::UNIX_EPOCH
                + std::time::Duration::new(at.seconds as u64, at.nanos as u32);
            (at > after).then_some(())
        }
    })
    .await;
    let now = client
        .get_task(pb::GetTaskRequest {
            task_id: task.task_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.pod_status, pb::PodStatus::Running as i32);
    assert_eq!(now.pod.unwrap().pod_id, pod.pod_id);
    let events = client
        .get_task_events(pb::GetTaskEventsRequest {
            task_id: task.task_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let types: Vec<_> = events.iter().map(|e| e.r#type.as_str()).collect();
    assert_eq!(types, ["task_created", "pod_started"], "{types:?}");
    // An allowed client is served (central itself proves it; so does this).
    let allowed = ClientAuth {
        identity: Some((central_cert.clone(), central_key.clone())),
        ..pki.tls_only()
    };
    let pods = PodHostClient::new(allowed.channel(host.addr))
        .list_pods(pb::HostListPodsRequest {})
        .await
        .expect("an allowed client is served")
        .into_inner()
        .pods;
    assert!(pods.iter().any(|p| p.pod_id == pod.pod_id));
}
