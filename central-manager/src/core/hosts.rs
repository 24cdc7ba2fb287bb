//! The pod-hosts central-manager knows and where a pod may be placed.
//!
//! This version connects to no pod-host, so the directory is always empty:
//! every placement answers NO_POD_HOST. Pod supervision fills it from the
//! pod-hosts' Connect streams.

use crate::domain::TemplateName;
use crate::error::{Error, Result};

/// A pod-host's state as central-manager sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostState {
    /// Connected and heartbeating.
    Ready,
    /// Silent past `--host-unreachable-ms`.
    Unreachable,
    /// Silent past the fence deadline.
    Lost,
    /// Refusing new pods.
    Draining,
}

/// One pod-host, for ListPodHosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostView {
    /// Host id.
    pub host_id: String,
    /// gRPC address.
    pub address: String,
    /// State.
    pub state: HostState,
    /// Pods it may run at once.
    pub capacity: u32,
    /// Pods it runs now.
    pub running_pods: u32,
    /// Templates it serves.
    pub templates: Vec<String>,
    /// Last heartbeat, unix micros.
    pub last_heartbeat_at: i64,
    /// Its boot id.
    pub boot_id: String,
}

/// Where a pod was placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The chosen host.
    pub host_id: String,
}

/// The known pod-hosts.
#[derive(Debug, Clone, Default)]
pub struct HostDirectory {}

impl HostDirectory {
    /// An empty directory.
    pub fn new() -> Self {
        Self {}
    }

    /// Every known pod-host.
    pub fn list(&self) -> Vec<HostView> {
        Vec::new()
    }

    /// Picks a ready pod-host with free capacity serving `template`.
    pub fn place(&self, template: &TemplateName) -> Result<Placement> {
        Err(Error::NoPodHost(format!(
            "no ready pod-host with free capacity serves template {:?} (none is connected)",
            template.as_str()
        )))
    }
}
