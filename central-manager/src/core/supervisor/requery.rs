//! Asking a connected pod-host again about the pods central holds as
//! STARTING (no start in flight) or UNKNOWN there (see [`super::unsettled`]
//! for when and why). The host's ListPods answer goes to the ordered
//! applier as a [`Job::Requery`], reconciled by the rules of a hello's
//! snapshot but only for the rows found unsettled before the host was
//! asked: a pod still there is kept (RUNNING with its real pid), one that
//! is not is lost (and the restart policy decides), a stale generation is
//! fenced. Rows that moved on meanwhile are left alone (every pod command
//! is conditional on its pod). Pods the host runs that no row places there
//! (orphans: their task's terminal write committed while its caller was
//! told it failed, so nobody stopped them) are fenced as a hello's
//! reconciliation fences them; a host is marked for this after such an
//! ambiguous write ([`crate::core::pods::Pods::after_ambiguous_write`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::host_events::{Job, JobQueue};
use crate::core::pods::Pods;
use crate::core::ports::HostCommands;
use crate::domain::{PodRef, PodStatus};

/// Bound on one ListPods (a host that does not answer is asked again at
/// the next backoff).
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// One ask of `host_id` (begun at `epoch` of its mark).
pub(super) async fn ask(
    pods: Pods,
    queue: JobQueue,
    host_id: String,
    epoch: u64,
    client: Arc<dyn HostCommands>,
) {
    let unsettled = pods.unsettled().clone();
    let rows = match pods.ports().store.pods_on_host(&host_id).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::debug!(%host_id, error = %e, "could not read the pods of a host to ask it again");
            return;
        }
    };
    let owned: HashSet<String> = rows.iter().map(|(p, _)| p.pod_id.clone()).collect();
    let suspects: Vec<PodRef> = rows
        .into_iter()
        .filter(|(p, s)| {
            matches!(s, PodStatus::Starting | PodStatus::Unknown)
                && !pods.hosts().is_starting(&p.pod_id)
        })
        .map(|(p, _)| p)
        .collect();
    // A start abandoned since the rows were read is marked before it stops
    // counting as in flight, so it is either left out above or seen here:
    // then its StartPod may still be on the wire, and the host is asked
    // once its lease has passed (the next backoff).
    if !unsettled.quiet(&host_id, pods.ports().clock.now()) {
        return;
    }
    let orphan_check = unsettled.wants_orphans(&host_id);
    if suspects.is_empty() && !orphan_check {
        unsettled.settled(&host_id, epoch);
        return;
    }
    let snapshot = match tokio::time::timeout(LIST_TIMEOUT, client.list_pods()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(%host_id, error = %e.message(), "pod-host did not list its pods; asking again later");
            return;
        }
        Err(_) => {
            tracing::info!(%host_id, "pod-host did not list its pods in time; asking again later");
            return;
        }
    };
    // Only a hint: the applier reads the rows again before fencing any
    // pod (one claimed since the read above is owned by then).
    let orphans = snapshot
        .iter()
        .filter(|p| orphan_check && !owned.contains(&p.pod_id))
        .count();
    if suspects.is_empty() && orphans == 0 {
        unsettled.settled(&host_id, epoch);
        return;
    }
    tracing::info!(%host_id, pods = suspects.len(), orphans, "asked a connected pod-host again about unsettled pods");
    queue.push(Job::Requery {
        host_id,
        suspects,
        snapshot,
        client,
        orphans: orphan_check,
    });
}
