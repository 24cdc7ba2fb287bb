//! The three state enums of a task and their database spelling (lowercase
//! words, so the database reads well in `sqlite3`).

use crate::error::{Error, Result};

macro_rules! db_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// How the value is stored.
            pub const fn as_db(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            /// Parses a stored value.
            pub fn from_db(s: &str) -> Result<Self> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(Error::Internal(format!(
                        concat!("bad ", stringify!($name), " in database: {:?}"), other
                    ))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_db())
            }
        }
    };
}

db_enum!(
    /// Task status. `Completed`, `Cancelled` and `Failed` are terminal.
    TaskStatus {
        /// No pod runs (initial).
        Inactive => "inactive",
        /// A pod is starting or running.
        Active => "active",
        /// CompleteTask, or the pod finished its work.
        Completed => "completed",
        /// CancelTask.
        Cancelled => "cancelled",
        /// Gave up: restart budget spent or timeout.
        Failed => "failed",
    }
);

impl TaskStatus {
    /// Whether lifecycle calls are refused (ALREADY_*).
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Cancelled | Self::Failed)
    }
}

db_enum!(
    /// The work phase a task is in.
    Phase {
        /// Initial.
        SpecClarification => "spec_clarification",
        /// Reported by the pod.
        Planning => "planning",
        /// Reported by the pod.
        Development => "development",
        /// Reported by the pod.
        Review => "review",
        /// CompleteTask, or reported by the pod before it exits 0.
        Completed => "completed",
        /// CancelTask.
        Cancelled => "cancelled",
    }
);

db_enum!(
    /// What central-manager knows about the task's pod.
    PodStatus {
        /// No pod runs.
        Stopped => "stopped",
        /// Placed on a pod-host, not yet confirmed running.
        Starting => "starting",
        /// Running.
        Running => "running",
        /// Its pod-host is unreachable; the pod may still run.
        Unknown => "unknown",
        /// Waiting in the queue for room; no pod. Stored as `stopped` with
        /// `queued_seq` set (migration `20260501000001_queue`), so this
        /// spelling never reaches the `pod_status` column.
        Queued => "queued",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_spelling_round_trips() {
        for s in TaskStatus::ALL {
            assert_eq!(TaskStatus::from_db(s.as_db()).unwrap(), *s);
        }
        for p in Phase::ALL {
            assert_eq!(Phase::from_db(p.as_db()).unwrap(), *p);
        }
        for p in PodStatus::ALL {
            assert_eq!(PodStatus::from_db(p.as_db()).unwrap(), *p);
        }
        assert!(matches!(
            TaskStatus::from_db("nope"),
            Err(Error::Internal(_))
        ));
    }

    #[test]
    fn terminal_statuses() {
        let terminal: Vec<_> = TaskStatus::ALL.iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(
            terminal,
            [
                &TaskStatus::Completed,
                &TaskStatus::Cancelled,
                &TaskStatus::Failed
            ]
        );
    }
}
