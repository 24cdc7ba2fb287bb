//! Re-adopting a host's pods: the applier's side of a hello. The snapshot
//! is squared with the rows that place pods on this host ([`reconcile`],
//! pure): current pods are kept (recovered if they were UNKNOWN), missing
//! ones lost, stale ones killed on the host.
//!
//! A host with thousands of pods says hello after every central restart:
//! its snapshot is indexed once (not searched per pod), and the writes of
//! all its recovered and lost pods go to the writer together, sharing its
//! transactions. They concern one pod each of different tasks, so their
//! order does not matter; if some are not committed (the store is
//! unavailable), the whole reconciliation runs again, and what was
//! committed is then already settled (a recovered pod is RUNNING, a lost
//! one is no longer on the host).

use std::collections::HashMap;

use ipa_proto::v1::{self as pb, pod_host_client::PodHostClient};
use tracing::Instrument;

use super::host_events::{HostEvents, Job, settle};
use super::reconcile::{self, Action, DbPod, HostPod};
use super::runner::phase_from_pb;
use crate::domain::{PodStatus, TaskId};
use crate::error::Result;
use crate::hosts::TracedChannel as Channel;
use crate::hosts::directory::LivePod;
use crate::hosts::hello::plausible_time;
use crate::store::pods::{PodCommand, PodRef};

impl HostEvents {
    /// Reconciles `host_id`'s hello snapshot with the database.
    pub(super) async fn reconcile(
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
        let by_pod: HashMap<&str, &pb::PodInfo> =
            snapshot.iter().map(|p| (p.pod_id.as_str(), p)).collect();
        let row_of: HashMap<&str, &PodRef> =
            rows.iter().map(|(p, _)| (p.pod_id.as_str(), p)).collect();
        let now = ipa_proto::time::now_micros();
        let mut recovered = Vec::new();
        let mut lost = Vec::new();
        for action in reconcile::reconcile(&db, &host, new_boot) {
            match action {
                Action::Keep {
                    task_id,
                    pod_id,
                    recovered: was_unknown,
                } => {
                    let Some(snap) = by_pod.get(pod_id.as_str()) else {
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
                    if was_unknown {
                        recovered.push(PodCommand::Recovered {
                            pod: PodRef {
                                task_id: task,
                                pod_id,
                                generation: snap.generation,
                            },
                            pid: snap.pid,
                            started_at: plausible_time(snap.started_at.as_ref(), now, now),
                            host_id: host_id.to_owned(),
                        });
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
                    if self.pods.hosts().is_starting(&pod_id) {
                        // Its StartPod is still on the way to the host: the
                        // start path settles it.
                        continue;
                    }
                    let Some(pod) = row_of
                        .get(pod_id.as_str())
                        .filter(|p| p.task_id.to_string() == task_id)
                    else {
                        continue;
                    };
                    lost.push((*pod).clone());
                }
            }
        }
        let why = if new_boot {
            "its pod-host restarted"
        } else {
            "its pod-host no longer has it"
        };
        let recover = recovered.into_iter().map(|cmd| async move {
            settle(self.store.pod(cmd).await, "recording pod_recovered").map(drop)
        });
        let lose = lost.into_iter().map(|pod| self.lose(pod, host_id, why));
        let (a, b) = futures::future::join(
            futures::future::join_all(recover),
            futures::future::join_all(lose),
        )
        .await;
        a.into_iter().chain(b).collect()
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
