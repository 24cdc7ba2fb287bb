//! The production adapter of the pod-host ports: `ipa.v1.PodHost` over
//! tonic. [`GrpcDialer`] opens a session's `Connect` stream (TLS for
//! `https://` endpoints) and [`GrpcHost`] sends StartPod/StopPod/GetPodLogs
//! over the same HTTP/2 connection. Everything crossing it is converted by
//! [`super::wire`]; a host's error status becomes a [`HostCallError`]:
//! a refusal when its reason says the command was not carried out,
//! "unknown" otherwise.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use ipa_proto::v1::pod_host_client::PodHostClient;
use ipa_proto::{ErrorReason, reason_of};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use super::TracedChannel as Channel;
use super::wire;
use crate::core::ports::{Dialer, HostCommands, HostLogStream, Link};
use crate::domain::host::{
    CentralMessage, HostCallError, LogsRequest, PodExit, PodSnapshot, Refusal, StartRequest,
    StartedPod, StopRequest,
};

/// Dial timeout: a black-holed host must not hold a session for long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Outbound buffer (acks, pings). Acks are cumulative, so if it is ever
/// full dropping one loses nothing but a little replay work.
const OUTBOUND_CAPACITY: usize = 1024;

/// Opens supervision streams over gRPC.
#[derive(Clone, Default)]
pub struct GrpcDialer {
    /// How to dial `https://` endpoints (`--pod-host-ca`); `None`: they
    /// are refused.
    pub tls: Option<ipa_common::tls::ClientTls>,
    /// The leader epoch stamped on every Connect and command (replicas:
    /// pod-hosts refuse older epochs, STALE_EPOCH).
    pub epoch: crate::store::fence::Fence,
}

impl Dialer for GrpcDialer {
    fn open(
        &self,
        endpoint: &str,
        first: CentralMessage,
    ) -> BoxFuture<'static, Result<Link, String>> {
        let endpoint = endpoint.to_owned();
        let tls = self.tls.clone();
        let epoch = self.epoch.clone();
        Box::pin(async move {
            let channel = dial(&endpoint, tls.as_ref()).await?;
            let mut client = PodHostClient::with_interceptor(
                channel,
                ipa_common::trace_context::InjectTraceContext,
            );
            let (out_tx, out_rx) = mpsc::channel(OUTBOUND_CAPACITY);
            out_tx
                .send(first)
                .await
                .map_err(|_| "outbound closed".to_string())?;
            let stamp = epoch.clone();
            let outbound = ReceiverStream::new(out_rx)
                .map(move |m| wire::central_message(m, stamp.leader_epoch()));
            let inbound = client
                .connect(outbound)
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            let inbound = inbound.filter_map(|m| {
                futures::future::ready(match m {
                    Ok(m) => match wire::host_message(m) {
                        Some(m) => Some(Ok(m)),
                        None => {
                            tracing::warn!(
                                "message without content on the Connect stream; ignored"
                            );
                            None
                        }
                    },
                    Err(e) => Some(Err(e.to_string())),
                })
            });
            Ok(Link {
                inbound: Box::pin(inbound),
                outbound: out_tx,
                commands: Arc::new(GrpcHost { client, epoch }),
            })
        })
    }
}

/// Opens the HTTP/2 connection to a pod-host: TLS for `https://`
/// endpoints (through a connector that uses the certificates in force at
/// each dial), plaintext otherwise.
async fn dial(
    endpoint: &str,
    tls: Option<&ipa_common::tls::ClientTls>,
) -> Result<tonic::transport::Channel, String> {
    let secure = endpoint.starts_with("https://");
    let base = if secure {
        ipa_common::tls::client::tls_endpoint(endpoint)?
    } else {
        Endpoint::from_shared(endpoint.to_owned()).map_err(|e| e.to_string())?
    };
    let base = base
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        // Detect a dead TCP peer even when the host is silent for other
        // reasons; silence rules still decide host state.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    match (secure, tls) {
        (false, _) => base.connect().await.map_err(|e| e.to_string()),
        (true, Some(tls)) => base
            .connect_with_connector(tls.connector())
            .await
            .map_err(|e| format!("{e}: {}", error_chain(&e))),
        (true, None) => Err(format!(
            "{endpoint} is https but central-manager has no --pod-host-ca"
        )),
    }
}

/// The causes of an error, for a log line that says why a dial failed
/// (e.g. which certificate check refused the pod-host).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push(c.to_string());
        cur = c.source();
    }
    out.join(": ")
}

/// One host's commands over its session's connection.
#[derive(Clone)]
pub struct GrpcHost {
    client: PodHostClient<Channel>,
    epoch: crate::store::fence::Fence,
}

impl HostCommands for GrpcHost {
    fn start_pod(
        &self,
        req: StartRequest,
    ) -> BoxFuture<'static, Result<StartedPod, HostCallError>> {
        let mut client = self.client.clone();
        let epoch = self.epoch.leader_epoch();
        Box::pin(async move {
            let info = client
                .start_pod(wire::start_request(req, epoch))
                .await
                .map_err(|s| call_error(&s))?
                .into_inner()
                .pod
                .unwrap_or_default();
            if let Some(exit) = info
                .exit
                .as_ref()
                .filter(|e| e.cause == ipa_proto::v1::ExitCause::SpawnFailed as i32)
            {
                // An older pod-host answers a failed spawn with the pod
                // already ended.
                return Err(HostCallError::Refused {
                    refusal: Refusal::SpawnFailed,
                    message: exit.message.clone(),
                });
            }
            Ok(StartedPod {
                pid: info.pid,
                started_at: info
                    .started_at
                    .as_ref()
                    .and_then(ipa_proto::time::micros_from_timestamp),
            })
        })
    }

    fn stop_pod(
        &self,
        req: StopRequest,
    ) -> BoxFuture<'static, Result<Option<PodExit>, HostCallError>> {
        let mut client = self.client.clone();
        let epoch = self.epoch.leader_epoch();
        Box::pin(async move {
            let resp = client
                .stop_pod(wire::stop_request(req, epoch))
                .await
                .map_err(|s| call_error(&s))?;
            Ok(resp
                .into_inner()
                .pod
                .and_then(|p| p.exit)
                .map(|e| wire::exit(&e)))
        })
    }

    fn list_pods(&self) -> BoxFuture<'static, Result<Vec<PodSnapshot>, HostCallError>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            let resp = client
                .list_pods(ipa_proto::v1::HostListPodsRequest {})
                .await
                .map_err(|s| call_error(&s))?;
            Ok(resp.into_inner().pods.iter().map(wire::snapshot).collect())
        })
    }

    fn pod_logs(
        &self,
        req: LogsRequest,
    ) -> BoxFuture<'static, Result<HostLogStream, HostCallError>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            let req = ipa_proto::v1::HostGetPodLogsRequest {
                task_id: req.task_id,
                pod_id: req.pod_id,
                follow: req.follow,
                tail_lines: req.tail_lines,
            };
            let upstream = client
                .get_pod_logs(req)
                .await
                .map_err(|s| call_error(&s))?
                .into_inner();
            let chunks = upstream.map(|item| match item {
                Ok(c) => Ok(wire::log_chunk(c)),
                Err(s) => Err(call_error(&s)),
            });
            Ok(Box::pin(chunks) as HostLogStream)
        })
    }
}

/// A host's error status as the domain sees it.
fn call_error(s: &tonic::Status) -> HostCallError {
    let refusal = match reason_of(s) {
        Some(ErrorReason::NoCapacity) => Refusal::NoCapacity,
        Some(ErrorReason::InvalidArgument) => Refusal::InvalidArgument,
        Some(ErrorReason::ShuttingDown) => Refusal::ShuttingDown,
        Some(ErrorReason::StaleGeneration) => Refusal::StaleGeneration,
        Some(ErrorReason::SpawnFailed) => Refusal::SpawnFailed,
        Some(ErrorReason::PodNotFound) => Refusal::PodNotFound,
        Some(ErrorReason::LeaseExpired) => Refusal::LeaseExpired,
        _ => {
            return HostCallError::Unknown(s.message().to_owned());
        }
    };
    let message = match refusal {
        Refusal::SpawnFailed => s
            .message()
            .strip_prefix("SPAWN_FAILED: ")
            .unwrap_or(s.message())
            .to_owned(),
        _ => s.message().to_owned(),
    };
    HostCallError::Refused { refusal, message }
}
