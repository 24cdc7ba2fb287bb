//! Logging and tracing set-up.
//!
//! Logs go to stderr as text or JSON (`--log-format`), filtered by `RUST_LOG`
//! (default `info`). When `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, spans are also exported over
//! OTLP/gRPC with a batch exporter; the standard `OTEL_*` variables
//! (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, …)
//! are read by the OpenTelemetry SDK itself. When neither is set no exporter
//! and no OpenTelemetry layer exist at all, so nothing is slowed.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// Keeps the trace exporter alive; call [`Telemetry::shutdown`] at the end of
/// a graceful shutdown so buffered spans are flushed.
#[must_use = "dropping the handle without shutdown() may lose buffered spans"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global subscriber. `default_service_name` is used unless
    /// `OTEL_SERVICE_NAME` says otherwise. Call once per process.
    pub fn init(default_service_name: &str, format: LogFormat) -> Self {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let provider = otlp_endpoint_configured().then(|| build_provider(default_service_name));
        let provider = match provider {
            Some(Ok(p)) => Some(p),
            Some(Err(e)) => {
                eprintln!("OpenTelemetry exporter disabled: {e}");
                None
            }
            None => None,
        };
        let otel_layer = provider.as_ref().map(|p| {
            tracing_opentelemetry::layer().with_tracer(p.tracer(default_service_name.to_owned()))
        });
        let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
        // Colours only on a terminal: log files and collectors get plain text.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi);
        let installed = match format {
            LogFormat::Text => registry.with(fmt).try_init(),
            LogFormat::Json => registry.with(fmt.json().flatten_event(true)).try_init(),
        };
        if installed.is_err() {
            // Already installed (a test calling twice): keep the first.
            eprintln!("tracing subscriber already installed");
        }
        if let Some(p) = &provider {
            opentelemetry::global::set_tracer_provider(p.clone());
            opentelemetry::global::set_text_map_propagator(
                opentelemetry_sdk::propagation::TraceContextPropagator::new(),
            );
            // Only now: propagation needs the propagator set above.
            crate::trace_context::set_enabled(true);
        }
        Self { provider }
    }

    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes buffered spans and stops the exporter.
    pub fn shutdown(self) {
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown()
        {
            eprintln!("OpenTelemetry shutdown: {e}");
        }
    }
}

fn otlp_endpoint_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|k| std::env::var(k).is_ok_and(|v| !v.trim().is_empty()))
}

fn build_provider(default_service_name: &str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| e.to_string())?;
    // Resource::builder() reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES;
    // only fall back to our own name when the operator gave none.
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").map_or(true, |v| v.trim().is_empty()) {
        resource = resource.with_service_name(default_service_name.to_owned());
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}
