//! The supervisor's database side: one task that applies everything the
//! [`runner`](super::runner) decided must be written: what hosts reported
//! (pod ends, phase changes), hello reconciliations ([`reconcile`]), host
//! loss, fenced pods, pod operations settled after a store outage.
//!
//! - Jobs about one task are applied in the order they were queued. Jobs
//!   about different tasks are written together ([`group`]), so a storm of
//!   pod events shares the writer's transactions instead of paying one
//!   commit each; a job about many tasks (a reconciliation, a host's
//!   silence or loss, a fenced pod, pruning, a settled operation) is
//!   applied alone, after everything queued before it and before anything
//!   queued after it.
//! - A pod event is acknowledged to its host only after its effects are
//!   committed (a group's once all of them are), so the host keeps (and on
//!   reconnect replays) whatever is not durable here yet. Replays of events
//!   already applied are skipped by their per-boot sequence number.
//! - When the database cannot be written, the job (or group) at the head of
//!   the queue waits (for the store's circuit breaker to close, or a short
//!   backoff) and what is not committed is tried again; nothing behind it
//!   overtakes it, so on recovery the queued events are applied in order.
//!   Liveness does not wait with it: pings, contact and the silence rules
//!   run in the sessions and the runner, which never touch the database.
//! - A job that fails for any other reason (a bug) is logged and dropped,
//!   so it cannot wedge the queue.

mod group;
mod reconcile;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use self::group::{Group, slot};
use super::coalesce::Recorded;
use super::runner::RestartQueue;
use crate::core::pods::Pods;
use crate::core::ports::{HostCommands, TaskStore};
use crate::domain::host::PodSnapshot;
use crate::domain::{Cause, EndReport, Ending, Phase, PodRef, TaskId};
use crate::error::{Error, Result};
use crate::hosts::session::InFlight;
use crate::store::pods::{PodCommand, PodOutcome};

/// First retry delay of a write that failed while the breaker is closed.
const RETRY_INITIAL: Duration = Duration::from_millis(100);
/// Longest retry delay (the breaker's prober paces recovery when open).
const RETRY_MAX: Duration = Duration::from_secs(2);

/// A phase change to record.
#[derive(Debug, Clone)]
pub struct PhaseRecord {
    pub pod: PodRef,
    pub host_id: String,
    pub phase: Phase,
    pub version: u64,
    pub message: String,
}

/// What one pod event means for the database.
#[derive(Debug)]
pub enum EventAction {
    /// Nothing to write (a start, a phase change held by the rate limit):
    /// only the acknowledgement, in order.
    Nothing,
    /// Record a phase change.
    Phase(Recorded<PhaseRecord>),
    /// The pod ended.
    End { pod: PodRef, report: EndReport },
}

/// One unit of work, applied in queue order.
pub enum Job {
    /// Square a hello's snapshot with the database.
    Reconcile {
        host_id: String,
        boot_id: String,
        new_boot: bool,
        snapshot: Vec<PodSnapshot>,
        client: Arc<dyn HostCommands>,
    },
    /// A connected host's ListPods answer, reconciled like a hello's
    /// snapshot but only for `suspects`, the rows that were unsettled
    /// (STARTING with no start in flight, or UNKNOWN) before it was asked
    /// (`supervisor::requery`).
    Requery {
        host_id: String,
        suspects: Vec<PodRef>,
        snapshot: Vec<PodSnapshot>,
        client: Arc<dyn HostCommands>,
        /// Also fence the pods no row places on the host.
        orphans: bool,
    },
    /// A pod event, acknowledged once applied.
    Event {
        host_id: String,
        boot_id: String,
        seq: u64,
        action: EventAction,
        /// Frees the session's slot when the job is done (dropped).
        in_flight: InFlight,
    },
    /// A phase change released by the rate limit (its event was already
    /// acknowledged: the pod's live state is in every hello anyway).
    Phase(Recorded<PhaseRecord>),
    /// The host went silent: its pods become UNKNOWN.
    HostUnreachable { host_id: String },
    /// The host passed its fence deadline: its pods are lost.
    HostLost { host_id: String },
    /// A stale pod was killed on `host_id`: `pod_fenced`.
    Fenced {
        pod: PodRef,
        host_id: String,
        reason: String,
    },
    /// Hourly crash-history pruning (best effort: not retried).
    PruneCrashes { up_to: i64 },
    /// A pod operation's last write that could not be made when the store
    /// was down (a start's outcome): applied here, in order, once it takes
    /// writes again, so the row does not stay STARTING. Every pod command
    /// is conditional on its pod, so applying one that did commit after
    /// all changes nothing.
    Settle {
        task_id: TaskId,
        command: PodCommand,
    },
}

/// Sends jobs to the applier. Never blocks: the queue is bounded by what
/// feeds it (sessions cap their in-flight events; everything else is per
/// host transition or per hello).
#[derive(Debug, Clone)]
pub struct JobQueue(mpsc::UnboundedSender<Job>);

impl JobQueue {
    /// A queue and its receiving end.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Job>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self(tx), rx)
    }

    /// Queues a job behind every job queued before it.
    pub fn push(&self, job: Job) {
        if self.0.send(job).is_ok() {
            crate::metrics::supervision_backlog(1);
        }
    }
}

/// The applier task's state.
pub struct HostEvents {
    rx: mpsc::UnboundedReceiver<Job>,
    /// A job taken from the queue that did not fit in the last group: the
    /// next head.
    held: Option<Job>,
    queue: JobQueue,
    pods: Pods,
    restarts: RestartQueue,
    /// Per host: the boot and the last sequence applied (to skip replays).
    applied: BTreeMap<String, (String, u64)>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl HostEvents {
    pub fn new(
        (queue, rx): (JobQueue, mpsc::UnboundedReceiver<Job>),
        pods: Pods,
        restarts: RestartQueue,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            rx,
            held: None,
            queue,
            pods,
            restarts,
            applied: BTreeMap::new(),
            tracker,
            cancel,
        }
    }

    fn store(&self) -> &dyn TaskStore {
        self.pods.ports().store.as_ref()
    }

    /// Runs on the tracker until cancelled.
    pub fn start(self) {
        let tracker = self.tracker.clone();
        tracker.spawn(self.run().instrument(tracing::info_span!("host_events")));
    }

    async fn run(mut self) {
        loop {
            let head = match self.held.take() {
                Some(j) => j,
                None => tokio::select! {
                    biased;
                    () = self.cancel.cancelled() => break,
                    j = self.rx.recv() => match j {
                        Some(j) => j,
                        None => break,
                    },
                },
            };
            let mut group = Group::default();
            let mut jobs = vec![head];
            let applied = if group.admit(slot(&jobs[0])) {
                while let Ok(j) = self.rx.try_recv() {
                    if group.admit(slot(&j)) {
                        jobs.push(j);
                    } else {
                        self.held = Some(j);
                        break;
                    }
                }
                self.apply_group(&jobs).await
            } else {
                self.apply_alone(&jobs[0]).await
            };
            if !applied {
                return;
            }
            crate::metrics::supervision_backlog(-i64::try_from(jobs.len()).unwrap_or(i64::MAX));
        }
        tracing::debug!("host event applier stopped");
    }

    /// Applies a barrier job, trying again while the store is unavailable.
    /// False when shutting down.
    async fn apply_alone(&mut self, job: &Job) -> bool {
        let mut attempt: u32 = 0;
        loop {
            match self.apply(job).await {
                Ok(()) => break,
                Err(Error::ShuttingDown) => return false,
                Err(e) => {
                    if attempt == 0 {
                        tracing::warn!(error = %e, job = job.kind(),
                            "supervision write failed; holding this and every later job until the store is back");
                    }
                    if !self.wait_for_store(attempt).await {
                        return false;
                    }
                    attempt = attempt.saturating_add(1);
                }
            }
        }
        if attempt > 0 {
            tracing::info!(
                attempts = attempt + 1,
                job = job.kind(),
                "supervision write applied after the store came back"
            );
            self.reschedule_restarts().await;
        }
        true
    }

    /// After writes that failed and were applied again: a failed write may
    /// have committed with its reply lost, so applying it again changed
    /// nothing and did not hand over the restart it scheduled. Every
    /// restart the store has due goes to the supervisor again (a second
    /// timer for one is harmless: a restart is claimed only once, when
    /// due). Found by the simulator with lost replies (seed 6658).
    async fn reschedule_restarts(&self) {
        match self.store().scheduled_restarts().await {
            Ok(due) => {
                for (task, at) in due {
                    self.restarts.schedule(task, at);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the scheduled restarts again");
            }
        }
    }

    /// The event `seq` of `host_id`'s boot is applied: its replays are
    /// skipped, and the host may drop it.
    fn acknowledge(&mut self, host_id: &str, boot_id: &str, seq: u64) {
        self.applied
            .insert(host_id.to_owned(), (boot_id.to_owned(), seq));
        self.pods.hosts().ack(host_id, boot_id, seq);
    }

    /// Waits before trying again: until the breaker closes when it is open,
    /// else a backoff. False when cancelled.
    async fn wait_for_store(&self, attempt: u32) -> bool {
        if !self.store().writable() {
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => false,
                () = self.store().until_writable() => true,
            }
        } else {
            let delay = crate::domain::backoff::delay(RETRY_INITIAL, RETRY_MAX, attempt, 1.0);
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => false,
                () = tokio::time::sleep(delay) => true,
            }
        }
    }

    /// Applies one job. `Err` only for "try again later" (the store is
    /// unavailable) and shutdown; anything else is logged and done.
    async fn apply(&mut self, job: &Job) -> Result<()> {
        match job {
            Job::Reconcile {
                host_id,
                boot_id,
                new_boot,
                snapshot,
                client,
            } => {
                let hello = reconcile::Hello {
                    host_id,
                    new_boot: *new_boot,
                    snapshot,
                    client,
                    only: None,
                };
                self.reconcile(hello).await?;
                self.pods.hosts().mark_reconciled(host_id, boot_id);
                Ok(())
            }
            Job::Requery {
                host_id,
                suspects,
                snapshot,
                client,
                orphans,
            } => {
                let hello = reconcile::Hello {
                    host_id,
                    new_boot: false,
                    snapshot,
                    client,
                    only: Some((suspects, *orphans)),
                };
                self.reconcile(hello).await
            }
            Job::Event {
                host_id,
                boot_id,
                seq,
                ..
            } => {
                if self.write(job).await? {
                    self.acknowledge(host_id, boot_id, *seq);
                }
                Ok(())
            }
            Job::Phase(r) => self.phase(r).await,
            Job::HostUnreachable { host_id } => {
                let cmd = PodCommand::HostUnreachable {
                    host_id: host_id.clone(),
                };
                settle(self.store().pod(cmd).await, "marking pods UNKNOWN").map(drop)
            }
            Job::HostLost { host_id } => {
                let rows = settle(
                    self.store().pods_on_host(host_id).await,
                    "reading pods of a lost host",
                )?;
                // Every pod of the host at once: they share the writer's
                // transactions. What is not committed is read again and
                // lost on the next try (a lost pod is no longer listed).
                let why = "its pod-host was unreachable past the fence deadline";
                let lost = rows.unwrap_or_default().into_iter();
                futures::future::join_all(lost.map(|(pod, _)| self.lose(pod, host_id, why)))
                    .await
                    .into_iter()
                    .collect()
            }
            Job::Fenced {
                pod,
                host_id,
                reason,
            } => {
                let cmd = PodCommand::Fenced {
                    pod: pod.clone(),
                    host_id: host_id.clone(),
                    reason: reason.clone(),
                };
                if let Some(PodOutcome::NotOwner) =
                    settle(self.store().pod(cmd).await, "recording pod_fenced")?
                {
                    rejected(host_id, pod, "fenced pod it never ran");
                }
                Ok(())
            }
            Job::Settle { task_id, command } => self.settle_operation(*task_id, command).await,
            Job::PruneCrashes { up_to } => {
                self.prune_crashes(*up_to).await;
                Ok(())
            }
        }
    }

    /// A pod operation's last write, applied now that the store takes
    /// writes; schedules the restart it may ask for.
    async fn settle_operation(&self, task_id: TaskId, command: &PodCommand) -> Result<()> {
        let done = settle(
            self.store().pod(command.clone()).await,
            "settling a pod operation",
        )?;
        if let Some(PodOutcome::Applied {
            restart_at: Some(at),
        }) = done
        {
            self.restarts.schedule(task_id, at);
        }
        Ok(())
    }

    /// Best effort: a failure is retried next hour.
    async fn prune_crashes(&self, up_to: i64) {
        match self.store().pod(PodCommand::PruneCrashes { up_to }).await {
            Ok(PodOutcome::Count(n)) if n > 0 => {
                tracing::info!(removed = n, "crash history pruned");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "crash history pruning failed; retried next hour");
            }
        }
    }

    async fn phase(&self, r: &Recorded<PhaseRecord>) -> Result<()> {
        let p = &r.change;
        let cmd = PodCommand::PhaseChanged {
            pod: p.pod.clone(),
            host_id: p.host_id.clone(),
            phase: p.phase,
            version: p.version,
            message: p.message.clone(),
            coalesced: r.coalesced,
        };
        if let Some(PodOutcome::NotOwner) =
            settle(self.store().pod(cmd).await, "recording phase_changed")?
        {
            rejected(&p.host_id, &p.pod, "phase of a pod it does not own");
        }
        Ok(())
    }

    /// A pod end reported by its host. A requested stop whose own commit
    /// did not happen (the store was down) is still the caller's stop: the
    /// pending stop is used here and released only once this commits.
    async fn end_reported(&self, host_id: &str, pod: &PodRef, report: &EndReport) -> Result<()> {
        let mut report = report.clone();
        let stop = match report.ending {
            Ending::Stopped => self.pods.hosts().peek_stop(&pod.pod_id),
            _ => None,
        };
        let cause = match &stop {
            Some(stop) => {
                if let Some(o) = report.detail.as_object_mut() {
                    o.insert("reason".into(), serde_json::json!(stop.reason));
                }
                // A run timeout's stop is recorded as the timeout it was.
                if stop.ending.is_failure() {
                    report.ending = stop.ending;
                    report.message = stop.reason.clone();
                }
                stop.cause.clone()
            }
            None => Cause::system(),
        };
        self.pods.hosts().note_end_report(&pod.pod_id, host_id);
        self.end(pod, host_id, report, cause).await?;
        if stop.is_some() {
            self.pods.hosts().take_stop(&pod.pod_id);
        }
        Ok(())
    }

    /// Commits a pod's end and schedules its restart if the policy says so.
    async fn end(
        &self,
        pod: &PodRef,
        host_id: &str,
        report: EndReport,
        cause: Cause,
    ) -> Result<()> {
        let cmd = PodCommand::Ended {
            pod: pod.clone(),
            host_id: host_id.to_owned(),
            report,
            cause,
            defaults: *self.pods.defaults(),
            jitter: self.pods.ports().entropy.jitter(),
        };
        match settle(self.store().pod(cmd).await, "recording a pod's end")? {
            Some(PodOutcome::Applied {
                restart_at: Some(at),
            }) => self.restarts.schedule(pod.task_id, at),
            Some(PodOutcome::NotOwner) => rejected(host_id, pod, "end of a pod it does not own"),
            _ => {}
        }
        Ok(())
    }

    async fn lose(&self, pod: PodRef, host_id: &str, why: &str) -> Result<()> {
        self.pods.hosts().clear_live(pod.task_id, &pod.pod_id);
        let report = EndReport {
            ending: Ending::Lost,
            detail: serde_json::json!({ "reason": why }),
            message: format!("pod lost: {why}"),
            last_phase: None,
        };
        self.end(&pod, host_id, report, Cause::system()).await
    }
}

impl Job {
    /// A short name for logs.
    fn kind(&self) -> &'static str {
        match self {
            Self::Reconcile { .. } => "reconcile",
            Self::Requery { .. } => "requery",
            Self::Event { .. } => "pod event",
            Self::Phase(_) => "phase change",
            Self::HostUnreachable { .. } => "host unreachable",
            Self::HostLost { .. } => "host lost",
            Self::Fenced { .. } => "pod fenced",
            Self::PruneCrashes { .. } => "prune",
            Self::Settle { .. } => "settle a pod operation",
        }
    }
}

/// Passes "try again later" errors up; logs and swallows the rest (`None`).
fn settle<T>(r: Result<T>, what: &str) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e @ (Error::StoreUnavailable(_) | Error::ShuttingDown)) => Err(e),
        Err(e) => {
            tracing::error!(error = %e, "{what} failed; skipped");
            Ok(None)
        }
    }
}

/// A host reported something about a pod it does not own: dropped, logged
/// and counted (`ipa_rejected_host_events_total`).
pub fn rejected(host_id: &str, pod: &PodRef, what: &str) {
    tracing::warn!(%host_id, task_id = %pod.task_id, pod_id = %pod.pod_id,
        generation = pod.generation, "pod-host reported the {what}; ignored");
    crate::metrics::count_rejected_host_event();
}
