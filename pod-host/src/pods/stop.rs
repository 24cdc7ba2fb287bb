//! Stopping pods: StopPod (SIGTERM to the group, grace, SIGKILL) and the
//! shutdown drain of every pod. Starting and supervising them is in
//! `run.rs`.

use nix::sys::signal::Signal;

use super::run::KILL_WAIT;
use super::{ExitCause, PodView, StopSpec, Supervisor, TaskEntry, kill_group};
use crate::error::HostError;

impl Supervisor {
    /// StopPod: SIGTERM to the group, grace, SIGKILL; returns once the pod
    /// is gone. Stopping an exited pod returns its exit.
    pub async fn stop(&self, spec: StopSpec) -> Result<PodView, HostError> {
        let (pod_id, pid, mut exited) = {
            let mut t = self.lock();
            let entry = t.tasks.entry(spec.task_id.clone()).or_insert(TaskEntry {
                generation: spec.generation,
                newest_pod: None,
            });
            if spec.generation < entry.generation {
                return Err(HostError::StaleGeneration {
                    task_id: spec.task_id.clone(),
                    requested: spec.generation,
                    known: entry.generation,
                });
            }
            // Central has moved on to this generation: remember it so a
            // delayed older StartPod is refused.
            entry.generation = spec.generation;
            let not_found =
                || HostError::PodNotFound(format!("no pod of task {} on this host", spec.task_id));
            let pod_id = match &spec.pod_id {
                Some(p) => p.clone(),
                None => entry.newest_pod.clone().ok_or_else(not_found)?,
            };
            let pod = t
                .pods
                .get_mut(&pod_id)
                .filter(|p| p.view.task_id == spec.task_id)
                .ok_or_else(|| {
                    HostError::PodNotFound(format!(
                        "no pod {pod_id} of task {} on this host",
                        spec.task_id
                    ))
                })?;
            if !pod.is_live() {
                return Ok(pod.view.clone());
            }
            pod.kill_cause.get_or_insert(if spec.fence {
                ExitCause::Fenced
            } else {
                ExitCause::Stopped
            });
            (pod_id, pod.view.pid, pod.exited.subscribe())
        };
        let grace = spec.grace.unwrap_or(self.cfg.stop_grace);
        tracing::info!(pid, grace_ms = grace.as_millis() as u64, "stopping pod");
        // A pod still starting is killed by the start path once spawned.
        if pid > 0 {
            kill_group(pid, Signal::SIGTERM);
        }
        if tokio::time::timeout(grace, exited.wait_for(|e| *e))
            .await
            .is_err()
        {
            let pid = self.lock().pods.get(&pod_id).map_or(0, |p| p.view.pid);
            tracing::info!(pid, "grace over; SIGKILL");
            if pid > 0 {
                kill_group(pid, Signal::SIGKILL);
            }
            if tokio::time::timeout(KILL_WAIT, exited.wait_for(|e| *e))
                .await
                .is_err()
            {
                tracing::warn!(pid, "pod did not die after SIGKILL");
            }
        }
        // Gone from the table: it was still starting and never started.
        self.lock()
            .pods
            .get(&pod_id)
            .map(|p| p.view.clone())
            .ok_or_else(|| HostError::PodNotFound(format!("pod {pod_id} never started")))
    }

    /// Shutdown: refuse new pods, SIGTERM every group, wait up to the stop
    /// grace, SIGKILL the rest, and wait for their exits to be recorded.
    pub async fn drain(&self) {
        let grace = self.cfg.stop_grace;
        let (pids, waits) = {
            let mut t = self.lock();
            t.draining = true;
            let mut pids = Vec::new();
            let mut waits = Vec::new();
            for p in t.pods.values_mut().filter(|p| p.is_live()) {
                p.kill_cause.get_or_insert(ExitCause::HostShutdown);
                pids.push(p.view.pid);
                waits.push(p.exited.subscribe());
            }
            (pids, waits)
        };
        if pids.is_empty() {
            return;
        }
        tracing::info!(
            pods = pids.len(),
            grace_ms = grace.as_millis() as u64,
            "stopping all pods"
        );
        for &pid in &pids {
            if pid > 0 {
                kill_group(pid, Signal::SIGTERM);
            }
        }
        let all = futures::future::join_all(waits.into_iter().map(|mut rx| async move {
            let _ = rx.wait_for(|e| *e).await;
        }));
        tokio::pin!(all);
        if tokio::time::timeout(grace, &mut all).await.is_ok() {
            return;
        }
        let left: Vec<u32> = self
            .lock()
            .pods
            .values()
            .filter(|p| p.is_live())
            .map(|p| p.view.pid)
            .collect();
        tracing::info!(pods = left.len(), "grace over; SIGKILL to the rest");
        for pid in left {
            kill_group(pid, Signal::SIGKILL);
        }
        if tokio::time::timeout(KILL_WAIT, all).await.is_err() {
            tracing::warn!("some pods did not die after SIGKILL");
        }
    }
}
