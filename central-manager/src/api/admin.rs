//! The admin RPCs of `admin.proto` that central serves: DeleteTask,
//! CancelTasks, ArchiveTasks, GetStats. Request ⇄ domain conversions (in
//! proto field order, first bad field reported) and the handler bodies that
//! `api/mod.rs` delegates to.

use ipa_proto::time::micros_from_timestamp;
use ipa_proto::v1 as pb;
use tonic::{Request, Response};

use super::convert::WithCaller;
use super::convert::{
    metadata_filter, phase_from_pb, phase_to_pb, pod_status_filter, priority_from_pb, task_id,
    task_status_to_pb,
};
use super::{CentralManagerApi, RpcResult};
use crate::auth::actor::bind;
use crate::auth::layer::caller;
use crate::core::retention::CancelMany;
use crate::domain::stats::{GroupBy, Percentiles, StatsGroup, StatsQuery};
use crate::domain::{ActorId, CorrelationId, MAX_REASON_CHARS, TaskFilter, TaskId, TaskStatus};
use crate::error::{Error, Result};

fn timestamp(ts: Option<prost_types::Timestamp>, field: &'static str) -> Result<Option<i64>> {
    ts.map(|ts| {
        micros_from_timestamp(&ts).ok_or_else(|| Error::invalid(field, "is not a valid timestamp"))
    })
    .transpose()
}

/// A required reason of at most 1,000 characters (MISSING_REASON when
/// empty).
fn required_reason(reason: &str) -> Result<String> {
    if reason.trim().is_empty() {
        return Err(Error::MissingReason);
    }
    let n = reason.chars().count();
    if n > MAX_REASON_CHARS {
        return Err(Error::invalid(
            "reason",
            format!("is {n} characters long; the limit is {MAX_REASON_CHARS}"),
        ));
    }
    Ok(reason.to_owned())
}

/// DeleteTask, validated.
#[derive(Debug, Clone)]
pub struct DeleteTask {
    pub task_id: TaskId,
    pub actor: ActorId,
    pub reason: String,
    pub correlation: CorrelationId,
}

// The admin requests convert with or without an authenticated caller
// (without: auth is off, `actor_id` is taken as given).
super::convert::without_caller! {
    pb::DeleteTaskRequest => DeleteTask,
    pb::CancelTasksRequest => CancelMany,
    pb::ArchiveTasksRequest => ArchiveTasks,
}

impl TryFrom<WithCaller<'_, pb::DeleteTaskRequest>> for DeleteTask {
    type Error = Error;
    fn try_from(WithCaller(r, caller): WithCaller<'_, pb::DeleteTaskRequest>) -> Result<Self> {
        Ok(Self {
            task_id: task_id(&r.task_id)?,
            actor: bind(&r.actor_id, caller)?,
            reason: required_reason(&r.reason)?,
            correlation: CorrelationId::parse_or_new(&r.correlation_id)?,
        })
    }
}

fn task_status_filter(v: i32) -> Result<Option<TaskStatus>> {
    let s = pb::TaskStatus::try_from(v)
        .map_err(|_| Error::invalid("status", format!("unknown enum value {v}")))?;
    Ok(match s {
        pb::TaskStatus::Unspecified => None,
        pb::TaskStatus::Inactive => Some(TaskStatus::Inactive),
        pb::TaskStatus::Active => Some(TaskStatus::Active),
        pb::TaskStatus::Completed => Some(TaskStatus::Completed),
        pb::TaskStatus::Cancelled => Some(TaskStatus::Cancelled),
        pb::TaskStatus::Failed => Some(TaskStatus::Failed),
    })
}

impl TryFrom<WithCaller<'_, pb::CancelTasksRequest>> for CancelMany {
    type Error = Error;
    fn try_from(WithCaller(r, caller): WithCaller<'_, pb::CancelTasksRequest>) -> Result<Self> {
        let status = task_status_filter(r.status)?;
        let phase = phase_from_pb(r.phase, "phase")?;
        let created_after = timestamp(r.created_after, "created_after")?;
        let created_by = r.created_by.trim();
        let created_by = (!created_by.is_empty()).then(|| created_by.to_owned());
        let priority = priority_from_pb(r.priority, "priority")?;
        let pod_status = pod_status_filter(r.pod_status)?;
        let metadata_equals = metadata_filter(r.metadata_equals)?;
        let reason = required_reason(&r.reason)?;
        Ok(Self {
            filter: TaskFilter {
                status,
                phase,
                created_after,
                created_by,
                pod_status,
                priority,
                metadata_equals,
                include_archived: false,
            },
            reason,
            dry_run: r.dry_run,
            actor: bind(&r.actor_id, caller)?,
            correlation: CorrelationId::parse_or_new(&r.correlation_id)?,
        })
    }
}

/// ArchiveTasks, validated.
#[derive(Debug, Clone)]
pub struct ArchiveTasks {
    pub finished_before: i64,
    pub actor: ActorId,
    pub correlation: CorrelationId,
}

impl TryFrom<WithCaller<'_, pb::ArchiveTasksRequest>> for ArchiveTasks {
    type Error = Error;
    fn try_from(WithCaller(r, caller): WithCaller<'_, pb::ArchiveTasksRequest>) -> Result<Self> {
        let finished_before = timestamp(r.finished_before, "finished_before")?
            .ok_or_else(|| Error::invalid("finished_before", "is required"))?;
        Ok(Self {
            finished_before,
            actor: bind(&r.actor_id, caller)?,
            correlation: CorrelationId::parse_or_new(&r.correlation_id)?,
        })
    }
}

impl TryFrom<pb::GetStatsRequest> for StatsQuery {
    type Error = Error;
    fn try_from(r: pb::GetStatsRequest) -> Result<Self> {
        let created_after = timestamp(r.created_after, "created_after")?;
        let created_before = timestamp(r.created_before, "created_before")?;
        let g = pb::GroupBy::try_from(r.group_by).map_err(|_| {
            Error::invalid("group_by", format!("unknown enum value {}", r.group_by))
        })?;
        let group_by = match g {
            pb::GroupBy::Unspecified | pb::GroupBy::None => GroupBy::None,
            pb::GroupBy::Template => GroupBy::Template,
            pb::GroupBy::CreatedBy => GroupBy::CreatedBy,
        };
        Ok(Self {
            created_after,
            created_before,
            group_by,
        })
    }
}

fn percentiles_to_pb(p: Percentiles) -> pb::DurationPercentiles {
    pb::DurationPercentiles {
        p50_seconds: p.p50,
        p95_seconds: p.p95,
    }
}

/// One group of GetStats.
pub fn stats_group_to_pb(g: &StatsGroup) -> pb::StatsGroup {
    pb::StatsGroup {
        key: g.key.clone(),
        total: g.total,
        status_counts: g
            .by_status
            .iter()
            .map(|(s, n)| pb::StatusCount {
                status: task_status_to_pb(*s) as i32,
                count: *n,
            })
            .collect(),
        phase_counts: g
            .by_phase
            .iter()
            .map(|(p, n)| pb::PhaseCount {
                phase: phase_to_pb(*p) as i32,
                count: *n,
            })
            .collect(),
        completion_rate: g.completion_rate,
        failure_rate: g.failure_rate,
        time_to_complete: Some(percentiles_to_pb(g.time_to_complete)),
        phase_durations: g
            .phase_durations
            .iter()
            .map(|(p, d)| pb::PhaseDuration {
                phase: phase_to_pb(*p) as i32,
                duration: Some(percentiles_to_pb(*d)),
            })
            .collect(),
        restarts_mean: g.restarts_mean,
        restarts_max: g.restarts_max,
    }
}

fn record(actor: &ActorId, correlation: &CorrelationId) {
    let span = tracing::Span::current();
    span.record("actor_id", actor.as_str());
    span.record("correlation_id", correlation.as_str());
}

// ---------- handlers ----------

/// GetClusterInfo: the lease row and the replicas seen lately.
pub async fn cluster_info(
    leadership: Option<&crate::core::leadership::Leadership>,
) -> RpcResult<pb::GetClusterInfoResponse> {
    let leadership =
        leadership.ok_or_else(|| Error::Internal("this process runs no elector".into()))?;
    let rows = leadership.cluster().await?;
    let leader = if rows.lease.held() {
        rows.lease.replica_id.clone()
    } else {
        String::new()
    };
    let replicas = rows
        .replicas
        .into_iter()
        .map(|r| pb::Replica {
            leader: !leader.is_empty() && r.replica_id == leader,
            replica_id: r.replica_id,
            address: r.address,
            last_seen_at: Some(ipa_proto::time::timestamp_from_micros(r.last_seen_at)),
        })
        .collect();
    Ok(Response::new(pb::GetClusterInfoResponse {
        leader_replica_id: leader,
        epoch: rows.lease.epoch,
        replicas,
    }))
}

pub async fn delete_task(
    api: &CentralManagerApi,
    req: Request<pb::DeleteTaskRequest>,
) -> RpcResult<pb::DeleteTaskResponse> {
    let caller = caller(&req);
    let d = DeleteTask::try_from(WithCaller(req.into_inner(), caller.as_ref()))?;
    record(&d.actor, &d.correlation);
    api.retention
        .delete_task(d.task_id, d.reason, d.actor, d.correlation)
        .await?;
    tracing::info!("task deleted");
    Ok(Response::new(pb::DeleteTaskResponse {}))
}

pub async fn cancel_tasks(
    api: &CentralManagerApi,
    req: Request<pb::CancelTasksRequest>,
) -> RpcResult<pb::CancelTasksResponse> {
    let caller = caller(&req);
    let c = CancelMany::try_from(WithCaller(req.into_inner(), caller.as_ref()))?;
    record(&c.actor, &c.correlation);
    let dry_run = c.dry_run;
    let ids = api.retention.cancel_tasks(c).await?;
    tracing::info!(count = ids.len(), dry_run, "CancelTasks");
    Ok(Response::new(pb::CancelTasksResponse {
        count: ids.len() as u64,
        task_ids: ids.iter().map(ToString::to_string).collect(),
    }))
}

pub async fn archive_tasks(
    api: &CentralManagerApi,
    req: Request<pb::ArchiveTasksRequest>,
) -> RpcResult<pb::ArchiveTasksResponse> {
    let caller = caller(&req);
    let a = ArchiveTasks::try_from(WithCaller(req.into_inner(), caller.as_ref()))?;
    record(&a.actor, &a.correlation);
    let count = api
        .retention
        .archive(a.finished_before, a.actor, a.correlation)
        .await?;
    Ok(Response::new(pb::ArchiveTasksResponse { count }))
}

pub async fn get_stats(
    api: &CentralManagerApi,
    req: Request<pb::GetStatsRequest>,
) -> RpcResult<pb::GetStatsResponse> {
    let q = StatsQuery::try_from(req.into_inner())?;
    let groups = api.retention.stats(q).await?;
    let running_pods = api.retention.running_pods().await?;
    let queue = api.retention.queue_stats().await?;
    Ok(Response::new(pb::GetStatsResponse {
        groups: groups.iter().map(stats_group_to_pb).collect(),
        // Tasks have no queue yet (issue 13): nothing is ever queued.
        queue_depth: queue
            .depth
            .iter()
            .map(|(p, n)| pb::QueueDepth {
                priority: super::convert::priority_to_pb(*p) as i32,
                count: *n,
            })
            .collect(),
        running_pods,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PodStatus;

    fn field<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r {
            Err(Error::InvalidArgument { field, .. }) => field.to_owned(),
            Err(Error::MissingReason) => "MISSING_REASON".into(),
            Err(Error::MissingActorId) => "MISSING_ACTOR_ID".into(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn delete_needs_id_actor_and_reason_in_that_order() {
        let id = TaskId::new().to_string();
        let r = |t: &str, a: &str, why: &str| pb::DeleteTaskRequest {
            task_id: t.into(),
            actor_id: a.into(),
            reason: why.into(),
            correlation_id: String::new(),
        };
        assert_eq!(field(DeleteTask::try_from(r("x", "", ""))), "task_id");
        assert_eq!(
            field(DeleteTask::try_from(r(&id, "", ""))),
            "MISSING_ACTOR_ID"
        );
        assert_eq!(
            field(DeleteTask::try_from(r(&id, "a", " "))),
            "MISSING_REASON"
        );
        assert_eq!(
            field(DeleteTask::try_from(r(&id, "a", &"w".repeat(1001)))),
            "reason"
        );
        assert!(DeleteTask::try_from(r(&id, "a", &"w".repeat(1000))).is_ok());
    }

    #[test]
    fn cancel_tasks_filters_and_reason() {
        let ok = pb::CancelTasksRequest {
            reason: "cleanup".into(),
            actor_id: "root".into(),
            metadata_equals: [("ipa.schedule_id".into(), "x".into())].into(),
            pod_status: pb::PodStatus::Running as i32,
            ..Default::default()
        };
        let c = CancelMany::try_from(ok.clone()).unwrap();
        assert_eq!(c.filter.pod_status, Some(PodStatus::Running));
        assert_eq!(c.filter.metadata_equals.len(), 1);
        assert!(!c.dry_run);
        let mut r = ok.clone();
        r.priority = pb::Priority::High as i32;
        let c = CancelMany::try_from(r).unwrap();
        assert_eq!(c.filter.priority, Some(crate::domain::Priority::High));
        let mut r = ok.clone();
        r.priority = 42;
        assert_eq!(field(CancelMany::try_from(r)), "priority");
        let mut r = ok.clone();
        r.pod_status = 42;
        assert_eq!(field(CancelMany::try_from(r)), "pod_status");
        let mut r = ok.clone();
        r.metadata_equals = [(String::new(), "v".into())].into();
        assert_eq!(field(CancelMany::try_from(r)), "metadata_equals");
        let mut r = ok;
        r.reason = String::new();
        assert_eq!(field(CancelMany::try_from(r)), "MISSING_REASON");
    }

    #[test]
    fn archive_needs_a_cut_off() {
        let r = pb::ArchiveTasksRequest {
            actor_id: "root".into(),
            ..Default::default()
        };
        assert_eq!(field(ArchiveTasks::try_from(r.clone())), "finished_before");
        let mut ok = r;
        ok.finished_before = Some(prost_types::Timestamp {
            seconds: 10,
            nanos: 0,
        });
        assert_eq!(
            ArchiveTasks::try_from(ok).unwrap().finished_before,
            10_000_000
        );
    }

    #[test]
    fn stats_query() {
        let q = StatsQuery::try_from(pb::GetStatsRequest::default()).unwrap();
        assert_eq!(q, StatsQuery::default());
        let bad = pb::GetStatsRequest {
            group_by: 9,
            ..Default::default()
        };
        assert_eq!(field(StatsQuery::try_from(bad)), "group_by");
        let bad = pb::GetStatsRequest {
            created_before: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: -1,
            }),
            ..Default::default()
        };
        assert_eq!(field(StatsQuery::try_from(bad)), "created_before");
    }
}
