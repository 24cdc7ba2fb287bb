//! What each command does: build the request from the arguments, call
//! central-manager, print the answer through `output`.
//!
//! Requests are built with `..Default::default()` even where every field is
//! set today: fields added to the proto later (filters, priorities) then
//! keep their defaults instead of breaking this crate's build.
#![allow(clippy::needless_update)]

mod schedules;
mod stream;
mod tasks;
mod wait;

use ipa_proto::v1 as pb;

use crate::cli::{Command, EventsCmd, HostsCmd, PodsCmd, StatsArgs, TasksCmd};
use crate::connect::Conn;
use crate::error::CliError;
use crate::output::Output;
use crate::views;

/// Runs one command (everything but `completion`, which needs no server).
pub async fn run(conn: &Conn, out: &Output, command: Command) -> Result<(), CliError> {
    match command {
        Command::Tasks(cmd) => run_tasks(conn, out, cmd).await,
        Command::Events(EventsCmd::Watch { after, task }) => {
            stream::watch(conn, out, after, task).await
        }
        Command::Pods(PodsCmd::List) => {
            let r = conn
                .client
                .clone()
                .list_active_pods(conn.unary(pb::ListActivePodsRequest::default()))
                .await
                .map_err(conn.err("ListActivePods"))?
                .into_inner();
            out.message(&r, |ctx| views::tasks::pod_list(&r.pods, ctx))
        }
        Command::Hosts(HostsCmd::List) => {
            let r = conn
                .client
                .clone()
                .list_pod_hosts(conn.unary(pb::ListPodHostsRequest::default()))
                .await
                .map_err(conn.err("ListPodHosts"))?
                .into_inner();
            out.message(&r, |ctx| views::system::host_list(&r.hosts, ctx))
        }
        Command::Schedules(cmd) => schedules::run(conn, out, cmd).await,
        Command::Stats(a) => stats(conn, out, a).await,
        Command::Cluster => {
            let r = conn
                .client
                .clone()
                .get_cluster_info(conn.unary(pb::GetClusterInfoRequest::default()))
                .await
                .map_err(conn.err("GetClusterInfo"))?
                .into_inner();
            out.message(&r, |ctx| views::system::cluster(&r, ctx))
        }
        Command::Completion { .. } => Ok(()),
    }
}

async fn run_tasks(conn: &Conn, out: &Output, cmd: TasksCmd) -> Result<(), CliError> {
    match cmd {
        TasksCmd::Create(a) => tasks::create(conn, out, a).await,
        TasksCmd::Get { id } => tasks::get(conn, out, id).await,
        TasksCmd::List(a) => tasks::list(conn, out, a).await,
        TasksCmd::Count(f) => tasks::count(conn, out, f).await,
        TasksCmd::Start { id, queue } => tasks::start(conn, out, id, queue).await,
        TasksCmd::Stop { id, reason } => tasks::stop(conn, out, id, reason).await,
        TasksCmd::Restart { id } => tasks::restart(conn, out, id).await,
        TasksCmd::Complete { id } => tasks::complete(conn, out, id).await,
        TasksCmd::Cancel { id, reason } => tasks::cancel(conn, out, id, reason).await,
        TasksCmd::Delete { id, reason } => tasks::delete(conn, out, id, reason).await,
        TasksCmd::Events {
            id,
            after_version,
            limit,
        } => tasks::events(conn, out, id, after_version, limit).await,
        TasksCmd::Wait {
            id,
            condition,
            timeout,
        } => wait::wait(conn, out, id, condition, timeout).await,
        TasksCmd::Logs { id, follow, tail } => stream::logs(conn, out, id, follow, tail).await,
    }
}

async fn stats(conn: &Conn, out: &Output, a: StatsArgs) -> Result<(), CliError> {
    let now = std::time::SystemTime::now();
    let req = pb::GetStatsRequest {
        created_after: a.created_after.map(|t| t.timestamp(now)),
        created_before: a.created_before.map(|t| t.timestamp(now)),
        group_by: pb::GroupBy::from(a.group_by) as i32,
        ..Default::default()
    };
    let r = conn
        .client
        .clone()
        .get_stats(conn.unary(req))
        .await
        .map_err(conn.err("GetStats"))?
        .into_inner();
    out.message(&r, |ctx| views::system::stats(&r, ctx))
}
