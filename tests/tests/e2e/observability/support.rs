//! Helpers of the observability tests: an in-test OTLP trace collector, a
//! system (one pod-host + central-manager) started with extra environment,
//! and a scraper/parser for the metrics endpoints.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipa_tests::{DEADLINE, ServerProcess, pb, wait_for_async};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub type Client = pb::central_manager_client::CentralManagerClient<Channel>;

/// One exported span with the service that sent it.
#[derive(Debug, Clone)]
pub struct CollectedSpan {
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub attributes: BTreeMap<String, String>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn attr_map(attrs: &[KeyValue]) -> BTreeMap<String, String> {
    attrs
        .iter()
        .filter_map(|kv| {
            let v = match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => s.clone(),
                any_value::Value::IntValue(i) => i.to_string(),
                any_value::Value::BoolValue(b) => b.to_string(),
                any_value::Value::DoubleValue(d) => d.to_string(),
                other => format!("{other:?}"),
            };
            Some((kv.key.clone(), v))
        })
        .collect()
}

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<CollectedSpan>>>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut out = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let resource = rs
                .resource
                .as_ref()
                .map(|r| attr_map(&r.attributes))
                .unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.push(CollectedSpan {
                        service: service.clone(),
                        name: s.name.clone(),
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        attributes: attr_map(&s.attributes),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A small OTLP/gRPC trace collector on a loopback port, stopped on drop.
pub struct Collector {
    pub addr: SocketAddr,
    spans: Sink,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Collector {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Sink::default();
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let spans = spans.clone();
            let stop = stop.clone();
            async move {
                let _ = tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(spans))
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::TcpListenerStream::new(listener),
                        stop.cancelled(),
                    )
                    .await;
            }
        });
        Self {
            addr,
            spans,
            stop,
            task: Some(task),
        }
    }

    /// `http://ADDR`, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span of `trace_id` received so far.
    pub fn trace(&self, trace_id: &str) -> Vec<CollectedSpan> {
        let spans = self.spans.0.lock().unwrap();
        spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }

    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A pod-host with the test templates plus `extra_templates`, and a
/// central-manager connected to it; both get `envs` and their own extra
/// flags. Returns once the host is READY.
pub struct System {
    pub host: ServerProcess,
    pub central: ServerProcess,
    pub client: Client,
}

impl System {
    pub async fn start(
        dir: &Path,
        extra_templates: &[(&str, &str)],
        envs: &[(&str, &str)],
        host_flags: &[&str],
        central_flags: &[&str],
    ) -> Self {
        let config =
            ipa_tests::cluster::write_host_config(dir, &dir.join("ledger.jsonl"), extra_templates);
        let data = dir.join("host-a");
        std::fs::create_dir_all(&data).unwrap();
        let mut args: Vec<OsString> = vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--host-id".into(),
            "host-a".into(),
            "--config".into(),
            config.into(),
            "--data-dir".into(),
            data.clone().into(),
        ];
        args.extend(host_flags.iter().map(OsString::from));
        let host = ServerProcess::start("pod-host", &args, envs, Some(&data)).await;

        let db = format!("sqlite://{}", dir.join("central.db").display());
        let mut args: Vec<OsString> = vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--database-url".into(),
            db.into(),
            "--pod-host".into(),
            host.url().into(),
        ];
        args.extend(central_flags.iter().map(OsString::from));
        let central = ServerProcess::start("central-manager", &args, envs, Some(dir)).await;
        let client = Client::new(central.channel());
        let c = client.clone();
        wait_for_async("the pod-host to be READY", DEADLINE, || {
            let mut c = c.clone();
            async move {
                let hosts = c
                    .list_pod_hosts(pb::ListPodHostsRequest {})
                    .await
                    .ok()?
                    .into_inner()
                    .hosts;
                hosts
                    .iter()
                    .any(|h| h.state == pb::PodHostState::Ready as i32)
                    .then_some(())
            }
        })
        .await;
        Self {
            host,
            central,
            client,
        }
    }

    /// Stops both (central first, so it does not see the host go).
    pub async fn stop(mut self) {
        self.central.kill().await;
        self.host.kill().await;
    }
}

/// A free loopback port (bound and released; the OS does not hand it out
/// again at once).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// One sample of a scrape: metric name, labels, value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the Prometheus/OpenMetrics text format (the sample lines).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let value: f64 = value.parse().expect("sample value");
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let labels = body
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once("=\"").expect("label");
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

/// The value of `name` with (at least) `labels`; `None` if absent.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// GETs `http://addr/metrics` and returns (content type, body).
pub async fn scrape(addr: SocketAddr) -> (String, String) {
    let mut s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect to the metrics endpoint");
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut raw))
        .await
        .expect("response in time")
        .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    (content_type, body.to_owned())
}
