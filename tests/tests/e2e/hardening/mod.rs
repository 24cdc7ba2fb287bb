//! Robustness of the pod-host and the paths central-manager takes through
//! it (issue 12): log streaming of any size, spawn failures reported once,
//! and the limits both servers enforce. Each test starts its own
//! central-manager and pod-host(s) with the templates it needs.

mod logs;
mod spawn;
mod support;
