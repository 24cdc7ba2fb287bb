//! The streaming commands: `events watch` and `tasks logs [-f]`.

use std::time::Duration;

use ipa_proto::v1 as pb;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::cli::Format;
use crate::connect::Conn;
use crate::error::CliError;
use crate::output::{Output, write_raw};
use crate::views;

/// Pause before reopening a feed that ended; doubles up to the cap while
/// the server stays away.
const RECONNECT_FIRST: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// `events watch`: every event after `after` (all of them from 0), then
/// live ones, until interrupted. When the stream ends or the server goes
/// away (a restart, a rollout) it reopens from the last position printed,
/// so nothing is skipped or printed twice; a note goes to stderr.
pub async fn watch(
    conn: &Conn,
    out: &Output,
    after: u64,
    task: Option<String>,
) -> Result<(), CliError> {
    if matches!(out.format(), Format::Table | Format::Wide) {
        out.text(&views::events::feed_header(&out.ctx()))?;
    }
    let mut position = after;
    let mut delay = RECONNECT_FIRST;
    loop {
        let req = pb::WatchEventsRequest {
            after_position: position,
            task_id: task.clone().unwrap_or_default(),
            ..Default::default()
        };
        match conn.client.clone().watch_events(conn.stream(req)).await {
            Ok(r) => {
                let mut stream = r.into_inner();
                loop {
                    match stream.next().await {
                        Some(Ok(e)) => {
                            position = e.position;
                            delay = RECONNECT_FIRST;
                            out.stream_item(&e, |ctx| views::events::feed_row(&e, ctx))?;
                        }
                        None => {
                            eprintln!(
                                "ipactl: the event stream ended; reopening after position {position}"
                            );
                            break;
                        }
                        Some(Err(s)) if retryable(&s) => {
                            eprintln!(
                                "ipactl: the event stream broke ({}); reopening after position {position}",
                                s.message()
                            );
                            break;
                        }
                        Some(Err(s)) => return Err(conn.err("WatchEvents")(s)),
                    }
                }
            }
            Err(s) if retryable(&s) => {}
            Err(s) => return Err(conn.err("WatchEvents")(s)),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RECONNECT_MAX);
    }
}

/// Worth reopening: the server went away or its database is briefly
/// unavailable (it recovers by itself). A watcher dropped for reading too
/// slowly is also told where to resume, which is where we are.
fn retryable(s: &tonic::Status) -> bool {
    match s.code() {
        Code::Unavailable => true,
        Code::ResourceExhausted => s.message().starts_with("WATCH_TOO_SLOW"),
        _ => false,
    }
}

/// `tasks logs ID [-f] [--tail N]`: the pod's output as raw bytes on stdout
/// (stdout and stderr of the pod interleaved as captured); with `-o
/// json|yaml`, one PodLogChunk per line/document.
pub async fn logs(
    conn: &Conn,
    out: &Output,
    id: String,
    follow: bool,
    tail: u32,
) -> Result<(), CliError> {
    let req = pb::GetPodLogsRequest {
        task_id: id,
        follow,
        tail_lines: tail,
        ..Default::default()
    };
    let mut stream = conn
        .client
        .clone()
        .get_pod_logs(conn.stream(req))
        .await
        .map_err(conn.err("GetPodLogs"))?
        .into_inner();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(conn.err("GetPodLogs"))?;
        match out.format() {
            Format::Table | Format::Wide => write_raw(&chunk.data)?,
            Format::Json | Format::Yaml => out.stream_item(&chunk, |_| String::new())?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Status;

    #[test]
    fn only_transient_failures_reopen_the_feed() {
        assert!(retryable(&Status::unavailable("tcp connect error")));
        assert!(retryable(&Status::resource_exhausted(
            "WATCH_TOO_SLOW: resume after position 9"
        )));
        assert!(!retryable(&Status::resource_exhausted(
            "TOO_MANY_STREAMS: 1024"
        )));
        assert!(!retryable(&Status::invalid_argument(
            "INVALID_ARGUMENT: task_id"
        )));
        assert!(retryable(&Status::unavailable(
            "EVENT_STORE_UNAVAILABLE: db"
        )));
    }
}
