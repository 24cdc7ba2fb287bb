//! Schedules, retention, deletion and statistics end to end (issue 14):
//! the real central-manager and pod-hosts (the `System` of the system
//! tests), schedules firing on their timers, overlap policies with
//! long-running `ledger` pods, catch-up after central-manager was down,
//! SIGKILL in the middle of fires, archive/delete audit trails and GetStats
//! figures against tasks whose timings the test controls.

mod auth;
mod catchup;
mod firing;
mod overlap;
mod retention;
mod sigkill;
mod stats;
mod support;
