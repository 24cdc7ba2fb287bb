//! The schedule RPCs: request ⇄ domain conversions and the handler bodies
//! (`api/mod.rs` delegates to them). Fields are checked in proto field
//! order and the first bad one is reported, as for the task RPCs.

use ipa_proto::time::timestamp_from_micros;
use ipa_proto::v1 as pb;
use tonic::{Request, Response};

use super::convert::WithCaller;
use super::{CentralManagerApi, RpcResult};
use crate::auth::Caller;
use crate::auth::actor::bind;
use crate::auth::layer::caller;
use crate::domain::limits::MAX_CATCHUP_WINDOW_SECONDS;
use crate::domain::schedule::{
    NewSchedule, Overlap, ScheduleCommand, ScheduleId, ScheduleKey, ScheduleName, ScheduleRecord,
    ScheduleTask, Timetable,
};
use crate::domain::timeout::check_timeout;
use crate::domain::{CorrelationId, Description, Metadata, TemplateName, Title, page_limit};
use crate::error::{Error, Result};

fn overlap_from_pb(v: i32) -> Result<Overlap> {
    let o = pb::Overlap::try_from(v)
        .map_err(|_| Error::invalid("overlap", format!("unknown enum value {v}")))?;
    Ok(match o {
        pb::Overlap::Unspecified | pb::Overlap::Skip => Overlap::Skip,
        pb::Overlap::BufferOne => Overlap::BufferOne,
        pb::Overlap::AllowAll => Overlap::AllowAll,
        pb::Overlap::CancelPrevious => Overlap::CancelPrevious,
    })
}

fn overlap_to_pb(o: Overlap) -> pb::Overlap {
    match o {
        Overlap::Skip => pb::Overlap::Skip,
        Overlap::BufferOne => pb::Overlap::BufferOne,
        Overlap::AllowAll => pb::Overlap::AllowAll,
        Overlap::CancelPrevious => pb::Overlap::CancelPrevious,
    }
}

/// The task fields of a schedule. Priority belongs to task priorities
/// (issue 13), which tasks do not have yet: a value is refused rather than
/// stored and silently ignored. The run timeout is passed to every task a
/// fire makes.
fn schedule_task(t: Option<pb::ScheduleTask>) -> Result<ScheduleTask> {
    let t = t.ok_or_else(|| Error::invalid("task", "is required (at least its title)"))?;
    let title = Title::parse(&t.title)?;
    let description = Description::parse(&t.description)?;
    let metadata = Metadata::parse(t.metadata).map_err(|e| match e {
        Error::InvalidArgument { problem, .. } => Error::invalid("task.metadata", problem),
        other => other,
    })?;
    let template = TemplateName::parse(&t.template).map_err(|e| match e {
        Error::InvalidArgument { problem, .. } => Error::invalid("task.template", problem),
        other => other,
    })?;
    let priority = super::convert::priority_from_pb(t.priority, "task.priority")?;
    let restart_policy = super::convert::restart_policy(t.restart_policy)?;
    let timeout_seconds = t
        .timeout_seconds
        .map(|s| check_timeout("task.timeout_seconds", s))
        .transpose()?;
    let mut task = ScheduleTask::new(title, description, metadata, template, restart_policy)?;
    task.timeout_seconds = timeout_seconds;
    task.priority = priority.unwrap_or_default();
    Ok(task)
}

impl TryFrom<pb::CreateScheduleRequest> for NewSchedule {
    type Error = Error;

    fn try_from(r: pb::CreateScheduleRequest) -> Result<Self> {
        Self::try_from(WithCaller(r, None))
    }
}

impl TryFrom<WithCaller<'_, pb::CreateScheduleRequest>> for NewSchedule {
    type Error = Error;

    fn try_from(WithCaller(r, caller): WithCaller<'_, pb::CreateScheduleRequest>) -> Result<Self> {
        let name = ScheduleName::parse(&r.name)?;
        let timetable = Timetable::parse(&r.cron, r.interval_seconds, &r.timezone)?;
        let task = schedule_task(r.task)?;
        let overlap = overlap_from_pb(r.overlap)?;
        if r.catchup_window_seconds > MAX_CATCHUP_WINDOW_SECONDS {
            return Err(Error::invalid(
                "catchup_window_seconds",
                format!(
                    "{} is over the limit of {MAX_CATCHUP_WINDOW_SECONDS} (366 days)",
                    r.catchup_window_seconds
                ),
            ));
        }
        Ok(Self {
            name,
            timetable,
            task,
            overlap,
            catchup_window_seconds: r.catchup_window_seconds,
            paused: r.paused,
            actor: bind(&r.actor_id, caller)?,
            correlation: CorrelationId::parse_or_new(&r.correlation_id)?,
        })
    }
}

fn schedule_command(
    id: &str,
    actor: &str,
    correlation: &str,
    caller: Option<&Caller>,
) -> Result<ScheduleCommand> {
    Ok(ScheduleCommand {
        schedule_id: ScheduleId::parse(id, "schedule_id")?,
        actor: bind(actor, caller)?,
        correlation: CorrelationId::parse_or_new(correlation)?,
    })
}

macro_rules! schedule_commands {
    ($($req:ty),*) => {$(
        impl TryFrom<WithCaller<'_, $req>> for ScheduleCommand {
            type Error = Error;
            fn try_from(WithCaller(r, caller): WithCaller<'_, $req>) -> Result<Self> {
                schedule_command(&r.schedule_id, &r.actor_id, &r.correlation_id, caller)
            }
        }
    )*};
}

schedule_commands!(
    pb::PauseScheduleRequest,
    pb::ResumeScheduleRequest,
    pb::TriggerScheduleRequest,
    pb::DeleteScheduleRequest
);

impl TryFrom<pb::GetScheduleRequest> for ScheduleKey {
    type Error = Error;

    fn try_from(r: pb::GetScheduleRequest) -> Result<Self> {
        if !r.schedule_id.is_empty() {
            return Ok(Self::Id(ScheduleId::parse(&r.schedule_id, "schedule_id")?));
        }
        if r.name.is_empty() {
            return Err(Error::invalid(
                "schedule_id",
                "schedule_id or name is required",
            ));
        }
        Ok(Self::Name(
            ScheduleName::parse(&r.name)?.as_str().to_owned(),
        ))
    }
}

/// A schedule as the API shows it (the task's restart policy as given).
pub fn schedule_to_pb(s: &ScheduleRecord) -> pb::Schedule {
    let p = s.task.restart_policy;
    pb::Schedule {
        schedule_id: s.schedule_id.to_string(),
        name: s.name.as_str().to_owned(),
        cron: s.timetable.cron().to_owned(),
        interval_seconds: s.timetable.interval_seconds(),
        timezone: s.timetable.timezone().to_owned(),
        task: Some(pb::ScheduleTask {
            title: s.task.title.as_str().to_owned(),
            description: s.task.description.as_str().to_owned(),
            metadata: s
                .task
                .metadata
                .entries()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            template: s.task.template.as_str().to_owned(),
            priority: super::convert::priority_to_pb(s.task.priority) as i32,
            restart_policy: Some(pb::RestartPolicy {
                auto_restart: p.auto_restart,
                max_restarts: p.max_restarts,
                window_seconds: p.window_seconds,
                initial_backoff_ms: p.initial_backoff_ms,
                max_backoff_ms: p.max_backoff_ms,
            }),
            timeout_seconds: s.task.timeout_seconds,
        }),
        overlap: overlap_to_pb(s.overlap) as i32,
        catchup_window_seconds: s.catchup_window_seconds,
        paused: s.paused,
        next_fire_at: s.next_fire_at.map(timestamp_from_micros),
        last_fire_at: s.last_fire_at.map(timestamp_from_micros),
        fired_count: s.fired_count,
        skipped_count: s.skipped_count,
        created_by: s.created_by.clone(),
        created_at: Some(timestamp_from_micros(s.created_at)),
    }
}

// ---------- handlers ----------

pub async fn create(
    api: &CentralManagerApi,
    req: Request<pb::CreateScheduleRequest>,
) -> RpcResult<pb::CreateScheduleResponse> {
    let caller = caller(&req);
    let new = NewSchedule::try_from(WithCaller(req.into_inner(), caller.as_ref()))?;
    let span = tracing::Span::current();
    span.record("actor_id", new.actor.as_str());
    span.record("correlation_id", new.correlation.as_str());
    let s = api.schedules.create(new).await?;
    span.record("schedule_id", tracing::field::display(s.schedule_id));
    tracing::info!(name = s.name.as_str(), "schedule created");
    Ok(Response::new(pb::CreateScheduleResponse {
        schedule_id: s.schedule_id.to_string(),
        schedule: Some(schedule_to_pb(&s)),
    }))
}

pub async fn get(
    api: &CentralManagerApi,
    req: Request<pb::GetScheduleRequest>,
) -> RpcResult<pb::Schedule> {
    let key = ScheduleKey::try_from(req.into_inner())?;
    let s = api.schedules.get(&key).await?;
    Ok(Response::new(schedule_to_pb(&s)))
}

pub async fn list(
    api: &CentralManagerApi,
    req: Request<pb::ListSchedulesRequest>,
) -> RpcResult<pb::ListSchedulesResponse> {
    let r = req.into_inner();
    let limit = page_limit(r.limit, "limit")?;
    let list = api.schedules.list(limit, r.offset).await?;
    Ok(Response::new(pb::ListSchedulesResponse {
        schedules: list.iter().map(schedule_to_pb).collect(),
    }))
}

fn command<R>(req: Request<R>) -> Result<ScheduleCommand>
where
    for<'a> ScheduleCommand: TryFrom<WithCaller<'a, R>, Error = Error>,
{
    let caller = caller(&req);
    let c = ScheduleCommand::try_from(WithCaller(req.into_inner(), caller.as_ref()))?;
    let span = tracing::Span::current();
    span.record("schedule_id", tracing::field::display(c.schedule_id));
    span.record("actor_id", c.actor.as_str());
    span.record("correlation_id", c.correlation.as_str());
    Ok(c)
}

pub async fn pause(
    api: &CentralManagerApi,
    req: Request<pb::PauseScheduleRequest>,
) -> RpcResult<pb::PauseScheduleResponse> {
    let s = api.schedules.pause(command(req)?).await?;
    Ok(Response::new(pb::PauseScheduleResponse {
        schedule: Some(schedule_to_pb(&s)),
    }))
}

pub async fn resume(
    api: &CentralManagerApi,
    req: Request<pb::ResumeScheduleRequest>,
) -> RpcResult<pb::ResumeScheduleResponse> {
    let s = api.schedules.resume(command(req)?).await?;
    Ok(Response::new(pb::ResumeScheduleResponse {
        schedule: Some(schedule_to_pb(&s)),
    }))
}

pub async fn trigger(
    api: &CentralManagerApi,
    req: Request<pb::TriggerScheduleRequest>,
) -> RpcResult<pb::TriggerScheduleResponse> {
    let task = api.schedules.trigger(command(req)?).await?;
    Ok(Response::new(pb::TriggerScheduleResponse {
        task_id: task.map(|t| t.to_string()).unwrap_or_default(),
    }))
}

pub async fn delete(
    api: &CentralManagerApi,
    req: Request<pb::DeleteScheduleRequest>,
) -> RpcResult<pb::DeleteScheduleResponse> {
    api.schedules.delete(command(req)?).await?;
    Ok(Response::new(pb::DeleteScheduleResponse {}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::timeout::MAX_TIMEOUT_SECONDS;

    fn create(name: &str, cron: &str, every: u64) -> pb::CreateScheduleRequest {
        pb::CreateScheduleRequest {
            name: name.into(),
            cron: cron.into(),
            interval_seconds: every,
            task: Some(pb::ScheduleTask {
                title: "t".into(),
                ..Default::default()
            }),
            actor_id: "alice".into(),
            ..Default::default()
        }
    }

    fn field(r: Result<NewSchedule>) -> String {
        match r {
            Err(Error::InvalidArgument { field, .. }) => field.to_owned(),
            Err(Error::InvalidSchedule(_)) => "INVALID_SCHEDULE".into(),
            Err(e) => format!("{e:?}"),
            Ok(_) => "ok".into(),
        }
    }

    #[test]
    fn create_checks_in_field_order() {
        assert_eq!(field(NewSchedule::try_from(create("", "", 0))), "name");
        assert_eq!(
            field(NewSchedule::try_from(create("n", "", 0))),
            "INVALID_SCHEDULE"
        );
        assert_eq!(
            field(NewSchedule::try_from(create("n", "* * *", 0))),
            "INVALID_SCHEDULE"
        );
        let mut r = create("n", "", 60);
        r.task = None;
        assert_eq!(field(NewSchedule::try_from(r)), "task");
        let mut r = create("n", "", 60);
        r.task.as_mut().unwrap().priority = 9;
        assert_eq!(field(NewSchedule::try_from(r)), "task.priority");
        let mut r = create("n", "", 60);
        r.task.as_mut().unwrap().priority = pb::Priority::High as i32;
        let s = NewSchedule::try_from(r).unwrap();
        assert_eq!(
            s.task.priority,
            crate::domain::Priority::High,
            "given to the fired tasks"
        );
        let mut r = create("n", "", 60);
        r.task.as_mut().unwrap().timeout_seconds = Some(0);
        assert_eq!(field(NewSchedule::try_from(r)), "task.timeout_seconds");
        let mut r = create("n", "", 60);
        r.task.as_mut().unwrap().timeout_seconds = Some(MAX_TIMEOUT_SECONDS + 1);
        assert_eq!(field(NewSchedule::try_from(r)), "task.timeout_seconds");
        let mut r = create("n", "", 60);
        r.task.as_mut().unwrap().timeout_seconds = Some(5);
        let s = NewSchedule::try_from(r).unwrap();
        assert_eq!(s.task.timeout_seconds, Some(5), "passed to the fired tasks");
        let mut r = create("n", "", 60);
        r.task.as_mut().unwrap().template = "a b".into();
        assert_eq!(field(NewSchedule::try_from(r)), "task.template");
        let mut r = create("n", "", 60);
        r.overlap = 9;
        assert_eq!(field(NewSchedule::try_from(r)), "overlap");
        let mut r = create("n", "", 60);
        r.catchup_window_seconds = MAX_CATCHUP_WINDOW_SECONDS + 1;
        assert_eq!(field(NewSchedule::try_from(r)), "catchup_window_seconds");
        let mut r = create("n", "", 60);
        r.catchup_window_seconds = MAX_CATCHUP_WINDOW_SECONDS;
        assert_eq!(field(NewSchedule::try_from(r)), "ok");
        let mut r = create("n", "", 60);
        r.actor_id = String::new();
        assert!(matches!(
            NewSchedule::try_from(r),
            Err(Error::MissingActorId)
        ));
        let mut r = create("n", "", 60);
        r.task.as_mut().unwrap().title = " ".into();
        assert!(matches!(
            NewSchedule::try_from(r),
            Err(Error::InvalidTitle(_))
        ));
    }

    #[test]
    fn a_created_schedule_reads_back() {
        let mut r = create("nightly", "30 2 * * *", 0);
        r.timezone = "Europe/Berlin".into();
        r.overlap = pb::Overlap::BufferOne as i32;
        let n = NewSchedule::try_from(r).unwrap();
        assert_eq!(n.overlap, Overlap::BufferOne);
        assert_eq!(n.timetable.timezone(), "Europe/Berlin");
        assert_eq!(overlap_from_pb(0).unwrap(), Overlap::Skip);
        for o in Overlap::ALL {
            assert_eq!(overlap_from_pb(overlap_to_pb(*o) as i32).unwrap(), *o);
        }
    }

    #[test]
    fn get_by_id_or_name() {
        let id = ScheduleId::new();
        let k = ScheduleKey::try_from(pb::GetScheduleRequest {
            schedule_id: id.to_string(),
            name: "ignored".into(),
        })
        .unwrap();
        assert_eq!(k, ScheduleKey::Id(id));
        let k = ScheduleKey::try_from(pb::GetScheduleRequest {
            schedule_id: String::new(),
            name: "nightly".into(),
        })
        .unwrap();
        assert_eq!(k, ScheduleKey::Name("nightly".into()));
        assert!(ScheduleKey::try_from(pb::GetScheduleRequest::default()).is_err());
        assert!(
            ScheduleKey::try_from(pb::GetScheduleRequest {
                schedule_id: "x".into(),
                name: String::new(),
            })
            .is_err()
        );
    }
}
