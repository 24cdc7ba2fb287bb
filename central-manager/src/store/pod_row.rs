//! A task row's pod columns, as both stores' pod supervision reads them
//! (its pod, host, generation and restart policy): the decisions on them
//! are the same whichever database the row comes from.

use crate::domain::{Cause, PodRef, PodStatus, RestartPolicySpec};
use crate::error::Result;

/// The current pod columns of a row.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct PodRow {
    pub(crate) status: String,
    pub(crate) phase: String,
    pub(crate) pod_status: String,
    pub(crate) pod_id: Option<String>,
    pub(crate) pod_host: Option<String>,
    pub(crate) pod_generation: i64,
    pub(crate) pod_correlation_id: String,
    pub(crate) auto_restart: Option<bool>,
    pub(crate) max_restarts: Option<i64>,
    pub(crate) restart_window_seconds: Option<i64>,
    pub(crate) initial_backoff_ms: Option<i64>,
    pub(crate) max_backoff_ms: Option<i64>,
}

impl PodRow {
    pub(crate) fn is(&self, pod: &PodRef) -> bool {
        self.pod_id.as_deref() == Some(pod.pod_id.as_str())
            && u64::try_from(self.pod_generation).ok() == Some(pod.generation)
    }

    /// Whether `host_id` is the host the row places its pod on.
    pub(crate) fn on_host(&self, host_id: &str) -> bool {
        self.pod_host.as_deref() == Some(host_id)
    }

    pub(crate) fn pod_status(&self) -> Result<PodStatus> {
        PodStatus::from_db(&self.pod_status)
    }

    pub(crate) fn spec(&self) -> RestartPolicySpec {
        let u = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
        RestartPolicySpec {
            auto_restart: self.auto_restart,
            max_restarts: u(self.max_restarts),
            window_seconds: u(self.restart_window_seconds),
            initial_backoff_ms: u(self.initial_backoff_ms),
            max_backoff_ms: u(self.max_backoff_ms),
        }
    }

    /// The cause's correlation, or the pod's start correlation.
    pub(crate) fn correlation<'a>(&'a self, cause: &'a Cause) -> &'a str {
        if cause.correlation.is_empty() {
            &self.pod_correlation_id
        } else {
            &cause.correlation
        }
    }
}
