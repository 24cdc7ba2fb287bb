//! Argument types shared by several commands: enum values in their short
//! spelling (`active`, `review`), times, and the task filters of `tasks
//! list` and `tasks count`.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use clap::ValueEnum;
use ipa_proto::v1 as pb;
use prost_types::Timestamp;

/// A task status, as `--status` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    Inactive,
    Active,
    Completed,
    Cancelled,
    Failed,
}

impl From<StatusArg> for pb::TaskStatus {
    fn from(s: StatusArg) -> Self {
        match s {
            StatusArg::Inactive => Self::Inactive,
            StatusArg::Active => Self::Active,
            StatusArg::Completed => Self::Completed,
            StatusArg::Cancelled => Self::Cancelled,
            StatusArg::Failed => Self::Failed,
        }
    }
}

/// A task phase, as `--phase` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PhaseArg {
    #[value(alias = "spec_clarification")]
    SpecClarification,
    Planning,
    Development,
    Review,
    Completed,
    Cancelled,
}

impl From<PhaseArg> for pb::Phase {
    fn from(p: PhaseArg) -> Self {
        match p {
            PhaseArg::SpecClarification => Self::SpecClarification,
            PhaseArg::Planning => Self::Planning,
            PhaseArg::Development => Self::Development,
            PhaseArg::Review => Self::Review,
            PhaseArg::Completed => Self::Completed,
            PhaseArg::Cancelled => Self::Cancelled,
        }
    }
}

/// `--order-by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OrderByArg {
    #[value(alias = "updated_at")]
    UpdatedAt,
    #[value(alias = "created_at")]
    CreatedAt,
}

impl From<OrderByArg> for pb::OrderBy {
    fn from(o: OrderByArg) -> Self {
        match o {
            OrderByArg::UpdatedAt => Self::UpdatedAt,
            OrderByArg::CreatedAt => Self::CreatedAt,
        }
    }
}

/// `--order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OrderArg {
    Desc,
    Asc,
}

impl From<OrderArg> for pb::Order {
    fn from(o: OrderArg) -> Self {
        match o {
            OrderArg::Desc => Self::Desc,
            OrderArg::Asc => Self::Asc,
        }
    }
}

/// `stats --group-by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GroupByArg {
    None,
    Template,
    #[value(alias = "created_by")]
    CreatedBy,
}

impl From<GroupByArg> for pb::GroupBy {
    fn from(g: GroupByArg) -> Self {
        match g {
            GroupByArg::None => Self::None,
            GroupByArg::Template => Self::Template,
            GroupByArg::CreatedBy => Self::CreatedBy,
        }
    }
}

/// A point in time given as RFC 3339 (`2026-01-01T00:00:00Z`) or as a
/// duration before now (`90m`, `2d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeArg {
    At(SystemTime),
    Ago(Duration),
}

impl TimeArg {
    /// The time as a proto Timestamp, durations counted back from `now`.
    pub fn timestamp(self, now: SystemTime) -> Timestamp {
        let t = match self {
            Self::At(t) => t,
            // Never before the epoch: no task is older.
            Self::Ago(d) => match now.duration_since(SystemTime::UNIX_EPOCH) {
                Ok(since) if since >= d => now - d,
                _ => SystemTime::UNIX_EPOCH,
            },
        };
        ipa_proto::time::timestamp(t)
    }
}

impl FromStr for TimeArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(t) = humantime::parse_rfc3339_weak(s) {
            return Ok(Self::At(t));
        }
        humantime::parse_duration(s).map(Self::Ago).map_err(|_| {
            format!(
                "{s:?} is neither an RFC 3339 time (2026-01-01T00:00:00Z) nor a duration ago (2h)"
            )
        })
    }
}

/// The task filters of ListTasks and CountTasks.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Only tasks in this status.
    #[arg(long, value_enum)]
    pub status: Option<StatusArg>,
    /// Only tasks in this phase.
    #[arg(long, value_enum)]
    pub phase: Option<PhaseArg>,
    /// Only tasks created after this time (RFC 3339, or a duration ago: `2h`).
    #[arg(long, value_name = "TIME")]
    pub created_after: Option<TimeArg>,
    /// Only tasks created by this actor.
    #[arg(long, value_name = "ACTOR")]
    pub created_by: Option<String>,
    /// Only tasks of this priority.
    #[arg(long, value_enum)]
    pub priority: Option<super::schedules::PriorityArg>,
    /// Only tasks whose pod is in this state (`queued`: waiting for room).
    #[arg(long, value_enum)]
    pub pod_status: Option<PodStatusArg>,
}

/// A pod status, as `--pod-status` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PodStatusArg {
    Stopped,
    Starting,
    Running,
    Unknown,
    Queued,
}

impl From<PodStatusArg> for pb::PodStatus {
    fn from(s: PodStatusArg) -> Self {
        match s {
            PodStatusArg::Stopped => Self::Stopped,
            PodStatusArg::Starting => Self::Starting,
            PodStatusArg::Running => Self::Running,
            PodStatusArg::Unknown => Self::Unknown,
            PodStatusArg::Queued => Self::Queued,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_durations_ago() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        let at: TimeArg = "1970-01-01T00:00:10Z".parse().unwrap();
        assert_eq!(at.timestamp(now).seconds, 10);
        let ago: TimeArg = "1h".parse().unwrap();
        assert_eq!(ago.timestamp(now).seconds, 10_000 - 3_600);
        // Further back than the epoch clamps instead of panicking.
        let far: TimeArg = "100years".parse().unwrap();
        assert_eq!(far.timestamp(now).seconds, 0);
        assert!("yesterday-ish".parse::<TimeArg>().is_err());
    }

    #[test]
    fn enum_arguments_map_to_the_proto_values() {
        assert_eq!(
            pb::TaskStatus::from(StatusArg::Failed),
            pb::TaskStatus::Failed
        );
        assert_eq!(
            pb::Phase::from(PhaseArg::SpecClarification),
            pb::Phase::SpecClarification
        );
        assert_eq!(
            PhaseArg::from_str("spec_clarification", true),
            Ok(PhaseArg::SpecClarification)
        );
        assert_eq!(
            pb::GroupBy::from(GroupByArg::CreatedBy),
            pb::GroupBy::CreatedBy
        );
    }
}
