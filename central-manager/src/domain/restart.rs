//! Restart policy: what a task asked for (every field optional) and the
//! effective policy after central-manager's configured defaults fill the
//! gaps. The request is what is stored, so "unset" stays distinguishable
//! from an explicit 0 and follows the configured default.

use serde::{Deserialize, Serialize};

/// The effective restart policy of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// Restart crashed pods automatically.
    pub auto_restart: bool,
    /// More crashes than this within `window_seconds` fail the task.
    pub max_restarts: u32,
    /// The crash-counting window.
    pub window_seconds: u32,
    /// Delay before the first restart (0 = at once); doubles per crash.
    pub initial_backoff_ms: u32,
    /// Cap of the restart delay.
    pub max_backoff_ms: u32,
}

/// central-manager's configured defaults (`--auto-restart`,
/// `--max-restarts`, …).
pub type RestartDefaults = RestartPolicy;

/// The restart policy as a caller gave it; `None` = take the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RestartPolicySpec {
    /// See [`RestartPolicy::auto_restart`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_restart: Option<bool>,
    /// See [`RestartPolicy::max_restarts`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_restarts: Option<u32>,
    /// See [`RestartPolicy::window_seconds`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<u32>,
    /// See [`RestartPolicy::initial_backoff_ms`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_backoff_ms: Option<u32>,
    /// See [`RestartPolicy::max_backoff_ms`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_backoff_ms: Option<u32>,
}

impl RestartPolicySpec {
    /// The effective policy: each unset field takes its default.
    pub fn resolve(&self, d: &RestartDefaults) -> RestartPolicy {
        RestartPolicy {
            auto_restart: self.auto_restart.unwrap_or(d.auto_restart),
            max_restarts: self.max_restarts.unwrap_or(d.max_restarts),
            window_seconds: self.window_seconds.unwrap_or(d.window_seconds),
            initial_backoff_ms: self.initial_backoff_ms.unwrap_or(d.initial_backoff_ms),
            max_backoff_ms: self.max_backoff_ms.unwrap_or(d.max_backoff_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: RestartDefaults = RestartPolicy {
        auto_restart: false,
        max_restarts: 3,
        window_seconds: 60,
        initial_backoff_ms: 1000,
        max_backoff_ms: 30_000,
    };

    #[test]
    fn unset_fields_take_defaults_and_zero_is_kept() {
        assert_eq!(RestartPolicySpec::default().resolve(&D), D);
        let spec = RestartPolicySpec {
            auto_restart: Some(true),
            initial_backoff_ms: Some(0),
            max_restarts: Some(0),
            ..Default::default()
        };
        let p = spec.resolve(&D);
        assert!(p.auto_restart);
        assert_eq!(p.initial_backoff_ms, 0);
        assert_eq!(p.max_restarts, 0);
        assert_eq!(p.window_seconds, 60);
        assert_eq!(p.max_backoff_ms, 30_000);
    }

    #[test]
    fn spec_json_omits_unset_fields() {
        let spec = RestartPolicySpec {
            max_restarts: Some(0),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&spec).unwrap(),
            r#"{"max_restarts":0}"#
        );
    }
}
