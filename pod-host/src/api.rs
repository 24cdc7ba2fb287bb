//! The tonic handlers of `ipa.v1.PodHost`: validate the request into domain
//! types, call the supervisor, convert back. Every call from central also
//! counts as contact for self-fencing, except a StartPod or StopPod from a
//! deposed leader (an epoch older than the newest seen, `crate::epoch`),
//! which is refused before anything else.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ipa_proto::v1 as pb;
use pb::pod_host_server::PodHost;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
// The generated trait's stream type: with default stubs (proto/build.rs)
// streaming methods return it instead of an associated type.
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::connect::Sessions;
use crate::convert;
use crate::epoch::Call;
use crate::error::{HostError, quote};
use crate::fence::Proof;
use crate::logs::{LogReader, MAX_TAIL_LINES};
use crate::pods::{StartSpec, StopSpec, Supervisor};
use crate::templates::DEFAULT_TEMPLATE;

/// Log chunks (each at most 64 KiB) buffered per GetPodLogs stream before
/// the reader waits for the caller: bounds a stream's memory to 1 MiB.
const LOG_STREAM_BUFFER: usize = 16;

pub struct Api {
    sup: Arc<Supervisor>,
    sessions: Arc<Sessions>,
    /// Ends log follows when the server stops.
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Api {
    pub fn new(
        sup: Arc<Supervisor>,
        sessions: Arc<Sessions>,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        Self {
            sup,
            sessions,
            shutdown,
            tracker,
        }
    }
}

impl Api {
    /// Runs a pod command as its own tracked task. tonic drops a handler's
    /// future when the client goes away; a start or stop cut off halfway
    /// would leak a reserved slot or an unsupervised process, so the work
    /// always finishes and only the reply is lost.
    async fn run_to_completion(
        &self,
        work: impl std::future::Future<Output = Result<crate::pods::PodView, HostError>>
        + Send
        + 'static,
        span: tracing::Span,
    ) -> Result<crate::pods::PodView, HostError> {
        self.tracker
            .spawn(work.instrument(span))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "pod command task failed");
                Err(HostError::Internal)
            })
    }
}

/// A lowercase UUID, or INVALID_ARGUMENT naming `field`. Ids become
/// directory names, so nothing else may pass.
fn parse_id(field: &'static str, s: &str) -> Result<String, HostError> {
    uuid::Uuid::parse_str(s)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| HostError::invalid(field, format!("{} is not a UUID", quote(s))))
}

fn start_spec(r: pb::HostStartPodRequest) -> Result<StartSpec, HostError> {
    Ok(StartSpec {
        task_id: parse_id("task_id", &r.task_id)?,
        pod_id: parse_id("pod_id", &r.pod_id)?,
        generation: r.generation,
        template: if r.template.is_empty() {
            DEFAULT_TEMPLATE.to_owned()
        } else {
            r.template
        },
        title: r.title,
        description: r.description,
        metadata: r.metadata.into_iter().collect::<BTreeMap<_, _>>(),
    })
}

/// A validated GetPodLogs.
struct LogsSpec {
    task_id: String,
    pod_id: Option<String>,
    follow: bool,
    tail_lines: u32,
}

fn logs_spec(r: &pb::HostGetPodLogsRequest) -> Result<LogsSpec, HostError> {
    let task_id = parse_id("task_id", &r.task_id)?;
    let pod_id = match r.pod_id.as_str() {
        "" => None,
        p => Some(parse_id("pod_id", p)?),
    };
    if r.tail_lines > MAX_TAIL_LINES {
        return Err(HostError::invalid(
            "tail_lines",
            format!("{} is over the limit of {MAX_TAIL_LINES}", r.tail_lines),
        ));
    }
    Ok(LogsSpec {
        task_id,
        pod_id,
        follow: r.follow,
        tail_lines: r.tail_lines,
    })
}

/// The longest grace a StopPod may ask for (the `--stop-grace-ms` range).
const MAX_STOP_GRACE: Duration =
    Duration::from_millis(*crate::config::STOP_GRACE_MS_RANGE.end() as u64);

fn stop_spec(r: &pb::HostStopPodRequest) -> Result<StopSpec, HostError> {
    Ok(StopSpec {
        task_id: parse_id("task_id", &r.task_id)?,
        pod_id: match r.pod_id.as_str() {
            "" => None,
            p => Some(parse_id("pod_id", p)?),
        },
        generation: r.generation,
        // Clamped to the longest `--stop-grace-ms` allows.
        grace: (r.grace_ms > 0)
            .then(|| Duration::from_millis(r.grace_ms.into()).min(MAX_STOP_GRACE)),
        fence: r.fence,
    })
}

#[tonic::async_trait]
impl PodHost for Api {
    async fn start_pod(
        &self,
        request: Request<pb::HostStartPodRequest>,
    ) -> Result<Response<pb::HostStartPodResponse>, Status> {
        let r = request.into_inner();
        let span = tracing::info_span!("StartPod", task_id = %r.task_id, pod_id = %r.pod_id, generation = r.generation, correlation_id = %r.correlation_id, epoch = r.epoch);
        span.in_scope(|| {
            self.sessions
                .leadership()
                .admit_command(Call::StartPod, r.epoch)
        })?;
        self.sup.contact(self.sup.proof(r.echo_host_clock_ms));
        // A start held up in the network past central's fence deadline
        // must not run (crate::fence: the lease).
        if let Err(why) = self
            .sup
            .start_lease_valid(r.echo_host_clock_ms, &r.host_boot_id)
        {
            span.in_scope(|| tracing::warn!(%why, "StartPod refused: lease expired"));
            return Err(HostError::LeaseExpired(why).into());
        }
        let spec = start_spec(r)?;
        let sup = self.sup.clone();
        let view = self
            .run_to_completion(async move { sup.start(spec).await }, span)
            .await?;
        Ok(Response::new(pb::HostStartPodResponse {
            pod: Some(convert::pod(&view)),
        }))
    }

    async fn stop_pod(
        &self,
        request: Request<pb::HostStopPodRequest>,
    ) -> Result<Response<pb::HostStopPodResponse>, Status> {
        let r = request.into_inner();
        let span = tracing::info_span!("StopPod", task_id = %r.task_id, pod_id = %r.pod_id, generation = r.generation, reason = %r.reason, epoch = r.epoch);
        span.in_scope(|| {
            self.sessions
                .leadership()
                .admit_command(Call::StopPod, r.epoch)
        })?;
        self.sup.contact(Proof::Arrival);
        let spec = stop_spec(&r)?;
        let sup = self.sup.clone();
        let view = self
            .run_to_completion(async move { sup.stop(spec).await }, span)
            .await?;
        Ok(Response::new(pb::HostStopPodResponse {
            pod: Some(convert::pod(&view)),
        }))
    }

    async fn list_pods(
        &self,
        _request: Request<pb::HostListPodsRequest>,
    ) -> Result<Response<pb::HostListPodsResponse>, Status> {
        self.sup.contact(Proof::Arrival);
        let mut pods: Vec<pb::PodInfo> = self.sup.list().iter().map(convert::pod).collect();
        crate::connect::fit_messages(&mut pods);
        Ok(Response::new(pb::HostListPodsResponse { pods }))
    }

    async fn connect(
        &self,
        request: Request<Streaming<pb::CentralMessage>>,
    ) -> Result<Response<BoxStream<pb::HostMessage>>, Status> {
        let client = request
            .extensions()
            .get::<ipa_common::tls::PeerInfo>()
            .and_then(|p| p.certificate.as_ref())
            .map(|c| c.principal.clone());
        let stream = self
            .sessions
            .open(request.into_inner(), client.as_deref())
            .await?;
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_pod_logs(
        &self,
        request: Request<pb::HostGetPodLogsRequest>,
    ) -> Result<Response<BoxStream<pb::PodLogChunk>>, Status> {
        let r = request.into_inner();
        let span = tracing::info_span!("GetPodLogs", task_id = %r.task_id, pod_id = %r.pod_id, follow = r.follow, tail_lines = r.tail_lines);
        self.sup.contact(Proof::Arrival);
        let spec = logs_spec(&r)?;
        let sink = self
            .sup
            .logs(&spec.task_id, spec.pod_id.as_deref())
            .ok_or_else(|| {
                HostError::PodNotFound(format!("no pod of task {} on this host", spec.task_id))
            })?;
        let mut reader = LogReader::open(sink, spec.tail_lines, spec.follow)
            .instrument(span.clone())
            .await
            .map_err(|e| {
                span.in_scope(|| tracing::error!(error = %e, "opening the pod log failed"));
                HostError::Internal
            })?;
        let (tx, rx) = mpsc::channel(LOG_STREAM_BUFFER);
        let shutdown = self.shutdown.clone();
        self.tracker.spawn(
            async move {
                loop {
                    // Follows end when the server stops or the caller goes.
                    let next = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tx.closed() => return,
                        c = reader.next() => c,
                    };
                    let item = match next {
                        Ok(Some(c)) => Ok(pb::PodLogChunk {
                            data: c.data,
                            stream: c.stream.as_str().to_owned(),
                        }),
                        Ok(None) => return,
                        Err(e) => {
                            tracing::error!(error = %e, "reading the pod log failed");
                            Err(Status::from(HostError::Internal))
                        }
                    };
                    let failed = item.is_err();
                    if tx.send(item).await.is_err() || failed {
                        return;
                    }
                }
            }
            .instrument(span),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
