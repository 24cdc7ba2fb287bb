//! A tower layer for both gRPC servers that observes every call:
//!
//! - when traces are exported, the call runs in a server span
//!   (`otel.kind = server`, named `service/method`) whose parent is the
//!   caller's W3C `traceparent`, so the handler's own span (which carries
//!   `task_id`, `actor_id`, `correlation_id`) joins the caller's trace;
//! - when metrics are served, the call is counted by service, method and
//!   status code, and its latency observed.
//!
//! With neither on, a call costs one atomic load and an `Option` check.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::{BoxFuture, Either};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::RpcMetrics;
use crate::trace_context;

/// Wraps a gRPC server's routes; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct ObserveLayer {
    metrics: Option<Arc<RpcMetrics>>,
}

impl ObserveLayer {
    /// Records RPC metrics into `metrics` when given.
    pub fn new(metrics: Option<Arc<RpcMetrics>>) -> Self {
        Self { metrics }
    }
}

impl<S> tower_layer::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service made by [`ObserveLayer`].
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    metrics: Option<Arc<RpcMetrics>>,
}

/// `/pkg.Service/Method` → (`pkg.Service`, `Method`).
fn split_path(path: &str) -> (&str, &str) {
    let p = path.strip_prefix('/').unwrap_or(path);
    p.split_once('/').unwrap_or((p, ""))
}

/// The status of a response whose headers carry it (every error of a unary
/// call: tonic answers "trailers-only"); otherwise the call got as far as
/// sending a body, which for unary calls means OK.
fn status_code(headers: &http::HeaderMap) -> i32 {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

impl<S, B, RB> tower_service::Service<http::Request<B>> for Observe<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    RB: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let tracing_on = trace_context::enabled();
        if !tracing_on && self.metrics.is_none() {
            return Either::Left(self.inner.call(req));
        }
        let (service, method) = split_path(req.uri().path());
        let (service, method) = (service.to_owned(), method.to_owned());
        let span = if tracing_on {
            let span = tracing::info_span!(
                "grpc_server",
                otel.name = %format_args!("{service}/{method}"),
                otel.kind = "server",
                rpc.system = "grpc",
                rpc.service = %service,
                rpc.method = %method,
                rpc.grpc.status_code = tracing::field::Empty,
            );
            // Must happen before the span is entered (built).
            let _ = span.set_parent(trace_context::extract(req.headers()));
            span
        } else {
            tracing::Span::none()
        };
        let start = Instant::now();
        // The handler's future (and its own span) is created inside `call`.
        let fut = span.in_scope(|| self.inner.call(req));
        let metrics = self.metrics.clone();
        Either::Right(Box::pin(async move {
            let result = fut.instrument(span.clone()).await;
            // A transport-level failure has no gRPC status: UNKNOWN.
            let code = result.as_ref().map_or(2, |r| status_code(r.headers()));
            span.record("rpc.grpc.status_code", code);
            if let Some(m) = metrics {
                m.observe(&service, &method, code, start.elapsed());
            }
            result
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/ipa.v1.CentralManager/CreateTask"),
            ("ipa.v1.CentralManager", "CreateTask")
        );
        assert_eq!(split_path("/odd"), ("odd", ""));
    }

    #[test]
    fn status_from_headers_or_ok() {
        let mut h = http::HeaderMap::new();
        assert_eq!(status_code(&h), 0);
        h.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(status_code(&h), 5);
    }
}
