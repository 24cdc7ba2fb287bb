//! Assembles the supervision core on its ports: the host directory, one
//! session per pod-host endpoint, the task service, the supervisor and the
//! run-timeout and deadline loop. The
//! server (production adapters) and the simulator (simulated ones) both
//! start the core through [`start`], so the simulator runs exactly the
//! wiring production runs.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::TaskService;
use super::ports::{Dialer, Ports};
use super::supervisor::runner::Supervisor;
use super::timeouts::Timeouts;
use crate::domain::RestartDefaults;
use crate::hosts::directory::HostDirectory;
use crate::hosts::registry::HostTimeouts;
use crate::hosts::session::{SessionConfig, SessionEnv};
use crate::watch::EventHub;

/// The core's settings (from central-manager's flags).
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub timeouts: HostTimeouts,
    pub restart_defaults: RestartDefaults,
    pub session: SessionConfig,
    /// `--watch-lag-limit-ms`.
    pub watch_lag_limit: Duration,
}

/// Starts the core on `tracker`: sessions to every endpoint `endpoints`
/// publishes (reached through `dialer`), the supervisor, and the task
/// service the API calls. Everything stops on `shutdown`. (The simulator's
/// central always leads; the server builds first and starts the duties
/// once its replica leads.)
pub fn start(
    config: CoreConfig,
    ports: Ports,
    dialer: Arc<dyn Dialer>,
    endpoints: watch::Receiver<BTreeSet<String>>,
    hub: EventHub,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Arc<TaskService> {
    let (service, duties) = build(config, ports, dialer, endpoints, hub, tracker, shutdown);
    duties.start();
    service
}

/// The supervision duties of a built core, not started yet: the leader's
/// (core::leadership).
pub struct Duties {
    service: Arc<TaskService>,
    env: SessionEnv,
    endpoints: watch::Receiver<BTreeSet<String>>,
    updates: tokio::sync::mpsc::UnboundedReceiver<crate::hosts::session::HostUpdate>,
    hub: EventHub,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

/// Builds the core: the task service the API calls, and its duties to
/// start when this replica leads.
pub fn build(
    config: CoreConfig,
    ports: Ports,
    dialer: Arc<dyn Dialer>,
    endpoints: watch::Receiver<BTreeSet<String>>,
    hub: EventHub,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> (Arc<TaskService>, Duties) {
    let hosts = HostDirectory::new(config.timeouts).with_bugs(ports.bugs);
    // Unbounded so a session never waits on the supervisor (its pings
    // must go on); sessions bound their own in-flight pod events.
    let (updates_tx, updates_rx) = tokio::sync::mpsc::unbounded_channel();
    let env = SessionEnv {
        config: config.session,
        dialer,
        hosts: hosts.clone(),
        updates: updates_tx,
        clock: ports.clock.clone(),
        entropy: ports.entropy.clone(),
    };
    let service = Arc::new(
        TaskService::new(
            ports,
            hub.clone(),
            hosts,
            config.restart_defaults,
            tracker.clone(),
            shutdown.clone(),
        )
        .with_watch_lag_limit(config.watch_lag_limit),
    );
    let duties = Duties {
        service: service.clone(),
        env,
        endpoints,
        updates: updates_rx,
        hub,
        tracker: tracker.clone(),
        shutdown,
    };
    (service, duties)
}

impl Duties {
    /// Starts the sessions to the pod-hosts, the supervisor (which loads
    /// what the database says runs and is scheduled), run timeouts and
    /// deadlines, and the queue's dispatcher.
    pub fn start(self) {
        let Self {
            service,
            env,
            endpoints,
            updates,
            hub,
            tracker,
            shutdown,
        } = self;
        tracker.spawn(tracing::Instrument::instrument(
            crate::hosts::connector::run(endpoints, env, tracker.clone(), shutdown.clone()),
            tracing::info_span!("connector"),
        ));
        Supervisor::new(
            service.pods().clone(),
            updates,
            tracker.clone(),
            shutdown.clone(),
        )
        .start();
        // With the supervisor: like its restarts, timeouts act on pods, and
        // the simulator then runs them too; with replicas, on the leader.
        let followed = hub.follow();
        Timeouts::new(service.clone(), hub).start(&tracker, shutdown.clone());
        // The queue's dispatcher, with the supervisor for the same reasons.
        super::queue::Dispatcher::new(service.pods().clone())
            .following(followed)
            .start(&tracker, shutdown);
    }
}
