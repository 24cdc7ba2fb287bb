//! The supervisor task: the single consumer of every pod-host session's
//! updates. It turns what hosts report into database changes (exits,
//! phases, recoveries), applies the silence rules at exactly the right
//! instants (UNREACHABLE, then LOST at the fence deadline), reconciles each
//! hello's snapshot with the database, fires scheduled automatic restarts
//! and prunes the crash history hourly.
//!
//! Pod events are handled in the order each host sent them and acknowledged
//! only after their effects are committed, so a reconnect replays exactly
//! what was not yet durable here.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant, SystemTime};

use ipa_proto::v1::{self as pb, pod_event};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::reconcile::{self, Action, DbPod, HostPod};
use super::restart::HISTORY_RETENTION;
use crate::core::pods::{Pods, end_report};
use crate::domain::{Phase, PodStatus, TaskId};
use crate::error::{Error, Result};
use crate::hosts::directory::LivePod;
use crate::hosts::registry::{HelloOutcome, HostHello, HostState, Transition};
use crate::hosts::session::HostUpdate;
use crate::store::Store;
use crate::store::pods::{Cause, EndReport, PodCommand, PodOutcome, PodRef};
use crate::supervisor::exit::Ending;

/// How often the crash history is pruned (API: hourly).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Retry delay of an automatic restart that found no pod-host.
const RESTART_RETRY: Duration = Duration::from_secs(1);
/// Retry delay of a database write the supervisor must not lose.
const WRITE_RETRY: Duration = Duration::from_millis(200);

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
    store: Store,
    updates: mpsc::Receiver<HostUpdate>,
    restarts_rx: mpsc::UnboundedReceiver<(TaskId, i64)>,
    restarts_tx: RestartQueue,
    due: BinaryHeap<Reverse<(i64, TaskId)>>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Supervisor {
    /// A supervisor fed by `updates`.
    pub fn new(
        pods: Pods,
        store: Store,
        updates: mpsc::Receiver<HostUpdate>,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        let (tx, restarts_rx) = mpsc::unbounded_channel();
        pods.attach_restarts(RestartQueue(tx.clone()));
        Self {
            pods,
            store,
            updates,
            restarts_rx,
            restarts_tx: RestartQueue(tx),
            due: BinaryHeap::new(),
            tracker,
            cancel,
        }
    }

    /// Loads what the database says runs and is scheduled, then runs until
    /// cancelled.
    pub fn start(mut self) {
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
    /// entry, so if they never reconnect the silence rules still settle
    /// their pods; scheduled restarts are queued again.
    async fn load(&mut self) -> Result<()> {
        let now = Instant::now();
        for host in self.store.hosts_with_pods().await? {
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
            self.pods
                .hosts()
                .with_registry(|r| r.on_hello(placeholder, now, SystemTime::now()));
            tracing::info!(host_id = %host, "waiting for pod-host that runs pods");
        }
        for (task, at) in self.store.scheduled_restarts().await? {
            self.due.push(Reverse((at, task)));
        }
        Ok(())
    }

    async fn run(mut self) {
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let host_deadline = self.pods.hosts().with_registry(|r| r.next_deadline());
            let restart_due = self.due.peek().map(|Reverse((at, _))| instant_of(*at));
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                u = self.updates.recv() => match u {
                    Some(u) => self.on_update(u).await,
                    None => break,
                },
                r = self.restarts_rx.recv() => if let Some((task, at)) = r {
                    self.due.push(Reverse((at, task)));
                },
                _ = tokio::time::sleep_until(host_deadline.unwrap_or(far).into()) => self.on_tick().await,
                _ = tokio::time::sleep_until(restart_due.unwrap_or(far).into()) => self.fire_restarts(),
                _ = prune.tick() => self.prune().await,
            }
        }
        tracing::debug!("supervisor stopped");
    }

    async fn on_update(&mut self, update: HostUpdate) {
        match update {
            HostUpdate::Connected {
                hello,
                handle,
                at,
                wall,
            } => self.on_hello(hello, handle, at, wall).await,
            HostUpdate::Heartbeat {
                host_id,
                running_pods,
                draining,
                at,
                wall,
                ..
            } => {
                self.heard_from(&host_id, at, wall, Some(draining), Some(running_pods))
                    .await;
            }
            HostUpdate::PodEvent {
                host_id,
                boot_id,
                event,
                at,
                wall,
            } => {
                self.heard_from(&host_id, at, wall, None, None).await;
                let seq = event.seq;
                self.on_pod_event(&host_id, event).await;
                self.pods.hosts().ack(&host_id, &boot_id, seq);
            }
            HostUpdate::Disconnected {
                host_id,
                boot_id,
                endpoint,
            } => {
                tracing::info!(%host_id, %endpoint, "pod-host session ended");
                self.pods
                    .hosts()
                    .remove_session(&host_id, &boot_id, &endpoint);
            }
        }
    }

    /// Any message from a host: contact for the silence rules, the state
    /// change it causes, and a fresh hello if the host had been declared
    /// LOST while its stream stayed open.
    async fn heard_from(
        &mut self,
        host_id: &str,
        at: Instant,
        wall: SystemTime,
        draining: Option<bool>,
        running: Option<u32>,
    ) {
        let t = self
            .pods
            .hosts()
            .contact(host_id, at, wall, draining, running);
        self.on_transition(t).await;
        self.pods.hosts().reset_if_lost(host_id);
    }

    async fn on_hello(
        &mut self,
        hello: pb::HostHello,
        handle: crate::hosts::session::SessionHandle,
        at: Instant,
        wall: SystemTime,
    ) {
        let host_id = hello.host_id.clone();
        let running = hello
            .pods
            .iter()
            .filter(|p| p.state != pb::PodState::Exited as i32)
            .count();
        let entry = HostHello {
            host_id: host_id.clone(),
            boot_id: hello.boot_id.clone(),
            address: handle.endpoint.clone(),
            capacity: hello.capacity,
            templates: hello.templates.clone(),
            running_pods: u32::try_from(running).unwrap_or(u32::MAX),
            fence_timeout: Duration::from_millis(u64::from(hello.fence_timeout_ms)),
            draining: hello.draining,
        };
        let outcome = self
            .pods
            .hosts()
            .with_registry(|r| r.on_hello(entry, at, wall));
        let new_boot = matches!(&outcome, HelloOutcome::NewBoot { previous_boot } if !previous_boot.is_empty());
        tracing::info!(%host_id, boot_id = %hello.boot_id, ?outcome, self_fenced = hello.self_fenced, "pod-host hello");
        let client = handle.client.clone();
        self.pods.hosts().add_session(handle);

        let rows = self
            .retry("read pods of host", || self.store.pods_on_host(&host_id))
            .await;
        let Some(rows) = rows else { return };
        let db: Vec<DbPod> = rows
            .iter()
            .map(|(p, s)| DbPod {
                task_id: p.task_id.to_string(),
                pod_id: p.pod_id.clone(),
                generation: p.generation,
                was_unknown: *s != PodStatus::Running,
            })
            .collect();
        let host: Vec<HostPod> = hello
            .pods
            .iter()
            .map(|p| HostPod {
                task_id: p.task_id.clone(),
                pod_id: p.pod_id.clone(),
                generation: p.generation,
                alive: p.state != pb::PodState::Exited as i32,
            })
            .collect();
        for action in reconcile::reconcile(&db, &host, new_boot) {
            match action {
                Action::Keep {
                    task_id,
                    pod_id,
                    recovered,
                } => {
                    let Some(snap) = hello.pods.iter().find(|p| p.pod_id == pod_id) else {
                        continue;
                    };
                    let Ok(task) = TaskId::from_db(&task_id) else {
                        continue;
                    };
                    self.pods.hosts().set_live(
                        task,
                        LivePod {
                            pod_id: pod_id.clone(),
                            generation: snap.generation,
                            phase: phase_from_pb(snap.phase),
                            version: snap.version,
                        },
                    );
                    if recovered {
                        let started_at = snap
                            .started_at
                            .as_ref()
                            .and_then(ipa_proto::time::micros_from_timestamp)
                            .unwrap_or_else(ipa_proto::time::now_micros);
                        let cmd = PodCommand::Recovered {
                            pod: PodRef {
                                task_id: task,
                                pod_id,
                                generation: snap.generation,
                            },
                            pid: snap.pid,
                            started_at,
                            host_id: host_id.clone(),
                        };
                        self.write(cmd).await;
                    }
                }
                Action::Fence {
                    task_id,
                    pod_id,
                    generation,
                } => {
                    let Ok(task) = TaskId::from_db(&task_id) else {
                        continue;
                    };
                    let pod = PodRef {
                        task_id: task,
                        pod_id,
                        generation,
                    };
                    self.fence(client.clone(), pod, host_id.clone());
                }
                Action::Lost { task_id, pod_id } => {
                    let Ok(task) = TaskId::from_db(&task_id) else {
                        continue;
                    };
                    if self.pods.hosts().is_starting(&pod_id) {
                        // Its StartPod is still on the way to the host: the
                        // start path settles it.
                        continue;
                    }
                    let Some((pod, _)) = rows
                        .iter()
                        .find(|(p, _)| p.task_id == task && p.pod_id == pod_id)
                    else {
                        continue;
                    };
                    let why = if new_boot {
                        "its pod-host restarted"
                    } else {
                        "its pod-host no longer has it"
                    };
                    self.lose(pod.clone(), why).await;
                }
            }
        }
    }

    /// Kills a stale pod in the background and records `pod_fenced`.
    fn fence(
        &self,
        client: ipa_proto::v1::pod_host_client::PodHostClient<crate::hosts::TracedChannel>,
        pod: PodRef,
        host_id: String,
    ) {
        let pods = self.pods.clone();
        let store = self.store.clone();
        self.tracker.spawn(
            async move {
                let killed = pods.fence_on_host(client, &pod, "stale pod").await;
                tracing::warn!(task_id = %pod.task_id, pod_id = %pod.pod_id, %host_id, killed, "fencing stale pod");
                if killed {
                    let cmd = PodCommand::Fenced { pod, host_id, reason: "stale pod found on reconnect".into() };
                    if let Err(e) = store.pod(cmd).await {
                        tracing::error!(error = %e, "recording pod_fenced");
                    }
                }
            }
            .instrument(tracing::info_span!("fence")),
        );
    }

    async fn on_transition(&mut self, t: Option<Transition>) {
        let Some(t) = t else { return };
        tracing::info!(host_id = %t.host_id, from = ?t.from, to = ?t.to, "pod-host state");
        match t.to {
            HostState::Unreachable => {
                self.write(PodCommand::HostUnreachable {
                    host_id: t.host_id.clone(),
                })
                .await;
            }
            HostState::Ready | HostState::Draining if t.from == HostState::Unreachable => {
                // Contact regained on the same stream. Nothing is assumed
                // about its pods: the stream is reset so the host says hello
                // again and its snapshot is reconciled (UNKNOWN pods it still
                // runs become RUNNING with `pod_recovered`, missing ones are
                // lost, stale ones fenced).
                self.pods.hosts().reset_session(&t.host_id);
            }
            HostState::Lost => {
                let rows = self
                    .retry("read pods of host", || self.store.pods_on_host(&t.host_id))
                    .await;
                for (pod, _) in rows.unwrap_or_default() {
                    self.lose(pod, "its pod-host was unreachable past the fence deadline")
                        .await;
                }
            }
            _ => {}
        }
    }

    async fn on_tick(&mut self) {
        let transitions = self.pods.hosts().with_registry(|r| r.tick(Instant::now()));
        for t in transitions {
            self.on_transition(Some(t)).await;
        }
    }

    async fn on_pod_event(&mut self, host_id: &str, event: pb::PodEvent) {
        let Ok(task_id) = TaskId::from_db(&event.task_id) else {
            tracing::warn!(%host_id, task_id = %event.task_id, "pod event with a malformed task id; ignored");
            return;
        };
        let pod = PodRef {
            task_id,
            pod_id: event.pod_id.clone(),
            generation: event.generation,
        };
        match event.kind {
            Some(pod_event::Kind::Started(_)) => {
                let live = LivePod {
                    pod_id: pod.pod_id.clone(),
                    generation: pod.generation,
                    phase: None,
                    version: 0,
                };
                self.pods.hosts().set_live(task_id, live);
            }
            Some(pod_event::Kind::StateChanged(s)) => {
                let phase = phase_from_pb(s.phase);
                let previous = self
                    .pods
                    .hosts()
                    .live(task_id)
                    .filter(|l| l.pod_id == pod.pod_id);
                let live = LivePod {
                    pod_id: pod.pod_id.clone(),
                    generation: pod.generation,
                    phase: phase.or(previous.as_ref().and_then(|p| p.phase)),
                    version: s.version,
                };
                self.pods.hosts().set_live(task_id, live);
                let changed = phase.is_some() && previous.and_then(|p| p.phase) != phase;
                if let (true, Some(phase)) = (changed, phase) {
                    let cmd = PodCommand::PhaseChanged {
                        pod,
                        phase,
                        version: s.version,
                        message: s.message,
                    };
                    self.write(cmd).await;
                }
            }
            Some(pod_event::Kind::Exited(exit)) => {
                let last_phase = self
                    .pods
                    .hosts()
                    .live(task_id)
                    .filter(|l| l.pod_id == pod.pod_id)
                    .and_then(|l| l.phase);
                let mut report = end_report(&exit, last_phase);
                let cause = match (report.ending, self.pods.hosts().take_stop(&pod.pod_id)) {
                    (Ending::Stopped, Some(stop)) => {
                        if let Some(o) = report.detail.as_object_mut() {
                            o.insert("reason".into(), serde_json::json!(stop.reason));
                        }
                        stop.cause
                    }
                    _ => Cause::system(),
                };
                self.pods.hosts().clear_live(task_id, &pod.pod_id);
                self.pods.hosts().release(host_id);
                self.end(pod, report, cause).await;
            }
            None => {}
        }
    }

    /// Commits a pod's end and schedules its restart if the policy says so.
    async fn end(&mut self, pod: PodRef, report: EndReport, cause: Cause) {
        let cmd = PodCommand::Ended {
            pod,
            report,
            cause,
            defaults: *self.pods.defaults(),
            jitter: rand::random::<f64>(),
        };
        if let Some(PodOutcome::Applied {
            restart_at: Some(at),
        }) = self.write(cmd.clone()).await
            && let PodCommand::Ended { pod, .. } = cmd
        {
            self.due.push(Reverse((at, pod.task_id)));
        }
    }

    async fn lose(&mut self, pod: PodRef, why: &str) {
        self.pods.hosts().clear_live(pod.task_id, &pod.pod_id);
        let report = EndReport {
            ending: Ending::Lost,
            detail: serde_json::json!({ "reason": why }),
            message: format!("pod lost: {why}"),
            last_phase: None,
        };
        self.end(pod, report, Cause::system()).await;
    }

    fn fire_restarts(&mut self) {
        let now = ipa_proto::time::now_micros();
        while let Some(Reverse((at, task))) = self.due.peek().copied() {
            if at > now {
                break;
            }
            self.due.pop();
            let pods = self.pods.clone();
            let queue = self.restarts_tx.clone();
            self.tracker.spawn(
                async move {
                    match pods.start(task, Cause::system(), true).await {
                        Ok(Some(pod)) => tracing::info!(task_id = %task, pod_id = %pod.pod_id, "automatic restart"),
                        Ok(None) => tracing::debug!(task_id = %task, "automatic restart overtaken by a user action"),
                        Err(Error::NoPodHost(why)) => {
                            tracing::warn!(task_id = %task, %why, "automatic restart found no pod-host; retrying");
                            let retry = i64::try_from(RESTART_RETRY.as_micros()).unwrap_or(i64::MAX);
                            queue.schedule(task, ipa_proto::time::now_micros() + retry);
                        }
                        Err(e) => tracing::info!(task_id = %task, error = %e, "automatic restart not done"),
                    }
                }
                .instrument(tracing::info_span!("restart", task_id = %task)),
            );
        }
    }

    async fn prune(&mut self) {
        let retention = i64::try_from(HISTORY_RETENTION.as_micros()).unwrap_or(i64::MAX);
        let up_to = ipa_proto::time::now_micros() - retention;
        match self.store.pod(PodCommand::PruneCrashes { up_to }).await {
            Ok(PodOutcome::Count(n)) if n > 0 => {
                tracing::info!(removed = n, "crash history pruned")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "crash history pruning failed; retried next hour"),
        }
    }

    /// Writes a command that must not be lost, retrying while the database
    /// is unavailable (the host's replay would otherwise be the only copy).
    async fn write(&self, cmd: PodCommand) -> Option<PodOutcome> {
        self.retry("pod supervision write", || self.store.pod(cmd.clone()))
            .await
    }

    async fn retry<T, F, Fut>(&self, what: &str, mut f: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        loop {
            match f().await {
                Ok(v) => return Some(v),
                Err(Error::ShuttingDown) => return None,
                Err(e @ Error::StoreUnavailable(_)) => {
                    tracing::warn!(error = %e, "{what} failed; retrying");
                    tokio::select! {
                        _ = self.cancel.cancelled() => return None,
                        _ = tokio::time::sleep(WRITE_RETRY) => {}
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "{what} failed");
                    return None;
                }
            }
        }
    }
}

/// The monotonic instant of a unix-µs time (past times map to now).
fn instant_of(at_us: i64) -> Instant {
    let now_us = ipa_proto::time::now_micros();
    let ahead = u64::try_from(at_us.saturating_sub(now_us)).unwrap_or(0);
    Instant::now() + Duration::from_micros(ahead)
}

/// A phase reported by a host; an unknown value is ignored (a newer host
/// may know phases this central does not).
fn phase_from_pb(v: i32) -> Option<Phase> {
    crate::api::convert::phase_from_pb(v, "phase")
        .ok()
        .flatten()
}
