//! Metrics both services share: the gRPC server metrics (recorded by
//! [`crate::grpc::ObserveLayer`]) and the HTTP endpoint that serves a
//! process's metrics in the Prometheus/OpenMetrics text format on
//! `--metrics-listen` (path `/metrics`).
//!
//! Metrics are typed `prometheus-client` values registered in one
//! [`Registry`] per process; the endpoint asks the process's
//! [`MetricsSource`] for a fresh rendering on every scrape, so gauges that
//! are cheaper to compute than to track (tasks by status, host states) are
//! computed then.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use http_body_util::Full;
use hyper::body::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The content type of the OpenMetrics text format, which Prometheus
/// scrapes natively.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets in seconds: 100 µs doubling to ~13 s, covering a cached
/// GetTask as well as a StartPod that waits for a spawn.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0001, 2.0, 18)
}

fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// Labels of one gRPC outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// `ipa.v1.CentralManager`, `grpc.health.v1.Health`, …
    pub service: String,
    /// `CreateTask`, …
    pub method: String,
    /// gRPC status code name: `OK`, `NOT_FOUND`, …
    pub code: String,
}

/// Labels of one gRPC method.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub service: String,
    pub method: String,
}

/// The label of calls that named no method the server has: their paths
/// are chosen by the client, so they never become label values.
pub const UNKNOWN: &str = "unknown";

/// Most distinct (service, method) label pairs recorded; later ones count
/// as [`UNKNOWN`]. Each server has a few dozen methods: this only bounds
/// the label set (and the memory of the metrics) whatever reaches the
/// layer.
pub const MAX_LABELLED_METHODS: usize = 128;

/// gRPC server metrics.
#[derive(Debug, Clone)]
pub struct RpcMetrics {
    handled: Family<RpcLabels, Counter>,
    latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    /// The (service, method) pairs labelled so far.
    labelled: Arc<std::sync::Mutex<std::collections::HashSet<(String, String)>>>,
}

impl RpcMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            handled: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            labelled: Arc::default(),
        };
        registry.register(
            "grpc_server_handled",
            "gRPC calls completed, by service, method and status code",
            m.handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "gRPC call latency until the response headers (the whole call for unary RPCs)",
            m.latency.clone(),
        );
        m
    }

    /// The labels for a call to `service`/`method` that ended with `code`.
    /// A path the server does not route (answered UNIMPLEMENTED) is
    /// [`UNKNOWN`] for both, service included: any client could otherwise
    /// create label values at will. Past [`MAX_LABELLED_METHODS`] distinct
    /// pairs, new ones are [`UNKNOWN`] too.
    fn labels<'a>(&self, service: &'a str, method: &'a str, code: i32) -> (&'a str, &'a str) {
        if code == tonic::Code::Unimplemented as i32 {
            return (UNKNOWN, UNKNOWN);
        }
        let mut seen = self.labelled.lock().unwrap_or_else(|e| e.into_inner());
        let key = (service.to_owned(), method.to_owned());
        if seen.contains(&key) {
            return (service, method);
        }
        if seen.len() >= MAX_LABELLED_METHODS {
            return (UNKNOWN, UNKNOWN);
        }
        seen.insert(key);
        (service, method)
    }

    /// Records one call.
    pub fn observe(&self, service: &str, method: &str, code: i32, elapsed: Duration) {
        let (service, method) = self.labels(service, method, code);
        self.handled
            .get_or_create(&RpcLabels {
                service: service.to_owned(),
                method: method.to_owned(),
                code: code_name(code).to_owned(),
            })
            .inc();
        self.latency
            .get_or_create(&MethodLabels {
                service: service.to_owned(),
                method: method.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }
}

/// The canonical name of a gRPC status code.
pub fn code_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("UNKNOWN")
}

/// What the endpoint serves: a process renders its registry, refreshing
/// computed gauges first.
pub trait MetricsSource: Send + Sync + 'static {
    /// The whole exposition, in the OpenMetrics text format.
    fn render(&self) -> BoxFuture<'_, String>;
}

/// Encodes `registry` in the OpenMetrics text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::warn!(error = %e, "encoding metrics failed");
    }
    out
}

/// Binds the metrics endpoint on `addr` and serves it on `tracker` until
/// `shutdown`. Returns the bound address (port 0 picks a free one).
pub async fn serve(
    addr: SocketAddr,
    source: Arc<dyn MetricsSource>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "metrics endpoint on http://{bound}/metrics");
    let conns = tracker.clone();
    tracker.spawn(tracing::Instrument::instrument(
        accept_loop(listener, source, conns, shutdown),
        tracing::info_span!("metrics_endpoint"),
    ));
    Ok(bound)
}

async fn accept_loop(
    listener: TcpListener,
    source: Arc<dyn MetricsSource>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors and the like: try again
                    // shortly rather than spin or give up.
                    tracing::warn!(error = %e, "metrics endpoint accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let source = source.clone();
        let shutdown = shutdown.clone();
        // One task per scrape connection; it ends with the connection or at
        // shutdown (a keep-alive scraper must not hold the process up).
        tracker.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let source = source.clone();
                async move { Ok::<_, Infallible>(respond(req, source.as_ref()).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                _ = shutdown.cancelled() => {}
                r = conn => if let Err(e) = r {
                    tracing::debug!(error = %e, "metrics connection failed");
                },
            }
        });
    }
}

async fn respond(
    req: hyper::Request<hyper::body::Incoming>,
    source: &dyn MetricsSource,
) -> hyper::Response<Full<Bytes>> {
    let mut resp = hyper::Response::new(Full::new(Bytes::new()));
    if req.uri().path() != "/metrics" {
        *resp.status_mut() = hyper::StatusCode::NOT_FOUND;
        return resp;
    }
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        *resp.status_mut() = hyper::StatusCode::METHOD_NOT_ALLOWED;
        return resp;
    }
    let body = source.render().await;
    *resp.body_mut() = Full::new(Bytes::from(body));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(CONTENT_TYPE),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Label values of every `grpc_server_handled_total` line.
    fn handled_labels(text: &str) -> std::collections::BTreeSet<String> {
        text.lines()
            .filter(|l| l.starts_with("grpc_server_handled_total{"))
            .filter_map(|l| {
                l.split_once('{')?
                    .1
                    .split_once(",code=")
                    .map(|(a, _)| a.to_owned())
            })
            .collect()
    }

    /// Clients choose request paths: unknown services and methods, in any
    /// number, must not create label values.
    #[test]
    fn client_chosen_paths_do_not_become_labels() {
        let mut r = Registry::default();
        let m = RpcMetrics::register(&mut r);
        m.observe("ipa.v1.X", "Get", 0, Duration::from_millis(1));
        for i in 0..1000 {
            // What the router answers for a path it does not have.
            m.observe(
                &format!("evil{i}.Service"),
                &format!("M{i}"),
                12,
                Duration::ZERO,
            );
        }
        let labels = handled_labels(&encode(&r));
        assert_eq!(
            labels.into_iter().collect::<Vec<_>>(),
            vec![
                r#"service="ipa.v1.X",method="Get""#.to_owned(),
                r#"service="unknown",method="unknown""#.to_owned()
            ]
        );
        // Whatever else reaches the layer, the label set stays bounded.
        for i in 0..1000 {
            m.observe(&format!("s{i}"), "m", 0, Duration::ZERO);
        }
        let labels = handled_labels(&encode(&r));
        assert!(labels.len() <= MAX_LABELLED_METHODS + 1, "{}", labels.len());
        assert!(labels.contains(r#"service="unknown",method="unknown""#));
    }

    #[test]
    fn code_names() {
        assert_eq!(code_name(0), "OK");
        assert_eq!(code_name(5), "NOT_FOUND");
        assert_eq!(code_name(16), "UNAUTHENTICATED");
        assert_eq!(code_name(99), "UNKNOWN");
        assert_eq!(code_name(-1), "UNKNOWN");
    }

    #[test]
    fn rpc_metrics_are_encoded() {
        let mut r = Registry::default();
        let m = RpcMetrics::register(&mut r);
        m.observe("ipa.v1.X", "Get", 0, Duration::from_millis(2));
        m.observe("ipa.v1.X", "Nope", 12, Duration::from_millis(1));
        let text = encode(&r);
        assert!(
            text.contains(
                r#"grpc_server_handled_total{service="ipa.v1.X",method="Get",code="OK"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"grpc_server_handled_total{service="unknown",method="unknown",code="UNIMPLEMENTED"} 1"#
        ));
        assert!(
            text.contains(
                r#"grpc_server_handling_seconds_count{service="ipa.v1.X",method="Get"} 1"#
            )
        );
    }
}
