//! Process assembly: open the store, start the background tasks, and serve
//! `ipa.v1.CentralManager`, `grpc.health.v1.Health` and gRPC reflection (v1
//! and v1alpha; grpcurl 1.8 speaks only v1alpha) on the caller's listener
//! until the caller's shutdown token fires.
//!
//! Shutdown order: health goes NOT_SERVING, the server stops accepting and
//! waits for in-flight calls (watch streams end on the same token), then the
//! writer drains its queue and commits, background tasks are joined, and the
//! read pool is closed.

use std::sync::Arc;

use ipa_proto::v1::central_manager_server::CentralManagerServer;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use ipa_common::reload::{RELOAD_INTERVAL, Reloader};
use ipa_common::tls::{ClientTls, ServerTls};

mod security;

use crate::api::CentralManagerApi;
use crate::auth::Auth;
use crate::auth::layer::AuthLayer;
use crate::config::Config;
use crate::core::TaskService;
use crate::core::leadership::ReplicaConfig;
use crate::core::leadership::duties::LeaderDuties;
use crate::core::leadership::elector;
use crate::core::ports::Ports;
use crate::core::retention::Retention;
use crate::core::schedules::ScheduleService;
use crate::core::wiring::CoreConfig;
use crate::domain::limits::MAX_MESSAGE_BYTES;
use crate::hosts::discovery::{Discovery, SystemResolver};
use crate::hosts::grpc::GrpcDialer;
use crate::hosts::local::{LocalPodHost, pod_host_binary};
use crate::hosts::session::SessionConfig;
use crate::store::AnyStore;
use crate::watch::EventHub;
use security::Security;

/// How long the local pod-host may take to stop its pods on shutdown
/// (its own stop grace is 5 s by default).
const LOCAL_POD_HOST_STOP: std::time::Duration = std::time::Duration::from_secs(15);

/// HTTP/2 PING interval on idle connections, and how long a PING may go
/// unanswered before the connection is closed.
const HTTP2_KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(20);
const HTTP2_KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// TCP keepalive probes on every accepted connection.
const TCP_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(60);
/// Concurrent HTTP/2 streams per connection.
const MAX_STREAMS_PER_CONNECTION: u32 = 1024;
/// Server-side bound on a call's time to its response headers.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Start-up and serve errors (not request errors).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The full name of the task service, as health checks ask for it.
pub const SERVICE_NAME: &str = "ipa.v1.CentralManager";

/// A central-manager with its store open and background tasks running,
/// ready to serve.
pub struct Application {
    service: Arc<TaskService>,
    schedules: Arc<ScheduleService>,
    retention: Arc<Retention>,
    store: AnyStore,
    tracker: TaskTracker,
    /// Cancelled by `serve` on shutdown; stops watchers and loops.
    shutdown: CancellationToken,
    /// Cancelled after the gRPC server has drained: the writer must outlive
    /// every in-flight call.
    writer_stop: CancellationToken,
    /// The `--local-pod-host` child, stopped last.
    local_pod_host: Option<LocalPodHost>,
    /// gRPC metrics to record, when `--metrics-listen` serves them.
    rpc_metrics: Option<Arc<ipa_common::metrics::RpcMetrics>>,
    /// Where the metrics endpoint listens, if it does.
    metrics_addr: Option<std::net::SocketAddr>,
    /// `--max-streams`.
    max_streams: u32,
    /// `--tls-cert`/`--tls-key`/`--client-ca`: serve TLS.
    tls: Option<ServerTls>,
    /// Tokens and/or client certificates; `None`: auth off.
    auth: Option<Auth>,
    /// `--health-listen`.
    health_listen: Option<std::net::SocketAddr>,
    /// Started when this replica leads.
    leader_duties: LeaderDuties,
    /// `--replica-id`, `--leader-lease-ms`, `--advertise-url`.
    replica: ReplicaSettings,
}

/// What the elector needs, kept until `serve` knows the bound address.
struct ReplicaSettings {
    replica_id: String,
    lease: std::time::Duration,
    config: Config,
    /// `--replica-ca`: TLS towards `https://` leaders.
    tls: Option<ClientTls>,
}

/// `serve` ended because this replica lost the leadership (main exits
/// with status 3: its supervisor restarts it as a follower).
#[derive(Debug)]
pub struct Deposed;

impl std::fmt::Display for Deposed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("this replica lost the leadership; restart it to serve as a follower")
    }
}

impl std::error::Error for Deposed {}

impl Application {
    /// Opens (creating and migrating) the database and starts the writer
    /// and background loops.
    pub async fn build(config: &Config) -> Result<Self, BoxError> {
        let database = config.database()?;
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let security = Security::load(config)?;
        let writer_stop = CancellationToken::new();
        let hub = EventHub::default();
        let store = AnyStore::open(&database, hub.clone(), &tracker, writer_stop.clone())
            .await
            .map_err(|e| match &database {
                crate::config::Database::Sqlite(path) => {
                    format!("opening database {}: {e}", path.display())
                }
                crate::config::Database::Postgres(_) => format!("opening the database: {e}"),
            })?;
        // Where the local pod-host keeps its data: next to the SQLite file,
        // or in the working directory with PostgreSQL.
        let data_dir = match &database {
            crate::config::Database::Sqlite(path) => {
                tracing::info!(database = %path.display(), "database open, migrations applied");
                path.parent().map(std::path::Path::to_path_buf)
            }
            crate::config::Database::Postgres(_) => {
                tracing::info!("PostgreSQL database open, migrations applied");
                None
            }
        };

        // Pod supervision: endpoints → one session each → the supervisor.
        let mut static_urls = config.pod_hosts.clone();
        let local_pod_host = if config.local_pod_host {
            let data = data_dir.map_or_else(
                || std::path::PathBuf::from("pod-host"),
                |p| p.join("pod-host"),
            );
            let extra = vec![
                "--fence-timeout-ms".to_owned(),
                config.fence_timeout_ms.to_string(),
            ];
            let binary = pod_host_binary()?;
            let local = LocalPodHost::start(&binary, &data, &extra, &tracker)
                .await
                .map_err(|e| format!("starting the local pod-host {}: {e}", binary.display()))?;
            static_urls.push(local.url.clone());
            Some(local)
        } else {
            None
        };
        let (endpoints_tx, endpoints_rx) = tokio::sync::watch::channel(Default::default());
        let mut discovery = Discovery::new(
            static_urls,
            config.pod_host_dns.iter().cloned().collect(),
            std::time::Duration::from_millis(config.pod_host_dns_interval_ms.max(100)),
            Arc::new(SystemResolver),
        );
        if security.pod_host_tls.is_some() {
            // The local child has no certificate: it stays plaintext on
            // loopback.
            discovery = discovery.with_tls(local_pod_host.iter().map(|l| l.url.clone()).collect());
        } else if config
            .pod_hosts
            .iter()
            .any(|u| u.trim().starts_with("https://"))
        {
            return Err("an https:// --pod-host needs --pod-host-ca".into());
        }
        tracker.spawn(tracing::Instrument::instrument(
            discovery.run(endpoints_tx, shutdown.clone()),
            tracing::info_span!("discovery"),
        ));
        let core = CoreConfig {
            timeouts: config.host_timeouts(),
            restart_defaults: config.restart_defaults(),
            session: SessionConfig {
                heartbeat_interval: config.heartbeat_interval(),
                central_id: uuid::Uuid::new_v4().to_string(),
            },
            watch_lag_limit: config.watch_lag_limit(),
        };
        let dialer = Arc::new(GrpcDialer {
            tls: security.pod_host_tls.clone(),
            epoch: store.fence(),
        });
        let ports = Ports::production(store.tasks());
        let clock = ports.clock.clone();
        let (service, core_duties) = crate::core::wiring::build(
            core,
            ports,
            dialer,
            endpoints_rx,
            hub.clone(),
            &tracker,
            shutdown.clone(),
        );
        // Schedules and retention use their store ports, with the core's
        // clock.
        let schedules = Arc::new(ScheduleService::new(
            service.clone(),
            store.schedules(),
            clock.clone(),
        ));
        let retention = Arc::new(Retention::new(service.clone(), store.retention(), clock));
        // Started once this replica leads (`serve` runs the elector).
        let leader_duties = LeaderDuties {
            core: core_duties,
            schedules: schedules.clone(),
            retention: retention.clone(),
            archive_after_days: config.archive_after_days,
            hub: hub.clone(),
            tasks: store.tasks(),
        };
        let metrics_addr = match config.metrics_listen {
            Some(addr) => Some(
                ipa_common::metrics::serve(
                    addr,
                    Arc::new(crate::metrics::CentralSource::new(service.clone())),
                    &tracker,
                    shutdown.clone(),
                )
                .await
                .map_err(|e| format!("binding the metrics endpoint {addr}: {e}"))?,
            ),
            None => None,
        };
        let rpc_metrics = metrics_addr.map(|_| crate::metrics::metrics().rpc.clone());
        Reloader::new(security.reload, RELOAD_INTERVAL).start(&tracker, shutdown.clone());
        Ok(Self {
            service,
            schedules,
            retention,
            store,
            tracker,
            shutdown,
            writer_stop,
            local_pod_host,
            rpc_metrics,
            metrics_addr,
            max_streams: config.max_streams,
            tls: security.tls,
            auth: security.auth,
            health_listen: config.health_listen,
            leader_duties,
            replica: ReplicaSettings {
                replica_id: config.replica_id(),
                lease: std::time::Duration::from_millis(config.leader_lease_ms),
                config: config.clone(),
                tls: security.replica_tls,
            },
        })
    }

    /// Cancelled when this replica loses the leadership (`serve` then
    /// stops; a caller that must not wait for a drain against an
    /// unreachable database bounds it, as `main` does).
    pub fn deposed(&self) -> CancellationToken {
        self.store.fence().deposed()
    }

    /// The bound address of the metrics endpoint (`--metrics-listen`).
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_addr
    }

    /// Serves on `listener` until `stop` is cancelled, then shuts down
    /// gracefully (see module docs).
    pub async fn serve(
        self,
        listener: TcpListener,
        stop: CancellationToken,
    ) -> Result<(), BoxError> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_service_status("", ServingStatus::Serving).await;
        health
            .set_service_status(SERVICE_NAME, ServingStatus::Serving)
            .await;

        if let Some(addr) = self.health_listen {
            ipa_common::health::serve(
                addr,
                health_service.clone(),
                &self.tracker,
                self.shutdown.clone(),
            )
            .await
            .map_err(|e| format!("binding --health-listen {addr}: {e}"))?;
        }
        // The elector, now that the address to advertise is known; the
        // leader's duties start when it says so. Losing the lead ends
        // serving like a stop request, then `serve` returns `Deposed`.
        let bound = listener.local_addr()?;
        let (leadership, elector) = elector::start(
            self.store.lease(),
            ReplicaConfig {
                replica_id: self.replica.replica_id.clone(),
                address: self.replica.config.advertise_url(bound),
                lease: self.replica.lease,
                single: matches!(self.store, AnyStore::Sqlite(_)),
            },
            self.store.fence(),
            &self.tracker,
            self.shutdown.clone(),
        )
        .await;
        self.leader_duties.start_when_leading(
            leadership.clone(),
            &self.tracker,
            self.shutdown.clone(),
        );
        let deposed = self.store.fence().deposed();
        let stop = {
            let all = CancellationToken::new();
            let (a, d, sh) = (all.clone(), deposed.clone(), self.shutdown.clone());
            self.tracker.spawn(async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = d.cancelled() => {}
                    () = sh.cancelled() => {}
                }
                a.cancel();
            });
            all
        };
        ipa_common::warn_if_exposed(
            "central-manager",
            listener.local_addr()?,
            self.tls.is_some(),
            self.auth.is_some(),
        );

        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;

        // The task service is SERVING while the event store takes writes and
        // NOT_SERVING while its circuit breaker is open. Only the named
        // service follows the store: the overall ("") status stays SERVING,
        // so a liveness probe never restarts central-manager over a full
        // disk (a restart would not help, and pods need central's pings).
        let store_health = self.tracker.spawn(follow_store_health(
            self.store.breaker().subscribe(),
            health.clone(),
            [stop.clone(), self.shutdown.clone()],
        ));

        let shutdown = self.shutdown.clone();
        let signal = {
            let health = health.clone();
            async move {
                stop.cancelled().await;
                // It stops on the same token; joined so it cannot set
                // SERVING after the NOT_SERVING below.
                let _ = store_health.await;
                tracing::info!("shutting down: draining in-flight calls");
                health
                    .set_service_status("", ServingStatus::NotServing)
                    .await;
                health
                    .set_service_status(SERVICE_NAME, ServingStatus::NotServing)
                    .await;
                // Ends watch streams and background loops.
                shutdown.cancel();
            }
        };

        // Trace context and RPC metrics for every call (a no-op when
        // neither traces nor metrics are on).
        let observe = ipa_common::grpc::ObserveLayer::new(self.rpc_metrics.clone());
        let api = CentralManagerServer::new(
            CentralManagerApi::new(
                self.service.clone(),
                self.schedules.clone(),
                self.retention.clone(),
                self.max_streams,
            )
            .with_replicas(leadership, self.replica.tls.clone()),
        )
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
        // Inside the observation layer: refused calls are counted too, and
        // the `auth` span nests in the server span.
        let auth = AuthLayer::new(self.auth.clone());
        let router = Server::builder()
            // A peer that vanished without closing (a cut cable, a frozen
            // VM) is noticed and its connection closed instead of holding
            // streams forever.
            .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
            .tcp_keepalive(Some(TCP_KEEPALIVE))
            // One connection cannot open unbounded streams.
            .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
            // Time to the response headers (the whole call for unary RPCs;
            // streams only until they open): longer than the slowest pod
            // operation (a stop waits up to 60 s for its host).
            .timeout(REQUEST_TIMEOUT)
            .layer(observe)
            .layer(ipa_common::message_limit::MessageLimitLayer)
            .layer(auth)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(api);
        let result = match &self.tls {
            Some(tls) => {
                router
                    .serve_with_incoming_shutdown(tls.incoming(listener), signal)
                    .await
            }
            None => {
                // Small request/response messages: without TCP_NODELAY,
                // Nagle plus delayed ACKs can add tens of milliseconds to a
                // call.
                let incoming = TcpListenerStream::new(listener).map(|conn| {
                    conn.inspect(|s| {
                        let _ = s.set_nodelay(true);
                    })
                });
                router.serve_with_incoming_shutdown(incoming, signal).await
            }
        };
        // Whatever ended the server, stop everything else in order: pod
        // operations whose callers left still finish (and write) first.
        self.shutdown.cancel();
        self.service.drain_operations().await;
        self.writer_stop.cancel();
        // The local pod-host is stopped once supervision has stopped (its
        // pods' exits are then left for the next start to reconcile, as
        // after any restart) and before the tasks are joined: one of them
        // reads its stdout until it exits.
        if let Some(local) = self.local_pod_host {
            local.stop(LOCAL_POD_HOST_STOP).await;
        }
        self.tracker.close();
        self.tracker.wait().await;
        // After the writer: a follower may take over only once nothing
        // more will be committed under this epoch.
        if !deposed.is_cancelled() {
            elector.release().await;
        }
        self.store.close().await;
        tracing::info!("shut down");
        if deposed.is_cancelled() {
            return Err(Box::new(Deposed));
        }
        result.map_err(Into::into)
    }
}

/// Sets `ipa.v1.CentralManager`'s health from the store breaker (`true` =
/// open) until either token is cancelled.
async fn follow_store_health(
    mut open: tokio::sync::watch::Receiver<bool>,
    health: tonic_health::server::HealthReporter,
    [stop, shutdown]: [CancellationToken; 2],
) {
    loop {
        let status = if *open.borrow_and_update() {
            ServingStatus::NotServing
        } else {
            ServingStatus::Serving
        };
        health.set_service_status(SERVICE_NAME, status).await;
        tokio::select! {
            () = stop.cancelled() => return,
            () = shutdown.cancelled() => return,
            changed = open.changed() => if changed.is_err() { return },
        }
    }
}

/// Reflection over the services this process serves. The ipa.v1 descriptor
/// set also holds `ipa.v1.PodHost`, which is not served here, so the names
/// are listed rather than taken from the files.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    [
        SERVICE_NAME,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]
    .into_iter()
    .fold(
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(ipa_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
        |b, name| b.with_service_name(name),
    )
}

/// Builds and serves in one call (mini-redis style): for embedding in tests
/// and benchmarks. `main` uses the two steps so it can announce the address
/// only once the database is ready.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), BoxError> {
    Application::build(&config)
        .await?
        .serve(listener, shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ipa_proto::v1 as pb;
    use pb::central_manager_client::CentralManagerClient;
    use tonic::transport::Endpoint;

    use super::*;

    /// Embedding: `run` on a caller-supplied port-0 listener and token; the
    /// token stops it cleanly (Ok) with in-flight work finished.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_serves_until_the_token_is_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/data/c.db", dir.path().display());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(run(Config::with_database_url(url), listener, stop.clone()));

        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let mut client = CentralManagerClient::new(channel);
        let created = client
            .create_task(pb::CreateTaskRequest {
                title: "embedded".into(),
                actor_id: "me".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let got = client
            .get_task(pb::GetTaskRequest {
                task_id: created.task_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.title, "embedded");
        let mut watch = client
            .watch_events(pb::WatchEventsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(watch.message().await.unwrap().unwrap().position, 1);

        stop.cancel();
        let result = tokio::time::timeout(Duration::from_secs(20), server)
            .await
            .expect("run returns after cancellation")
            .unwrap();
        assert!(result.is_ok(), "{result:?}");
        // The watch stream ended rather than hanging.
        let end = tokio::time::timeout(Duration::from_secs(20), watch.message()).await;
        assert!(matches!(end, Ok(Ok(None)) | Ok(Err(_))), "{end:?}");
        assert!(dir.path().join("data/c.db").exists());
    }
}
