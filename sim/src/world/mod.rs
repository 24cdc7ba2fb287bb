//! One run: the real core (`core::wiring::start`, as the server starts
//! it) on simulated ports (the in-memory store with faults, the simulated
//! network and pod-hosts, a virtual clock, seeded entropy), driven by a
//! plan, on a paused single-threaded tokio runtime: virtual time jumps to
//! the next timer whenever every task waits, so a run of a minute of
//! virtual time takes milliseconds, and the same plan replays the same
//! run.
//!
//! Phases: the plan's steps (client operations and faults, each fault
//! healing itself after its duration); then the client operations still
//! in flight finish; then a quiet period with every fault healed, after
//! which the system must have converged. Invariants are checked after
//! every step of the simulated hosts (no two live pods of a task),
//! periodically (the registry against the timeouts, durability of what
//! was acknowledged) and at the end (convergence, every pod's end recorded
//! exactly once, restarts as the policy says).

mod checks;
mod clients;
mod dependencies;
mod queue;
mod restarts;
mod schedules;
mod timers;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use central_manager::core::TaskService;
use central_manager::core::ports::{Clock, DerivedClock, Ports};
use central_manager::core::scheduler::Scheduler;
use central_manager::core::schedules::ScheduleService;
use central_manager::core::wiring::{CoreConfig, start};
use central_manager::domain::RestartDefaults;
use central_manager::hosts::registry::HostTimeouts;
use central_manager::hosts::session::SessionConfig;
use central_manager::store::memory::MemoryStore;
use central_manager::watch::EventHub;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::SimConfig;
use crate::coverage::Coverage;
use crate::entropy::SeededEntropy;
use crate::faults::StoreFaults;
use crate::host::{Control, SimHost};
use crate::ledger::Ledger;
use crate::net::{Net, SimDialer};
use crate::plan::{Action, Plan};
use crate::trace::Trace;
use clients::Clients;

/// The virtual wall clock's reading when a run starts (unix µs).
const ORIGIN_US: i64 = 1_700_000_000_000_000;

/// How often the periodic checks run (virtual time).
const CHECK_EVERY: Duration = Duration::from_millis(50);

/// How long client operations still in flight after the last step may
/// take (the slowest is a StopPod waiting for its host: 60 s).
const OPS_DRAIN: Duration = Duration::from_secs(90);

/// What a run found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Invariant violations, in the order found (empty: the run passed).
    pub violations: Vec<String>,
    /// The run's trace (last entries).
    pub trace: Vec<String>,
    pub coverage: Coverage,
    /// Virtual time the run covered.
    pub virtual_time: Duration,
}

/// Runs `plan` to the end and checks it.
pub fn run(plan: &Plan, config: &SimConfig) -> Outcome {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return Outcome {
                violations: vec![format!("could not build the runtime: {e}")],
                ..Default::default()
            };
        }
    };
    rt.block_on(async { World::build(plan, config).run(plan).await })
}

/// Everything a run is made of.
struct World {
    config: SimConfig,
    service: Arc<TaskService>,
    /// The schedule operations and their firing loop (when the plan has
    /// schedule operations).
    schedules: Option<Arc<ScheduleService>>,
    /// The periodic schedule checks' state.
    schedule_watch: Arc<schedules::Watch>,
    store: MemoryStore,
    faults: Arc<StoreFaults>,
    net: Net,
    controls: Vec<mpsc::UnboundedSender<Control>>,
    ledger: Arc<Mutex<Ledger>>,
    trace: Trace,
    clients: Clients,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    coverage: Arc<Mutex<Coverage>>,
}

impl World {
    fn build(plan: &Plan, config: &SimConfig) -> Self {
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let trace = Trace::new();
        let clock: Arc<dyn Clock> = Arc::new(DerivedClock::new(ORIGIN_US));
        let entropy = Arc::new(SeededEntropy::new(plan.seed, clock.clone()));
        let hub = EventHub::default();
        let faults = Arc::new(StoreFaults::default());
        let store = match MemoryStore::open(
            clock.clone(),
            hub.clone(),
            Some(faults.clone()),
            &tracker,
            shutdown.clone(),
        ) {
            Ok(s) => s,
            Err(e) => panic!("the in-memory store did not open: {e}"),
        };
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let mut inboxes = Vec::new();
        let mut receivers = Vec::new();
        for _ in &plan.hosts {
            let (tx, rx) = mpsc::unbounded_channel();
            inboxes.push(tx);
            receivers.push(rx);
        }
        let net = Net::new(plan.seed, inboxes, &tracker);
        let mut controls = Vec::new();
        for (i, (spec, inbox)) in plan.hosts.iter().zip(receivers).enumerate() {
            let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
            controls.push(ctl_tx);
            let host = SimHost::new(
                i,
                *spec,
                config.timing,
                config.bugs.host,
                net.clone(),
                ledger.clone(),
                trace.clone(),
                plan.seed,
                inbox,
                ctl_rx,
            );
            tracker.spawn(host.run());
        }
        let t = config.timing;
        let core = CoreConfig {
            timeouts: HostTimeouts {
                unreachable_after: t.unreachable,
                fence_timeout: t.fence,
                // As central-manager's config computes it.
                fence_margin: HostTimeouts::default_margin(t.fence) + t.heartbeat,
                lost_retention: t.lost_retention,
            },
            restart_defaults: RestartDefaults {
                auto_restart: false,
                max_restarts: 3,
                window_seconds: 60,
                initial_backoff_ms: 1000,
                max_backoff_ms: 30_000,
            },
            session: SessionConfig {
                heartbeat_interval: t.heartbeat,
                central_id: "sim-central".into(),
            },
            watch_lag_limit: Duration::from_secs(30),
        };
        let endpoints = (0..plan.hosts.len()).map(Net::endpoint).collect();
        let (_endpoints_tx, endpoints_rx) = watch::channel(endpoints);
        let ports = Ports {
            store: Arc::new(store.clone()),
            clock: clock.clone(),
            entropy,
            bugs: config.bugs.core,
        };
        let service = start(
            core,
            ports,
            Arc::new(SimDialer(net.clone())),
            endpoints_rx,
            hub.clone(),
            &tracker,
            shutdown.clone(),
        );
        // The firing loop runs only for plans with schedules: a plan
        // without runs exactly as before it existed.
        let schedules = plan.has_schedules().then(|| {
            let s = Arc::new(ScheduleService::new(
                service.clone(),
                Arc::new(store.clone()),
                clock.clone(),
            ));
            Scheduler::new(s.clone(), hub).start(&tracker, shutdown.clone());
            s
        });
        let clients = Clients::new(service.clone(), schedules.clone(), trace.clone());
        Self {
            config: config.clone(),
            service,
            schedules,
            schedule_watch: Arc::new(schedules::Watch::new(
                plan.has_schedules(),
                store.clone(),
                clock,
            )),
            store,
            faults,
            net,
            controls,
            ledger,
            trace,
            clients,
            tracker,
            shutdown,
            coverage: Arc::default(),
        }
    }

    async fn run(self, plan: &Plan) -> Outcome {
        let start = Instant::now();
        let checker = self.tracker.spawn(checks::periodic(
            checks::Periodic::new(&self, plan.hosts.iter().map(|h| h.capacity).collect()),
            self.shutdown.clone(),
        ));
        let mut longest_fault = Duration::ZERO;
        for (n, step) in plan.steps.iter().enumerate() {
            tokio::time::sleep_until(start + step.at).await;
            self.trace.note(format!("step {n}: {step}"));
            self.coverage
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .faults
                .insert(step.action.kind().to_owned());
            longest_fault = longest_fault.max(self.apply(n, &step.action));
        }
        // Every fault heals itself after its duration; then the operations
        // in flight finish; then the quiet period.
        tokio::time::sleep(longest_fault).await;
        self.faults.heal();
        self.trace.note("every fault healed");
        self.clients.drain(OPS_DRAIN).await;
        let settle = self.config.knobs.settle;
        if let Some(s) = &self.schedules {
            // Due fires must be on time from a little after the quiet
            // period began; the schedules are paused before the end so
            // their last tasks settle too.
            let from = s.clock().wall_micros()
                + i64::try_from(schedules::LATE_GRACE.as_micros()).unwrap_or(i64::MAX);
            self.schedule_watch
                .on_time_from
                .store(from, std::sync::atomic::Ordering::Relaxed);
            let pause_at = settle.saturating_sub(schedules::PAUSE_BEFORE_END);
            tokio::time::sleep(pause_at).await;
            schedules::pause_all(s, &self.clients.schedule_ids).await;
            self.trace.note("every schedule paused");
            tokio::time::sleep(settle - pause_at).await;
        } else {
            tokio::time::sleep(settle).await;
        }
        self.trace.note("settled; final checks");
        let mut violations = checker_stop(checker, &self.shutdown).await;
        violations.extend(checks::at_end(&self).await);
        let mut coverage =
            std::mem::take(&mut *self.coverage.lock().unwrap_or_else(|e| e.into_inner()));
        checks::cover_trails(&self, &mut coverage);
        coverage.runs = 1;
        let ledger_violations = std::mem::take(
            &mut self
                .ledger
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .violations,
        );
        let mut all = ledger_violations;
        all.extend(violations);
        Outcome {
            violations: all,
            trace: self.trace.lines(),
            coverage,
            virtual_time: Instant::now().saturating_duration_since(start),
        }
    }

    /// Carries out one step; returns how long its fault lasts.
    fn apply(&self, n: usize, action: &Action) -> Duration {
        let heal_after = |d: Duration, f: Box<dyn FnOnce() + Send>| {
            self.tracker.spawn(async move {
                tokio::time::sleep(d).await;
                f();
            });
            d
        };
        match action {
            Action::Create { .. }
            | Action::Start { .. }
            | Action::Stop { .. }
            | Action::Restart { .. }
            | Action::Complete { .. }
            | Action::Cancel { .. }
            | Action::Schedule(_) => {
                self.clients.spawn(n, action.clone());
                Duration::ZERO
            }
            Action::Partition { host, hold, lasts } => {
                self.net.partition(*host, *hold);
                let (net, h, trace) = (self.net.clone(), *host, self.trace.clone());
                heal_after(
                    *lasts,
                    Box::new(move || {
                        net.heal(h);
                        trace.note(format!("partition of host-{h} healed"));
                    }),
                )
            }
            Action::Freeze {
                host,
                lasts,
                machine,
            } => {
                let _ = self.controls[*host].send(Control::Freeze {
                    lasts: *lasts,
                    machine: *machine,
                });
                *lasts
            }
            Action::Reboot { host, down } => {
                let _ = self.controls[*host].send(Control::Reboot(*down));
                *down
            }
            Action::Slow {
                host,
                lasts,
                latency,
            } => {
                self.net.slow(*host, Some(*latency));
                let (net, h) = (self.net.clone(), *host);
                heal_after(*lasts, Box::new(move || net.slow(h, None)))
            }
            Action::StoreOutage { lasts } => {
                self.faults.outage(*lasts);
                *lasts
            }
            Action::StoreStall { lasts } => {
                self.faults.stall(*lasts);
                *lasts
            }
            Action::LostReply => {
                self.faults.lose_next_reply();
                Duration::ZERO
            }
        }
    }
}

/// Stops the periodic checker and returns what it found.
async fn checker_stop(
    checker: tokio::task::JoinHandle<Vec<String>>,
    shutdown: &CancellationToken,
) -> Vec<String> {
    shutdown.cancel();
    checker.await.unwrap_or_default()
}
