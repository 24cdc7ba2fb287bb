//! `tasks create|get|list|count|start|stop|restart|complete|cancel|delete|events`:
//! one RPC each, printed through the views.

use std::time::SystemTime;

use ipa_proto::v1 as pb;

use crate::cli::{CreateArgs, FilterArgs, ListArgs};
use crate::connect::Conn;
use crate::error::CliError;
use crate::output::Output;
use crate::views;

pub async fn create(conn: &Conn, out: &Output, a: CreateArgs) -> Result<(), CliError> {
    let policy = pb::RestartPolicy {
        auto_restart: a.auto_restart,
        max_restarts: a.max_restarts,
        window_seconds: a.restart_window_seconds,
        initial_backoff_ms: a.initial_backoff_ms,
        max_backoff_ms: a.max_backoff_ms,
    };
    let any_policy = policy != pb::RestartPolicy::default();
    let seconds = |d: Option<std::time::Duration>, flag: &str| {
        d.map(|d| {
            u32::try_from(d.as_secs()).map_err(|_| CliError::Invalid(format!("{flag} is too long")))
        })
        .transpose()
    };
    let timeout_seconds = seconds(a.timeout, "--timeout")?;
    let queue_timeout_seconds = seconds(a.queue_timeout, "--queue-timeout")?;
    // A duration is from now here (a deadline lies ahead).
    let deadline = a.deadline.map(|t| match t {
        crate::cli::TimeArg::At(t) => ipa_proto::time::timestamp(t),
        crate::cli::TimeArg::Ago(d) => ipa_proto::time::timestamp(SystemTime::now() + d),
    });
    let req = pb::CreateTaskRequest {
        title: a.title,
        description: a.description,
        actor_id: conn.actor.clone(),
        correlation_id: conn.correlation.clone(),
        auto_start: a.start,
        metadata: a.metadata.into_iter().collect(),
        template: a.template,
        restart_policy: any_policy.then_some(policy),
        request_id: a.request_id,
        timeout_seconds,
        deadline,
        priority: a.priority.map_or(0, |p| pb::Priority::from(p) as i32),
        queue: a.queue,
        queue_timeout_seconds,
        depends_on: a.depends_on,
    };
    let r = conn
        .client
        .clone()
        .create_task(conn.unary(req))
        .await
        .map_err(conn.err("CreateTask"))?
        .into_inner();
    if a.quiet {
        return out.text(&r.task_id);
    }
    out.message(&r, |ctx| match &r.task {
        Some(t) => views::tasks::task_detail(t, ctx),
        None => r.task_id.clone(),
    })
}

pub async fn get(conn: &Conn, out: &Output, id: String) -> Result<(), CliError> {
    let t = get_task(conn, id).await?;
    out.message(&t, |ctx| views::tasks::task_detail(&t, ctx))
}

/// GetTask (also used by `tasks wait`).
pub async fn get_task(conn: &Conn, id: String) -> Result<pb::Task, CliError> {
    Ok(conn
        .client
        .clone()
        .get_task(conn.unary(pb::GetTaskRequest {
            task_id: id,
            ..Default::default()
        }))
        .await
        .map_err(conn.err("GetTask"))?
        .into_inner())
}

fn filter(f: &FilterArgs) -> (i32, i32, Option<prost_types::Timestamp>, String) {
    (
        f.status.map_or(0, |s| pb::TaskStatus::from(s) as i32),
        f.phase.map_or(0, |p| pb::Phase::from(p) as i32),
        f.created_after.map(|t| t.timestamp(SystemTime::now())),
        f.created_by.clone().unwrap_or_default(),
    )
}

/// `--priority` and `--pod-status`.
fn queue_filter(f: &FilterArgs) -> (i32, i32) {
    (
        f.priority.map_or(0, |p| pb::Priority::from(p) as i32),
        f.pod_status.map_or(0, |s| pb::PodStatus::from(s) as i32),
    )
}

pub async fn list(conn: &Conn, out: &Output, a: ListArgs) -> Result<(), CliError> {
    let (status, phase, created_after, created_by) = filter(&a.filter);
    let (priority, pod_status) = queue_filter(&a.filter);
    let req = pb::ListTasksRequest {
        status,
        phase,
        created_after,
        created_by,
        priority,
        pod_status,
        limit: a.limit,
        offset: a.offset,
        order_by: pb::OrderBy::from(a.order_by) as i32,
        order: pb::Order::from(a.order) as i32,
        ..Default::default()
    };
    let r = conn
        .client
        .clone()
        .list_tasks(conn.unary(req))
        .await
        .map_err(conn.err("ListTasks"))?
        .into_inner();
    out.message(&r, |ctx| views::tasks::task_list(&r.tasks, ctx))
}

pub async fn count(conn: &Conn, out: &Output, f: FilterArgs) -> Result<(), CliError> {
    let (status, phase, created_after, created_by) = filter(&f);
    let (priority, pod_status) = queue_filter(&f);
    let req = pb::CountTasksRequest {
        status,
        phase,
        created_after,
        created_by,
        priority,
        pod_status,
        ..Default::default()
    };
    let r = conn
        .client
        .clone()
        .count_tasks(conn.unary(req))
        .await
        .map_err(conn.err("CountTasks"))?
        .into_inner();
    out.message(&r, |_| r.count.to_string())
}

pub async fn start(conn: &Conn, out: &Output, id: String, queue: bool) -> Result<(), CliError> {
    let req = pb::StartPodRequest {
        task_id: id.clone(),
        actor_id: conn.actor.clone(),
        correlation_id: conn.correlation.clone(),
        queue,
    };
    let r = conn
        .client
        .clone()
        .start_pod(conn.unary(req))
        .await
        .map_err(conn.err("StartPod"))?
        .into_inner();
    out.message(&r, |_| {
        if r.queued {
            format!("queued task {id}: it starts when a pod-host has room")
        } else {
            views::tasks::pod_started("started", &id, r.pod.as_ref())
        }
    })
}

pub async fn restart(conn: &Conn, out: &Output, id: String) -> Result<(), CliError> {
    let req = pb::RestartPodRequest {
        task_id: id.clone(),
        actor_id: conn.actor.clone(),
        correlation_id: conn.correlation.clone(),
        ..Default::default()
    };
    let r = conn
        .client
        .clone()
        .restart_pod(conn.unary(req))
        .await
        .map_err(conn.err("RestartPod"))?
        .into_inner();
    out.message(&r, |_| {
        views::tasks::pod_started("restarted", &id, r.pod.as_ref())
    })
}

pub async fn stop(conn: &Conn, out: &Output, id: String, reason: String) -> Result<(), CliError> {
    let req = pb::StopPodRequest {
        task_id: id.clone(),
        actor_id: conn.actor.clone(),
        reason,
        correlation_id: conn.correlation.clone(),
        ..Default::default()
    };
    let r = conn
        .client
        .clone()
        .stop_pod(conn.unary(req))
        .await
        .map_err(conn.err("StopPod"))?
        .into_inner();
    out.message(&r, |_| format!("stopped the pod of task {id}"))
}

pub async fn complete(conn: &Conn, out: &Output, id: String) -> Result<(), CliError> {
    let req = pb::CompleteTaskRequest {
        task_id: id.clone(),
        actor_id: conn.actor.clone(),
        correlation_id: conn.correlation.clone(),
        ..Default::default()
    };
    let r = conn
        .client
        .clone()
        .complete_task(conn.unary(req))
        .await
        .map_err(conn.err("CompleteTask"))?
        .into_inner();
    out.message(&r, |_| format!("completed task {id}"))
}

pub async fn cancel(conn: &Conn, out: &Output, id: String, reason: String) -> Result<(), CliError> {
    let req = pb::CancelTaskRequest {
        task_id: id.clone(),
        reason,
        actor_id: conn.actor.clone(),
        correlation_id: conn.correlation.clone(),
        ..Default::default()
    };
    let r = conn
        .client
        .clone()
        .cancel_task(conn.unary(req))
        .await
        .map_err(conn.err("CancelTask"))?
        .into_inner();
    out.message(&r, |_| format!("cancelled task {id}"))
}

pub async fn delete(conn: &Conn, out: &Output, id: String, reason: String) -> Result<(), CliError> {
    let req = pb::DeleteTaskRequest {
        task_id: id.clone(),
        actor_id: conn.actor.clone(),
        reason,
        correlation_id: conn.correlation.clone(),
        ..Default::default()
    };
    let r = conn
        .client
        .clone()
        .delete_task(conn.unary(req))
        .await
        .map_err(conn.err("DeleteTask"))?
        .into_inner();
    out.message(&r, |_| format!("deleted task {id}"))
}

/// The server's page size limit of GetTaskEvents.
const EVENTS_PAGE: u32 = 1000;

/// `tasks events`: pages through GetTaskEvents (by version) until the
/// trail ends or `limit` events are in hand.
pub async fn events(
    conn: &Conn,
    out: &Output,
    id: String,
    after_version: u64,
    limit: u32,
) -> Result<(), CliError> {
    let mut all = Vec::new();
    let mut after = after_version;
    loop {
        let want = if limit == 0 {
            EVENTS_PAGE
        } else {
            (limit - all.len() as u32).min(EVENTS_PAGE)
        };
        let page = conn
            .client
            .clone()
            .get_task_events(conn.unary(pb::GetTaskEventsRequest {
                task_id: id.clone(),
                after_version: after,
                limit: want,
                ..Default::default()
            }))
            .await
            .map_err(conn.err("GetTaskEvents"))?
            .into_inner()
            .events;
        let Some(last) = page.last() else { break };
        after = last.version;
        all.extend(page);
        // A page may end early (a size cap) with more to come: only an
        // empty page ends the trail.
        if limit != 0 && all.len() as u32 >= limit {
            break;
        }
    }
    let r = pb::GetTaskEventsResponse {
        events: all,
        ..Default::default()
    };
    out.message(&r, |ctx| views::events::event_table(&r.events, ctx))
}
