//! `ipactl schedules …`.

use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use ipa_proto::v1 as pb;

use super::parse_duration;
use super::tasks::parse_key_value;

#[derive(Debug, Subcommand)]
pub enum SchedulesCmd {
    /// Create a schedule that creates and starts a task at each fire time.
    Create(CreateScheduleArgs),
    /// Show one schedule (by id or name).
    Get { schedule: String },
    /// List schedules.
    List {
        /// At most this many (server maximum 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Skip this many (paging).
        #[arg(long, default_value_t = 0)]
        offset: u32,
    },
    /// Stop firing until resumed.
    Pause { schedule: String },
    /// Fire again from the next fire time.
    Resume { schedule: String },
    /// Fire now, outside the timetable.
    Trigger { schedule: String },
    /// Delete the schedule (its tasks stay).
    Delete { schedule: String },
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("when").required(true).args(["cron", "every"])))]
pub struct CreateScheduleArgs {
    /// Unique name.
    pub name: String,
    /// Cron expression: 5 fields, or 6 with seconds first.
    #[arg(long, value_name = "EXPR")]
    pub cron: Option<String>,
    /// Fire at this interval instead of a cron expression (e.g. `15m`).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub every: Option<Duration>,
    /// IANA time zone of the cron expression (default UTC).
    #[arg(long, value_name = "ZONE", default_value = "")]
    pub timezone: String,
    /// Title of the tasks it creates.
    #[arg(long)]
    pub title: String,
    /// Description of the tasks it creates.
    #[arg(short, long, default_value = "")]
    pub description: String,
    /// Metadata entry KEY=VALUE of the tasks it creates (repeatable).
    #[arg(short, long = "metadata", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub metadata: Vec<(String, String)>,
    /// Pod template of the tasks it creates.
    #[arg(short, long, default_value = "")]
    pub template: String,
    /// Priority of the tasks it creates.
    #[arg(long, value_enum)]
    pub priority: Option<PriorityArg>,
    /// Stop a pod running longer than this.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub task_timeout: Option<Duration>,
    /// What a fire does while the previous task still runs.
    #[arg(long, value_enum, default_value_t = OverlapArg::Skip)]
    pub overlap: OverlapArg,
    /// Fire times missed while the server was down fire late when at most
    /// this old.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub catchup_window: Option<Duration>,
    /// Create it paused.
    #[arg(long)]
    pub paused: bool,
}

/// `--overlap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OverlapArg {
    Skip,
    #[value(alias = "buffer_one")]
    BufferOne,
    #[value(alias = "allow_all")]
    AllowAll,
    #[value(alias = "cancel_previous")]
    CancelPrevious,
}

impl From<OverlapArg> for pb::Overlap {
    fn from(o: OverlapArg) -> Self {
        match o {
            OverlapArg::Skip => Self::Skip,
            OverlapArg::BufferOne => Self::BufferOne,
            OverlapArg::AllowAll => Self::AllowAll,
            OverlapArg::CancelPrevious => Self::CancelPrevious,
        }
    }
}

/// `--priority`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PriorityArg {
    Low,
    Medium,
    High,
    Critical,
}

impl From<PriorityArg> for pb::Priority {
    fn from(p: PriorityArg) -> Self {
        match p {
            PriorityArg::Low => Self::Low,
            PriorityArg::Medium => Self::Medium,
            PriorityArg::High => Self::High,
            PriorityArg::Critical => Self::Critical,
        }
    }
}
