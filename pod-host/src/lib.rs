//! The IPA pod-host: the supervisor process that owns the pods on one
//! machine (docs/api.md `ipa.v1.PodHost`, docs/architecture.md failure model).
//!
//! Modules by concern:
//! - [`config`] flags and their resolution; [`templates`] the TOML templates;
//! - [`pods`] the pod table (state, generations, capacity, exits) and the
//!   process handling around it; [`spawn`] process creation; [`reaper`] the
//!   watchdog that kills pods if this process dies; [`logs`] captured output;
//!   [`status`] the fd-3 status lines;
//! - [`metrics`] the Prometheus metrics (`--metrics-listen`);
//! - [`events`] sequence numbers and the replay buffer; [`connect`] the
//!   Connect session; [`fence`] self-fencing; [`epoch`] leader-epoch
//!   fencing of a deposed central-manager;
//! - [`gate`] who may call (`--client-ca`, `--allowed-client`);
//!   [`isolation`] pods as other users (`--pod-user`, `--pod-uid-range`);
//! - [`api`] thin tonic handlers, [`convert`] domain → proto, [`error`] the
//!   one error → status mapping, [`server`] reflection + health + serving.
//!
//! [`run`] is the whole service given a bound listener and a shutdown token
//! (mini-redis style), so `main` passes SIGTERM/SIGINT and tests their own.

pub mod api;
pub mod config;
pub mod connect;
pub mod convert;
pub mod epoch;
pub mod error;
pub mod events;
pub mod fence;
pub mod gate;
pub mod isolation;
pub mod logs;
pub mod metrics;
pub mod pods;
pub mod reaper;
pub mod server;
pub mod spawn;
pub mod status;
pub mod sweep;
pub mod templates;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use config::{Args, HostConfig};

/// How long a connected central gets to receive the final exit events
/// before the host stops serving.
const FLUSH_LIMIT: Duration = Duration::from_millis(300);

/// How long in-flight calls get once serving stops.
const SERVER_STOP_LIMIT: Duration = Duration::from_millis(300);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start the orphan reaper: {0}")]
    Reaper(std::io::Error),
    #[error("cannot start the pod spawner thread: {0}")]
    Spawner(std::io::Error),
    #[error("cannot create the pod group journal in the data dir: {0}")]
    Journal(std::io::Error),
    #[error(transparent)]
    Serve(#[from] server::ServeError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("--health-listen: {0}")]
    Health(std::io::Error),
}

/// Runs the pod-host on `listener` until `shutdown` is cancelled, then
/// stops all pods (SIGTERM, `stop_grace`, SIGKILL), reports their exits to a
/// connected central, and returns once no pod process is left.
pub async fn run(
    config: HostConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    // What a previous run left (if it died with its reaper) goes first, so
    // no pod of it runs alongside the pods of this one.
    let data_dir = config.data_dir.clone();
    let swept = tokio::task::spawn_blocking(move || sweep::sweep(&data_dir))
        .await
        .unwrap_or_default();
    if !swept.killed.is_empty() {
        tracing::warn!(groups = ?swept.killed, "killed process groups a previous run of this host left behind");
    }
    if !swept.unverified.is_empty() {
        tracing::info!(groups = ?swept.unverified, "recorded groups of a previous run now belong to other processes; left alone");
    }
    let journal = sweep::GroupJournal::create(&config.data_dir).map_err(RunError::Journal)?;
    // Refuse to start with certificates it cannot use, before any pod.
    let tls = match &config.tls {
        Some(files) => Some(ipa_common::tls::ServerTls::load(files).map_err(RunError::Tls)?),
        None => None,
    };
    let reaper = match &config.reaper_exe {
        Some(exe) => Some(Arc::new(
            reaper::Reaper::start(exe).map_err(RunError::Reaper)?,
        )),
        None => None,
    };
    let spawner = spawn::Spawner::start().map_err(RunError::Spawner)?;
    let tracker = TaskTracker::new();
    if swept.moved_dirs {
        let data_dir = config.data_dir.clone();
        tracker.spawn(async move {
            let _ = tokio::task::spawn_blocking(move || sweep::remove_old_dirs(&data_dir)).await;
        });
    }
    // Cancelled after the pods are gone: ends sessions, follows, the timer.
    let stop_streams = CancellationToken::new();
    let sup = Arc::new(pods::Supervisor::new(
        config.clone(),
        spawner,
        reaper,
        journal,
        tracker.clone(),
    ));
    metrics::attach(&sup);
    sup.prepare_dirs();
    tracing::info!(
        host_id = %config.host_id,
        boot_id = %sup.boot_id(),
        capacity = config.capacity,
        templates = ?config.templates.names(),
        data_dir = %config.data_dir.display(),
        "pod-host starting"
    );
    let mut sessions = connect::Sessions::new(sup.clone(), stop_streams.clone(), tracker.clone());
    if config.client_policy.is_some() {
        sessions = sessions.requiring_identity();
    }
    let sessions = Arc::new(sessions);
    if let Some(r) = sup.reaper().cloned() {
        let (events, cancel) = (sup.clone(), stop_streams.clone());
        tracker.spawn(
            async move { r.monitor(events.as_ref(), cancel).await }
                .instrument(tracing::info_span!("reaper_monitor")),
        );
    }
    if let Some(tls) = &tls {
        ipa_common::reload::Reloader::new(
            vec![tls.reloadable()],
            ipa_common::reload::RELOAD_INTERVAL,
        )
        .start(&tracker, stop_streams.clone());
    }
    tracker.spawn(
        fence::FenceTimer::new(sup.clone())
            .run(stop_streams.clone())
            .instrument(tracing::info_span!("fence_timer")),
    );

    let (health, health_service) = tonic_health::server::health_reporter();
    server::set_serving(&health, true).await;
    if let Some(addr) = config.health_listen {
        ipa_common::health::serve(addr, health_service.clone(), &tracker, stop_streams.clone())
            .await
            .map_err(RunError::Health)?;
    }
    if let Ok(addr) = listener.local_addr() {
        ipa_common::warn_if_exposed(
            "pod-host",
            addr,
            tls.is_some(),
            config.client_policy.is_some(),
        );
    }
    let api = api::Api::new(
        sup.clone(),
        sessions.clone(),
        stop_streams.clone(),
        tracker.clone(),
    );
    let server_stop = CancellationToken::new();
    let mut server = tokio::spawn({
        let stop = server_stop.clone();
        let limits = server::Limits {
            keepalive_interval: config.keepalive_interval,
            keepalive_timeout: config.keepalive_timeout,
        };
        let security = server::Security {
            tls,
            gate: gate::GateLayer::new(config.client_policy.clone()),
        };
        server::serve(
            listener,
            security,
            api,
            health_service,
            limits,
            async move { stop.cancelled().await },
        )
        .instrument(tracing::info_span!("grpc_server"))
    });

    let served = tokio::select! {
        _ = shutdown.cancelled() => None,
        r = &mut server => Some(r),
    };
    tracing::info!("shutting down");
    server::set_serving(&health, false).await;
    sup.drain().await;
    sessions.flush(FLUSH_LIMIT).await;
    stop_streams.cancel();
    server_stop.cancel();
    let result = match served {
        Some(r) => r,
        None => match tokio::time::timeout(SERVER_STOP_LIMIT, &mut server).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!("in-flight calls did not finish; closing them");
                server.abort();
                Ok(Ok(()))
            }
        },
    };
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(2), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some background tasks did not finish");
    }
    if let Some(r) = sup.reaper() {
        r.stop().await;
    }
    tracing::info!("pod-host stopped");
    match result {
        Ok(r) => r.map_err(RunError::from),
        Err(join) => {
            tracing::error!(error = %join, "server task failed");
            Ok(())
        }
    }
}
