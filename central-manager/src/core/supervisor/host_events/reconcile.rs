//! The reconcile job: a hello's snapshot squared with the rows that place
//! pods on that host, carrying out what the pure rules of
//! [`super::super::reconcile`] decide: current pods kept (recovered if they
//! were UNKNOWN), missing ones lost, stale ones killed on the host.

use std::sync::Arc;

use tracing::Instrument;

use super::super::reconcile::{self, Action, DbPod, HostPod};
use super::{HostEvents, Job, settle};
use crate::core::ports::HostCommands;
use crate::domain::host::PodSnapshot;
use crate::domain::{PodRef, PodStatus, TaskId};
use crate::error::Result;
use crate::hosts::directory::LivePod;
use crate::hosts::hello::plausible_time;
use crate::store::pods::PodCommand;

/// One reconcile job's inputs.
pub(super) struct Hello<'a> {
    pub host_id: &'a str,
    pub new_boot: bool,
    pub snapshot: &'a [PodSnapshot],
    pub client: &'a Arc<dyn HostCommands>,
}

impl HostEvents {
    /// The hello's snapshot against the rows that place pods on this host
    /// (so every step concerns only pods this host owns).
    pub(super) async fn reconcile(&self, hello: Hello<'_>) -> Result<()> {
        let Some(rows) = settle(
            self.store().pods_on_host(hello.host_id).await,
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
        let host: Vec<HostPod> = hello
            .snapshot
            .iter()
            .map(|p| HostPod {
                task_id: p.task_id.clone(),
                pod_id: p.pod_id.clone(),
                generation: p.generation,
                alive: p.alive,
            })
            .collect();
        for action in reconcile::reconcile(&db, &host, hello.new_boot) {
            match action {
                Action::Keep {
                    task_id,
                    pod_id,
                    recovered,
                } => self.keep(&hello, &task_id, &pod_id, recovered).await?,
                Action::Fence {
                    task_id,
                    pod_id,
                    generation,
                } => {
                    let Ok(task) = TaskId::from_db(&task_id) else {
                        tracing::warn!(host_id = %hello.host_id, %task_id, "snapshot pod with a malformed task id; killing it");
                        crate::metrics::count_rejected_host_event();
                        continue;
                    };
                    let pod = PodRef {
                        task_id: task,
                        pod_id,
                        generation,
                    };
                    self.fence(hello.client.clone(), pod, hello.host_id.to_owned());
                }
                Action::Lost { task_id, pod_id } => {
                    self.missing(&hello, &rows, &task_id, &pod_id).await?
                }
            }
        }
        Ok(())
    }

    /// A current pod the host still runs: live again, and `pod_recovered`
    /// (or `pod_started`, if its start had not been confirmed) when its row
    /// had gone UNKNOWN.
    async fn keep(
        &self,
        hello: &Hello<'_>,
        task_id: &str,
        pod_id: &str,
        recovered: bool,
    ) -> Result<()> {
        let Some(snap) = hello.snapshot.iter().find(|p| p.pod_id == pod_id) else {
            return Ok(());
        };
        let Ok(task) = TaskId::from_db(task_id) else {
            return Ok(());
        };
        self.pods.hosts().set_live(
            task,
            LivePod {
                host_id: hello.host_id.to_owned(),
                pod_id: pod_id.to_owned(),
                generation: snap.generation,
                phase: snap.phase,
                version: snap.version,
            },
        );
        if recovered {
            let now = self.pods.ports().clock.wall_micros();
            let cmd = PodCommand::Recovered {
                pod: PodRef {
                    task_id: task,
                    pod_id: pod_id.to_owned(),
                    generation: snap.generation,
                },
                pid: snap.pid,
                started_at: plausible_time(snap.started_at, now, now),
                host_id: hello.host_id.to_owned(),
            };
            settle(self.store().pod(cmd).await, "recording pod_recovered")?;
        }
        Ok(())
    }

    /// The row's pod is not on the host: lost, unless its StartPod is
    /// still on the way there (the start path settles it).
    async fn missing(
        &self,
        hello: &Hello<'_>,
        rows: &[(PodRef, PodStatus)],
        task_id: &str,
        pod_id: &str,
    ) -> Result<()> {
        let Ok(task) = TaskId::from_db(task_id) else {
            return Ok(());
        };
        if self.pods.hosts().is_starting(pod_id) {
            return Ok(());
        }
        let Some((pod, _)) = rows
            .iter()
            .find(|(p, _)| p.task_id == task && p.pod_id == pod_id)
        else {
            return Ok(());
        };
        let why = if hello.new_boot {
            "its pod-host restarted"
        } else {
            "its pod-host no longer has it"
        };
        self.lose(pod.clone(), hello.host_id, why).await
    }

    /// Kills a stale pod on its host in the background; `pod_fenced` is
    /// queued once the host confirms.
    fn fence(&self, client: Arc<dyn HostCommands>, pod: PodRef, host_id: String) {
        let pods = self.pods.clone();
        let queue = self.queue.clone();
        self.tracker.spawn(
            async move {
                let killed = pods.fence_on_host(client.as_ref(), &pod, "stale pod").await;
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
