//! Process handling for the pod table: StartPod and the per-pod
//! supervision task (exit, status fd, output). StopPod and the shutdown
//! drain are in `stop.rs`.
//!
//! Each pod has one supervision task that awaits `Child::wait` (a pidfd on
//! Linux: event-driven, and it reaps, so no zombie remains). On exit it
//! SIGKILLs what is left of the pod's process group (a pod is its process
//! plus its children), lets the status reader drain lines already written
//! (so a `PHASE_COMPLETED` written just before `exit 0` is never lost),
//! records the exit and issues the event at once.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;
use tokio::sync::watch;
use tracing::Instrument;

use super::{
    EventKind, ExitCause, Pod, PodExit, PodState, PodView, StartSpec, Supervisor, TaskEntry,
    kill_group,
};
use crate::error::HostError;
use crate::logs::{LogSink, Stream, pump};
use crate::spawn::{PodChild, PodEnv, pod_command, pod_environment, status_pipe};

/// How long an exited pod's status pipe may take to reach EOF before the
/// exit is recorded without the rest (only a process that left the pod's
/// group and kept fd 3 can hold it open).
const STATUS_DRAIN: Duration = Duration::from_millis(200);

/// The same for stdout/stderr before followers are told the output ended.
const OUTPUT_DRAIN: Duration = Duration::from_secs(1);

/// How long to wait for a SIGKILLed group to be reaped before giving up
/// waiting (a process stuck in uninterruptible sleep).
pub(super) const KILL_WAIT: Duration = Duration::from_secs(5);

struct Prepared {
    logs: Arc<LogSink>,
    dir: std::path::PathBuf,
    /// The pod's working dir (its pod dir, or `work` in it when isolated).
    work: std::path::PathBuf,
    task_file: std::path::PathBuf,
    fence: Vec<(u32, watch::Receiver<bool>)>,
    /// The task's newest pod before this one (restored if it never starts).
    previous_newest: Option<String>,
}

impl Supervisor {
    /// StartPod: idempotent on `pod_id`.
    pub async fn start(self: &Arc<Self>, spec: StartSpec) -> Result<PodView, HostError> {
        let template = self
            .cfg
            .templates
            .get(&spec.template)
            .cloned()
            .ok_or_else(|| {
                HostError::invalid(
                    "template",
                    format!(
                        "no template named {} (this host has {:?})",
                        crate::error::quote(&spec.template),
                        self.cfg.templates.names()
                    ),
                )
            })?;
        let mut prepared = match self.reserve(&spec)? {
            Ok(p) => p,
            Err(existing) => return Ok(existing),
        };

        // Who it runs as (`crate::isolation`): a per-pod uid is taken now
        // and returned when its exit is recorded.
        let creds = match self.isolation.acquire() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "no identity for the pod");
                self.record_exit(&spec.pod_id, |_, _| PodExit {
                    code: None,
                    signal: None,
                    cause: ExitCause::SpawnFailed,
                    reported_completed: false,
                    at: SystemTime::now(),
                    message: e,
                });
                return Ok(self.view(&spec.pod_id));
            }
        };
        if let Some(p) = self.lock().pods.get_mut(&spec.pod_id) {
            p.creds = creds.clone();
        }

        // The pod's dir and task file, outside the table lock and off the
        // async workers (creating inodes can take a millisecond).
        let task_body = task_file_body(&spec);
        let (dirs, dir, owner) = (self.dirs.clone(), prepared.dir.clone(), creds.clone());
        let made = tokio::task::spawn_blocking(move || dirs.make(&dir, &task_body, owner.as_ref()))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        self.dirs.refill();
        if let Err(e) = made {
            let why = format!("cannot prepare the pod dir {}: {e}", prepared.dir.display());
            return Err(self.spawn_failed(&spec, &prepared, why).await);
        }

        // An older generation of this task still runs: kill it first.
        for (pid, mut rx) in std::mem::take(&mut prepared.fence) {
            kill_group(pid, Signal::SIGKILL);
            if tokio::time::timeout(KILL_WAIT, rx.wait_for(|e| *e))
                .await
                .is_err()
            {
                tracing::warn!(pid, "fenced pod did not die in time");
            }
        }

        if let Some(cause) = self
            .lock()
            .pods
            .get(&spec.pod_id)
            .and_then(|p| p.kill_cause)
        {
            // Stopped, fenced or drained while we were getting ready.
            self.record_exit(&spec.pod_id, |_, _| PodExit {
                code: None,
                signal: None,
                cause,
                reported_completed: false,
                at: SystemTime::now(),
                message: "ended before it was started".to_owned(),
            });
            return Ok(self.view(&spec.pod_id));
        }

        let spawned = match status_pipe() {
            Ok((status_r, status_w)) => {
                let mut env = pod_environment(
                    std::env::vars_os(),
                    &template,
                    &PodEnv {
                        task_id: &spec.task_id,
                        pod_id: &spec.pod_id,
                        generation: spec.generation,
                        task_file: &prepared.task_file,
                    },
                );
                // The pod continues the StartPod's trace (when traced).
                if let Some(tp) = ipa_common::trace_context::current_traceparent() {
                    env.push((ipa_common::trace_context::TRACEPARENT_ENV.into(), tp.into()));
                }
                if let Some(c) = &creds {
                    crate::isolation::adjust_env(&mut env, c, &prepared.work);
                }
                let ids = creds.as_ref().map(|c| (c.uid, c.gid));
                match pod_command(&template, env, &prepared.work, ids) {
                    Ok(cmd) => self
                        .spawner
                        .spawn(cmd, status_w)
                        .await
                        .map(|c| (c, status_r)),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        let (child, status_r) = match spawned {
            Ok(x) => x,
            Err(e) => return Err(self.spawn_failed(&spec, &prepared, e.to_string()).await),
        };
        let pid = child.id();
        if let Some(r) = &self.reaper {
            r.watch(pid);
        }
        self.journal.started(&spec.pod_id, pid);
        let (view, kill_now) = {
            let mut t = self.lock();
            let Some(pod) = t.pods.get_mut(&spec.pod_id) else {
                return Err(HostError::Internal);
            };
            pod.view.pid = pid;
            pod.view.state = PodState::Running;
            crate::metrics::pod_started();
            let kill_now = pod.kill_cause.is_some();
            let view = pod.view.clone();
            t.push_event(
                &view,
                EventKind::Started {
                    pid,
                    template: view.template.clone(),
                },
            );
            self.notify_events(&t);
            (view, kill_now)
        };
        tracing::info!(pid, "pod started");
        if kill_now {
            kill_group(pid, Signal::SIGKILL);
        }
        self.fence_rearm.notify_one();
        // The pod outlives the StartPod call: its span is a root that
        // follows from the call's, or the call's span (and its trace) would
        // stay open for as long as the pod runs.
        let span = tracing::info_span!(parent: None, "pod", task_id = %spec.task_id, pod_id = %spec.pod_id, pid);
        span.follows_from(tracing::Span::current());
        self.tracker.spawn(
            self.clone()
                .supervise(spec.pod_id.clone(), pid, child, status_r, prepared.logs)
                .instrument(span),
        );
        Ok(view)
    }

    /// The pod could not be created: nothing ran, so there is no pod to
    /// report and no event; the slot is released, the task's previous pod
    /// stays its newest, and the caller gets SPAWN_FAILED with the reason.
    async fn spawn_failed(&self, spec: &StartSpec, prepared: &Prepared, why: String) -> HostError {
        tracing::warn!(template = %spec.template, error = %why, "pod spawn failed");
        crate::metrics::spawn_failed();
        {
            let mut t = self.lock();
            if let Some(pod) = t.pods.remove(&spec.pod_id) {
                // A StopPod waiting for this pod returns (not found).
                pod.exited.send_replace(true);
            }
            if let Some(e) = t.tasks.get_mut(&spec.task_id)
                && e.newest_pod.as_deref() == Some(spec.pod_id.as_str())
            {
                e.newest_pod = prepared.previous_newest.clone();
            }
        }
        let dir = prepared.dir.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
        HostError::SpawnFailed(format!(
            "cannot start a pod from template {:?}: {why}",
            spec.template
        ))
    }

    /// Checks and reserves a slot. `Ok(Err(view))` is an idempotent repeat.
    fn reserve(&self, spec: &StartSpec) -> Result<Result<Prepared, PodView>, HostError> {
        let mut t = self.lock();
        if let Some(p) = t.pods.get(&spec.pod_id) {
            if p.view.task_id != spec.task_id {
                return Err(HostError::invalid(
                    "pod_id",
                    format!("pod {} belongs to another task", spec.pod_id),
                ));
            }
            return Ok(Err(p.view.clone()));
        }
        if t.draining {
            return Err(HostError::ShuttingDown);
        }
        if t.unprotected {
            return Err(HostError::Unprotected);
        }
        let known = t.tasks.get(&spec.task_id).map(|e| e.generation);
        if let Some(known) = known.filter(|k| spec.generation < *k) {
            return Err(HostError::StaleGeneration {
                task_id: spec.task_id.clone(),
                requested: spec.generation,
                known,
            });
        }
        let mut fence = Vec::new();
        for p in t
            .pods
            .values()
            .filter(|p| p.is_live() && p.view.task_id == spec.task_id)
        {
            if p.view.generation >= spec.generation {
                return Err(HostError::invalid(
                    "generation",
                    format!(
                        "task {} already runs pod {} at generation {}",
                        spec.task_id, p.view.pod_id, p.view.generation
                    ),
                ));
            }
            fence.push(p.view.pod_id.clone());
        }
        let live = t.live_pods().saturating_sub(fence.len());
        if live >= self.cfg.capacity as usize {
            return Err(HostError::NoCapacity {
                capacity: self.cfg.capacity,
            });
        }

        // Files are made by the caller, after the lock (see `start`).
        let dir = self.cfg.data_dir.join("pods").join(&spec.pod_id);
        let (work, task_file) = super::dirs::pod_paths(&dir, self.isolation.is_isolated());
        let logs = Arc::new(LogSink::new(&dir, self.cfg.log_max_bytes));

        let mut fence_waits = Vec::new();
        for id in &fence {
            if let Some(p) = t.pods.get_mut(id) {
                p.kill_cause.get_or_insert(ExitCause::Fenced);
                tracing::info!(pod_id = %id, generation = p.view.generation, "fencing older pod of the task");
                fence_waits.push((p.view.pid, p.exited.subscribe()));
            }
        }
        let previous_newest = t
            .tasks
            .insert(
                spec.task_id.clone(),
                TaskEntry {
                    generation: spec.generation,
                    newest_pod: Some(spec.pod_id.clone()),
                },
            )
            .and_then(|e| e.newest_pod);
        t.pods.insert(
            spec.pod_id.clone(),
            Pod {
                view: PodView {
                    task_id: spec.task_id.clone(),
                    pod_id: spec.pod_id.clone(),
                    generation: spec.generation,
                    template: spec.template.clone(),
                    pid: 0,
                    state: PodState::Starting,
                    phase: None,
                    version: 0,
                    message: String::new(),
                    started_at: SystemTime::now(),
                    exit: None,
                },
                logs: logs.clone(),
                dir: dir.clone(),
                creds: None,
                kill_cause: None,
                reported_completed: false,
                exit_seq: None,
                archived: false,
                exited: watch::channel(false).0,
            },
        );
        // A starting pod (pid 0) that is fenced is handled after its spawn.
        fence_waits.retain(|(pid, _)| *pid > 0);
        Ok(Ok(Prepared {
            logs,
            dir,
            work,
            task_file,
            fence: fence_waits,
            previous_newest,
        }))
    }

    fn view(&self, pod_id: &str) -> PodView {
        self.lock()
            .pods
            .get(pod_id)
            .map(|p| p.view.clone())
            .unwrap_or_else(|| unreachable_view(pod_id))
    }

    /// The supervision task of one pod.
    async fn supervise(
        self: Arc<Self>,
        pod_id: String,
        pid: u32,
        mut child: PodChild,
        status_r: OwnedFd,
        logs: Arc<LogSink>,
    ) {
        let mut pumps = Vec::new();
        if let Some(out) = child.stdout.take() {
            let logs = logs.clone();
            pumps
                .push(self.tracker.spawn(
                    async move { pump(out, Stream::Stdout, &logs).await }.in_current_span(),
                ));
        }
        if let Some(err) = child.stderr.take() {
            let logs = logs.clone();
            pumps
                .push(self.tracker.spawn(
                    async move { pump(err, Stream::Stderr, &logs).await }.in_current_span(),
                ));
        }
        let status = self.tracker.spawn(
            self.clone()
                .read_status(pod_id.clone(), status_r)
                .in_current_span(),
        );

        let waited = child.wait().await;
        // Whatever the pod left behind in its group dies with it.
        kill_group(pid, Signal::SIGKILL);
        // With a uid of its own, so does anything that left the group:
        // before the uid can go to another pod.
        if self.isolation.per_pod() {
            let uid = self
                .lock()
                .pods
                .get(&pod_id)
                .and_then(|p| p.creds.as_ref().map(|c| c.uid));
            if let Some(uid) = uid
                && let Err(e) = self.spawner.kill_all_of(uid).await
            {
                // Never hand a uid that may still run something to another
                // pod: it stays taken.
                tracing::error!(uid, error = %e, "cannot kill what is left of the pod's uid; retiring it");
                if let Some(p) = self.lock().pods.get_mut(&pod_id) {
                    p.creds = None;
                }
            }
        }
        if let Some(r) = &self.reaper {
            r.forget(pid);
        }
        self.journal.ended(&pod_id);
        let _ = tokio::time::timeout(STATUS_DRAIN, status).await;
        // SIGKILLed by no one here while the lease had run out: the reaper's
        // backstop fenced it (crate::reaper) before this host could.
        let lease_over = self.lease_over();
        self.record_exit(&pod_id, |cause, completed| {
            let (code, signal, message) = match &waited {
                Ok(st) => {
                    use std::os::unix::process::ExitStatusExt;
                    (st.code(), st.signal(), String::new())
                }
                Err(e) => (None, None, format!("wait failed: {e}")),
            };
            let backstop =
                (lease_over && signal == Some(Signal::SIGKILL as i32)).then_some(ExitCause::SelfFenced);
            let exit = PodExit {
                code,
                signal,
                cause: cause.or(backstop).unwrap_or(ExitCause::Exited),
                reported_completed: completed,
                at: SystemTime::now(),
                message,
            };
            tracing::info!(code = ?exit.code, signal = ?exit.signal, cause = ?exit.cause, "pod exited");
            exit
        });
        // Output already in the pipes is kept; a process that left the
        // pod's group and still holds them is not the pod any more: its
        // pipes are closed (it gets EPIPE) rather than read for ever.
        let aborts: Vec<_> = pumps.iter().map(|p| p.abort_handle()).collect();
        if tokio::time::timeout(OUTPUT_DRAIN, futures::future::join_all(pumps))
            .await
            .is_err()
        {
            tracing::info!("pod output still open after its exit; closing it");
            aborts.iter().for_each(|a| a.abort());
        }
        // Closes the log files: an exited pod holds no descriptor.
        logs.finish();
    }
}

/// The task file's JSON (one line).
fn task_file_body(spec: &StartSpec) -> Vec<u8> {
    let mut body = serde_json::json!({
        "task_id": spec.task_id,
        "title": spec.title,
        "description": spec.description,
        "metadata": spec.metadata,
    })
    .to_string()
    .into_bytes();
    body.push(b'\n');
    body
}

/// A view for a pod id that vanished from the table between two locks;
/// cannot happen (pods are only pruned after their exit is acknowledged,
/// and both callers hold a live pod), but is not worth a panic.
fn unreachable_view(pod_id: &str) -> PodView {
    tracing::error!(pod_id, "pod vanished from the table");
    PodView {
        task_id: String::new(),
        pod_id: pod_id.to_owned(),
        generation: 0,
        template: String::new(),
        pid: 0,
        state: PodState::Exited,
        phase: None,
        version: 0,
        message: String::new(),
        started_at: SystemTime::now(),
        exit: None,
    }
}
