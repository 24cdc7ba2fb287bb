//! The gRPC server: `ipa.v1.PodHost`, reflection v1 and v1alpha (grpcurl
//! 1.8 speaks only v1alpha), and `grpc.health.v1.Health` (SERVING for "" and
//! "ipa.v1.PodHost" until shutdown begins).

use std::future::Future;

use ipa_proto::v1::pod_host_server::PodHostServer;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;

use crate::api::Api;

/// The fully qualified service name, as health checks ask for it.
pub const SERVICE_NAME: &str = "ipa.v1.PodHost";

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
    let router = Server::builder()
        // Trace context and RPC metrics (a no-op when neither is on).
        .layer(ipa_common::grpc::ObserveLayer::new(
            crate::metrics::rpc_if_served(),
        ))
        // Inside it, so refused calls are counted too.
        .layer(security.gate)
        .add_service(health)
        .add_service(reflection_v1?)
        .add_service(reflection_v1alpha?)
        .add_service(PodHostServer::new(api));
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
