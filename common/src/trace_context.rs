//! W3C trace context across process boundaries, so one request can be
//! followed from a gRPC client through central-manager and a pod-host into
//! the pod:
//!
//! - servers take the caller's `traceparent` from the request headers
//!   ([`extract`], used by [`crate::grpc::ObserveLayer`]);
//! - clients put the current span's context into outgoing metadata
//!   ([`InjectTraceContext`], a tonic interceptor);
//! - the pod-host hands the context to a pod as `TRACEPARENT`
//!   ([`current_traceparent`]).
//!
//! All of it is a no-op behind one relaxed atomic load unless the process
//! exports traces ([`crate::Telemetry::init`] turns it on), so the hot path
//! pays nothing when `OTEL_EXPORTER_OTLP_ENDPOINT` is unset.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Whether spans are exported (set once by `Telemetry::init`).
static ENABLED: AtomicBool = AtomicBool::new(false);

/// The environment variable a pod finds its parent trace context in.
pub const TRACEPARENT_ENV: &str = "TRACEPARENT";

pub(crate) fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether trace context is propagated (the process exports spans).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Reads `traceparent`/`tracestate` from HTTP (gRPC) headers.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Writes the propagator's fields into gRPC metadata.
struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let key = tonic::metadata::MetadataKey::from_bytes(key.as_bytes());
        let value = tonic::metadata::MetadataValue::try_from(value.as_str());
        if let (Ok(k), Ok(v)) = (key, value) {
            self.0.insert(k, v);
        }
    }
}

/// The remote parent context carried by `headers` (empty when there is
/// none, or when propagation is off).
pub fn extract(headers: &http::HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

/// The current span's context as a W3C `traceparent` value, `None` when
/// propagation is off or there is no valid span.
pub fn current_traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    let cx = tracing::Span::current().context();
    let mut fields = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut fields));
    fields.remove("traceparent")
}

/// A tonic client interceptor that sends the current span's context with
/// every request (`traceparent`, `tracestate`). Wrap a channel once where a
/// client is built: `PodHostClient::with_interceptor(channel,
/// InjectTraceContext)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct InjectTraceContext;

impl tonic::service::Interceptor for InjectTraceContext {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if enabled() {
            let cx = tracing::Span::current().context();
            opentelemetry::global::get_text_map_propagator(|p| {
                p.inject_context(&cx, &mut MetadataInjector(req.metadata_mut()))
            });
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    #[test]
    fn nothing_is_injected_when_disabled() {
        // ENABLED starts false and no test in this crate turns it on.
        let req = InjectTraceContext.call(tonic::Request::new(())).unwrap();
        assert!(req.metadata().get("traceparent").is_none());
        assert_eq!(current_traceparent(), None);
    }

    #[test]
    fn header_extractor_reads_traceparent() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "traceparent",
            http::HeaderValue::from_static(
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        );
        let e = HeaderExtractor(&h);
        assert_eq!(
            e.get("traceparent"),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        assert_eq!(e.keys(), vec!["traceparent"]);
    }
}
