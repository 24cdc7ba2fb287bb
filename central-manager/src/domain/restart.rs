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
    /// Checks the caps of API.md's Limits (`max_restarts` ≤ 1000,
    /// `window_seconds` ≤ 604800, `initial_backoff_ms` and `max_backoff_ms`
    /// ≤ 3600000): INVALID_ARGUMENT naming the field otherwise.
    pub fn validate(self) -> crate::error::Result<Self> {
        use super::limits::{MAX_BACKOFF_MS, MAX_RESTARTS, MAX_WINDOW_SECONDS};
        let check = |v: Option<u32>, max: u32, field: &'static str| match v {
            Some(n) if n > max => Err(crate::error::Error::invalid(
                field,
                format!("{n} is over the limit of {max}"),
            )),
            _ => Ok(()),
        };
        check(
            self.max_restarts,
            MAX_RESTARTS,
            "restart_policy.max_restarts",
        )?;
        check(
            self.window_seconds,
            MAX_WINDOW_SECONDS,
            "restart_policy.window_seconds",
        )?;
        check(
            self.initial_backoff_ms,
            MAX_BACKOFF_MS,
            "restart_policy.initial_backoff_ms",
        )?;
        check(
            self.max_backoff_ms,
            MAX_BACKOFF_MS,
            "restart_policy.max_backoff_ms",
        )?;
        Ok(self)
    }

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
    fn caps_both_sides() {
        use crate::domain::limits::{MAX_BACKOFF_MS, MAX_RESTARTS, MAX_WINDOW_SECONDS};
        let at = RestartPolicySpec {
            auto_restart: Some(true),
            max_restarts: Some(MAX_RESTARTS),
            window_seconds: Some(MAX_WINDOW_SECONDS),
            initial_backoff_ms: Some(MAX_BACKOFF_MS),
            max_backoff_ms: Some(MAX_BACKOFF_MS),
        };
        assert!(at.validate().is_ok());
        let field = |spec: RestartPolicySpec| match spec.validate() {
            Err(crate::error::Error::InvalidArgument { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(RestartPolicySpec {
                max_restarts: Some(MAX_RESTARTS + 1),
                ..at
            }),
            "restart_policy.max_restarts"
        );
        assert_eq!(
            field(RestartPolicySpec {
                window_seconds: Some(MAX_WINDOW_SECONDS + 1),
                ..at
            }),
            "restart_policy.window_seconds"
        );
        assert_eq!(
            field(RestartPolicySpec {
                max_backoff_ms: Some(u32::MAX),
                ..at
            }),
            "restart_policy.max_backoff_ms"
        );
        assert_eq!(
            field(RestartPolicySpec {
                initial_backoff_ms: Some(MAX_BACKOFF_MS + 1),
                ..at
            }),
            "restart_policy.initial_backoff_ms"
        );
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
