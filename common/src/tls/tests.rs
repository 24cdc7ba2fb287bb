//! Server and client together over loopback: mutual TLS, the principal
//! reaching the handler, refusals, and rotation without a restart.

use std::error::Error as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use super::testing::{Ca, Leaf};
use super::*;

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
    fn write(&self, name: &str, body: &str) -> std::path::PathBuf {
        let p = self.path(name);
        std::fs::write(&p, body).unwrap();
        p
    }
    fn leaf(&self, prefix: &str, leaf: &Leaf) -> (std::path::PathBuf, std::path::PathBuf) {
        (
            self.write(&format!("{prefix}.crt"), &leaf.cert_pem),
            self.write(&format!("{prefix}.key"), &leaf.key_pem),
        )
    }
}

/// Serves health over TLS; records the principal of every call.
async fn serve(
    tls: ServerTls,
    seen: Arc<Mutex<Vec<Option<String>>>>,
    stop: CancellationToken,
) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let incoming = tls.incoming(listener);
    let record = move |req: tonic::Request<()>| {
        let p = req
            .extensions()
            .get::<PeerInfo>()
            .and_then(|p| p.certificate.as_ref())
            .map(|c| c.principal.clone());
        seen.lock().unwrap().push(p);
        Ok(req)
    };
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(tonic::service::interceptor::InterceptedService::new(
                health, record,
            ))
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
            .await
            .unwrap();
    });
    addr
}

async fn check(client: &ClientTls, addr: std::net::SocketAddr) -> Result<(), tonic::Status> {
    let endpoint = client::tls_endpoint(&format!("https://localhost:{}", addr.port()))
        .unwrap()
        .connect_timeout(Duration::from_secs(10));
    let channel = endpoint
        .connect_with_connector(client.connector())
        .await
        .map_err(|e| tonic::Status::unavailable(format!("{e:?}")))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
}

fn write_client(f: &Files, ca: &Path, leaf: Option<&Leaf>, name: &str) -> ClientTls {
    let identity = leaf.map(|l| f.leaf(name, l));
    ClientTls::load(&ClientTlsFiles {
        ca: ca.to_path_buf(),
        identity,
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_names_the_client_and_refuses_strangers() {
    let f = Files::new();
    let ca = Ca::new("ipa test CA");
    let other = Ca::new("another CA");
    let ca_path = f.write("ca.pem", &ca.pem);
    let (cert, key) = f.leaf("server", &ca.leaf("localhost"));
    let server = ServerTls::load(&ServerTlsFiles {
        cert,
        key,
        client_ca: Some(ca_path.clone()),
    })
    .unwrap();
    assert!(server.requires_client_cert());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let addr = serve(server, seen.clone(), stop.clone()).await;

    let alice = write_client(&f, &ca_path, Some(&ca.leaf("alice")), "alice");
    check(&alice, addr).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![Some("alice".to_owned())]);

    // No certificate, or one from another CA: refused in the handshake.
    let anonymous = write_client(&f, &ca_path, None, "anon");
    assert!(check(&anonymous, addr).await.is_err());
    let stranger = write_client(&f, &ca_path, Some(&other.leaf("mallory")), "mallory");
    assert!(check(&stranger, addr).await.is_err());
    // A client that does not trust the server's CA refuses it.
    let other_ca = f.write("other-ca.pem", &other.pem);
    let distrustful = write_client(&f, &other_ca, Some(&ca.leaf("bob")), "bob");
    assert!(check(&distrustful, addr).await.is_err());
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "no refused call reached a handler"
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_server_certificate_is_used_for_new_connections() {
    let f = Files::new();
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let (cert, key) = f.leaf("server", &old_ca.leaf("localhost"));
    let server = ServerTls::load(&ServerTlsFiles {
        cert: cert.clone(),
        key: key.clone(),
        client_ca: None,
    })
    .unwrap();
    let reload = server.reloadable();
    let stop = CancellationToken::new();
    let addr = serve(server, Arc::default(), stop.clone()).await;
    let trusts_old = write_client(&f, &f.write("old.pem", &old_ca.pem), None, "c1");
    let trusts_new = write_client(&f, &f.write("new.pem", &new_ca.pem), None, "c2");
    check(&trusts_old, addr).await.unwrap();
    assert!(check(&trusts_new, addr).await.is_err());

    // The certificate lands first: it does not match the key yet, so the
    // old pair stays in force.
    let next = new_ca.leaf("localhost");
    std::fs::write(&cert, &next.cert_pem).unwrap();
    assert!(reload.reload().is_err());
    check(&trusts_old, addr).await.unwrap();
    // Then the key: the new pair is used.
    std::fs::write(&key, &next.key_pem).unwrap();
    assert_eq!(reload.reload(), Ok(true));
    check(&trusts_new, addr).await.unwrap();
    assert!(check(&trusts_old, addr).await.is_err());
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_against_tls_fails_and_the_server_keeps_serving() {
    let f = Files::new();
    let ca = Ca::new("ca");
    let (cert, key) = f.leaf("server", &ca.leaf("localhost"));
    let server = ServerTls::load(&ServerTlsFiles {
        cert,
        key,
        client_ca: None,
    })
    .unwrap();
    let stop = CancellationToken::new();
    let addr = serve(server, Arc::default(), stop.clone()).await;
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    let err = HealthClient::new(plain)
        .check(HealthCheckRequest::default())
        .await
        .unwrap_err();
    // The TLS alert is no HTTP/2: a transport error (its code depends on
    // when the client notices), never a status from a handler.
    assert!(
        err.source().is_some() || err.code() == tonic::Code::Unavailable,
        "{err:?}"
    );
    let client = write_client(&f, &f.write("ca.pem", &ca.pem), None, "c");
    check(&client, addr).await.unwrap();
    stop.cancel();
}

#[test]
fn bad_files_are_refused_at_load() {
    let f = Files::new();
    let ca = Ca::new("ca");
    let a = ca.leaf("a");
    let b = ca.leaf("b");
    let cert = f.write("a.crt", &a.cert_pem);
    let wrong_key = f.write("b.key", &b.key_pem);
    let err = ServerTls::load(&ServerTlsFiles {
        cert: cert.clone(),
        key: wrong_key,
        client_ca: None,
    })
    .err()
    .unwrap();
    assert!(err.contains("certificate and key"), "{err}");
    let err = ServerTls::load(&ServerTlsFiles {
        cert: cert.clone(),
        key: f.write("junk.key", "junk"),
        client_ca: None,
    })
    .err()
    .unwrap();
    assert!(err.contains("key"), "{err}");
    let err = ClientTls::load(&ClientTlsFiles {
        ca: f.path("missing.pem"),
        identity: None,
    })
    .err()
    .unwrap();
    assert!(err.contains("missing.pem"), "{err}");
}
