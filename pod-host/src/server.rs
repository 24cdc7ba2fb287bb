//! The gRPC server: `ipa.v1.PodHost`, reflection v1 and v1alpha (grpcurl
//! 1.8 speaks only v1alpha), and `grpc.health.v1.Health` (SERVING for "" and
//! "ipa.v1.PodHost" until shutdown begins), with the limits that keep one
//! peer from exhausting the host: a 4 MiB message cap both ways, HTTP/2
//! keepalive (a vanished peer's connection and streams are closed), TCP
//! keepalive, and a cap on concurrent streams per connection.

use std::future::Future;
use std::time::Duration;

use ipa_proto::v1::pod_host_server::PodHostServer;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;

use crate::api::Api;

/// The fully qualified service name, as health checks ask for it.
pub const SERVICE_NAME: &str = "ipa.v1.PodHost";

/// Largest message decoded or sent (API.md Limits: 4 MiB, both servers).
/// Bigger requests are refused with RESOURCE_EXHAUSTED; every response the
/// host builds stays far below it (log chunks are at most 64 KiB).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Concurrent streams per connection. Only central-manager connects, over
/// one connection that carries commands, the Connect stream and every log
/// follow it relays; central caps its own streams (`--max-streams`, 1024
/// by default), so this only stops a runaway peer.
pub const MAX_CONCURRENT_STREAMS: u32 = 4096;

/// TCP keepalive probes on idle connections: the kernel closes a
/// connection whose peer is gone even if HTTP/2 pings are not answered
/// for other reasons.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The connection-level settings of the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// HTTP/2 ping interval.
    pub keepalive_interval: Duration,
    /// Time a ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
}

/// Marks the service (and the server as a whole) serving or not.
pub async fn set_serving(health: &HealthReporter, serving: bool) {
    use tonic_health::ServingStatus::{NotServing, Serving};
    let status = if serving { Serving } else { NotServing };
    health.set_service_status("", status).await;
    health.set_service_status(SERVICE_NAME, status).await;
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// TLS and the client gate of the server.
pub struct Security {
    /// `--tls-cert`: serve TLS (certificates re-read on change).
    pub tls: Option<ipa_common::tls::ServerTls>,
    /// `--client-ca` + `--allowed-client`.
    pub gate: crate::gate::GateLayer,
}

/// Serves until `shutdown` resolves, then drains in-flight calls.
pub async fn serve(
    listener: TcpListener,
    security: Security,
    api: Api,
    health: HealthServer<impl Health>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    // The shared descriptor set also holds ipa.v1.CentralManager; advertise
    // only what this server serves.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(ipa_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(SERVICE_NAME)
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection")
    };
    let reflection_v1 = reflection().build_v1();
    let reflection_v1alpha = reflection().build_v1alpha();
    let pod_host = PodHostServer::new(api)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let router = Server::builder()
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .tcp_keepalive(Some(TCP_KEEPALIVE))
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        // Trace context and RPC metrics (a no-op when neither is on).
        .layer(ipa_common::grpc::ObserveLayer::new(
            crate::metrics::rpc_if_served(),
        ))
        // Oversized requests: RESOURCE_EXHAUSTED, as docs/api.md says.
        .layer(ipa_common::message_limit::MessageLimitLayer)
        // Inside it, so refused calls are counted too.
        .layer(security.gate)
        .add_service(health)
        .add_service(reflection_v1?)
        .add_service(reflection_v1alpha?)
        .add_service(pod_host);
    match security.tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(tls.incoming(listener), shutdown)
                .await?
        }
        None => {
            // Without TCP_NODELAY small event messages can sit in Nagle's
            // buffer for tens of milliseconds: exits must reach central at
            // once. (The TLS path sets it on every accepted connection.)
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await?
        }
    }
    Ok(())
}
