//! `tasks wait ID --for completed|failed|running --timeout DUR`.
//!
//! Event-driven, not polling: the task's trail gives the position of its
//! last event; the task is read; then WatchEvents from that position (for
//! this task only) wakes us on every later change and the task is read
//! again. An event committed between the read and the watch is still
//! delivered, since the watch resumes from a position, so nothing is
//! missed. A stream that ends (a central-manager restart) is reopened from
//! the last position seen. A spinner shows on a terminal only.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use ipa_proto::v1 as pb;
use tokio::time::{Instant, timeout_at};
use tokio_stream::StreamExt;
use tonic::Code;

use super::tasks::get_task;
use crate::cli::WaitFor;
use crate::connect::Conn;
use crate::error::CliError;
use crate::output::{Output, fmt};
use crate::views;

/// Where the task stands with respect to the condition.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Met,
    /// Not yet; it may still happen.
    Pending,
    /// It cannot happen any more (e.g. waiting for completed on a
    /// cancelled task).
    Never(String),
}

/// Judges `task` against `cond`.
pub fn judge(task: &pb::Task, cond: WaitFor) -> Verdict {
    let status = pb::TaskStatus::try_from(task.status).unwrap_or(pb::TaskStatus::Unspecified);
    let terminal = matches!(
        status,
        pb::TaskStatus::Completed | pb::TaskStatus::Cancelled | pb::TaskStatus::Failed
    );
    let met = match cond {
        WaitFor::Completed => status == pb::TaskStatus::Completed,
        WaitFor::Failed => status == pb::TaskStatus::Failed,
        WaitFor::Running => task.pod_status == pb::PodStatus::Running as i32 && !terminal,
    };
    if met {
        Verdict::Met
    } else if terminal {
        Verdict::Never(format!(
            "task {} ended {}, it will never be {}",
            task.task_id,
            fmt::status(task.status),
            cond_name(cond)
        ))
    } else {
        Verdict::Pending
    }
}

fn cond_name(c: WaitFor) -> &'static str {
    match c {
        WaitFor::Completed => "completed",
        WaitFor::Failed => "failed",
        WaitFor::Running => "running",
    }
}

/// A one-line state for the spinner and the timeout message.
fn state(task: &pb::Task) -> String {
    format!(
        "{}, {}, pod {}",
        fmt::status(task.status),
        fmt::phase(task.phase),
        fmt::pod_status(task.pod_status)
    )
}

/// Pause before reopening a watch that ended (server restart).
const REOPEN_DELAY: Duration = Duration::from_millis(500);

pub async fn wait(
    conn: &Conn,
    out: &Output,
    id: String,
    cond: WaitFor,
    limit: Duration,
) -> Result<(), CliError> {
    let spinner = Spinner::new(cond);
    let result = wait_until(conn, &id, cond, limit, &spinner).await;
    spinner.finish();
    let task = result?;
    out.message(&task, |ctx| views::tasks::task_detail(&task, ctx))
}

/// The loop of [`wait`]: the task once the condition holds.
async fn wait_until(
    conn: &Conn,
    id: &str,
    cond: WaitFor,
    limit: Duration,
    spinner: &Spinner,
) -> Result<pb::Task, CliError> {
    let deadline = Instant::now() + limit;
    let mut last_state = String::from("no answer from the server");
    let timed_out = |last: &str| {
        CliError::Timeout(format!(
            "task {id} not {} after {} ({last})",
            cond_name(cond),
            humantime::format_duration(limit)
        ))
    };
    let mut position = None;
    loop {
        // Read where the trail ends (once), then the task itself. A server
        // that is briefly away (a restart) is retried until the deadline.
        let attempt = async {
            let p = match position {
                Some(p) => p,
                None => last_position(conn, id).await?,
            };
            Ok::<_, CliError>((p, get_task(conn, id.to_owned()).await?))
        };
        let (p, task) = match timeout_at(deadline, attempt).await {
            Err(_) => return Err(timed_out(&last_state)),
            Ok(Err(e)) if e.code() == Some(Code::Unavailable) => {
                if timeout_at(deadline, tokio::time::sleep(REOPEN_DELAY))
                    .await
                    .is_err()
                {
                    return Err(timed_out(&last_state));
                }
                continue;
            }
            Ok(r) => r?,
        };
        position = Some(p);
        last_state = state(&task);
        spinner.update(&last_state);
        match judge(&task, cond) {
            Verdict::Met => return Ok(task),
            Verdict::Never(why) => return Err(CliError::Unreachable(why)),
            Verdict::Pending => {}
        }
        // Sleep until the task's next event (or the deadline).
        match timeout_at(deadline, next_event(conn, id, p)).await {
            Err(_) => return Err(timed_out(&last_state)),
            Ok(Ok(Some(next))) => position = Some(next),
            // The stream ended or the server went away for a moment: read
            // the task again and reopen from the same position.
            Ok(Ok(None)) => {
                if timeout_at(deadline, tokio::time::sleep(REOPEN_DELAY))
                    .await
                    .is_err()
                {
                    return Err(timed_out(&last_state));
                }
            }
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// The position of the task's latest event (0 if it has none); fails with
/// TASK_NOT_FOUND for an unknown task.
async fn last_position(conn: &Conn, id: &str) -> Result<u64, CliError> {
    let mut after_version = 0;
    let mut position = 0;
    loop {
        let page = conn
            .client
            .clone()
            .get_task_events(conn.unary(pb::GetTaskEventsRequest {
                task_id: id.to_owned(),
                after_version,
                limit: 1000,
                ..Default::default()
            }))
            .await
            .map_err(conn.err("GetTaskEvents"))?
            .into_inner()
            .events;
        let Some(last) = page.last() else {
            return Ok(position);
        };
        after_version = last.version;
        position = last.position;
    }
}

/// Waits for the task's first event after `after`: `Some(position)`, or
/// `None` when the stream ended or the server is briefly unavailable.
async fn next_event(conn: &Conn, id: &str, after: u64) -> Result<Option<u64>, CliError> {
    let req = pb::WatchEventsRequest {
        after_position: after,
        task_id: id.to_owned(),
        ..Default::default()
    };
    let mut stream = match conn.client.clone().watch_events(conn.stream(req)).await {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == Code::Unavailable => return Ok(None),
        Err(s) => return Err(CliError::status("WatchEvents", &conn.server, s)),
    };
    match stream.next().await {
        Some(Ok(e)) => Ok(Some(e.position)),
        None => Ok(None),
        Some(Err(s)) if s.code() == Code::Unavailable => Ok(None),
        Some(Err(s)) => Err(CliError::status("WatchEvents", &conn.server, s)),
    }
}

/// The spinner on stderr, drawn only when stderr is a terminal.
struct Spinner(Option<ProgressBar>);

impl Spinner {
    fn new(cond: WaitFor) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self(None);
        }
        let bar = ProgressBar::new_spinner();
        // Short enough for a narrow terminal: a wrapped spinner line
        // cannot be redrawn in place.
        let style = ProgressStyle::with_template("{spinner} {prefix} ({elapsed}): {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        bar.set_prefix(format!("waiting for {}", cond_name(cond)));
        bar.enable_steady_tick(Duration::from_millis(100));
        Self(Some(bar))
    }

    fn update(&self, msg: &str) {
        if let Some(b) = &self.0 {
            b.set_message(msg.to_owned());
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(status: pb::TaskStatus, pod: pb::PodStatus) -> pb::Task {
        pb::Task {
            task_id: "t".into(),
            status: status as i32,
            pod_status: pod as i32,
            ..Default::default()
        }
    }

    #[test]
    fn completed_is_met_only_by_completed() {
        use pb::PodStatus::*;
        use pb::TaskStatus::*;
        assert_eq!(
            judge(&task(Completed, Stopped), WaitFor::Completed),
            Verdict::Met
        );
        assert_eq!(
            judge(&task(Active, Running), WaitFor::Completed),
            Verdict::Pending
        );
        assert_eq!(
            judge(&task(Inactive, Stopped), WaitFor::Completed),
            Verdict::Pending
        );
        assert!(matches!(
            judge(&task(Cancelled, Stopped), WaitFor::Completed),
            Verdict::Never(m) if m.contains("ended cancelled")
        ));
        assert!(matches!(
            judge(&task(Failed, Stopped), WaitFor::Completed),
            Verdict::Never(_)
        ));
    }

    #[test]
    fn failed_is_met_only_by_failed() {
        use pb::PodStatus::*;
        use pb::TaskStatus::*;
        assert_eq!(judge(&task(Failed, Stopped), WaitFor::Failed), Verdict::Met);
        assert_eq!(
            judge(&task(Active, Running), WaitFor::Failed),
            Verdict::Pending
        );
        assert!(matches!(
            judge(&task(Completed, Stopped), WaitFor::Failed),
            Verdict::Never(_)
        ));
    }

    #[test]
    fn running_needs_a_running_pod_on_a_live_task() {
        use pb::PodStatus::*;
        use pb::TaskStatus::*;
        assert_eq!(
            judge(&task(Active, Running), WaitFor::Running),
            Verdict::Met
        );
        assert_eq!(
            judge(&task(Active, Starting), WaitFor::Running),
            Verdict::Pending
        );
        assert_eq!(
            judge(&task(Inactive, Stopped), WaitFor::Running),
            Verdict::Pending
        );
        assert_eq!(
            judge(&task(Active, Unknown), WaitFor::Running),
            Verdict::Pending
        );
        assert!(matches!(
            judge(&task(Completed, Stopped), WaitFor::Running),
            Verdict::Never(_)
        ));
    }
}
