//! central-manager's metrics (served on `--metrics-listen`, see README
//! "Observability"). One process-wide set, so any module can count with one
//! line and no handle to thread through:
//!
//! - counted as they happen: committed events by type and what they mean
//!   for pods (starts, exits by outcome, crashes, automatic restarts), the
//!   writer's commit latency and batch size ([`record_commit`]), gRPC calls
//!   (by `ipa_common::grpc::ObserveLayer`);
//! - computed at each scrape ([`CentralSource`]): tasks by status, running
//!   pods, pod-hosts by state and the age of each host's last message
//!   (heartbeat lag).
//!
//! Counting costs an atomic add; nothing is served unless asked.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use ipa_common::metrics::{MetricsSource, RpcMetrics};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::core::TaskService;
use crate::domain::{EventRecord, TaskFilter, TaskStatus};
use crate::hosts::registry::HostState;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    r#type: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BatchLabels {
    batch: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabels {
    mode: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PriorityLabels {
    priority: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    host_id: String,
}

/// Every metric of the process.
pub struct CentralMetrics {
    registry: Registry,
    /// gRPC server metrics, recorded by the observation layer.
    pub rpc: Arc<RpcMetrics>,
    events: Family<TypeLabels, Counter>,
    pod_starts: Counter,
    pod_exits: Family<OutcomeLabels, Counter>,
    pod_crashes: Counter,
    pod_restarts: Counter,
    commit_seconds: Histogram,
    commit_batch: Histogram,
    writer_wait: Family<BatchLabels, Histogram, fn() -> Histogram>,
    writer_statements: Family<BatchLabels, Histogram, fn() -> Histogram>,
    writer_fsync: Family<BatchLabels, Histogram, fn() -> Histogram>,
    checkpoint_seconds: Family<ModeLabels, Histogram, fn() -> Histogram>,
    wal_frames: Gauge,
    tasks: Family<StatusLabels, Gauge>,
    running_pods: Gauge,
    rejected_host_events: Counter,
    store_writable: Gauge,
    supervision_backlog: Gauge,
    hosts: Family<StateLabels, Gauge>,
    heartbeat_age: Family<HostLabels, Gauge<f64, AtomicU64>>,
    queue_depth: Family<PriorityLabels, Gauge>,
    queue_oldest_age: Gauge<f64, AtomicU64>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(ipa_common::metrics::latency_buckets())
}

static METRICS: LazyLock<CentralMetrics> = LazyLock::new(CentralMetrics::new);

/// The process's metrics.
pub fn metrics() -> &'static CentralMetrics {
    &METRICS
}

impl CentralMetrics {
    fn new() -> Self {
        let mut r = Registry::default();
        let rpc = Arc::new(RpcMetrics::register(&mut r));
        let m = Self {
            rpc,
            events: Family::default(),
            pod_starts: Counter::default(),
            pod_exits: Family::default(),
            pod_crashes: Counter::default(),
            pod_restarts: Counter::default(),
            commit_seconds: Histogram::new(ipa_common::metrics::latency_buckets()),
            // 1, 2, 4 … 1024 commands (MAX_BATCH is far below the top).
            commit_batch: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            writer_wait: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            writer_statements: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            writer_fsync: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            checkpoint_seconds: Family::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            ),
            wal_frames: Gauge::default(),
            tasks: Family::default(),
            running_pods: Gauge::default(),
            rejected_host_events: Counter::default(),
            store_writable: Gauge::default(),
            supervision_backlog: Gauge::default(),
            hosts: Family::default(),
            heartbeat_age: Family::default(),
            queue_depth: Family::default(),
            queue_oldest_age: Gauge::default(),
            registry: Registry::default(),
        };
        r.register(
            "ipa_events",
            "Events committed to the event store, by type",
            m.events.clone(),
        );
        r.register(
            "ipa_pod_starts",
            "Pods started (pod_started events)",
            m.pod_starts.clone(),
        );
        r.register(
            "ipa_pod_exits",
            "Pods that ended, by outcome: exited (0), crashed (non-zero or signal), stopped, lost, fenced",
            m.pod_exits.clone(),
        );
        r.register(
            "ipa_pod_crashes",
            "Pods that crashed (pod_crashed events)",
            m.pod_crashes.clone(),
        );
        r.register(
            "ipa_pod_restarts",
            "Automatic restarts: pods started by the restart policy (actor system)",
            m.pod_restarts.clone(),
        );
        r.register(
            "ipa_store_commit_seconds",
            "Event-store transaction latency per group commit",
            m.commit_seconds.clone(),
        );
        r.register(
            "ipa_store_commit_batch_size",
            "Commands per group commit",
            m.commit_batch.clone(),
        );
        r.register(
            "ipa_store_writer_wait_seconds",
            "Time a command waited for the writer (queued until its batch started), by batch: archive or commands",
            m.writer_wait.clone(),
        );
        r.register(
            "ipa_store_batch_statements_seconds",
            "Time a batch's statements took inside its transaction, by batch: archive or commands",
            m.writer_statements.clone(),
        );
        r.register(
            "ipa_store_batch_fsync_seconds",
            "Time a batch's COMMIT took (the WAL append and its fsync), by batch: archive or commands",
            m.writer_fsync.clone(),
        );
        r.register(
            "ipa_store_checkpoint_seconds",
            "WAL checkpoints run by the checkpointer thread, by mode: passive or restart",
            m.checkpoint_seconds.clone(),
        );
        r.register(
            "ipa_store_wal_frames",
            "Frames in the WAL at the checkpointer's last pass (it starts over once all are copied)",
            m.wal_frames.clone(),
        );
        r.register(
            "ipa_tasks",
            "Tasks by status (at scrape time)",
            m.tasks.clone(),
        );
        r.register(
            "ipa_running_pods",
            "Pods the central considers running (ListActivePods)",
            m.running_pods.clone(),
        );
        r.register("ipa_pod_hosts", "Known pod-hosts by state", m.hosts.clone());
        r.register(
            "ipa_rejected_host_events",
            "Pod-host reports dropped because that host does not own the pod they name",
            m.rejected_host_events.clone(),
        );
        r.register(
            "ipa_event_store_writable",
            "1 while the event store takes writes, 0 while its circuit breaker is open",
            m.store_writable.clone(),
        );
        r.register(
            "ipa_supervision_backlog",
            "Supervision writes (host events, reconciliations, host loss) queued and not yet committed",
            m.supervision_backlog.clone(),
        );
        r.register(
            "ipa_pod_host_heartbeat_age_seconds",
            "Time since the last message from each pod-host (heartbeat lag)",
            m.heartbeat_age.clone(),
        );
        r.register(
            "ipa_queue_depth",
            "Tasks waiting in the queue for room, by priority",
            m.queue_depth.clone(),
        );
        r.register(
            "ipa_queue_oldest_age_seconds",
            "How long the longest-waiting queued task has waited (0 when the queue is empty)",
            m.queue_oldest_age.clone(),
        );
        Self { registry: r, ..m }
    }

    fn count_event(&self, e: &EventRecord) {
        let t = e.event_type.as_str();
        self.events
            .get_or_create(&TypeLabels {
                r#type: t.to_owned(),
            })
            .inc();
        let outcome = match t {
            "pod_started" => {
                self.pod_starts.inc();
                if e.actor_id == crate::store::pods::SYSTEM_ACTOR {
                    self.pod_restarts.inc();
                }
                return;
            }
            "pod_exited" => "exited",
            "pod_crashed" => {
                self.pod_crashes.inc();
                "crashed"
            }
            "pod_stopped" => "stopped",
            "pod_lost" => "lost",
            "pod_fenced" => "fenced",
            _ => return,
        };
        self.pod_exits
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }
}

/// A pod-host reported something about a pod it does not own (dropped).
pub fn count_rejected_host_event() {
    metrics().rejected_host_events.inc();
}

/// A supervision write was queued (`+1`) or is done (`-1`).
pub fn supervision_backlog(delta: i64) {
    metrics().supervision_backlog.inc_by(delta);
}

/// Called by the writer after each committed batch.
pub fn record_commit<'a>(
    batch: usize,
    elapsed: Duration,
    events: impl IntoIterator<Item = &'a EventRecord>,
) {
    let m = metrics();
    m.commit_seconds.observe(elapsed.as_secs_f64());
    m.commit_batch.observe(batch as f64);
    for e in events {
        m.count_event(e);
    }
}

/// A command waited `waited` for the writer before its batch started.
pub fn record_writer_wait(batch: &'static str, waited: Duration) {
    metrics()
        .writer_wait
        .get_or_create(&BatchLabels { batch })
        .observe(waited.as_secs_f64());
}

/// A committed batch's statements and its COMMIT.
pub fn record_batch(batch: &'static str, statements: Duration, commit: Duration) {
    let m = metrics();
    let labels = BatchLabels { batch };
    m.writer_statements
        .get_or_create(&labels)
        .observe(statements.as_secs_f64());
    m.writer_fsync
        .get_or_create(&labels)
        .observe(commit.as_secs_f64());
}

/// A checkpoint of the checkpointer thread.
pub fn record_checkpoint(mode: &'static str, took: Duration, r: crate::store::CheckpointResult) {
    let m = metrics();
    m.checkpoint_seconds
        .get_or_create(&ModeLabels { mode })
        .observe(took.as_secs_f64());
    m.wal_frames.set(r.wal_frames);
}

/// Renders the metrics, computing the scrape-time gauges from the service.
pub struct CentralSource {
    service: Arc<TaskService>,
}

impl CentralSource {
    pub fn new(service: Arc<TaskService>) -> Self {
        Self { service }
    }

    async fn refresh(&self) {
        let m = metrics();
        for s in TaskStatus::ALL {
            let filter = TaskFilter {
                status: Some(*s),
                ..Default::default()
            };
            match self.service.count_tasks(&filter).await {
                Ok(n) => {
                    m.tasks
                        .get_or_create(&StatusLabels { status: s.as_db() })
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
                Err(e) => tracing::debug!(error = %e, "metrics: counting tasks failed"),
            }
        }
        if let Ok(n) = self.service.count_active_pods().await {
            m.running_pods.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        m.store_writable
            .set(i64::from(self.service.store_writable()));
        match self.service.queue_stats().await {
            Ok(q) => {
                for (p, n) in &q.depth {
                    m.queue_depth
                        .get_or_create(&PriorityLabels { priority: p.name() })
                        .set(i64::try_from(*n).unwrap_or(i64::MAX));
                }
                let now = ipa_proto::time::now_micros();
                let age = q
                    .oldest_queued_at
                    .map_or(0.0, |at| (now - at).max(0) as f64 / 1e6);
                m.queue_oldest_age.set(age);
            }
            Err(e) => tracing::debug!(error = %e, "metrics: reading the queue failed"),
        }
        let hosts = self.service.pod_hosts();
        for state in [
            HostState::Ready,
            HostState::Unreachable,
            HostState::Lost,
            HostState::Draining,
        ] {
            let n = hosts.iter().filter(|h| h.state == state).count();
            m.hosts
                .get_or_create(&StateLabels {
                    state: state_name(state),
                })
                .set(n as i64);
        }
        // Hosts come and go: only the current ones are reported.
        m.heartbeat_age.clear();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as i64;
        for h in &hosts {
            let age = (now - h.last_heartbeat_at).max(0) as f64 / 1e6;
            m.heartbeat_age
                .get_or_create(&HostLabels {
                    host_id: h.host_id.clone(),
                })
                .set(age);
        }
    }
}

fn state_name(s: HostState) -> &'static str {
    match s {
        HostState::Ready => "ready",
        HostState::Unreachable => "unreachable",
        HostState::Lost => "lost",
        HostState::Draining => "draining",
    }
}

impl MetricsSource for CentralSource {
    fn render(&self) -> BoxFuture<'_, String> {
        Box::pin(async move {
            self.refresh().await;
            ipa_common::metrics::encode(&metrics().registry)
        })
    }
}
