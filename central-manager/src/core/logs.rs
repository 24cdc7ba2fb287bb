//! GetPodLogs: the current (or last) pod's output, relayed from its
//! pod-host in chunks of at most 64 KiB, ending when central-manager shuts
//! down.
//!
//! Failures are named by what central knows about the pod's host: while
//! the host is unreachable or lost, the pod's state really is unknown
//! (POD_STATE_UNKNOWN); a host that is connected and fails the call is an
//! unexpected failure (INTERNAL, detail logged), never "state unknown".

use std::pin::Pin;

use futures::{Stream, StreamExt, stream};

use super::TaskService;
use crate::domain::host::{HostCallError, LogChunk, LogsRequest, Refusal};
use crate::domain::{LogsQuery, TaskId};
use crate::error::{Error, Result};
use crate::hosts::directory::{HostDirectory, HostState};

/// Largest chunk sent (API.md Limits). Pod-hosts send at most this much
/// already; bigger chunks (an older pod-host) are split.
pub const MAX_LOG_CHUNK: usize = 64 * 1024;

/// The relayed log stream.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogChunk>> + Send>>;

impl TaskService {
    /// GetPodLogs. A task that never had a pod, or whose host no longer
    /// has its pod, has no output: an empty stream.
    pub async fn pod_logs(&self, q: LogsQuery) -> Result<LogStream> {
        let task = self
            .store()
            .task(q.task_id)
            .await?
            .ok_or(Error::TaskNotFound(q.task_id))?;
        let Some(pod) = task.pod else {
            return Ok(Box::pin(stream::empty()));
        };
        if self.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let host_id = pod.pod_host;
        let client = self
            .hosts
            .client(&host_id)
            .ok_or_else(|| failure(&self.hosts, q.task_id, &host_id, None))?;
        let req = LogsRequest {
            task_id: q.task_id.to_string(),
            pod_id: pod.pod_id,
            follow: q.follow,
            tail_lines: q.tail_lines,
        };
        let upstream = match client.pod_logs(req).await {
            Ok(s) => s,
            Err(e) if e.refusal() == Some(Refusal::PodNotFound) => {
                return Ok(Box::pin(stream::empty()));
            }
            Err(e) => return Err(failure(&self.hosts, q.task_id, &host_id, Some(&e))),
        };
        let hosts = self.hosts.clone();
        let task_id = q.task_id;
        let relayed = upstream
            // Follows end with the server (tonic waits for open streams).
            .take_until(self.shutdown.clone().cancelled_owned())
            .flat_map(move |item| {
                let items: Vec<Result<LogChunk>> = match item {
                    Ok(chunk) => split(chunk).into_iter().map(Ok).collect(),
                    Err(s) => vec![Err(failure(&hosts, task_id, &host_id, Some(&s)))],
                };
                stream::iter(items)
            })
            // Nothing follows an error.
            .scan(false, |failed, item| {
                let stop = *failed;
                *failed |= item.is_err();
                futures::future::ready((!stop).then_some(item))
            });
        Ok(Box::pin(relayed))
    }
}

/// `chunk` as pieces of at most [`MAX_LOG_CHUNK`] bytes (itself when it is
/// small enough, which is always the case with a current pod-host).
pub fn split(chunk: LogChunk) -> Vec<LogChunk> {
    if chunk.data.len() <= MAX_LOG_CHUNK {
        return vec![chunk];
    }
    chunk
        .data
        .chunks(MAX_LOG_CHUNK)
        .map(|d| LogChunk {
            data: d.to_vec(),
            stream: chunk.stream.clone(),
        })
        .collect()
}

/// The error for a failed log call to `host_id`, by the host's state.
fn failure(
    hosts: &HostDirectory,
    task_id: TaskId,
    host_id: &str,
    error: Option<&HostCallError>,
) -> Error {
    let state = hosts.with_registry(|r| r.get(host_id).map(|h| h.state));
    match state {
        Some(HostState::Ready | HostState::Draining) => {
            let detail = error.map_or_else(|| "no session".to_owned(), HostCallError::message);
            tracing::warn!(%task_id, %host_id, %detail, "pod-host GetPodLogs failed");
            Error::Internal(format!("GetPodLogs on pod-host {host_id}: {detail}"))
        }
        _ => Error::PodStateUnknown(task_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_chunks_are_split_small_ones_pass() {
        let small = LogChunk {
            data: vec![1; MAX_LOG_CHUNK],
            stream: "stdout".into(),
        };
        assert_eq!(split(small.clone()), vec![small]);
        let big = LogChunk {
            data: (0..MAX_LOG_CHUNK * 2 + 5).map(|i| i as u8).collect(),
            stream: "stderr".into(),
        };
        let parts = split(big.clone());
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.data.len() <= MAX_LOG_CHUNK));
        assert!(parts.iter().all(|p| p.stream == "stderr"));
        let joined: Vec<u8> = parts.into_iter().flat_map(|p| p.data).collect();
        assert_eq!(joined, big.data);
    }
}
