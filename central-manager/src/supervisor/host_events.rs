//! The supervisor's database side: one task that applies, strictly in the
//! order they were queued, everything the [`runner`](super::runner) decided
//! must be written: what hosts reported (pod ends, phase changes), hello
//! reconciliations, host loss, fenced pods.
//!
//! - A pod event is acknowledged to its host only after its effects are
//!   committed, so the host keeps (and on reconnect replays) whatever is not
//!   durable here yet. Replays of events already applied are skipped by
//!   their per-boot sequence number.
//! - When the database cannot be written, the job at the head of the queue
//!   waits (for the store's circuit breaker to close, or a short backoff)
//!   and is tried again; nothing behind it overtakes it, so on recovery the
//!   queued events are applied in order. Liveness does not wait with it:
//!   pings, contact and the silence rules run in the sessions and the
//!   runner, which never touch the database.
//! - A job that fails for any other reason (a bug) is logged and dropped,
//!   so it cannot wedge the queue.

use std::collections::HashMap;
use std::time::Duration;

use ipa_proto::v1::{self as pb, pod_host_client::PodHostClient};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::coalesce::Recorded;
use super::reconcile::{self, Action, DbPod, HostPod};
use super::runner::{RestartQueue, phase_from_pb};
use crate::core::pods::Pods;
use crate::domain::{Phase, PodStatus, TaskId};
use crate::error::{Error, Result};
use crate::hosts::TracedChannel as Channel;
use crate::hosts::directory::LivePod;
use crate::hosts::hello::plausible_time;
use crate::hosts::session::InFlight;
use crate::store::Store;
use crate::store::pods::{Cause, EndReport, PodCommand, PodOutcome, PodRef};
use crate::supervisor::exit::Ending;

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
#[derive(Debug)]
pub enum Job {
    /// Square a hello's snapshot with the database.
    Reconcile {
        host_id: String,
        boot_id: String,
        new_boot: bool,
        snapshot: Vec<pb::PodInfo>,
        client: PodHostClient<Channel>,
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
    queue: JobQueue,
    pods: Pods,
    store: Store,
    restarts: RestartQueue,
    /// Per host: the boot and the last sequence applied (to skip replays).
    applied: HashMap<String, (String, u64)>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl HostEvents {
    pub fn new(
        (queue, rx): (JobQueue, mpsc::UnboundedReceiver<Job>),
        pods: Pods,
        store: Store,
        restarts: RestartQueue,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            rx,
            queue,
            pods,
            store,
            restarts,
            applied: HashMap::new(),
            tracker,
            cancel,
        }
    }

    /// Runs on the tracker until cancelled.
    pub fn start(self) {
        let tracker = self.tracker.clone();
        tracker.spawn(self.run().instrument(tracing::info_span!("host_events")));
    }

    async fn run(mut self) {
        loop {
            let job = tokio::select! {
                () = self.cancel.cancelled() => break,
                j = self.rx.recv() => match j {
                    Some(j) => j,
                    None => break,
                },
            };
            let mut attempt: u32 = 0;
            loop {
                match self.apply(&job).await {
                    Ok(()) => break,
                    Err(Error::ShuttingDown) => return,
                    Err(e) => {
                        if attempt == 0 {
                            tracing::warn!(error = %e, job = job.kind(),
                                "supervision write failed; holding this and every later job until the store is back");
                        }
                        if !self.wait_for_store(attempt).await {
                            return;
                        }
                        attempt = attempt.saturating_add(1);
                    }
                }
            }
            crate::metrics::supervision_backlog(-1);
            if attempt > 0 {
                tracing::info!(
                    attempts = attempt + 1,
                    job = job.kind(),
                    "supervision write applied after the store came back"
                );
            }
        }
        tracing::debug!("host event applier stopped");
    }

    /// Waits before trying again: until the breaker closes when it is open,
    /// else a backoff. False when cancelled.
    async fn wait_for_store(&self, attempt: u32) -> bool {
        let breaker = self.store.breaker().clone();
        if breaker.is_open() {
            tokio::select! {
                () = self.cancel.cancelled() => false,
                () = breaker.closed() => true,
            }
        } else {
            let delay = crate::hosts::backoff::delay(RETRY_INITIAL, RETRY_MAX, attempt, 1.0);
            tokio::select! {
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
                self.reconcile(host_id, *new_boot, snapshot, client).await?;
                self.pods.hosts().mark_reconciled(host_id, boot_id);
                Ok(())
            }
            Job::Event {
                host_id,
                boot_id,
                seq,
                action,
                in_flight: _,
            } => {
                let replayed = self
                    .applied
                    .get(host_id)
                    .is_some_and(|(b, s)| b == boot_id && *seq <= *s);
                if replayed {
                    return Ok(());
                }
                match action {
                    EventAction::Nothing => {}
                    EventAction::Phase(r) => self.phase(r).await?,
                    EventAction::End { pod, report } => {
                        self.end_reported(host_id, pod, report).await?
                    }
                }
                self.applied
                    .insert(host_id.clone(), (boot_id.clone(), *seq));
                self.pods.hosts().ack(host_id, boot_id, *seq);
                Ok(())
            }
            Job::Phase(r) => self.phase(r).await,
            Job::HostUnreachable { host_id } => {
                let cmd = PodCommand::HostUnreachable {
                    host_id: host_id.clone(),
                };
                settle(self.store.pod(cmd).await, "marking pods UNKNOWN").map(drop)
            }
            Job::HostLost { host_id } => {
                let rows = settle(
                    self.store.pods_on_host(host_id).await,
                    "reading pods of a lost host",
                )?;
                for (pod, _) in rows.unwrap_or_default() {
                    self.lose(
                        pod,
                        host_id,
                        "its pod-host was unreachable past the fence deadline",
                    )
                    .await?;
                }
                Ok(())
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
                    settle(self.store.pod(cmd).await, "recording pod_fenced")?
                {
                    rejected(host_id, pod, "fenced pod it never ran");
                }
                Ok(())
            }
            Job::PruneCrashes { up_to } => {
                match self
                    .store
                    .pod(PodCommand::PruneCrashes { up_to: *up_to })
                    .await
                {
                    Ok(PodOutcome::Count(n)) if n > 0 => {
                        tracing::info!(removed = n, "crash history pruned");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "crash history pruning failed; retried next hour");
                    }
                }
                Ok(())
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
            settle(self.store.pod(cmd).await, "recording phase_changed")?
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
                stop.cause.clone()
            }
            None => Cause::system(),
        };
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
            jitter: rand::random::<f64>(),
        };
        match settle(self.store.pod(cmd).await, "recording a pod's end")? {
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

    /// The hello's snapshot against the rows that place pods on this host
    /// (so every step concerns only pods this host owns): current pods are
    /// kept (recovered if they were UNKNOWN), missing ones lost, stale ones
    /// killed on the host.
    async fn reconcile(
        &self,
        host_id: &str,
        new_boot: bool,
        snapshot: &[pb::PodInfo],
        client: &PodHostClient<Channel>,
    ) -> Result<()> {
        let Some(rows) = settle(
            self.store.pods_on_host(host_id).await,
            "reading pods of a host",
        )?
        else {
            return Ok(());
        };
        let db: Vec<DbPod> = rows
            .iter()
            .map(|(p, s)| DbPod {
                task_id: p.task_id.to_string(),
                pod_id: p.pod_id.clone(),
                generation: p.generation,
                was_unknown: *s != PodStatus::Running,
            })
            .collect();
        let host: Vec<HostPod> = snapshot
            .iter()
            .map(|p| HostPod {
                task_id: p.task_id.clone(),
                pod_id: p.pod_id.clone(),
                generation: p.generation,
                alive: p.state != pb::PodState::Exited as i32,
            })
            .collect();
        let now = ipa_proto::time::now_micros();
        for action in reconcile::reconcile(&db, &host, new_boot) {
            match action {
                Action::Keep {
                    task_id,
                    pod_id,
                    recovered,
                } => {
                    let Some(snap) = snapshot.iter().find(|p| p.pod_id == pod_id) else {
                        continue;
                    };
                    let Ok(task) = TaskId::from_db(&task_id) else {
                        continue;
                    };
                    self.pods.hosts().set_live(
                        task,
                        LivePod {
                            host_id: host_id.to_owned(),
                            pod_id: pod_id.clone(),
                            generation: snap.generation,
                            phase: phase_from_pb(snap.phase),
                            version: snap.version,
                        },
                    );
                    if recovered {
                        let cmd = PodCommand::Recovered {
                            pod: PodRef {
                                task_id: task,
                                pod_id,
                                generation: snap.generation,
                            },
                            pid: snap.pid,
                            started_at: plausible_time(snap.started_at.as_ref(), now, now),
                            host_id: host_id.to_owned(),
                        };
                        settle(self.store.pod(cmd).await, "recording pod_recovered")?;
                    }
                }
                Action::Fence {
                    task_id,
                    pod_id,
                    generation,
                } => {
                    let Ok(task) = TaskId::from_db(&task_id) else {
                        tracing::warn!(%host_id, %task_id, "snapshot pod with a malformed task id; killing it");
                        crate::metrics::count_rejected_host_event();
                        continue;
                    };
                    let pod = PodRef {
                        task_id: task,
                        pod_id,
                        generation,
                    };
                    self.fence(client.clone(), pod, host_id.to_owned());
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
                    self.lose(pod.clone(), host_id, why).await?;
                }
            }
        }
        Ok(())
    }

    /// Kills a stale pod on its host in the background; `pod_fenced` is
    /// queued once the host confirms.
    fn fence(&self, client: PodHostClient<Channel>, pod: PodRef, host_id: String) {
        let pods = self.pods.clone();
        let queue = self.queue.clone();
        self.tracker.spawn(
            async move {
                let killed = pods.fence_on_host(client, &pod, "stale pod").await;
                tracing::warn!(task_id = %pod.task_id, pod_id = %pod.pod_id, %host_id, killed, "fencing stale pod");
                if killed {
                    queue.push(Job::Fenced {
                        pod,
                        host_id,
                        reason: "stale pod found on reconnect".into(),
                    });
                }
            }
            .instrument(tracing::info_span!("fence")),
        );
    }
}

impl Job {
    /// A short name for logs.
    fn kind(&self) -> &'static str {
        match self {
            Self::Reconcile { .. } => "reconcile",
            Self::Event { .. } => "pod event",
            Self::Phase(_) => "phase change",
            Self::HostUnreachable { .. } => "host unreachable",
            Self::HostLost { .. } => "host lost",
            Self::Fenced { .. } => "pod fenced",
            Self::PruneCrashes { .. } => "prune",
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
