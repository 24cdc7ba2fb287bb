//! The gRPC handlers of `ipa.v1.CentralManager`. Each one is thin: convert
//! the request to a domain request (`convert`), call the core, convert the
//! answer; errors become statuses through `error` only. Each RPC runs in its
//! own span carrying the task, actor and correlation ids it has.

pub mod admin;
pub mod convert;
pub mod error;
pub mod forward;
pub mod limits;
pub mod schedules;
#[cfg(test)]
mod wire_size_tests;

use std::sync::Arc;

use ipa_proto::v1 as pb;
use ipa_proto::v1::central_manager_server::CentralManager;
// The generated trait's stream type: with default stubs (proto/build.rs)
// streaming methods return it instead of an associated type.
use tokio_stream::StreamExt;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};
use tracing::{Span, instrument};

use crate::auth::layer::caller;
use crate::core::TaskService;
use crate::core::leadership::Leadership;
use crate::core::queue::StartOrQueue;
use crate::core::retention::Retention;
use crate::core::schedules::ScheduleService;
use crate::domain::{
    CancelTask, EventsQuery, ListQuery, LogsQuery, NewTask, StopPod, TaskCommand, TaskFilter,
    WatchQuery,
};
use convert::{WithCaller, event_to_pb, host_to_pb, pod_to_pb, task_id, task_to_pb};
use forward::forward;

type RpcResult<T> = Result<Response<T>, Status>;

/// The CentralManager service.
#[derive(Clone)]
pub struct CentralManagerApi {
    service: Arc<TaskService>,
    schedules: Arc<ScheduleService>,
    retention: Arc<Retention>,
    /// `--max-streams`: WatchEvents + GetPodLogs streams open at once.
    streams: limits::StreamSlots,
    /// Where pod operations run (here, or on the leader).
    forward: Arc<forward::Forwarder>,
    /// The replicas and their leader (GetClusterInfo); `None` without an
    /// elector (embedding, tests).
    leadership: Option<Leadership>,
}

impl CentralManagerApi {
    /// Serves the task, schedule and retention operations, with at most `max_streams` streams
    /// open at once.
    pub fn new(
        service: Arc<TaskService>,
        schedules: Arc<ScheduleService>,
        retention: Arc<Retention>,
        max_streams: u32,
    ) -> Self {
        Self {
            service,
            schedules,
            retention,
            streams: limits::StreamSlots::new(max_streams),
            forward: Arc::new(forward::Forwarder::local()),
            leadership: None,
        }
    }

    /// Serves as one replica of several: pod operations go to the leader
    /// while this one follows (`forward`), over TLS with `tls` to
    /// `https://` leaders.
    pub fn with_replicas(
        mut self,
        leadership: Leadership,
        tls: Option<ipa_common::tls::ClientTls>,
    ) -> Self {
        self.forward = Arc::new(forward::Forwarder::new(leadership.clone(), tls));
        self.leadership = Some(leadership);
        self
    }
}

/// Records the ids of a validated command on the RPC span (the correlation
/// id may have been generated).
fn record(task: impl std::fmt::Display, actor: &str, correlation: &str) {
    let span = Span::current();
    span.record("task_id", tracing::field::display(task));
    span.record("actor_id", actor);
    span.record("correlation_id", correlation);
}

#[tonic::async_trait]
impl CentralManager for CentralManagerApi {
    #[instrument(
        name = "CreateTask",
        skip_all,
        fields(task_id, actor_id, correlation_id)
    )]
    async fn create_task(
        &self,
        req: Request<pb::CreateTaskRequest>,
    ) -> RpcResult<pb::CreateTaskResponse> {
        if req.get_ref().auto_start {
            forward!(self, req, create_task);
        }
        let caller = caller(&req);
        let new = NewTask::try_from(WithCaller(req.into_inner(), caller.as_ref()))?;
        let span = Span::current();
        span.record("actor_id", new.actor.as_str());
        span.record("correlation_id", new.correlation.as_str());
        let task = self.service.create_task(new).await?;
        span.record("task_id", tracing::field::display(task.task_id));
        tracing::info!("task created");
        let pb_task = task_to_pb(&task, self.service.restart_defaults());
        Ok(Response::new(pb::CreateTaskResponse {
            task_id: pb_task.task_id.clone(),
            task: Some(pb_task),
        }))
    }

    #[instrument(name = "GetTask", skip_all, fields(task_id = %req.get_ref().task_id))]
    async fn get_task(&self, req: Request<pb::GetTaskRequest>) -> RpcResult<pb::Task> {
        let id = task_id(&req.get_ref().task_id)?;
        let task = if req.get_ref().include_archived {
            self.service.get_task_or_archived(id).await?
        } else {
            self.service.get_task(id).await?
        };
        Ok(Response::new(task_to_pb(
            &task,
            self.service.restart_defaults(),
        )))
    }

    #[instrument(name = "ListTasks", skip_all)]
    async fn list_tasks(
        &self,
        req: Request<pb::ListTasksRequest>,
    ) -> RpcResult<pb::ListTasksResponse> {
        let q = ListQuery::try_from(req.into_inner())?;
        let page = self.service.list_tasks(&q).await?;
        let d = self.service.restart_defaults();
        let mut tasks: Vec<pb::Task> = page.items.iter().map(|t| task_to_pb(t, d)).collect();
        let cut = convert::keep_within_page(&mut tasks);
        Ok(Response::new(pb::ListTasksResponse {
            tasks,
            truncated: page.truncated || cut,
        }))
    }

    #[instrument(name = "CountTasks", skip_all)]
    async fn count_tasks(
        &self,
        req: Request<pb::CountTasksRequest>,
    ) -> RpcResult<pb::CountTasksResponse> {
        let f = TaskFilter::try_from(req.into_inner())?;
        let count = self.service.count_tasks(&f).await?;
        Ok(Response::new(pb::CountTasksResponse { count }))
    }

    #[instrument(name = "StartPod", skip_all, fields(task_id = %req.get_ref().task_id, actor_id, correlation_id))]
    async fn start_pod(
        &self,
        req: Request<pb::StartPodRequest>,
    ) -> RpcResult<pb::StartPodResponse> {
        forward!(self, req, start_pod);
        let caller = caller(&req);
        let queue = req.get_ref().queue;
        let c = TaskCommand::try_from(WithCaller(req.into_inner(), caller.as_ref()))?;
        record(c.task_id, c.actor.as_str(), c.correlation.as_str());
        let reply = match self.service.start_pod(c, queue).await? {
            StartOrQueue::Started(pod) => pb::StartPodResponse {
                pod: Some(pod_to_pb(&pod)),
                queued: false,
            },
            StartOrQueue::Queued => pb::StartPodResponse {
                pod: None,
                queued: true,
            },
        };
        Ok(Response::new(reply))
    }

    #[instrument(name = "StopPod", skip_all, fields(task_id = %req.get_ref().task_id, actor_id, correlation_id))]
    async fn stop_pod(&self, req: Request<pb::StopPodRequest>) -> RpcResult<pb::StopPodResponse> {
        forward!(self, req, stop_pod);
        let caller = caller(&req);
        let c = StopPod::try_from(WithCaller(req.into_inner(), caller.as_ref()))?;
        record(c.task_id, c.actor.as_str(), c.correlation.as_str());
        self.service.stop_pod(c).await?;
        Ok(Response::new(pb::StopPodResponse {}))
    }

    #[instrument(name = "RestartPod", skip_all, fields(task_id = %req.get_ref().task_id, actor_id, correlation_id))]
    async fn restart_pod(
        &self,
        req: Request<pb::RestartPodRequest>,
    ) -> RpcResult<pb::RestartPodResponse> {
        forward!(self, req, restart_pod);
        let caller = caller(&req);
        let c = TaskCommand::try_from(WithCaller(req.into_inner(), caller.as_ref()))?;
        record(c.task_id, c.actor.as_str(), c.correlation.as_str());
        let pod = self.service.restart_pod(c).await?;
        Ok(Response::new(pb::RestartPodResponse {
            pod: Some(pod_to_pb(&pod)),
        }))
    }

    #[instrument(name = "CompleteTask", skip_all, fields(task_id = %req.get_ref().task_id, actor_id, correlation_id))]
    async fn complete_task(
        &self,
        req: Request<pb::CompleteTaskRequest>,
    ) -> RpcResult<pb::CompleteTaskResponse> {
        forward!(self, req, complete_task);
        let caller = caller(&req);
        let c = TaskCommand::try_from(WithCaller(req.into_inner(), caller.as_ref()))?;
        record(c.task_id, c.actor.as_str(), c.correlation.as_str());
        self.service.complete_task(c).await?;
        tracing::info!("task completed");
        Ok(Response::new(pb::CompleteTaskResponse {}))
    }

    #[instrument(name = "CancelTask", skip_all, fields(task_id = %req.get_ref().task_id, actor_id, correlation_id))]
    async fn cancel_task(
        &self,
        req: Request<pb::CancelTaskRequest>,
    ) -> RpcResult<pb::CancelTaskResponse> {
        forward!(self, req, cancel_task);
        let caller = caller(&req);
        let c = CancelTask::try_from(WithCaller(req.into_inner(), caller.as_ref()))?;
        record(c.task_id, c.actor.as_str(), c.correlation.as_str());
        self.service.cancel_task(c).await?;
        tracing::info!("task cancelled");
        Ok(Response::new(pb::CancelTaskResponse {}))
    }

    #[instrument(name = "ListActivePods", skip_all)]
    async fn list_active_pods(
        &self,
        req: Request<pb::ListActivePodsRequest>,
    ) -> RpcResult<pb::ListActivePodsResponse> {
        let after = convert::after_task_id(&req.get_ref().after_task_id)?;
        let page = self.service.active_pods(after).await?;
        let mut pods: Vec<pb::ActivePod> = page
            .items
            .into_iter()
            .map(|(id, pod)| pb::ActivePod {
                task_id: id.to_string(),
                pod: Some(pod_to_pb(&pod)),
            })
            .collect();
        let cut = convert::keep_within_page(&mut pods);
        Ok(Response::new(pb::ListActivePodsResponse {
            pods,
            truncated: page.truncated || cut,
        }))
    }

    #[instrument(name = "GetTaskEvents", skip_all, fields(task_id = %req.get_ref().task_id))]
    async fn get_task_events(
        &self,
        req: Request<pb::GetTaskEventsRequest>,
    ) -> RpcResult<pb::GetTaskEventsResponse> {
        let q = EventsQuery::try_from(req.into_inner())?;
        let page = self.service.task_events(&q).await?;
        let mut events: Vec<pb::Event> = page.items.into_iter().map(event_to_pb).collect();
        let cut = convert::keep_within_page(&mut events);
        Ok(Response::new(pb::GetTaskEventsResponse {
            events,
            truncated: page.truncated || cut,
        }))
    }

    #[instrument(name = "WatchEvents", skip_all, fields(task_id = %req.get_ref().task_id, after_position = req.get_ref().after_position))]
    async fn watch_events(
        &self,
        req: Request<pb::WatchEventsRequest>,
    ) -> RpcResult<BoxStream<pb::Event>> {
        let q = WatchQuery::try_from(req.into_inner())?;
        let slot = self.streams.acquire()?;
        let events = self.service.watch_events(q).await?;
        let stream = events.map(|item| item.map(event_to_pb).map_err(Status::from));
        Ok(Response::new(Box::pin(limits::Slotted::new(stream, slot))))
    }

    #[instrument(name = "ListPodHosts", skip_all)]
    async fn list_pod_hosts(
        &self,
        req: Request<pb::ListPodHostsRequest>,
    ) -> RpcResult<pb::ListPodHostsResponse> {
        forward!(self, req, list_pod_hosts);
        Ok(Response::new(pb::ListPodHostsResponse {
            hosts: self
                .service
                .pod_hosts()
                .into_iter()
                .map(host_to_pb)
                .collect(),
        }))
    }

    #[instrument(name = "GetPodLogs", skip_all, fields(task_id = %req.get_ref().task_id))]
    async fn get_pod_logs(
        &self,
        req: Request<pb::GetPodLogsRequest>,
    ) -> RpcResult<BoxStream<pb::PodLogChunk>> {
        if let Some(mut leader) = self.forward.route(&req).await? {
            let slot = self.streams.acquire()?;
            let answer = leader.get_pod_logs(self.forward.request(req)).await;
            if let Err(status) = &answer {
                self.forward.failed(status);
            }
            let stream = answer?.into_inner();
            return Ok(Response::new(Box::pin(limits::Slotted::new(stream, slot))));
        }
        let q = LogsQuery::try_from(req.into_inner())?;
        let slot = self.streams.acquire()?;
        let stream = self.service.pod_logs(q).await?;
        let stream = stream.map(|r| {
            r.map(|c| pb::PodLogChunk {
                data: c.data,
                stream: c.stream,
            })
            .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(limits::Slotted::new(stream, slot))))
    }

    // ---------- schedules (api/schedules.rs) ----------

    #[instrument(
        name = "CreateSchedule",
        skip_all,
        fields(schedule_id, actor_id, correlation_id)
    )]
    async fn create_schedule(
        &self,
        req: Request<pb::CreateScheduleRequest>,
    ) -> RpcResult<pb::CreateScheduleResponse> {
        forward!(self, req, create_schedule);
        schedules::create(self, req).await
    }

    #[instrument(name = "GetSchedule", skip_all, fields(schedule_id = %req.get_ref().schedule_id, name = %req.get_ref().name))]
    async fn get_schedule(&self, req: Request<pb::GetScheduleRequest>) -> RpcResult<pb::Schedule> {
        schedules::get(self, req).await
    }

    #[instrument(name = "ListSchedules", skip_all)]
    async fn list_schedules(
        &self,
        req: Request<pb::ListSchedulesRequest>,
    ) -> RpcResult<pb::ListSchedulesResponse> {
        schedules::list(self, req).await
    }

    #[instrument(
        name = "PauseSchedule",
        skip_all,
        fields(schedule_id, actor_id, correlation_id)
    )]
    async fn pause_schedule(
        &self,
        req: Request<pb::PauseScheduleRequest>,
    ) -> RpcResult<pb::PauseScheduleResponse> {
        forward!(self, req, pause_schedule);
        schedules::pause(self, req).await
    }

    #[instrument(
        name = "ResumeSchedule",
        skip_all,
        fields(schedule_id, actor_id, correlation_id)
    )]
    async fn resume_schedule(
        &self,
        req: Request<pb::ResumeScheduleRequest>,
    ) -> RpcResult<pb::ResumeScheduleResponse> {
        forward!(self, req, resume_schedule);
        schedules::resume(self, req).await
    }

    #[instrument(
        name = "TriggerSchedule",
        skip_all,
        fields(schedule_id, actor_id, correlation_id)
    )]
    async fn trigger_schedule(
        &self,
        req: Request<pb::TriggerScheduleRequest>,
    ) -> RpcResult<pb::TriggerScheduleResponse> {
        forward!(self, req, trigger_schedule);
        schedules::trigger(self, req).await
    }

    #[instrument(
        name = "DeleteSchedule",
        skip_all,
        fields(schedule_id, actor_id, correlation_id)
    )]
    async fn delete_schedule(
        &self,
        req: Request<pb::DeleteScheduleRequest>,
    ) -> RpcResult<pb::DeleteScheduleResponse> {
        forward!(self, req, delete_schedule);
        schedules::delete(self, req).await
    }

    // ---------- retention and statistics (api/admin.rs) ----------

    #[instrument(name = "DeleteTask", skip_all, fields(task_id = %req.get_ref().task_id, actor_id, correlation_id))]
    async fn delete_task(
        &self,
        req: Request<pb::DeleteTaskRequest>,
    ) -> RpcResult<pb::DeleteTaskResponse> {
        admin::delete_task(self, req).await
    }

    #[instrument(name = "CancelTasks", skip_all, fields(actor_id, correlation_id))]
    async fn cancel_tasks(
        &self,
        req: Request<pb::CancelTasksRequest>,
    ) -> RpcResult<pb::CancelTasksResponse> {
        forward!(self, req, cancel_tasks);
        admin::cancel_tasks(self, req).await
    }

    #[instrument(name = "ArchiveTasks", skip_all, fields(actor_id, correlation_id))]
    async fn archive_tasks(
        &self,
        req: Request<pb::ArchiveTasksRequest>,
    ) -> RpcResult<pb::ArchiveTasksResponse> {
        admin::archive_tasks(self, req).await
    }

    #[instrument(name = "GetStats", skip_all)]
    async fn get_stats(
        &self,
        req: Request<pb::GetStatsRequest>,
    ) -> RpcResult<pb::GetStatsResponse> {
        admin::get_stats(self, req).await
    }

    #[instrument(name = "GetClusterInfo", skip_all)]
    async fn get_cluster_info(
        &self,
        _req: Request<pb::GetClusterInfoRequest>,
    ) -> RpcResult<pb::GetClusterInfoResponse> {
        admin::cluster_info(self.leadership.as_ref()).await
    }
}
