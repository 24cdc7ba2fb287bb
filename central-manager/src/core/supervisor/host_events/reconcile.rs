//! The reconcile job: a hello's snapshot squared with the rows that place
//! pods on that host, carrying out what the pure rules of
//! [`super::super::reconcile`] decide: current pods kept (recovered if they
//! were UNKNOWN), missing ones lost, stale ones killed on the host.
//!
//! A host with thousands of pods says hello after every central restart:
//! its snapshot and rows are indexed once by pod id (not searched per pod),
//! and the writes of all its recovered and lost pods go to the store
//! together, sharing the writer's transactions. They concern one pod each,
//! so their order does not matter; if some are not committed (the store is
//! unavailable), the whole reconciliation runs again, and what was
//! committed is then already settled (a recovered pod is RUNNING, a lost
//! one is no longer on the host).

use std::collections::{HashMap, HashSet};
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
    /// A requery: only these rows (if still unsettled) and the host's pods
    /// of their tasks are reconciled, and with `true` the pods no row
    /// places on the host; a hello reconciles everything.
    pub only: Option<(&'a [PodRef], bool)>,
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
        let (rows, snapshot) = match hello.only {
            None => (rows, hello.snapshot.to_vec()),
            Some((only, orphans)) => self.restrict(rows, hello.snapshot, only, orphans),
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
                alive: p.alive,
            })
            .collect();
        let by_pod: HashMap<&str, &PodSnapshot> =
            snapshot.iter().map(|p| (p.pod_id.as_str(), p)).collect();
        let row_of: HashMap<&str, &PodRef> =
            rows.iter().map(|(p, _)| (p.pod_id.as_str(), p)).collect();
        let mut recovered = Vec::new();
        let mut lost = Vec::new();
        for action in reconcile::reconcile(&db, &host, hello.new_boot) {
            match action {
                Action::Keep {
                    task_id,
                    pod_id,
                    recovered: was_unknown,
                } => {
                    let Some(snap) = by_pod.get(pod_id.as_str()) else {
                        continue;
                    };
                    if let Some(cmd) = self.keep(&hello, snap, &task_id, was_unknown) {
                        recovered.push(cmd);
                    }
                }
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
                    if let Some(pod) = self.missing(&row_of, &task_id, &pod_id) {
                        lost.push(pod);
                    }
                }
            }
        }
        let why = if hello.new_boot {
            "its pod-host restarted"
        } else {
            "its pod-host no longer has it"
        };
        let recover = recovered.into_iter().map(|cmd| async move {
            settle(self.store().pod(cmd).await, "recording pod_recovered").map(drop)
        });
        let lose = lost
            .into_iter()
            .map(|pod| self.lose(pod, hello.host_id, why));
        let (a, b) = futures::future::join(
            futures::future::join_all(recover),
            futures::future::join_all(lose),
        )
        .await;
        a.into_iter().chain(b).collect()
    }

    /// A requery's rows: those among `only` that are still unsettled (the
    /// same pod, STARTING with no start in flight or UNKNOWN), and the
    /// host's pods of their tasks, and with `orphans` the pods no row
    /// places on this host (which the rules then fence, as after a hello).
    fn restrict(
        &self,
        rows: Vec<(PodRef, PodStatus)>,
        snapshot: &[PodSnapshot],
        only: &[PodRef],
        orphans: bool,
    ) -> (Vec<(PodRef, PodStatus)>, Vec<PodSnapshot>) {
        let only: HashSet<&PodRef> = only.iter().collect();
        let owned: HashSet<String> = rows.iter().map(|(p, _)| p.pod_id.clone()).collect();
        let rows: Vec<(PodRef, PodStatus)> = rows
            .into_iter()
            .filter(|(p, s)| {
                matches!(s, PodStatus::Starting | PodStatus::Unknown)
                    && only.contains(p)
                    && !self.pods.hosts().is_starting(&p.pod_id)
            })
            .collect();
        let tasks: HashSet<String> = rows.iter().map(|(p, _)| p.task_id.to_string()).collect();
        let snapshot = snapshot
            .iter()
            .filter(|p| tasks.contains(&p.task_id) || (orphans && !owned.contains(&p.pod_id)))
            .cloned()
            .collect();
        (rows, snapshot)
    }

    /// A current pod the host still runs: live again; when its row had
    /// gone UNKNOWN, the `pod_recovered` to write (`pod_started`, if its
    /// start had not been confirmed).
    fn keep(
        &self,
        hello: &Hello<'_>,
        snap: &PodSnapshot,
        task_id: &str,
        recovered: bool,
    ) -> Option<PodCommand> {
        let task = TaskId::from_db(task_id).ok()?;
        let pod_id = snap.pod_id.as_str();
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
        if !recovered {
            return None;
        }
        let now = self.pods.ports().clock.wall_micros();
        Some(PodCommand::Recovered {
            pod: PodRef {
                task_id: task,
                pod_id: pod_id.to_owned(),
                generation: snap.generation,
            },
            pid: snap.pid,
            started_at: plausible_time(snap.started_at, now, now),
            host_id: hello.host_id.to_owned(),
        })
    }

    /// The row's pod is not on the host: to be lost, unless its StartPod
    /// is still on the way there (the start path settles it).
    fn missing(
        &self,
        row_of: &HashMap<&str, &PodRef>,
        task_id: &str,
        pod_id: &str,
    ) -> Option<PodRef> {
        let task = TaskId::from_db(task_id).ok()?;
        if self.pods.hosts().is_starting(pod_id) {
            return None;
        }
        row_of
            .get(pod_id)
            .filter(|p| p.task_id == task)
            .map(|p| (*p).clone())
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
