//! `ipactl tasks …`.

use std::time::Duration;

use clap::{Subcommand, ValueEnum};

use super::args::{FilterArgs, OrderArg, OrderByArg};
use super::parse_duration;

#[derive(Debug, Subcommand)]
pub enum TasksCmd {
    /// Create a task (and start its pod with --start).
    Create(CreateArgs),
    /// Show one task.
    Get {
        /// The task id.
        id: String,
    },
    /// List tasks, newest updated first.
    List(ListArgs),
    /// Count tasks matching the filters.
    Count(FilterArgs),
    /// Start the task's pod on a ready pod-host.
    Start {
        id: String,
        /// When no pod-host has room, queue the task (it starts by itself,
        /// by priority) instead of failing with NO_POD_HOST.
        #[arg(long)]
        queue: bool,
    },
    /// Stop the task's pod gracefully (no automatic restart follows).
    Stop {
        id: String,
        /// Recorded in the pod_stopped event.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Stop (if running) and start the task's pod with a new generation.
    Restart { id: String },
    /// Mark the task completed (stops its pod).
    Complete { id: String },
    /// Cancel the task (stops its pod).
    Cancel {
        id: String,
        /// Why; recorded in the task_cancelled event.
        #[arg(long)]
        reason: String,
    },
    /// Delete a finished task and its events (admin).
    Delete {
        id: String,
        /// Why; recorded in the deletions log.
        #[arg(long)]
        reason: String,
    },
    /// The task's audit trail, oldest first.
    Events {
        id: String,
        /// Only events after this per-task version.
        #[arg(long, value_name = "VERSION", default_value_t = 0)]
        after_version: u64,
        /// At most this many events (0: all).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// Wait until the task is completed, failed or running. Exits 0 when it
    /// is; exits 1 when it can no longer get there or on timeout.
    Wait {
        id: String,
        /// The condition to wait for.
        #[arg(long = "for", value_enum, value_name = "CONDITION")]
        condition: WaitFor,
        /// Give up after this long.
        #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// The output of the task's current (or last) pod.
    Logs {
        id: String,
        /// Keep streaming new output as the pod writes it.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Start this many lines before the end (0: everything retained).
        #[arg(long, value_name = "LINES", default_value_t = 0)]
        tail: u32,
    },
}

/// What `tasks wait --for` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WaitFor {
    /// Status COMPLETED.
    Completed,
    /// Status FAILED.
    Failed,
    /// The pod is RUNNING.
    Running,
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Title (1-255 characters).
    pub title: String,
    /// Longer description (up to 10,000 characters).
    #[arg(short, long, default_value = "")]
    pub description: String,
    /// Metadata entry KEY=VALUE (repeatable), e.g. `-m demo.step_ms=200`.
    #[arg(short, long = "metadata", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub metadata: Vec<(String, String)>,
    /// Pod template name (default: `default`).
    #[arg(short, long, default_value = "")]
    pub template: String,
    /// Start the pod before replying (`auto_start`).
    #[arg(long, alias = "auto-start")]
    pub start: bool,
    /// Idempotency key: the same actor and request id within 24 h returns
    /// the first task instead of creating another.
    #[arg(long, value_name = "ID", default_value = "")]
    pub request_id: String,
    /// Restart the pod automatically after a crash (default: the server's).
    #[arg(long, value_name = "BOOL")]
    pub auto_restart: Option<bool>,
    /// Crashes allowed within the window before the task fails.
    #[arg(long, value_name = "N")]
    pub max_restarts: Option<u32>,
    /// The crash-counting window.
    #[arg(long, value_name = "SECONDS")]
    pub restart_window_seconds: Option<u32>,
    /// Delay before the first restart (doubles per crash).
    #[arg(long, value_name = "MS")]
    pub initial_backoff_ms: Option<u32>,
    /// Cap of the restart delay.
    #[arg(long, value_name = "MS")]
    pub max_backoff_ms: Option<u32>,
    /// Stop a pod running longer than this (`timeout_seconds`; whole
    /// seconds, 1s to 7d), e.g. `--timeout 10m`. Counts as a crash.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Fail the task if it is not finished by then: an RFC 3339 time, or a
    /// duration from now (`--deadline 2h`).
    #[arg(long, value_name = "TIME")]
    pub deadline: Option<super::TimeArg>,
    /// How urgently it gets a pod when capacity is short (default medium).
    #[arg(long, value_enum)]
    pub priority: Option<super::schedules::PriorityArg>,
    /// With --start: when no pod-host has room, queue the task instead of
    /// failing with NO_POD_HOST.
    #[arg(long)]
    pub queue: bool,
    /// A queued task waiting longer than this returns to inactive
    /// (`queue_timeout_seconds`; whole seconds, 1s to 7d), e.g. `10m`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub queue_timeout: Option<Duration>,
    /// A task that must be COMPLETED before this one's pod starts
    /// (`depends_on`); repeat for several (at most 32).
    #[arg(long = "depends-on", value_name = "TASK_ID")]
    pub depends_on: Vec<String>,
    /// Print only the new task's id.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// At most this many tasks (server maximum 1000).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Skip this many tasks (paging).
    #[arg(long, default_value_t = 0)]
    pub offset: u32,
    /// Sort key.
    #[arg(long, value_enum, default_value_t = OrderByArg::UpdatedAt)]
    pub order_by: OrderByArg,
    /// Sort direction.
    #[arg(long, value_enum, default_value_t = OrderArg::Desc)]
    pub order: OrderArg,
}

/// Parses `KEY=VALUE` (the value may contain `=`).
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_key_equals_value() {
        assert_eq!(parse_key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_key_value("a="), Ok(("a".into(), String::new())));
        assert!(parse_key_value("=b").is_err());
        assert!(parse_key_value("ab").is_err());
    }
}
