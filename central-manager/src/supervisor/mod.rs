//! Pod supervision: what a pod's end means ([`exit`]), whether to restart
//! ([`restart`]), how a host's snapshot is squared with the database
//! ([`reconcile`]), and the task that applies all of it ([`runner`]).

pub mod exit;
pub mod reconcile;
pub mod restart;
pub mod runner;
