//! Mutual TLS on the task API (`--client-ca`): the certificate is the
//! identity; a missing, foreign or expired certificate and plaintext are
//! refused in the handshake and change nothing; probes use the plaintext
//! health port.

use ipa_tests::pb;
use ipa_tests::pki::{Ca, ClientAuth};
use tonic::Code;

use super::support::{Pki, central, create, health, refused, transport_error};

#[tokio::test]
async fn client_certificates_name_the_caller_and_strangers_are_refused() {
    let pki = Pki::new();
    let mut args = pki.tls_args();
    args.extend([
        "--client-ca".into(),
        pki.ca_path.clone().into(),
        "--health-listen".into(),
        "127.0.0.1:0".into(),
    ]);
    let server = central(pki.path(), args).await;
    let addr = server.addr;
    let carol = ClientAuth {
        identity: Some(pki.client_cert("carol", "carol")),
        ..pki.tls_only()
    };
    let mut client = carol.client(addr);
    let t = client
        .create_task(create("by certificate", ""))
        .await
        .expect("a certificate from the CA is an operator by default")
        .into_inner()
        .task
        .unwrap();
    assert_eq!(t.created_by, "carol");
    refused(
        client.create_task(create("x", "dave")).await,
        Code::PermissionDenied,
        "ACTOR_MISMATCH",
    );

    let try_create = |auth: ClientAuth| async move {
        auth.client(addr)
            .create_task(create("x", "carol"))
            .await
            .map(|_| ())
    };
    // No certificate.
    transport_error(try_create(pki.tls_only()).await);
    // A certificate from another CA.
    let other = Ca::new("someone else's CA");
    let stranger = ClientAuth {
        identity: Some(other.leaf(&["carol"]).write(pki.path(), "foreign")),
        ..pki.tls_only()
    };
    transport_error(try_create(stranger).await);
    // An expired certificate from the right CA.
    let expired = ClientAuth {
        identity: Some(pki.ca.expired_leaf(&["carol"]).write(pki.path(), "expired")),
        ..pki.tls_only()
    };
    transport_error(try_create(expired).await);
    // Plaintext against TLS.
    transport_error(try_create(ClientAuth::default()).await);

    // Nothing was created by the refused calls.
    let n = client
        .count_tasks(pb::CountTasksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(n, 1);

    // Probes: the health port answers in plaintext, nothing else there.
    let health_addr = server
        .log()
        .lines()
        .find_map(|l| {
            l.contains("health checks served")
                .then(|| l.split("addr=").nth(1))
                .flatten()
                .and_then(|a| a.split_whitespace().next())
                .and_then(|a| a.parse().ok())
        })
        .expect("the health port is logged");
    assert_eq!(
        health(health_addr, &ClientAuth::default()).await.unwrap(),
        1
    );
    let mut plain = ClientAuth::default().client(health_addr);
    let r = plain.list_tasks(pb::ListTasksRequest::default()).await;
    assert_eq!(
        r.unwrap_err().code(),
        Code::Unimplemented,
        "only health is served there"
    );
}
