//! `--health-listen`: `grpc.health.v1.Health` alone, in plaintext, on a
//! port of its own.
//!
//! Kubernetes' native gRPC probes cannot speak TLS, let alone present a
//! client certificate, so a server whose main port requires them cannot be
//! probed there. This port answers health checks only (the same reporter
//! as the main port, so both always agree) and nothing else.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic_health::pb::health_server::{Health, HealthServer};
use tracing::Instrument;

/// Binds `addr` and serves `health` there until `cancel`; returns the bound
/// address (port 0 picks one).
pub async fn serve(
    addr: SocketAddr,
    health: HealthServer<impl Health>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tracker.spawn(
        async move {
            let served = tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "health port failed");
            }
        }
        .instrument(tracing::info_span!("health_port", addr = %bound)),
    );
    tracing::info!(addr = %bound, "health checks served in plaintext on their own port");
    Ok(bound)
}
