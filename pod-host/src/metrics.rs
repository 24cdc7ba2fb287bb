//! The pod-host's metrics (served on `--metrics-listen`, see the README
//! "Observability"): gRPC calls (by `ipa_common::grpc::ObserveLayer`), pods
//! started and ended by outcome as they happen, calls refused for a stale
//! leader epoch, and at each scrape the pods running and the capacity. One process-wide set, so the pod table counts
//! with one line; counting is an atomic add and nothing is served unless
//! asked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use futures::future::BoxFuture;
use ipa_common::metrics::{MetricsSource, RpcMetrics};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::pods::{ExitCause, PodExit, Supervisor};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    call: &'static str,
}

/// Every metric of the process.
pub struct HostMetrics {
    registry: Registry,
    rpc: Arc<RpcMetrics>,
    pod_starts: Counter,
    pod_exits: Family<OutcomeLabels, Counter>,
    pod_crashes: Counter,
    stale_epoch: Family<CallLabels, Counter>,
    running_pods: Gauge,
    capacity: Gauge,
}

static METRICS: LazyLock<HostMetrics> = LazyLock::new(HostMetrics::new);
/// Set by `main` when the endpoint is served: only then are RPCs measured.
static SERVED: AtomicBool = AtomicBool::new(false);
/// The running supervisor, read at scrape time.
static SUPERVISOR: Mutex<Option<Weak<Supervisor>>> = Mutex::new(None);

impl HostMetrics {
    fn new() -> Self {
        let mut r = Registry::default();
        let rpc = Arc::new(RpcMetrics::register(&mut r));
        let m = Self {
            rpc,
            pod_starts: Counter::default(),
            pod_exits: Family::default(),
            pod_crashes: Counter::default(),
            stale_epoch: Family::default(),
            running_pods: Gauge::default(),
            capacity: Gauge::default(),
            registry: Registry::default(),
        };
        r.register(
            "ipa_pod_starts",
            "Pod processes spawned",
            m.pod_starts.clone(),
        );
        r.register(
            "ipa_pod_exits",
            "Pod processes that ended, by outcome: exited (0), crashed (non-zero or signal), stopped, fenced, shutdown, spawn_failed",
            m.pod_exits.clone(),
        );
        r.register(
            "ipa_pod_crashes",
            "Pods that ended on their own with a non-zero code or a signal",
            m.pod_crashes.clone(),
        );
        r.register(
            "ipa_pod_host_stale_epoch",
            "Calls refused with STALE_EPOCH (from a central-manager older than the newest leader epoch seen), by call: Connect, StartPod, StopPod",
            m.stale_epoch.clone(),
        );
        r.register(
            "ipa_running_pods",
            "Pods starting or running on this host (at scrape time)",
            m.running_pods.clone(),
        );
        r.register(
            "ipa_pod_capacity",
            "Pods this host may run at once",
            m.capacity.clone(),
        );
        Self { registry: r, ..m }
    }
}

fn metrics() -> &'static HostMetrics {
    &METRICS
}

/// Marks the endpoint as served (from `main`).
pub fn set_served() {
    SERVED.store(true, Ordering::Relaxed);
}

/// The gRPC metrics to record, if the endpoint is served.
pub fn rpc_if_served() -> Option<Arc<RpcMetrics>> {
    SERVED
        .load(Ordering::Relaxed)
        .then(|| metrics().rpc.clone())
}

/// Makes `sup` the pod table the scrape-time gauges read.
pub fn attach(sup: &Arc<Supervisor>) {
    if let Ok(mut s) = SUPERVISOR.lock() {
        *s = Some(Arc::downgrade(sup));
    }
}

/// A pod process was spawned.
pub fn pod_started() {
    metrics().pod_starts.inc();
}

/// A pod ended (called once per pod).
pub fn pod_ended(exit: &PodExit) {
    let m = metrics();
    let outcome = match exit.cause {
        ExitCause::Exited if exit.code == Some(0) => "exited",
        ExitCause::Exited => {
            m.pod_crashes.inc();
            "crashed"
        }
        ExitCause::Stopped => "stopped",
        ExitCause::Fenced | ExitCause::SelfFenced => "fenced",
        ExitCause::HostShutdown => "shutdown",
        ExitCause::SpawnFailed => "spawn_failed",
    };
    m.pod_exits.get_or_create(&OutcomeLabels { outcome }).inc();
}

/// A pod could not be spawned (it never ran; counted as an ending so the
/// outcomes add up to the StartPods that reserved a slot).
pub fn spawn_failed() {
    metrics()
        .pod_exits
        .get_or_create(&OutcomeLabels {
            outcome: "spawn_failed",
        })
        .inc();
}

/// A `call` (Connect, StartPod, StopPod) was refused with STALE_EPOCH.
pub fn stale_epoch(call: &'static str) {
    metrics()
        .stale_epoch
        .get_or_create(&CallLabels { call })
        .inc();
}

/// The endpoint's source: refreshes the gauges, renders the registry.
pub struct HostSource;

impl MetricsSource for HostSource {
    fn render(&self) -> BoxFuture<'_, String> {
        Box::pin(async move {
            let m = metrics();
            let sup = SUPERVISOR
                .lock()
                .ok()
                .and_then(|s| s.as_ref().and_then(Weak::upgrade));
            if let Some(sup) = sup {
                m.running_pods.set(sup.live_pods() as i64);
                m.capacity.set(i64::from(sup.config().capacity));
            }
            ipa_common::metrics::encode(&m.registry)
        })
    }
}
