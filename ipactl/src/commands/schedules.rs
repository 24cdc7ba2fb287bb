//! `schedules create|get|list|pause|resume|trigger|delete`. Schedules are
//! named by id or by name; a name is resolved with GetSchedule first.

use ipa_proto::v1 as pb;

use crate::cli::{CreateScheduleArgs, SchedulesCmd};
use crate::connect::Conn;
use crate::error::CliError;
use crate::output::Output;
use crate::views::schedules::{schedule_detail, schedule_list};

pub async fn run(conn: &Conn, out: &Output, cmd: SchedulesCmd) -> Result<(), CliError> {
    match cmd {
        SchedulesCmd::Create(a) => create(conn, out, a).await,
        SchedulesCmd::Get { schedule } => {
            let s = get(conn, &schedule).await?;
            out.message(&s, |ctx| schedule_detail(&s, ctx))
        }
        SchedulesCmd::List { limit, offset } => {
            let r = conn
                .client
                .clone()
                .list_schedules(conn.unary(pb::ListSchedulesRequest {
                    limit,
                    offset,
                    ..Default::default()
                }))
                .await
                .map_err(conn.err("ListSchedules"))?
                .into_inner();
            out.message(&r, |ctx| schedule_list(&r.schedules, ctx))
        }
        SchedulesCmd::Pause { schedule } => {
            let id = resolve(conn, &schedule).await?;
            let r = conn
                .client
                .clone()
                .pause_schedule(conn.unary(pb::PauseScheduleRequest {
                    schedule_id: id,
                    actor_id: conn.actor.clone(),
                    correlation_id: conn.correlation.clone(),
                    ..Default::default()
                }))
                .await
                .map_err(conn.err("PauseSchedule"))?
                .into_inner();
            out.message(&r, |ctx| match &r.schedule {
                Some(s) => schedule_detail(s, ctx),
                None => format!("paused schedule {schedule}"),
            })
        }
        SchedulesCmd::Resume { schedule } => {
            let id = resolve(conn, &schedule).await?;
            let r = conn
                .client
                .clone()
                .resume_schedule(conn.unary(pb::ResumeScheduleRequest {
                    schedule_id: id,
                    actor_id: conn.actor.clone(),
                    correlation_id: conn.correlation.clone(),
                    ..Default::default()
                }))
                .await
                .map_err(conn.err("ResumeSchedule"))?
                .into_inner();
            out.message(&r, |ctx| match &r.schedule {
                Some(s) => schedule_detail(s, ctx),
                None => format!("resumed schedule {schedule}"),
            })
        }
        SchedulesCmd::Trigger { schedule } => {
            let id = resolve(conn, &schedule).await?;
            let r = conn
                .client
                .clone()
                .trigger_schedule(conn.unary(pb::TriggerScheduleRequest {
                    schedule_id: id,
                    actor_id: conn.actor.clone(),
                    correlation_id: conn.correlation.clone(),
                    ..Default::default()
                }))
                .await
                .map_err(conn.err("TriggerSchedule"))?
                .into_inner();
            out.message(&r, |_| {
                if r.task_id.is_empty() {
                    format!("schedule {schedule} fired; its overlap rule created no task")
                } else {
                    format!("schedule {schedule} fired: task {}", r.task_id)
                }
            })
        }
        SchedulesCmd::Delete { schedule } => {
            let id = resolve(conn, &schedule).await?;
            let r = conn
                .client
                .clone()
                .delete_schedule(conn.unary(pb::DeleteScheduleRequest {
                    schedule_id: id,
                    actor_id: conn.actor.clone(),
                    correlation_id: conn.correlation.clone(),
                    ..Default::default()
                }))
                .await
                .map_err(conn.err("DeleteSchedule"))?
                .into_inner();
            out.message(&r, |_| format!("deleted schedule {schedule}"))
        }
    }
}

async fn create(conn: &Conn, out: &Output, a: CreateScheduleArgs) -> Result<(), CliError> {
    let to_u32 = |flag: &str, d: std::time::Duration| {
        u32::try_from(d.as_secs()).map_err(|_| CliError::Invalid(format!("{flag} is too long")))
    };
    let task = pb::ScheduleTask {
        title: a.title,
        description: a.description,
        metadata: a.metadata.into_iter().collect(),
        template: a.template,
        priority: a.priority.map_or(0, |p| pb::Priority::from(p) as i32),
        restart_policy: None,
        timeout_seconds: a
            .task_timeout
            .map(|d| to_u32("--task-timeout", d))
            .transpose()?,
        ..Default::default()
    };
    let req = pb::CreateScheduleRequest {
        name: a.name,
        cron: a.cron.unwrap_or_default(),
        interval_seconds: a.every.map_or(0, |d| d.as_secs()),
        timezone: a.timezone,
        task: Some(task),
        overlap: pb::Overlap::from(a.overlap) as i32,
        catchup_window_seconds: a
            .catchup_window
            .map(|d| to_u32("--catchup-window", d))
            .transpose()?
            .unwrap_or(0),
        paused: a.paused,
        actor_id: conn.actor.clone(),
        correlation_id: conn.correlation.clone(),
        ..Default::default()
    };
    let r = conn
        .client
        .clone()
        .create_schedule(conn.unary(req))
        .await
        .map_err(conn.err("CreateSchedule"))?
        .into_inner();
    out.message(&r, |ctx| match &r.schedule {
        Some(s) => schedule_detail(s, ctx),
        None => r.schedule_id.clone(),
    })
}

/// Whether `s` looks like a schedule id (a UUID) rather than a name.
fn is_id(s: &str) -> bool {
    s.len() == 36
        && s.chars().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

async fn get(conn: &Conn, schedule: &str) -> Result<pb::Schedule, CliError> {
    let req = if is_id(schedule) {
        pb::GetScheduleRequest {
            schedule_id: schedule.to_owned(),
            ..Default::default()
        }
    } else {
        pb::GetScheduleRequest {
            name: schedule.to_owned(),
            ..Default::default()
        }
    };
    Ok(conn
        .client
        .clone()
        .get_schedule(conn.unary(req))
        .await
        .map_err(conn.err("GetSchedule"))?
        .into_inner())
}

/// The id of the schedule named by id or name.
async fn resolve(conn: &Conn, schedule: &str) -> Result<String, CliError> {
    if is_id(schedule) {
        Ok(schedule.to_owned())
    } else {
        Ok(get(conn, schedule).await?.schedule_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_are_told_apart() {
        assert!(is_id("0b6f5a4e-8d7c-4b3a-9e21-5f0c7d8e9a10"));
        assert!(!is_id("nightly-build"));
        assert!(!is_id("0b6f5a4e-8d7c-4b3a-9e21-5f0c7d8e9a1x"));
        assert!(!is_id("0b6f5a4e8d7c-4b3a-9e21-5f0c7d8e9a10-"));
    }
}
