//! The supervisor's decision loop: the single consumer of what pod-host
//! sessions hand over (hellos to reconcile, pod events). It keeps the live
//! view (phase/version of running pods), rate-limits recorded phase
//! changes, applies the silence rules at exactly the right instants
//! (UNREACHABLE, then LOST at the fence deadline; LOST hosts forgotten after
//! the retention), fires scheduled automatic restarts and queues the
//! hourly crash-history prune.
//!
//! It never waits for the database: whatever must be written is queued, in
//! order, for the [`host_events`](super::host_events) applier, which
//! acknowledges each pod event to its host only after its effects are
//! committed. So a database outage delays the audit trail, never liveness.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::coalesce::PhaseCoalescer;
use super::host_events::{EventAction, HostEvents, Job, JobQueue, PhaseRecord, rejected};
use crate::core::pods::Pods;
use crate::core::ports::{Clock, TaskStore};
use crate::domain::ending::end_report;
use crate::domain::host::{PodEvent, PodEventKind, clip};
use crate::domain::restart_decision::HISTORY_RETENTION;
use crate::domain::{Cause, PodRef, TaskId};
use crate::error::{Error, Result};
use crate::hosts::directory::LivePod;
use crate::hosts::registry::{HostHello, HostState};
use crate::hosts::session::HostUpdate;

/// How often the crash history is pruned (API: hourly).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Retry delay of an automatic restart that could not be placed or claimed
/// (no pod-host, the store unavailable): it stays due until it happens.
pub const RESTART_RETRY: Duration = Duration::from_secs(1);

/// Sends restart requests to the supervisor.
#[derive(Debug, Clone)]
pub struct RestartQueue(mpsc::UnboundedSender<(TaskId, i64)>);

impl RestartQueue {
    /// Schedules an automatic restart of `task` at `at` (unix µs).
    pub fn schedule(&self, task: TaskId, at: i64) {
        let _ = self.0.send((task, at));
    }
}

/// The supervisor's state.
pub struct Supervisor {
    pods: Pods,
    updates: mpsc::UnboundedReceiver<HostUpdate>,
    restarts_rx: mpsc::UnboundedReceiver<(TaskId, i64)>,
    restarts_tx: RestartQueue,
    due: BinaryHeap<Reverse<(i64, TaskId)>>,
    jobs: JobQueue,
    phases: PhaseCoalescer<PhaseRecord>,
    /// Started with the applier by [`Supervisor::start`].
    applier: Option<HostEvents>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Supervisor {
    /// A supervisor fed by `updates`, writing through `pods`' ports.
    pub fn new(
        pods: Pods,
        updates: mpsc::UnboundedReceiver<HostUpdate>,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        let (tx, restarts_rx) = mpsc::unbounded_channel();
        let restarts_tx = RestartQueue(tx);
        // Spawn failures end in the start path (core/pods.rs); their
        // restarts come here too.
        pods.attach_restarts(restarts_tx.clone());
        let (jobs, jobs_rx) = JobQueue::new();
        pods.attach_supervision(jobs.clone());
        let applier = HostEvents::new(
            (jobs.clone(), jobs_rx),
            pods.clone(),
            restarts_tx.clone(),
            tracker.clone(),
            cancel.clone(),
        );
        Self {
            pods,
            updates,
            restarts_rx,
            restarts_tx,
            due: BinaryHeap::new(),
            jobs,
            phases: PhaseCoalescer::default(),
            applier: Some(applier),
            tracker,
            cancel,
        }
    }

    fn store(&self) -> &dyn TaskStore {
        self.pods.ports().store.as_ref()
    }

    fn clock(&self) -> &dyn Clock {
        self.pods.ports().clock.as_ref()
    }

    /// Starts the applier, loads what the database says runs and is
    /// scheduled, then runs until cancelled.
    pub fn start(mut self) {
        if let Some(a) = self.applier.take() {
            a.start();
        }
        let tracker = self.tracker.clone();
        tracker.spawn(
            async move {
                if let Err(e) = self.load().await {
                    tracing::error!(error = %e, "supervisor could not load its state");
                }
                self.run().await;
            }
            .instrument(tracing::info_span!("supervisor")),
        );
    }

    /// Start-up: hosts that the database says run pods get a placeholder
    /// entry (unless they already said hello), so if they never reconnect
    /// the silence rules still settle their pods; scheduled restarts are
    /// queued again.
    async fn load(&mut self) -> Result<()> {
        let (now, wall) = (self.clock().now(), self.clock().wall());
        for host in self.store().hosts_with_pods().await? {
            let placeholder = HostHello {
                host_id: host.clone(),
                boot_id: String::new(),
                address: String::new(),
                capacity: 0,
                templates: vec![],
                running_pods: 0,
                fence_timeout: Duration::ZERO,
                draining: false,
            };
            self.pods.hosts().with_registry(|r| {
                if r.get(&host).is_none() {
                    r.on_hello(placeholder, now, wall);
                }
            });
            // Its rows may be UNKNOWN from before the restart: a hello
            // settles them, and if none comes the host is asked.
            self.pods
                .unsettled()
                .mark_host(self.pods.hosts(), &host, now);
            tracing::info!(host_id = %host, "waiting for pod-host that runs pods");
        }
        for (task, at) in self.store().scheduled_restarts().await? {
            self.due.push(Reverse((at, task)));
        }
        Ok(())
    }

    /// The loop: host updates, restart requests and the timers (silence
    /// rules, due restarts, held phase changes, hourly prune), in that
    /// order of priority (`biased`: the simulator replays the same
    /// interleaving from the same seed).
    async fn run(mut self) {
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let now = self.clock().now();
            let far = now + Duration::from_secs(3600);
            let host_deadline = self.pods.hosts().with_registry(|r| r.next_deadline());
            let restart_due = self
                .due
                .peek()
                .map(|Reverse((at, _))| self.clock().instant_of(*at));
            let phase_due = self.phases.next_due(now);
            let requery_due = self.pods.unsettled().next_due();
            let hosts = self.pods.hosts().clone();
            let unsettled = self.pods.unsettled().clone();
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                // A deadline moved earlier: compute them again.
                () = hosts.deadlines_moved() => {}
                () = unsettled.moved() => {}
                u = self.updates.recv() => match u {
                    Some(u) => self.on_update(u),
                    None => break,
                },
                r = self.restarts_rx.recv() => if let Some((task, at)) = r {
                    self.due.push(Reverse((at, task)));
                },
                _ = tokio::time::sleep_until(host_deadline.unwrap_or(far)) => self.on_tick(),
                _ = tokio::time::sleep_until(restart_due.unwrap_or(far)) => self.fire_restarts(),
                _ = tokio::time::sleep_until(phase_due.unwrap_or(far)) => {
                    for r in self.phases.due(self.clock().now()) {
                        self.jobs.push(Job::Phase(r));
                    }
                }
                _ = tokio::time::sleep_until(requery_due.unwrap_or(far)) => self.fire_requeries(),
                _ = prune.tick() => {
                    let retention = i64::try_from(HISTORY_RETENTION.as_micros()).unwrap_or(i64::MAX);
                    let up_to = self.clock().wall_micros().saturating_sub(retention);
                    self.jobs.push(Job::PruneCrashes { up_to });
                }
            }
        }
        tracing::debug!("supervisor stopped");
    }

    fn on_update(&mut self, update: HostUpdate) {
        match update {
            HostUpdate::Connected {
                hello,
                new_boot,
                handle,
            } => self.jobs.push(Job::Reconcile {
                host_id: handle.host_id.clone(),
                boot_id: handle.boot_id.clone(),
                new_boot,
                snapshot: hello.pods,
                client: handle.commands,
            }),
            HostUpdate::PodEvent {
                host_id,
                boot_id,
                event,
                in_flight,
            } => {
                let seq = event.seq;
                let action = self.on_pod_event(&host_id, event);
                self.jobs.push(Job::Event {
                    host_id,
                    boot_id,
                    seq,
                    action,
                    in_flight,
                });
            }
        }
    }

    /// Applies the silence rules now and queues their database effects.
    fn on_tick(&mut self) {
        let (transitions, forgotten) = self.pods.hosts().tick(self.clock().now());
        for t in transitions {
            tracing::info!(host_id = %t.host_id, from = ?t.from, to = ?t.to, "pod-host state");
            match t.to {
                HostState::Unreachable => {
                    // Its rows go UNKNOWN; a hello normally settles them,
                    // but one reconciled while a start was in flight there
                    // may not: ask the host again if they stay so.
                    let now = self.clock().now();
                    self.pods
                        .unsettled()
                        .mark_host(self.pods.hosts(), &t.host_id, now);
                    self.jobs.push(Job::HostUnreachable { host_id: t.host_id })
                }
                HostState::Lost => {
                    // A stream still open to a LOST host is stale: drop it,
                    // the host reconnects with a fresh hello.
                    self.pods.hosts().reset_session(&t.host_id);
                    self.jobs.push(Job::HostLost { host_id: t.host_id });
                }
                _ => {}
            }
        }
        for host_id in forgotten {
            tracing::info!(%host_id, "forgetting pod-host LOST for longer than the retention");
        }
    }

    /// The in-memory effects of a pod event (live view, rate limit, host
    /// load) and what it means for the database.
    fn on_pod_event(&mut self, host_id: &str, event: PodEvent) -> EventAction {
        let Ok(task_id) = TaskId::from_db(&event.task_id) else {
            tracing::warn!(%host_id, task_id = %event.task_id, "pod event with a malformed task id; ignored");
            crate::metrics::count_rejected_host_event();
            return EventAction::Nothing;
        };
        let pod = PodRef {
            task_id,
            pod_id: event.pod_id.clone(),
            generation: event.generation,
        };
        // What this host last reported live for this pod, if anything.
        let previous = self
            .pods
            .hosts()
            .live(task_id)
            .filter(|l| l.pod_id == pod.pod_id && l.host_id == host_id);
        match event.kind {
            PodEventKind::Started { .. } => {
                let live = LivePod {
                    host_id: host_id.to_owned(),
                    pod_id: pod.pod_id.clone(),
                    generation: pod.generation,
                    phase: None,
                    version: 0,
                };
                if !self.pods.hosts().set_live(task_id, live) {
                    rejected(host_id, &pod, "start of a pod another host reports");
                }
                EventAction::Nothing
            }
            PodEventKind::StateChanged {
                phase,
                message,
                version,
            } => {
                let state = ReportedState {
                    phase,
                    message,
                    version,
                };
                self.on_state(host_id, pod, previous, state)
            }
            PodEventKind::Exited(exit) => {
                let last_phase = previous.and_then(|l| l.phase);
                // A phase change still held by the rate limit goes first, so
                // the trail shows the last phase before the end.
                if let Some(r) = self.phases.forget(&pod.pod_id) {
                    self.jobs.push(Job::Phase(r));
                }
                let hosts = self.pods.hosts();
                hosts.exited_on_stream(task_id, &pod.pod_id, host_id);
                EventAction::End {
                    pod,
                    report: end_report(&exit, last_phase),
                }
            }
            PodEventKind::Unknown => EventAction::Nothing,
        }
    }

    /// A status line of a running pod: the live view always, a recorded
    /// `phase_changed` when the phase changed (within the rate limit).
    fn on_state(
        &mut self,
        host_id: &str,
        pod: PodRef,
        previous: Option<LivePod>,
        state: ReportedState,
    ) -> EventAction {
        let live = LivePod {
            host_id: host_id.to_owned(),
            pod_id: pod.pod_id.clone(),
            generation: pod.generation,
            phase: state.phase.or(previous.as_ref().and_then(|p| p.phase)),
            version: state.version,
        };
        if !self.pods.hosts().set_live(pod.task_id, live) {
            rejected(host_id, &pod, "state of a pod another host reports");
            return EventAction::Nothing;
        }
        let phase = state.phase;
        let changed = phase.is_some() && previous.and_then(|p| p.phase) != phase;
        let (true, Some(phase)) = (changed, phase) else {
            return EventAction::Nothing;
        };
        let change = PhaseRecord {
            pod: pod.clone(),
            host_id: host_id.to_owned(),
            phase,
            version: state.version,
            message: clip(&state.message),
        };
        let now = self.clock().now();
        match self.phases.offer(&pod.pod_id, change, now) {
            Some(r) => EventAction::Phase(r),
            None => EventAction::Nothing,
        }
    }

    /// Asks the connected hosts due for it about their unsettled rows
    /// (`super::unsettled`); a host not connected is asked at its next
    /// backoff (or settled by its hello).
    fn fire_requeries(&mut self) {
        let now = self.clock().now();
        for (host_id, epoch) in self.pods.unsettled().take_due(now) {
            let state = self.pods.hosts().state(&host_id);
            if state.is_none() {
                // Forgotten (LOST past the retention): its rows are settled.
                self.pods.unsettled().settled(&host_id, epoch);
                continue;
            }
            if !matches!(state, Some(HostState::Ready | HostState::Draining)) {
                continue;
            }
            let Some(client) = self.pods.hosts().client(&host_id) else {
                continue;
            };
            let span = tracing::info_span!("requery", %host_id);
            let ask =
                super::requery::ask(self.pods.clone(), self.jobs.clone(), host_id, epoch, client);
            self.tracker.spawn(ask.instrument(span));
        }
    }

    fn fire_restarts(&mut self) {
        let now = self.clock().wall_micros();
        while let Some(Reverse((at, task))) = self.due.peek().copied() {
            if at > now {
                break;
            }
            self.due.pop();
            let pods = self.pods.clone();
            let queue = self.restarts_tx.clone();
            self.tracker.spawn(
                async move {
                    let retry = |why: &str| {
                        tracing::warn!(task_id = %task, %why, "automatic restart not done yet; retrying");
                        let delay = i64::try_from(RESTART_RETRY.as_micros()).unwrap_or(i64::MAX);
                        let now = pods.ports().clock.wall_micros();
                        queue.schedule(task, now.saturating_add(delay));
                    };
                    match pods.start(task, Cause::system(), true).await {
                        Ok(Some(pod)) => tracing::info!(task_id = %task, pod_id = %pod.pod_id, "automatic restart"),
                        Ok(None) => tracing::debug!(task_id = %task, "automatic restart overtaken by a user action"),
                        // Still due in the database: try again (a refused
                        // start keeps it due, see AbortStart).
                        Err(Error::NoPodHost(why)) => retry(&why),
                        Err(e @ Error::StoreUnavailable(_)) => retry(&e.to_string()),
                        Err(e) => tracing::info!(task_id = %task, error = %e, "automatic restart not done"),
                    }
                }
                .instrument(tracing::info_span!("restart", task_id = %task)),
            );
        }
    }
}

/// A pod's status line, as its host reported it.
struct ReportedState {
    phase: Option<crate::domain::Phase>,
    message: String,
    version: u64,
}
