//! Observability (issue 7): traces that cross central-manager, a pod-host
//! and the pod, collected by an OTLP collector inside the test; and the
//! Prometheus metrics of both processes, scraped after some work.

mod metrics;
pub(crate) mod support;
mod tracing;
